"""Citizens with WeChat's human customer service, and handing them back to the assistant."""
from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from channels.wechat_store import Store, open_store
from console.auth import Staff, audit
from console.web import bad_input, beijing_time, form_checked, page, ref_of, sessions_of, settings_of, staff
from services.settings import ROOT

router = APIRouter()


def wechat_store(request: Request) -> Store:
    """The WeChat channels' store, opened once (opening creates its tables and checks its version)."""
    state = request.app.state
    if getattr(state, "wechat_store", None) is None:
        location = settings_of(request).wechat_claims
        if not location.startswith(("redis://", "rediss://")) and not Path(location).is_absolute():
            location = str(ROOT / location)
        state.wechat_store = open_store(location)
    return state.wechat_store


@router.get("/humans")
async def humans(request: Request, who: Staff = Depends(staff)) -> HTMLResponse:
    rows = await asyncio.to_thread(lambda: wechat_store(request).humans())
    return page(request, "humans.html", who, rows=rows, now=dt.datetime.now(dt.timezone.utc),
                ref=lambda openid: ref_of(request, openid),
                when=lambda t: beijing_time(dt.datetime.fromtimestamp(t, dt.timezone.utc)))


@router.post("/humans/{ref}/return")
async def hand_back(request: Request, ref: str, who: Staff = Depends(staff),
                    form: dict[str, str] = Depends(form_checked)) -> Response:
    def give_back() -> bool:
        store = wechat_store(request)
        human = next((h for h in store.humans() if ref_of(request, h.openid) == ref), None)
        return human is not None and store.hand_back(human.account, human.openid)

    if not await asyncio.to_thread(give_back):
        raise bad_input("这位群众已经不在人工客服了。")
    await asyncio.to_thread(audit, sessions_of(request), who.username, "hand_back", ref)
    return RedirectResponse("/humans", status_code=303)
