"""Family proxy (家人代办): the grants, each one's trail of what was done under it, and ending one."""
from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from console.auth import Staff, audited
from console.web import RowId, bad_input, form_checked, page, ref_of, sessions_of, small_number, staff
from services.proxy import ACTION_NAMES, ENDED_BY, STATUSES, ProxyRecords
from textnorm.masking import mask

router = APIRouter()
SHOWN = 500


def records(request: Request) -> ProxyRecords:
    return ProxyRecords(sessions_of(request))


def actor_name(actor: str) -> str:
    """家人, 老人, 系统, or the staff member's name."""
    if actor.startswith("staff:"):
        return f"工作人员 {actor[len('staff:'):]}"
    return ENDED_BY.get(actor, actor)


@router.get("/proxies")
async def proxies(request: Request, who: Staff = Depends(staff), status: str = "", grant: str = "") -> HTMLResponse:
    chosen = small_number(grant, "grant", 2**31) if grant else None
    proxy = records(request)
    rows = await asyncio.to_thread(proxy.listing, status if status in STATUSES else None, SHOWN)
    trail = [] if chosen is None else await asyncio.to_thread(proxy.trail, chosen)
    return page(request, "proxies.html", who, rows=rows, status=status, chosen=chosen, trail=trail,
                statuses=STATUSES, ended_by=ENDED_BY, action_names=ACTION_NAMES, actor_name=actor_name,
                ref=lambda sender: ref_of(request, sender), limit=SHOWN)


@router.post("/proxies/{grant_id}/end")
async def end_grant(request: Request, grant_id: RowId, who: Staff = Depends(staff),
                    form: dict[str, str] = Depends(form_checked)) -> Response:
    reason = mask(" ".join(form.get("reason", "").split()))[:100]

    def entry(s: Session) -> None:
        audited(s, who.username, "proxy_end", None, f"代办 {grant_id}" + (f"：{reason}" if reason else ""))

    ended = await asyncio.to_thread(partial(records(request).end_by_staff, grant_id, who.username, reason=reason,
                                            also=entry))
    if not ended:
        raise bad_input("这条代办已经结束或过期了。")
    return RedirectResponse(f"/proxies?grant={grant_id}", status_code=303)
