"""Feedback tickets: the list by department, status and overdue; status changes and reassignment."""
from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from console.auth import Staff, audited
from console.web import DEPARTMENTS, RowId, bad_input, form_checked, not_found, page, ref_of, rows_of, sessions_of, staff
from services.models import FeedbackTicket
from services.tickets import STATUS_NAMES

router = APIRouter()


@router.get("/tickets")
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
                ref=lambda sender: ref_of(request, sender), status=status, overdue=overdue, today=dt.date.today())


def change_ticket(request: Request, ticket_id: int, who: Staff, action: str, detail: str, **changes: Any) -> None:
    with sessions_of(request)() as s:
        ticket = s.get(FeedbackTicket, ticket_id)
        if ticket is None:
            raise not_found("工单")
        for key, value in changes.items():
            setattr(ticket, key, value)
        ticket.updated_at = dt.datetime.now(dt.timezone.utc)
        audited(s, who.username, action, None, f"{ticket.number}: {detail}")
        s.commit()


@router.post("/tickets/{ticket_id}/status")
async def ticket_status(request: Request, ticket_id: RowId, who: Staff = Depends(staff),
                        form: dict[str, str] = Depends(form_checked)) -> Response:
    status = form.get("status", "")
    if status not in STATUS_NAMES:
        raise bad_input("没有这个状态。")
    await asyncio.to_thread(change_ticket, request, ticket_id, who, "ticket_status", status, status=status)
    return RedirectResponse("/tickets", status_code=303)


@router.post("/tickets/{ticket_id}/department")
async def ticket_department(request: Request, ticket_id: RowId, who: Staff = Depends(staff),
                            form: dict[str, str] = Depends(form_checked)) -> Response:
    department = form.get("department", "")
    if department not in DEPARTMENTS:
        raise bad_input("没有这个部门。")
    await asyncio.to_thread(change_ticket, request, ticket_id, who, "ticket_reassign", department,
                            department=department, status="assigned")
    return RedirectResponse("/tickets", status_code=303)
