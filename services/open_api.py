"""Departments' open API, version 1: a FastAPI application the services API mounts at ``/api/v1``.

What departments' systems do without database access: add progress steps to applications, change
their tickets' status and reply, publish their service guides, read aggregate figures. Each call
carries ``Authorization: Bearer <key>`` (services/api_keys.py): a key belongs to one department,
holds scopes and a per-minute rate limit. Each write carries an ``Idempotency-Key``: the same key
with the same request answers what it answered before and does nothing again (24 h). Every
authenticated request leaves an ``api_audit`` row (no bodies); a write's row, its stored answer
and its change commit together. Errors are ``{"error": {"code", "message"}}`` with the codes of
``ERRORS`` (services/open_api_schema.py), mapped here in one place. The OpenAPI document is
served at ``/api/v1/openapi.json`` and committed at docs/openapi/departments-v1.json
(``python -m services openapi`` rewrites it)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knowledge.config import KnowledgeSettings
from services.api_keys import SCOPES, ApiClientView, ApiKeys
from services.applications import belongs_to
from services.container import Services
from services.kpis import CHINA, MIN_GROUP, kpis
from services.models import Application, ApplicationStep, FeedbackTicket
from services.open_api_models import ApiAudit, ApiIdempotency
from services.open_api_schema import (
    APPLICATION_NUMBER,
    ERRORS,
    GUIDE_SLUG,
    IDEMPOTENCY_KEY,
    LINE,
    TICKET_NUMBER,
    ApplicationOut,
    ErrorBody,
    GuideIn,
    GuideOut,
    KpisOut,
    StepIn,
    StepOut,
    TicketOut,
    TicketPatch,
)
from services.published_guides import GuideInvalid, PublishedGuides, SlugTaken, guide_topic
from services.settings import Settings
from services.tickets import TRANSITIONS, ticket_department

log = logging.getLogger(__name__)
PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
MAX_KPI_DAYS = 366
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
# on_update(kind, number): kind "ticket" or "application", after the change committed (not on a replay)
OnUpdate = Callable[[str, str], None]


BEARER = HTTPBearer(auto_error=False, bearerFormat="hzk_<key id>.<secret>",
                    description="a department's API key (`python -m services api-key create`)")
AppNumber = Annotated[str, Path(pattern=APPLICATION_NUMBER, examples=["20261101000001"],
                                description="the application's number (办件编号)")]
TicketNumber = Annotated[str, Path(pattern=TICKET_NUMBER, examples=["10000001"],
                                   description="the ticket's 8-digit number (工单号)")]
Slug = Annotated[str, Path(pattern=GUIDE_SLUG, max_length=64, examples=["road-excavation-permit"],
                           description="lower-case words joined by '-', the guide's file name")]
FromDay = Annotated[dt.date, Query(alias="from", description="first day, YYYY-MM-DD (China time)",
                                   examples=["2026-11-01"])]
ToDay = Annotated[dt.date, Query(alias="to", description="last day, included; at most 366 days", examples=["2026-11-30"])]
KpiDepartment = Annotated[str | None, Query(min_length=1, max_length=30, pattern=LINE,
                                            description="one department (full or ticket name); default all")]


class ApiError(Exception):
    """An answer other than success: one of ``ERRORS``' codes, a message for the developer."""

    def __init__(self, code: str, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.status, default = ERRORS[code]
        self.code, self.message, self.headers = code, message or default, headers


def _error(code: str, message: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    exc = ApiError(code, message, headers)
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status,
                        headers=exc.headers)


def _errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error codes (one entry per status)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status, meaning = ERRORS[code]
        entry = out.setdefault(status, {"model": ErrorBody, "description": ""})
        entry["description"] = (entry["description"] + "; " if entry["description"] else "") + f"`{code}`: {meaning}"
        if code == "rate_limited":
            entry["headers"] = {"Retry-After": {"description": "seconds until the next minute",
                                                "schema": {"type": "integer"}}}
    return dict(sorted(out.items(), key=lambda item: str(item[0])))


READ_ERRORS = ("invalid_request", "unauthorized", "missing_scope", "rate_limited")
WRITE_ERRORS = READ_ERRORS + ("idempotency_key_missing", "body_too_large", "idempotency_conflict")


def _location(loc: tuple[Any, ...]) -> str:
    """A validation error's place, without echoing keys the caller made up."""
    known = set(StepIn.model_fields) | set(TicketPatch.model_fields) | set(GuideIn.model_fields) | {
        "body", "query", "path", "header", "from", "to", "department", "number", "slug", "Idempotency-Key",
        "办理条件", "所需材料", "办理流程", "办理地点", "办理时限", "收费标准", "咨询方式"}
    return ".".join(str(p) if isinstance(p, int) or p in known else "?" for p in loc)


class _Guard:
    """Around every request: refuse a body over ``MAX_BODY_BYTES`` (413) before anything reads it,
    and write the audit row of an authenticated request its handler did not write itself."""

    def __init__(self, app: ASGIApp, audit: Callable[[Scope, int], Awaitable[None]]) -> None:
        self.app, self.audit = app, audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            await _error("body_too_large" if declared.isdigit() else "invalid_request")(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY_BYTES:
                await _error("body_too_large")(scope, receive, send)
                return
        body, given = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        scope.setdefault("state", {})
        try:
            await self.app(scope, replay, sending)
        finally:
            await self.audit(scope, status)


@dataclass(frozen=True)
class Write:
    """What a write needs besides its body: the caller, its key, the request's hash, the request."""

    client: ApiClientView
    key: str
    request_hash: str
    request: Request


def create_open_api(settings: Settings, services: Services, on_update: OnUpdate | None = None, *,
                    kb: KnowledgeSettings | None = None,
                    clock: Callable[[], dt.datetime] | None = None) -> FastAPI:
    """The API for departments. ``on_update`` (default: nothing) runs in a worker thread after a
    ticket's or an application's change commits; what it raises is logged, never answered. ``kb``
    says where published guides go (default: ``KB_*`` from the environment); ``clock`` is a seam."""
    now = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    keys = ApiKeys(services.sessions, now=now)
    guides = PublishedGuides(kb or KnowledgeSettings())
    keep = dt.timedelta(hours=settings.open_api_idempotency_hours)
    def caller(scope: str) -> Callable[..., ApiClientView]:
        def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> ApiClientView:
            client = keys.authenticate(credentials.credentials) if credentials else None
            if client is None:
                raise ApiError("unauthorized")
            request.state.client = client
            wait = keys.take(client, now())
            if wait:
                raise ApiError("rate_limited", headers={"Retry-After": str(wait)})
            if scope not in client.scopes:
                raise ApiError("missing_scope", f"this API key lacks the scope {scope}")
            return client
        return check

    def writer(scope: str) -> Callable[..., Awaitable[Write]]:
        async def write(request: Request, client: ApiClientView = Depends(caller(scope)),
                        key: str = Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY,
                                          description="1-64 printable ASCII characters, new for each change; "
                                                      "the same key again replays the answer")) -> Write:
            body = await request.body()
            digest = hashlib.sha256(f"{request.method}\n{request.scope['path']}\n".encode() + body).hexdigest()
            return Write(client, key, digest, request)
        return write

    def run(write: Write, change: Callable[[Session], tuple[int, BaseModel, bool]], kind: str | None, ref: str) -> JSONResponse:
        """The change, its stored answer and its audit row in one transaction; or the stored answer."""
        for _ in range(2):
            at = now()
            with services.sessions() as s:
                s.execute(delete(ApiIdempotency).where(ApiIdempotency.created_at < at - keep))
                stored = s.scalar(select(ApiIdempotency).where(ApiIdempotency.client_id == write.client.id,
                                                               ApiIdempotency.key == write.key))
                if stored is not None:
                    s.commit()
                    if stored.request_hash != write.request_hash:
                        raise ApiError("idempotency_conflict")
                    write.request.state.replayed = True
                    return JSONResponse(json.loads(stored.response), status_code=stored.status,
                                        headers={"Idempotent-Replayed": "true"})
                status, answer, changed = change(s)
                body = answer.model_dump(mode="json", by_alias=True)
                s.add(ApiIdempotency(client_id=write.client.id, key=write.key, request_hash=write.request_hash,
                                     status=status, response=json.dumps(body, ensure_ascii=False), created_at=at))
                s.add(_audit_row(write.request.scope, write.client, status, at))
                try:
                    s.commit()
                except IntegrityError:  # the same key at the same moment: answer what that request answered
                    s.rollback()
                    continue
            write.request.state.audited = True
            if kind and changed:
                _notify(kind, ref)
            return JSONResponse(body, status_code=status)
        raise RuntimeError("idempotency record neither stored nor found")

    def _notify(kind: str, ref: str) -> None:
        if on_update is None:
            return
        try:
            on_update(kind, ref)
        except Exception:  # noqa: BLE001 - the change is committed; telling the citizen is best effort
            log.exception("on_update(%s) failed", kind)

    def _audit_row(scope: Scope, client: ApiClientView, status: int, at: dt.datetime) -> ApiAudit:
        key = dict(scope["headers"]).get(b"idempotency-key", b"").decode("latin-1")
        state = scope.get("state", {})
        return ApiAudit(client_id=client.id, at=at, method=scope["method"][:8], path=scope["path"][:200],
                        status=status, idempotency_key=key if 0 < len(key) <= 64 else None,
                        replayed=bool(state.get("replayed")))

    def _write_audit(scope: Scope, status: int) -> None:
        with services.sessions() as s:
            s.add(_audit_row(scope, scope["state"]["client"], status, now()))
            s.commit()

    async def audit(scope: Scope, status: int) -> None:
        state = scope.get("state", {})
        if state.get("client") is not None and not state.get("audited"):
            await run_in_threadpool(_write_audit, scope, status)

    app = FastAPI(title="菏泽市民政务助手 · 部门开放接口 (Heze departments' open API)", version="1.0.0",
                  description=DESCRIPTION, openapi_url="/openapi.json", docs_url=None, redoc_url=None,
                  servers=[{"url": PREFIX}], root_path_in_servers=False)
    app.add_middleware(_Guard, audit=audit)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(tuple(e.get("loc", ())) == ("header", "Idempotency-Key") and e.get("type") == "missing" for e in errors):
            return _error("idempotency_key_missing")
        first = errors[0] if errors else {}
        return _error("invalid_request", f"{_location(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "invalid_request")
        return _error(code, headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("open API request failed: %s %s", request.method, request.scope.get("path"))
        return _error("internal_error")

    @app.post("/applications/{number}/steps", status_code=201, response_model=ApplicationOut,
              responses=_errors(*WRITE_ERRORS, "other_department", "not_found", "progress_elsewhere"),
              tags=["applications"],
              summary="Add a progress step to an application (applications:write)")
    def add_step(number: AppNumber, step: StepIn, write: Write = Depends(writer("applications:write"))) -> JSONResponse:
        if settings.applications_backend != "sql":
            raise ApiError("progress_elsewhere")
        return run(write, lambda s: _add_step(s, number, step, write.client.department, now()), "application", number)

    @app.patch("/tickets/{number}", response_model=TicketOut, tags=["tickets"],
               responses=_errors(*WRITE_ERRORS, "other_department", "not_found", "invalid_transition"),
               summary="Change a ticket's status, reply to it, or both (tickets:write)")
    def patch_ticket(number: TicketNumber, patch: TicketPatch,
                     write: Write = Depends(writer("tickets:write"))) -> JSONResponse:
        return run(write, lambda s: _patch_ticket(s, number, patch, write.client, now()), "ticket", number)

    @app.put("/guides/{slug}", response_model=GuideOut, status_code=200, tags=["guides"],
             responses={201: {"model": GuideOut, "description": "published for the first time"},
                        **_errors(*WRITE_ERRORS, "other_department", "slug_taken")},
             summary="Publish or update one of the department's service guides (guides:write)")
    def put_guide(slug: Slug, guide: GuideIn, write: Write = Depends(writer("guides:write"))) -> JSONResponse:
        if guide.department != write.client.department:
            raise ApiError("other_department", "a guide's department must be the API key's department")
        try:
            topic = guide_topic(slug=slug, title=guide.title, department=guide.department, aliases=guide.aliases,
                                source=guide.source, sections=guide.sections.by_name(),
                                updated=now().astimezone(CHINA).date())
        except GuideInvalid as exc:
            raise ApiError("invalid_request", str(exc)) from None

        def publish(s: Session) -> tuple[int, BaseModel, bool]:
            try:
                done = guides.publish(topic)
            except SlugTaken:
                raise ApiError("slug_taken") from None
            url = f"{settings.public_base_url.rstrip('/')}/guide/{slug}"
            return (201 if done.created else 200, GuideOut(slug=slug, title=topic.title, department=topic.department,
                                                           updated=dt.date.fromisoformat(topic.updated), url=url,
                                                           replaces_builtin=done.replaces_builtin), True)

        return run(write, publish, None, slug)

    @app.get("/kpis", response_model=KpisOut, responses=_errors(*READ_ERRORS), tags=["kpis"],
             summary="Aggregate figures for a date range (kpis:read)")
    def read_kpis(start: FromDay, end: ToDay, department: KpiDepartment = None,
                  client: ApiClientView = Depends(caller("kpis:read"))) -> KpisOut:
        if not (dt.date(2000, 1, 1) <= start <= end <= dt.date(2100, 12, 31)) or (end - start).days >= MAX_KPI_DAYS:
            raise ApiError("invalid_request", f"need 2000-01-01 <= from <= to <= 2100-12-31, at most {MAX_KPI_DAYS} days")
        figures = kpis(services.sessions, start, end, department, now().astimezone(CHINA).date())
        return KpisOut.model_validate({"from": start, "to": end, "department": department, "min_group_size": MIN_GROUP,
                                       **{name: f.as_json() for name, f in figures.items()}})

    app.openapi = lambda: _document(app)  # type: ignore[method-assign]
    return app


def _aware(at: dt.datetime) -> dt.datetime:
    """A stored time with its zone (SQLite returns them without: UTC)."""
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def _add_step(s: Session, number: str, body: StepIn, department: str, now: dt.datetime) -> tuple[int, BaseModel, bool]:
    app = s.scalar(select(Application).options(selectinload(Application.steps))
                   .where(Application.number == number).with_for_update())
    if app is None:
        raise ApiError("not_found", "no application with this number")
    if not belongs_to(app, department):
        raise ApiError("other_department", "this application is another department's")
    at = body.at or now
    if at.tzinfo is None:
        raise ApiError("invalid_request", "at: give the time with its offset, e.g. 2026-12-01T09:30:00+08:00")
    if not EARLIEST <= at <= now + dt.timedelta(days=1):
        raise ApiError("invalid_request", "at: not before 2000 nor more than a day ahead")
    if body.expected_date is not None and not dt.date(2000, 1, 1) <= body.expected_date <= dt.date(2100, 12, 31):
        raise ApiError("invalid_request", "expected_date: between 2000-01-01 and 2100-12-31")
    s.add(ApplicationStep(application_id=app.id, step=body.step, result=body.result, at=at.astimezone(dt.timezone.utc)))
    app.current_step = body.current_step or body.step
    if body.status is not None:
        app.status = body.status
    if "expected_date" in body.model_fields_set:
        app.expected_date = body.expected_date
    s.flush()
    s.refresh(app, ["steps"])
    steps = sorted(app.steps, key=lambda st: _aware(st.at))
    return 201, ApplicationOut(number=app.number, service_name=app.service_name, status=app.status,
                               current_step=app.current_step, expected_date=app.expected_date, office=app.office,
                               steps=[StepOut(step=st.step, result=st.result, at=_aware(st.at)) for st in steps]), True


def _patch_ticket(s: Session, number: str, patch: TicketPatch, client: ApiClientView,
                  now: dt.datetime) -> tuple[int, BaseModel, bool]:
    ticket = s.scalar(select(FeedbackTicket).where(FeedbackTicket.number == number).with_for_update())
    if ticket is None:
        raise ApiError("not_found", "no ticket with this number")
    if ticket.department != ticket_department(client.department):
        raise ApiError("other_department", "this ticket is another department's")
    status = patch.status or ticket.status
    if status != ticket.status and status not in TRANSITIONS[ticket.status]:
        raise ApiError("invalid_transition", f"a {ticket.status} ticket cannot become {status}")
    if ticket.status == "closed" and patch.reply is not None:
        raise ApiError("invalid_transition", "a closed ticket takes no reply")
    changed = status != ticket.status or (patch.reply is not None and patch.reply != ticket.reply)
    if changed:
        ticket.status = status
        if patch.reply is not None:
            ticket.reply = patch.reply
        ticket.updated_at = now
    return 200, TicketOut(number=ticket.number, status=ticket.status, department=ticket.department,  # type: ignore[arg-type]
                          due_date=ticket.due_date, updated_at=_aware(ticket.updated_at)), changed


DESCRIPTION = """For departments' systems (部门业务系统): update application progress and tickets, publish
service guides, read aggregate figures. Ask the service centre for an API key
(`python -m services api-key create`); it belongs to one department and holds scopes
(""" + ", ".join(f"`{name}`: {what}" for name, what in SCOPES.items()) + """) and a limit of requests
per minute.

Send `Authorization: Bearer <key>`. Every POST, PUT and PATCH needs an `Idempotency-Key` (1-64
printable ASCII characters, e.g. a UUID): sent again with the same request within 24 hours it
answers what it answered the first time (header `Idempotent-Replayed: true`) and changes nothing;
with a different request it is refused (422). Only successful answers are kept, so a request that
failed may be sent again with the same key. Bodies are JSON, at most 64 KiB.

Errors are `{"error": {"code": "...", "message": "..."}}`; the codes are listed with each
operation. Every request made with a key is audited (key, method, path, status; never bodies).
A ticket or an application changed here is told to the citizen who asked to be told."""


def _document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, once: FastAPI's, with its validation-error schema removed (validation
    errors answer 400 with ``ErrorBody`` here)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                      description=app.description, routes=app.routes, servers=app.servers)
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = doc
    return doc


def document_text(settings: Settings, services: Services) -> str:
    """The committed form of the document (docs/openapi/departments-v1.json)."""
    return json.dumps(_document(create_open_api(settings, services)), ensure_ascii=False, indent=2) + "\n"
