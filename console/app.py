"""The staff console (FastAPI + Jinja2, server-rendered, Chinese UI)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
from collections import Counter
from html import escape
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import yaml
from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import and_, create_engine, func, or_, select
from sqlalchemy.orm import sessionmaker

from channels.wechat_store import Store, open_store
from console import charts
from console.auth import ROLES, Accounts, LoginRefused, Staff, audit, audited, csrf_ok
from console.conversations import (CHANNELS, FLAGS, ConversationIndex, Filters, InboxItem, conversation_ref, inbox,
                                   list_conversations, phone_turns, ref_key, transcript)
from console.exports import NOT_LABELS, nlu_yaml, test_story
from console.labels import intent_label, outcome
from console.retention import purge
from console.settings import ConsoleSettings
from services import sealed
from services.db import make_engine, make_sessionmaker
from services.models import AuditEntry, ConsoleUser, ConversationSummary, FeedbackTicket, MessageAnnotation, Rating
from services.settings import ROOT
from textnorm.masking import mask
from services.tickets import CATEGORIES, FALLBACK_DEPARTMENT, ROUTES, STATUS_NAMES

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "heze_console"
LOGIN_CSRF_COOKIE = "heze_login_csrf"
DEPARTMENTS = [d for d, _ in ROUTES] + [FALLBACK_DEPARTMENT]
FLAG_NAMES = {"fallback": "没听懂", "handoff": "转人工", "late_reply": "微信超时回复", "silence_hangup": "电话无声挂断"}
CHANNEL_NAMES = {"wechat": "公众号", "miniprogram": "小程序", "phone": "电话", "rest": "网页/接口"}


def bad_request(message: str) -> HTMLResponse:
    return HTMLResponse(f"<h1>400</h1><p>{escape(message)}</p>", status_code=400)


class NotSignedIn(Exception):
    pass


RowId = Annotated[int, PathParam(ge=0, le=2**62)]  # a row id in a path: FastAPI answers 422 outside this


class BadNumber(Exception):
    """A number in a query or path out of any sensible range: 422, never a 500 from the database."""


# The console serves only its own pages, styles and SVG; nothing may frame it or run inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def small_number(value: str, name: str, limit: int = 1_000_000) -> int:
    """A query value that must be a whole number from 0 to ``limit``."""
    if not value.isascii() or not value.isdigit() or len(value) > 7 or int(value) > limit:
        raise BadNumber(name)
    return int(value)


class NotFound(Exception):
    """No conversation behind a pseudonym."""


async def conversation_of(request: Request, ref: str) -> str:
    """The sender id behind the ``{ref}`` of a conversation's URL; 404 when there is none."""
    index: ConversationIndex = request.app.state.index
    sender = await asyncio.to_thread(index.sender_of, ref)
    if sender is None:  # perhaps too new for the list: read the tracker store up to now, then look again
        await asyncio.to_thread(index.sync)
        sender = await asyncio.to_thread(index.sender_of, ref)
    if sender is None:
        raise NotFound()
    return str(sender)


class Forbidden(Exception):
    pass


BEIJING = dt.timezone(dt.timedelta(hours=8))


def beijing_time(value: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Times are stored in UTC (SQLite hands them back without a zone); staff read Beijing time."""
    if value is None:
        return ""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(BEIJING).strftime(fmt)


def domain_intents() -> list[str]:
    intents: set[str] = set()
    for path in (ROOT / "bot" / "domain").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        intents.update(i if isinstance(i, str) else next(iter(i)) for i in data.get("intents") or [])
    return sorted(intents - NOT_LABELS)


def domain_entities() -> set[str]:
    entities: set[str] = set()
    for path in (ROOT / "bot" / "domain").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        entities.update(e if isinstance(e, str) else next(iter(e)) for e in data.get("entities") or [])
    return entities


def domain_actions() -> list[str]:
    """The bot's actions and responses named in the domain, for the list's action filter."""
    actions: set[str] = set()
    for path in (ROOT / "bot" / "domain").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        actions.update(str(a) for a in data.get("actions") or [])
        actions.update(str(f) for f in data.get("forms") or {})
        actions.update(str(r) for r in data.get("responses") or {})
    return sorted(actions)


def parse_entities(text: str) -> list[dict[str, str]]:
    """'entity=value; entity=value' as typed by a reviewer -> Rasa entity dicts."""
    out = []
    for part in text.replace("；", ";").split(";"):
        if "=" in part:
            name, value = (x.strip() for x in part.split("=", 1))
            if name and value:
                out.append({"entity": name, "value": value})
    return out


def create_app(settings: ConsoleSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sealed.use(settings.keyring)  # tickets' and calls' personal fields (services/sealed.py)
        engine = make_engine(settings.heze_db_url)
        sessions = make_sessionmaker(engine)
        tracker = create_engine(settings.tracker_url, connect_args={"check_same_thread": False}
                                if settings.tracker_url.startswith("sqlite") else {}, hide_parameters=True)
        key = await asyncio.to_thread(ref_key, sessions, settings.console_pseudonym_key.get_secret_value())
        index = ConversationIndex(tracker, sessions, key, settings.keyring)
        await asyncio.to_thread(index.fill_refs)
        app.state.sessions, app.state.tracker, app.state.index = sessions, tracker, index
        app.state.accounts = Accounts(sessions, settings.console_max_failed_logins,
                                      dt.timedelta(minutes=settings.console_lockout_minutes),
                                      dt.timedelta(hours=settings.console_session_hours))
        app.state.intents = domain_intents()
        app.state.entities = domain_entities()
        app.state.actions = domain_actions()
        app.state.sync_lock = asyncio.Lock()

        async def keep_in_step() -> None:
            while True:
                await sync(app)
                await asyncio.sleep(3)

        async def purge_daily() -> None:
            while True:
                try:
                    await asyncio.to_thread(purge, tracker, sessions, settings.console_retention_days,
                                            None, index.keyring)
                except Exception:  # noqa: BLE001 - logged, tried again tomorrow
                    logger.exception("retention purge failed")
                await asyncio.sleep(24 * 3600)

        tasks = [asyncio.create_task(keep_in_step()), asyncio.create_task(purge_daily())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            tracker.dispose()
            engine.dispose()

    app = FastAPI(title="Heze console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):  # conversations are never kept by a browser or proxy
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(BadNumber)
    @app.exception_handler(OverflowError)
    async def bad_number(request: Request, exc: Exception) -> Response:
        name = str(exc) if isinstance(exc, BadNumber) else "number"
        message = f"{name} 不是一个合理的数字 / {name} is not a number in range"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=422)
        return HTMLResponse(f"<h1>422</h1><p>{escape(message)}</p>", status_code=422)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["mask"] = mask
    templates.env.filters["q"] = lambda v: quote(str(v), safe="")
    templates.env.filters["when"] = beijing_time
    templates.env.filters["intent"] = intent_label
    templates.env.filters["outcome"] = outcome
    templates.env.globals.update(FLAG_NAMES=FLAG_NAMES, CHANNEL_NAMES=CHANNEL_NAMES, STATUS_NAMES=STATUS_NAMES,
                                 CATEGORIES=CATEGORIES, ROLES=ROLES)

    async def sync(app_: FastAPI) -> None:
        if app_.state.sync_lock.locked():
            return
        async with app_.state.sync_lock:
            try:
                await asyncio.to_thread(app_.state.index.sync)
                app_.state.sync_failing = False
            except Exception as exc:  # noqa: BLE001 - the tracker store may not exist yet (Rasa creates it)
                if not getattr(app_.state, "sync_failing", False):
                    logger.warning("cannot read the tracker store yet (%s); will retry", type(exc).__name__)
                app_.state.sync_failing = True

    def sessions_of(request: Request) -> sessionmaker:
        return request.app.state.sessions

    async def staff(request: Request) -> Staff:
        found = await asyncio.to_thread(request.app.state.accounts.staff_for, request.cookies.get(COOKIE))
        if found is None:
            raise NotSignedIn()
        return found

    def role(minimum: str) -> Any:
        async def check(who: Staff = Depends(staff)) -> Staff:
            if not who.at_least(minimum):
                raise Forbidden()
            return who
        return check

    async def form_checked(request: Request, who: Staff = Depends(staff)) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not csrf_ok(who, form.get("csrf_token")):
            raise Forbidden()
        return form

    @app.exception_handler(NotFound)
    async def not_found(request: Request, _: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "no such conversation"}, status_code=404)
        return HTMLResponse("<h1>404</h1><p>没有这个对话。</p>", status_code=404)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _: NotSignedIn) -> Response:
        if request.method == "GET" and not request.url.path.startswith(("/api/", "/exports/")):
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
        return JSONResponse({"error": "sign in first"}, status_code=401)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _: Forbidden) -> Response:
        return HTMLResponse("<h1>403</h1><p>没有权限，或表单已过期，请返回后刷新页面再试。</p>", status_code=403)

    async def rows_of(request: Request, statement: Any) -> list[Any]:
        def load() -> list[Any]:
            with sessions_of(request)() as s:
                return list(s.scalars(statement))
        return await asyncio.to_thread(load)

    def page(request: Request, name: str, who: Staff | None, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"staff": who, **context})

    # ---- sign-in ---------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login")
    async def login_page(request: Request, next: str = "/") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        resp = page(request, "login.html", None, csrf=token, next=next if next.startswith("/") else "/")
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=settings.console_secure_cookies)
        return resp

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, form.get("csrf_token", "")):
            raise Forbidden()
        username, target = form.get("username", "").strip(), form.get("next", "/")
        try:
            token = await asyncio.to_thread(request.app.state.accounts.login, username, form.get("password", ""))
        except LoginRefused as exc:
            await asyncio.to_thread(audit, sessions_of(request), username[:64] or "?", "login_failed")
            fresh = secrets.token_urlsafe(24)
            resp = page(request, "login.html", None, csrf=fresh, next=target, error=str(exc))
            resp.status_code = 401
            resp.set_cookie(LOGIN_CSRF_COOKIE, fresh, httponly=True, samesite="strict",
                            secure=settings.console_secure_cookies)
            return resp
        await asyncio.to_thread(audit, sessions_of(request), username, "login")
        done = RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", status_code=303)
        done.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=settings.console_secure_cookies,
                        max_age=int(settings.console_session_hours * 3600))
        done.delete_cookie(LOGIN_CSRF_COOKIE)
        return done

    @app.post("/logout")
    async def logout(request: Request, who: Staff = Depends(staff), form: dict[str, str] = Depends(form_checked)) -> Response:
        await asyncio.to_thread(request.app.state.accounts.logout, request.cookies.get(COOKIE, ""))
        await asyncio.to_thread(audit, sessions_of(request), who.username, "logout")
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # ---- dashboard -------------------------------------------------------------------
    @app.get("/")
    async def dashboard(request: Request, who: Staff = Depends(staff), days: str = "14") -> HTMLResponse:
        days_n = max(1, min(small_number(days or "14", "days"), 90))
        await sync(request.app)
        data = await asyncio.to_thread(dashboard_data, sessions_of(request), days_n)
        return page(request, "dashboard.html", who, days=days_n, **data)

    # ---- conversations ---------------------------------------------------------------
    def filters_of(request: Request) -> Filters:
        fields: dict[str, Any] = {k: v for k, v in request.query_params.items()
                                  if k in Filters.__dataclass_fields__ and k != "page"}
        f = Filters(**fields)
        f.page = max(1, small_number(request.query_params.get("page", "1") or "1", "page"))
        if f.min_turns:
            small_number(f.min_turns, "min_turns", 10_000)
        if f.rating and f.rating != "low" and not (f.rating.isascii() and f.rating.isdigit() and len(f.rating) == 1):
            raise BadNumber("rating")
        return f

    async def listed(request: Request) -> tuple[Filters, list[ConversationSummary], int]:
        await sync(request.app)
        f = filters_of(request)

        def load() -> tuple[list[ConversationSummary], int]:
            with sessions_of(request)() as s:
                return list_conversations(s, f, settings.console_page_size)

        rows, total = await asyncio.to_thread(load)
        return f, rows, total

    @app.get("/conversations")
    async def conversations(request: Request, who: Staff = Depends(staff)) -> HTMLResponse:
        f, rows, total = await listed(request)
        pages = max(1, -(-total // settings.console_page_size))
        reviewers = await rows_of(request, select(ConsoleUser.username).order_by(ConsoleUser.username))
        return page(request, "conversations.html", who, rows=rows, total=total, f=f, pages=pages,
                    query=urlencode(f.query()), channels=CHANNELS, flags=FLAGS, intents=request.app.state.intents,
                    entity_names=sorted(request.app.state.entities), action_names=request.app.state.actions,
                    reviewers=reviewers)

    def conversation_context(request: Request, sender: str, reveal: int | None = None) -> dict[str, Any]:
        with sessions_of(request)() as s:
            summary = s.get(ConversationSummary, sender)
            turns = transcript(request.app.state.tracker, s, sender, reveal, request.app.state.index.keyring)
            call, calls = phone_turns(s, sender)
            tickets = list(s.scalars(select(FeedbackTicket).where(FeedbackTicket.sender_id == sender)
                                     .order_by(FeedbackTicket.id)))
        return {"sender": sender, "ref": ref_of(request, sender), "summary": summary, "turns": turns, "call": call,
                "phone_turns": calls, "tickets": tickets,
                "intents": request.app.state.intents, "revealed": reveal}

    @app.get("/conversations/{ref}")
    async def conversation(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of)) -> HTMLResponse:
        await sync(request.app)
        ctx = await asyncio.to_thread(conversation_context, request, sender)
        if ctx["summary"] is None and not ctx["turns"]:
            return HTMLResponse("<h1>404</h1><p>没有这个对话。</p>", status_code=404)
        return page(request, "conversation.html", who, **ctx)

    def ref_of(request: Request, sender: str) -> str:
        return conversation_ref(request.app.state.index.key, sender)

    def back(request: Request, sender: str, anchor: str = "") -> RedirectResponse:
        return RedirectResponse(f"/conversations/{ref_of(request, sender)}{anchor}", status_code=303)

    def update_summary(request: Request, sender: str, who: Staff, action: str, **changes: Any) -> None:
        with sessions_of(request)() as s:
            summary = s.get(ConversationSummary, sender)
            if summary is None:
                return
            for key, value in changes.items():
                setattr(summary, key, value)
            audited(s, who.username, action, ref_of(request, sender))
            s.commit()

    @app.post("/conversations/{ref}/review")
    async def review(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of),
                     form: dict[str, str] = Depends(form_checked)) -> Response:
        done = form.get("reviewed", "yes") == "yes"
        await asyncio.to_thread(update_summary, request, sender, who, "reviewed" if done else "unreviewed", reviewed=done)
        if form.get("next") == "yes":  # "已审核，看下一个"
            return RedirectResponse(f"/review/next?after={ref_of(request, sender)}", status_code=303)
        return back(request, sender)

    def next_unreviewed(request: Request, after: str) -> str | None:
        """The next conversation not yet reviewed, in the list's order (newest first), after ``after``."""
        c = ConversationSummary
        with sessions_of(request)() as s:
            q = select(c.ref).where(c.reviewed.is_(False)).order_by(c.last_at.desc(), c.sender_id)
            current = s.scalar(select(c).where(c.ref == after)) if after else None
            if current is not None:
                q = q.where(or_(c.last_at < current.last_at, and_(c.last_at == current.last_at,
                                                                   c.sender_id > current.sender_id)))
            return s.scalar(q.limit(1))

    @app.get("/inbox")
    async def inbox_page(request: Request, who: Staff = Depends(staff)) -> HTMLResponse:
        await sync(request.app)

        def load() -> list[InboxItem]:
            with sessions_of(request)() as s:
                return inbox(request.app.state.tracker, s, request.app.state.index.key,
                             keyring=request.app.state.index.keyring)
        items = await asyncio.to_thread(load)
        return page(request, "inbox.html", who, items=items, intents=request.app.state.intents)

    @app.post("/inbox")
    async def inbox_label(request: Request, who: Staff = Depends(staff),
                          form: dict[str, str] = Depends(form_checked)) -> Response:
        picked = (await request.form()).getlist("pick")[:200]  # "ref:event_id" of each message ticked
        for pick in picked:
            ref, _, event = str(pick).partition(":")
            intent = form.get(f"intent-{ref}-{event}", "")
            if not event.isdigit() or len(event) > 18 or intent not in request.app.state.intents:
                return bad_request("有一条消息没有选意图，或者意图不对。")
            sender = await conversation_of(request, ref)
            await asyncio.to_thread(annotate, request, sender, int(event), who, "correct", f"{event}: {intent}",
                                    intent=intent, entities="[]")
        return RedirectResponse("/inbox", status_code=303)

    @app.post("/conversations/bulk")
    async def bulk(request: Request, who: Staff = Depends(staff),
                   form: dict[str, str] = Depends(form_checked)) -> Response:
        refs = [str(r) for r in (await request.form()).getlist("ref")][:200]
        action, tag = form.get("action", ""), mask(form.get("tag", "").strip())[:20]
        if action not in ("reviewed", "tag") or (action == "tag" and (not tag or " " in tag)):
            return bad_request("请选择操作；加标签时填一个标签（不含空格）。")

        def change() -> None:
            with sessions_of(request)() as s:
                for summary in s.scalars(select(ConversationSummary).where(ConversationSummary.ref.in_(refs))):
                    if action == "reviewed":
                        summary.reviewed = True
                    elif f" {tag} " not in summary.tags:
                        summary.tags = summary.tags.rstrip() + f" {tag} "
                    audited(s, who.username, action if action == "reviewed" else "tags", summary.ref,
                            None if action == "reviewed" else f"+{tag}")
                s.commit()
        await asyncio.to_thread(change)
        back_to = form.get("back", "")
        return RedirectResponse("/conversations" + (f"?{back_to}" if back_to and "//" not in back_to else ""),
                                status_code=303)

    @app.get("/review/next")
    async def review_next(request: Request, who: Staff = Depends(staff), after: str = "") -> Response:
        await sync(request.app)
        found = await asyncio.to_thread(next_unreviewed, request, after[:32])
        return RedirectResponse(f"/conversations/{found}" if found else "/conversations?reviewed=no", status_code=303)

    @app.post("/conversations/{ref}/tags")
    async def tags(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of),
                   form: dict[str, str] = Depends(form_checked)) -> Response:
        def change() -> None:
            with sessions_of(request)() as s:
                summary = s.get(ConversationSummary, sender)
                if summary is None:
                    return
                current = [t for t in summary.tags.split() if t]
                for tag in mask(form.get("add", "")).replace("，", ",").replace(",", " ").split():
                    if tag not in current and len(tag) <= 20:
                        current.append(tag)
                current = [t for t in current if t != form.get("remove", "")]
                summary.tags = " " + " ".join(current) + " "
                audited(s, who.username, "tags", ref_of(request, sender), f"+{form.get('add', '')} -{form.get('remove', '')}")
                s.commit()
        await asyncio.to_thread(change)
        return back(request, sender)

    @app.post("/conversations/{ref}/note")
    async def note(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of),
                   form: dict[str, str] = Depends(form_checked)) -> Response:
        await asyncio.to_thread(update_summary, request, sender, who, "note", note=mask(form.get("note", "")[:2000]))
        return back(request, sender)

    def annotate(request: Request, sender: str, event_id: int, who: Staff, action: str, detail: str,
                 **changes: Any) -> None:
        with sessions_of(request)() as s:
            ann = s.scalar(select(MessageAnnotation).where(MessageAnnotation.sender_id == sender,
                                                           MessageAnnotation.event_id == event_id))
            if ann is None:
                turn = next((t for t in transcript(request.app.state.tracker, s, sender, None, request.app.state.index.keyring) if t.event_id == event_id
                             and t.kind == "user"), None)
                if turn is None:
                    raise Forbidden()
                ann = MessageAnnotation(sender_id=sender, event_id=event_id, flagged=False, text=turn.text,
                                        username=who.username, updated_at=dt.datetime.now(dt.timezone.utc))
                s.add(ann)
            for key, value in changes.items():
                setattr(ann, key, value)
            ann.username, ann.updated_at = who.username, dt.datetime.now(dt.timezone.utc)
            audited(s, who.username, action, ref_of(request, sender), detail)
            s.commit()

    @app.post("/conversations/{ref}/messages/{event_id}/flag")
    async def flag(request: Request, event_id: RowId, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of),
                   form: dict[str, str] = Depends(form_checked)) -> Response:
        on = form.get("flagged", "yes") == "yes"
        await asyncio.to_thread(annotate, request, sender, event_id, who, "flag" if on else "unflag", str(event_id),
                                flagged=on)
        return back(request, sender, f"#e{event_id}")

    @app.post("/conversations/{ref}/messages/{event_id}/correct")
    async def correct(request: Request, event_id: RowId, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of),
                      form: dict[str, str] = Depends(form_checked)) -> Response:
        intent = form.get("intent", "")
        if intent not in request.app.state.intents:
            return bad_request("没有这个意图。")
        entities = [{"entity": e["entity"], "value": mask(e["value"])} for e in parse_entities(form.get("entities", ""))]
        unknown = sorted({e["entity"] for e in entities} - request.app.state.entities)
        if unknown:
            return bad_request(f"没有这个实体：{'、'.join(unknown)}。")
        await asyncio.to_thread(annotate, request, sender, event_id, who, "correct", f"{event_id}: {intent}",
                                intent=intent, entities=json.dumps(entities, ensure_ascii=False))
        return back(request, sender, f"#e{event_id}")

    @app.post("/conversations/{ref}/messages/{event_id}/reveal")
    async def reveal(request: Request, event_id: RowId, who: Staff = Depends(role("supervisor")),
                   sender: str = Depends(conversation_of),
                     form: dict[str, str] = Depends(form_checked)) -> HTMLResponse:
        await asyncio.to_thread(audit, sessions_of(request), who.username, "reveal", ref_of(request, sender), str(event_id))
        ctx = await asyncio.to_thread(conversation_context, request, sender, event_id)
        resp = page(request, "conversation.html", who, **ctx)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/conversations/{ref}/story.yml")
    async def story(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of)) -> PlainTextResponse:
        ctx = await asyncio.to_thread(conversation_context, request, sender)
        await asyncio.to_thread(audit, sessions_of(request), who.username, "export_story", ctx["ref"])
        return PlainTextResponse(test_story(ctx["ref"], ctx["turns"]), media_type="text/yaml; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="test_story.yml"'})

    @app.get("/conversations/{ref}/recording")
    async def recording(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of)) -> Response:
        def load() -> Any:
            with sessions_of(request)() as s:
                return phone_turns(s, sender)[0]  # only the call row, not the whole transcript
        call = await asyncio.to_thread(load)
        path = Path(call.recording) if call is not None and call.recording else None
        if path is None or not path.is_file():
            return PlainTextResponse("没有录音", status_code=404)
        await asyncio.to_thread(audit, sessions_of(request), who.username, "listen", ref_of(request, sender))
        return FileResponse(path, media_type="audio/wav")

    @app.get("/exports/nlu.yml")
    async def export_nlu(request: Request, who: Staff = Depends(staff)) -> PlainTextResponse:
        def load() -> str:
            with sessions_of(request)() as s:
                return nlu_yaml(s.scalars(select(MessageAnnotation).where(MessageAnnotation.intent.is_not(None))
                                          .order_by(MessageAnnotation.id)))
        text = await asyncio.to_thread(load)
        await asyncio.to_thread(audit, sessions_of(request), who.username, "export_nlu")
        return PlainTextResponse(text, media_type="text/yaml; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="corrections.yml"'})

    # ---- JSON API (masked) ---------------------------------------------------------------
    @app.get("/api/conversations")
    async def api_list(request: Request, who: Staff = Depends(staff)) -> dict[str, Any]:
        f, rows, total = await listed(request)
        return {"total": total, "page": f.page, "conversations": [
            {"id": r.ref, "channel": r.channel, "started_at": r.started_at.isoformat(), "turns": r.turns,
             "intents": r.intents.split(), "min_confidence": r.min_confidence, "rating": r.rating,
             "reviewed": r.reviewed, "tags": r.tags.split(), **{k: getattr(r, k) for k in FLAGS}} for r in rows]}

    @app.get("/api/conversations/{ref}")
    async def api_detail(request: Request, who: Staff = Depends(staff),
                   sender: str = Depends(conversation_of)) -> dict[str, Any]:
        ctx = await asyncio.to_thread(conversation_context, request, sender)
        return {"id": ctx["ref"], "turns": [
            {"event_id": t.event_id, "kind": t.kind, "at": t.at.isoformat(), "text": t.text, "intent": t.intent,
             "confidence": t.confidence, "entities": t.entities, **({"detail": t.detail} if t.detail else {})}
            for t in ctx["turns"]]}

    # ---- tickets ------------------------------------------------------------------------
    @app.get("/tickets")
    async def tickets(request: Request, who: Staff = Depends(staff), department: str = "", status: str = "",
                      overdue: str = "") -> HTMLResponse:
        q = select(FeedbackTicket)
        if department:
            q = q.where(FeedbackTicket.department == department)
        if status in STATUS_NAMES:
            q = q.where(FeedbackTicket.status == status)
        if overdue == "yes":
            q = q.where(FeedbackTicket.due_date < dt.date.today(), FeedbackTicket.status.not_in(("resolved", "closed")))
        rows = await rows_of(request, q.order_by(FeedbackTicket.due_date).limit(500))
        return page(request, "tickets.html", who, rows=rows, departments=DEPARTMENTS, department=department,
                    ref=lambda sender: ref_of(request, sender),
                    status=status, overdue=overdue, today=dt.date.today())

    def change_ticket(request: Request, ticket_id: int, who: Staff, action: str, detail: str,
                      **changes: Any) -> str | None:
        with sessions_of(request)() as s:
            ticket = s.get(FeedbackTicket, ticket_id)
            if ticket is None:
                return None
            for key, value in changes.items():
                setattr(ticket, key, value)
            ticket.updated_at = dt.datetime.now(dt.timezone.utc)
            audited(s, who.username, action, None, f"{ticket.number}: {detail}")
            s.commit()
            return ticket.number

    @app.post("/tickets/{ticket_id}/status")
    async def ticket_status(request: Request, ticket_id: RowId, who: Staff = Depends(staff),
                            form: dict[str, str] = Depends(form_checked)) -> Response:
        status = form.get("status", "")
        if status not in STATUS_NAMES:
            return bad_request("没有这个状态。")
        await asyncio.to_thread(change_ticket, request, ticket_id, who, "ticket_status", status, status=status)
        return RedirectResponse("/tickets", status_code=303)

    @app.post("/tickets/{ticket_id}/department")
    async def ticket_department(request: Request, ticket_id: RowId, who: Staff = Depends(staff),
                                form: dict[str, str] = Depends(form_checked)) -> Response:
        department = form.get("department", "")
        if department not in DEPARTMENTS:
            return bad_request("没有这个部门。")
        await asyncio.to_thread(change_ticket, request, ticket_id, who, "ticket_reassign", department,
                                department=department, status="assigned")
        return RedirectResponse("/tickets", status_code=303)

    # ---- WeChat citizens with a human agent ----------------------------------------------
    def wechat_store() -> Store:
        """The WeChat channels' store, opened once (opening creates its tables and checks its version)."""
        if getattr(app.state, "wechat_store", None) is None:
            location = settings.wechat_claims
            if not location.startswith(("redis://", "rediss://")) and not Path(location).is_absolute():
                location = str(ROOT / location)
            app.state.wechat_store = open_store(location)
        return app.state.wechat_store

    @app.get("/humans")
    async def humans(request: Request, who: Staff = Depends(staff)) -> HTMLResponse:
        rows = await asyncio.to_thread(lambda: wechat_store().humans())
        return page(request, "humans.html", who, rows=rows, now=dt.datetime.now(dt.timezone.utc),
                    ref=lambda openid: ref_of(request, openid),
                    when=lambda t: beijing_time(dt.datetime.fromtimestamp(t, dt.timezone.utc)))

    @app.post("/humans/{ref}/return")
    async def hand_back(request: Request, ref: str, who: Staff = Depends(staff),
                        form: dict[str, str] = Depends(form_checked)) -> Response:
        def give_back() -> bool:
            store = wechat_store()
            human = next((h for h in store.humans() if ref_of(request, h.openid) == ref), None)
            return human is not None and store.hand_back(human.account, human.openid)

        if not await asyncio.to_thread(give_back):
            return bad_request("这位群众已经不在人工客服了。")
        await asyncio.to_thread(audit, sessions_of(request), who.username, "hand_back", ref)
        return RedirectResponse("/humans", status_code=303)

    # ---- administration -----------------------------------------------------------------
    @app.get("/admin/users")
    async def users(request: Request, who: Staff = Depends(role("admin"))) -> HTMLResponse:
        users = await rows_of(request, select(ConsoleUser).order_by(ConsoleUser.username))
        return page(request, "users.html", who, users=users)

    @app.post("/admin/users")
    async def add_user(request: Request, who: Staff = Depends(role("admin")),
                       form: dict[str, str] = Depends(form_checked)) -> Response:
        try:
            await asyncio.to_thread(request.app.state.accounts.create_user, form.get("username", "").strip(),
                                    form.get("password", ""), form.get("role", ""), who.username)
        except ValueError as exc:
            return bad_request(str(exc))
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{user_id}/{action}")
    async def change_user(request: Request, user_id: RowId, action: str, who: Staff = Depends(role("admin")),
                          form: dict[str, str] = Depends(form_checked)) -> Response:
        if action not in ("disable", "enable", "unlock", "reset"):
            return bad_request("没有这个操作。")
        if action == "disable" and user_id == who.id:
            return bad_request("不能停用自己的账户。")
        try:
            await asyncio.to_thread(request.app.state.accounts.change_user, user_id, action, who.username,
                                    form.get("password", ""))
        except ValueError as exc:
            return bad_request(str(exc))
        return RedirectResponse("/admin/users", status_code=303)

    @app.get("/admin/audit")
    async def audit_log(request: Request, who: Staff = Depends(role("admin"))) -> HTMLResponse:
        entries = await rows_of(request, select(AuditEntry).order_by(AuditEntry.id.desc()).limit(500))
        return page(request, "audit.html", who, entries=entries)

    return app


def dashboard_data(sessions: sessionmaker, days: int) -> dict[str, Any]:
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    with sessions() as s:
        rows = s.execute(select(ConversationSummary.started_at, ConversationSummary.channel, ConversationSummary.handoff,
                                ConversationSummary.fallback, ConversationSummary.intents)
                         .where(ConversationSummary.started_at >= since)).all()
        ratings = s.execute(select(Rating.score, func.count()).where(Rating.created_at >= since)
                            .group_by(Rating.score)).all()
        due = s.execute(select(FeedbackTicket.status, FeedbackTicket.due_date, FeedbackTicket.updated_at)
                        .where(FeedbackTicket.due_date >= since.date(), FeedbackTicket.due_date <= dt.date.today())).all()
    tz = dt.timezone(dt.timedelta(hours=8))
    day_list = [(dt.datetime.now(tz).date() - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    series = {c: [0] * len(day_list) for c in CHANNELS}
    position = {d: i for i, d in enumerate(day_list)}
    intents: Counter[str] = Counter()
    per_day, handed, not_understood = [0] * len(day_list), [0] * len(day_list), [0] * len(day_list)
    for started, channel, handoff, fallback, names in rows:
        started = started if started.tzinfo else started.replace(tzinfo=dt.timezone.utc)
        day = started.astimezone(tz).date().isoformat()
        if day in position:
            per_day[position[day]] += 1
            handed[position[day]] += bool(handoff)
            not_understood[position[day]] += bool(fallback)
            if channel in series:
                series[channel][position[day]] += 1
        intents.update(n for n in names.split() if n not in ("greet", "nlu_fallback"))
    trend_flags = {"转人工的对话": "handoff", "没听懂的对话": "fallback"}
    n = len(rows)
    scored = sum(c for _, c in ratings)
    on_time = sum(1 for status, due_date, updated in due
                  if status in ("resolved", "closed") and (updated.date() if updated else due_date) <= due_date)
    return {
        "conversations": n,
        # Drawn at about the size they are shown (a full-width card; a third of it), so text stays readable.
        "per_day": charts.stacked_days(day_list, series, width=1100, height=260, names=CHANNEL_NAMES,
                                       link=lambda day, channel: "/conversations?" + urlencode(
                                           {"channel": channel, "date_from": day, "date_to": day})),
        "trend": charts.trend(day_list, {
            "转人工的对话": [h / t if t else None for h, t in zip(handed, per_day)],
            "没听懂的对话": [f / t if t else None for f, t in zip(not_understood, per_day)]},
            colours={"转人工的对话": "#d2691e", "没听懂的对话": "#b22222"},
            link=lambda day, name: "/conversations?" + urlencode(
                {"flag": trend_flags[name], "date_from": day, "date_to": day})),
        "containment": charts.gauge("自助办结率（未转人工）", (n - sum(1 for r in rows if r[2])) / n if n else None,
                                    "/conversations?flag=handoff"),
        "fallback": charts.gauge("没听懂的对话占比", sum(1 for r in rows if r[3]) / n if n else None,
                                 "/conversations?flag=fallback"),
        "satisfaction": charts.gauge("满意度（4-5 分占比）",
                                     sum(c for sc, c in ratings if sc >= 4) / scored if scored else None),
        "mean_rating": (sum(sc * c for sc, c in ratings) / scored) if scored else None,
        "ratings": charts.bar_chart([(f"{sc} 分", c) for sc, c in sorted(ratings, reverse=True)],
                                    links=[f"/conversations?rating={sc}" for sc, _ in sorted(ratings, reverse=True)],
                                    label="评分分布", width=380),
        "on_time": charts.gauge("工单按期办结率", on_time / len(due) if due else None),
        "top_intents": charts.bar_chart([(intent_label(name).split(" · ")[0], count)
                                         for name, count in intents.most_common(10)],
                                        links=[f"/conversations?intent={name}" for name, _ in intents.most_common(10)],
                                        label="最常见的意图", width=380),
    }
