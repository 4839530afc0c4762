"""What every area of the console shares: the one error type and its handler, the dependencies
(who is signed in, their role, a checked form, the conversation behind a pseudonym), the page
renderer and small value checks. The routes live in ``console/routes/``, one module per area."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import yaml
from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import sessionmaker

from console.auth import ROLES, Staff, csrf_ok
from console.conversations import ConversationIndex, conversation_ref
from console.exports import NOT_LABELS
from console.labels import intent_label, outcome
from console.settings import ConsoleSettings
from services.settings import ROOT
from services.tickets import CATEGORIES, FALLBACK_DEPARTMENT, ROUTES, STATUS_NAMES
from textnorm.masking import mask
from textnorm.sealing import SealedValueError

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "heze_console"
LOGIN_CSRF_COOKIE = "heze_login_csrf"
DEPARTMENTS = [d for d, _ in ROUTES] + [FALLBACK_DEPARTMENT]
FLAG_NAMES = {"fallback": "没听懂", "handoff": "转人工", "late_reply": "微信超时回复", "silence_hangup": "电话无声挂断"}
CHANNEL_NAMES = {"wechat": "公众号", "miniprogram": "小程序", "phone": "电话", "webchat": "网页对话", "rest": "接口"}
BEIJING = dt.timezone(dt.timedelta(hours=8))
RowId = Annotated[int, PathParam(ge=0, le=2**62)]  # a row id in a path: FastAPI answers 422 outside this

# The console serves only its own pages, styles and SVG; nothing may frame it or run inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class ConsoleError(Exception):
    """Every refusal the console gives: an HTTP status and a sentence for staff. One handler
    (``answer_error``) shows it in the console's own page, or as ``{"detail": ...}`` JSON (FastAPI's
    key, as its own 422s) to the API and exports; a GET
    page asked for without a session is sent to the login page instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def not_signed_in() -> ConsoleError:
    return ConsoleError(401, "请先登录。")


def forbidden() -> ConsoleError:
    return ConsoleError(403, "没有权限，或表单已过期，请返回后刷新页面再试。")


def not_found(what: str = "对话") -> ConsoleError:
    return ConsoleError(404, f"没有这个{what}。")


def bad_input(message: str) -> ConsoleError:
    return ConsoleError(400, message)


def bad_number(name: str) -> ConsoleError:
    """A number in a query or path out of any sensible range: 422, never a 500 from the database."""
    return ConsoleError(422, f"{name} 不是一个合理的数字 / {name} is not a number in range")


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/exports/"))


async def answer_error(request: Request, exc: Exception) -> Response:
    """The one handler: ``ConsoleError`` (and an ``OverflowError`` from a number too large for the
    database) as a page in the console's frame, or as ``{"error": ...}`` JSON."""
    error = exc if isinstance(exc, ConsoleError) else bad_number("number")
    if error.status == 401 and request.method == "GET" and not wants_json(request):
        return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
    if wants_json(request):
        return JSONResponse({"detail": error.message}, status_code=error.status)  # FastAPI's own key
    return page(request, "error.html", None, status=error.status, message=error.message, status_code=error.status)


def small_number(value: str, name: str, limit: int = 1_000_000) -> int:
    """A query value that must be a whole number from 0 to ``limit``."""
    if not value.isascii() or not value.isdigit() or len(value) > 7 or int(value) > limit:
        raise bad_number(name)
    return int(value)


def beijing_time(value: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Times are stored in UTC (SQLite hands them back without a zone); staff read Beijing time."""
    if value is None:
        return ""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(BEIJING).strftime(fmt)


def _domain() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text(encoding="utf-8")) or {} for path in (ROOT / "bot" / "domain").glob("*.yml")]


def domain_intents() -> list[str]:
    intents: set[str] = set()
    for data in _domain():
        intents.update(i if isinstance(i, str) else next(iter(i)) for i in data.get("intents") or [])
    return sorted(intents - NOT_LABELS)


def domain_entities() -> set[str]:
    entities: set[str] = set()
    for data in _domain():
        entities.update(e if isinstance(e, str) else next(iter(e)) for e in data.get("entities") or [])
    return entities


def domain_actions() -> list[str]:
    """The bot's actions, forms and responses named in the domain, for the list's action filter."""
    actions: set[str] = set()
    for data in _domain():
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


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["mask"] = mask
templates.env.filters["q"] = lambda v: quote(str(v), safe="")
templates.env.filters["when"] = beijing_time
templates.env.filters["intent"] = intent_label
templates.env.filters["outcome"] = outcome
templates.env.globals.update(FLAG_NAMES=FLAG_NAMES, CHANNEL_NAMES=CHANNEL_NAMES, STATUS_NAMES=STATUS_NAMES,
                             CATEGORIES=CATEGORIES, ROLES=ROLES)


def page(request: Request, name: str, who: Staff | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"staff": who, **context}, status_code=status_code)


# ---- what a route depends on ---------------------------------------------------------------

def settings_of(request: Request) -> ConsoleSettings:
    return request.app.state.settings


def sessions_of(request: Request) -> sessionmaker:
    return request.app.state.sessions


def index_of(request: Request) -> ConversationIndex:
    return request.app.state.index


async def staff(request: Request) -> Staff:
    found = await asyncio.to_thread(request.app.state.accounts.staff_for, request.cookies.get(COOKIE))
    if found is None:
        raise not_signed_in()
    return found


def role(minimum: str) -> Any:
    async def check(who: Staff = Depends(staff)) -> Staff:
        if not who.at_least(minimum):
            raise forbidden()
        return who
    return check


async def form_checked(request: Request, who: Staff = Depends(staff)) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not csrf_ok(who, form.get("csrf_token")):
        raise forbidden()
    return form


async def conversation_of(request: Request, ref: str) -> str:
    """The sender id behind the ``{ref}`` of a conversation's URL; 404 when there is none."""
    index = index_of(request)
    sender = await asyncio.to_thread(index.sender_of, ref)
    if sender is None:  # perhaps too new for the list: read the tracker store up to now, then look again
        await asyncio.to_thread(index.sync)
        sender = await asyncio.to_thread(index.sender_of, ref)
    if sender is None:
        raise not_found()
    return str(sender)


async def rows_of(request: Request, statement: Any) -> list[Any]:
    def load() -> list[Any]:
        with sessions_of(request)() as s:
            return list(s.scalars(statement))
    return await asyncio.to_thread(load)


async def sync(app: FastAPI) -> None:
    """Bring the conversation index up to the tracker store (one reader at a time: a page that comes
    while the background sync or the event feed holds the index waits for it, then reads what is new,
    so it never shows an index older than the request)."""
    async with app.state.sync_lock:
        try:
            await asyncio.to_thread(app.state.index.sync)
            app.state.sync_failing = False
        except SealedValueError as exc:  # the index stops at that row rather than count it as empty
            if not getattr(app.state, "sync_failing", False):
                logger.error("a tracker-store row does not open with DATA_KEYS (%s); the list stops there", exc)
            app.state.sync_failing = True
        except Exception as exc:  # noqa: BLE001 - the tracker store may not exist yet (Rasa creates it)
            if not getattr(app.state, "sync_failing", False):
                logger.warning("cannot read the tracker store yet (%s); will retry", type(exc).__name__)
            app.state.sync_failing = True


def ref_of(request: Request, sender: str) -> str:
    return conversation_ref(index_of(request).key, sender)


def back(request: Request, sender: str, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/conversations/{ref_of(request, sender)}{anchor}", status_code=303)
