"""Administration (admins only): users added, disabled, enabled, unlocked and reset; the audit log."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from console.auth import Staff
from console.web import RowId, bad_input, form_checked, page, role, rows_of
from services.models import AuditEntry, ConsoleUser

router = APIRouter(prefix="/admin")


@router.get("/users")
async def users(request: Request, who: Staff = Depends(role("admin"))) -> HTMLResponse:
    found = await rows_of(request, select(ConsoleUser).order_by(ConsoleUser.username))
    return page(request, "users.html", who, users=found)


@router.post("/users")
async def add_user(request: Request, who: Staff = Depends(role("admin")),
                   form: dict[str, str] = Depends(form_checked)) -> Response:
    try:
        await asyncio.to_thread(request.app.state.accounts.create_user, form.get("username", "").strip(),
                                form.get("password", ""), form.get("role", ""), who.username)
    except ValueError as exc:
        raise bad_input(str(exc)) from exc
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/users/{user_id}/{action}")
async def change_user(request: Request, user_id: RowId, action: str, who: Staff = Depends(role("admin")),
                      form: dict[str, str] = Depends(form_checked)) -> Response:
    if action not in ("disable", "enable", "unlock", "reset"):
        raise bad_input("没有这个操作。")
    if action == "disable" and user_id == who.id:
        raise bad_input("不能停用自己的账户。")
    try:
        await asyncio.to_thread(request.app.state.accounts.change_user, user_id, action, who.username,
                                form.get("password", ""))
    except ValueError as exc:
        raise bad_input(str(exc)) from exc
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/audit")
async def audit_log(request: Request, who: Staff = Depends(role("admin"))) -> HTMLResponse:
    entries = await rows_of(request, select(AuditEntry).order_by(AuditEntry.id.desc()).limit(500))
    return page(request, "audit.html", who, entries=entries)
