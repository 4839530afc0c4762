"""Signing in and out; the health check."""
from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.auth import LoginRefused, Staff, audit
from console.web import COOKIE, LOGIN_CSRF_COOKIE, forbidden, form_checked, page, sessions_of, settings_of, staff

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """Up; and whether the conversation index follows the event broker ("off": no broker configured)."""
    feed = getattr(request.app.state, "feed", None)
    return {"status": "ok", "event_feed": "off" if feed is None else "connected" if feed.connected else "reconnecting"}


def _login_form(request: Request, target: str, status_code: int = 200, error: str | None = None) -> HTMLResponse:
    """The login page with a fresh CSRF token in its form and in a cookie."""
    token = secrets.token_urlsafe(24)
    resp = page(request, "login.html", None, csrf=token, next=target, error=error, status_code=status_code)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                    secure=settings_of(request).console_secure_cookies)
    return resp


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_form(request, next if next.startswith("/") else "/")


@router.post("/login")
async def login(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, form.get("csrf_token", "")):
        raise forbidden()
    username, target = form.get("username", "").strip(), form.get("next", "/")
    try:
        token = await asyncio.to_thread(request.app.state.accounts.login, username, form.get("password", ""))
    except LoginRefused as exc:
        await asyncio.to_thread(audit, sessions_of(request), username[:64] or "?", "login_failed")
        return _login_form(request, target, 401, str(exc))
    await asyncio.to_thread(audit, sessions_of(request), username, "login")
    settings = settings_of(request)
    done = RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", status_code=303)
    done.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=settings.console_secure_cookies,
                    max_age=int(settings.console_session_hours * 3600))
    done.delete_cookie(LOGIN_CSRF_COOKIE)
    return done


@router.post("/logout")
async def logout(request: Request, who: Staff = Depends(staff), form: dict[str, str] = Depends(form_checked)) -> Response:
    await asyncio.to_thread(request.app.state.accounts.logout, request.cookies.get(COOKIE, ""))
    await asyncio.to_thread(audit, sessions_of(request), who.username, "logout")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp
