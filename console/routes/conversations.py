"""Reading conversations: the filtered list, a transcript, the masked JSON API, a supervisor's
audited reveal of one message, a call's recording, and the exports (NLU data, a test story)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from sqlalchemy import select

from console.auth import Staff, audit
from console.conversations import (CHANNELS, FLAGS, Filters, list_conversations, phone_turns, transcript)
from console.exports import nlu_yaml, test_story
from console.standins import TooManyNumbers
from console.web import (ConsoleError, RowId, bad_number, conversation_of, form_checked, index_of, not_found, page, ref_of, role,
                         rows_of, sessions_of, settings_of, small_number, staff, sync)
from services.models import ConsoleUser, ConversationSummary, FeedbackTicket, MessageAnnotation

router = APIRouter()


def filters_of(request: Request) -> Filters:
    fields: dict[str, Any] = {k: v for k, v in request.query_params.items()
                              if k in Filters.__dataclass_fields__ and k != "page"}
    f = Filters(**fields)
    f.page = max(1, small_number(request.query_params.get("page", "1") or "1", "page"))
    if f.min_turns:
        small_number(f.min_turns, "min_turns", 10_000)
    if f.rating and f.rating != "low" and not (f.rating.isascii() and f.rating.isdigit() and len(f.rating) == 1):
        raise bad_number("rating")
    return f


async def listed(request: Request) -> tuple[Filters, list[ConversationSummary], int]:
    await sync(request.app)
    f = filters_of(request)

    def load() -> tuple[list[ConversationSummary], int]:
        with sessions_of(request)() as s:
            return list_conversations(s, f, settings_of(request).console_page_size)

    rows, total = await asyncio.to_thread(load)
    return f, rows, total


def conversation_context(request: Request, sender: str, reveal: int | None = None) -> dict[str, Any]:
    with sessions_of(request)() as s:
        summary = s.get(ConversationSummary, sender)
        turns = transcript(request.app.state.tracker, s, sender, reveal, index_of(request).keyring)
        call, calls = phone_turns(s, sender)
        tickets = list(s.scalars(select(FeedbackTicket).where(FeedbackTicket.sender_id == sender)
                                 .order_by(FeedbackTicket.id)))
    return {"sender": sender, "ref": ref_of(request, sender), "summary": summary, "turns": turns, "call": call,
            "phone_turns": calls, "tickets": tickets, "intents": request.app.state.intents, "revealed": reveal}


@router.get("/conversations")
async def conversations(request: Request, who: Staff = Depends(staff)) -> HTMLResponse:
    f, rows, total = await listed(request)
    pages = max(1, -(-total // settings_of(request).console_page_size))
    reviewers = await rows_of(request, select(ConsoleUser.username).order_by(ConsoleUser.username))
    return page(request, "conversations.html", who, rows=rows, total=total, f=f, pages=pages,
                query=urlencode(f.query()), channels=CHANNELS, flags=FLAGS, intents=request.app.state.intents,
                entity_names=sorted(request.app.state.entities), action_names=request.app.state.actions,
                reviewers=reviewers)


@router.get("/conversations/{ref}")
async def conversation(request: Request, who: Staff = Depends(staff),
                       sender: str = Depends(conversation_of)) -> HTMLResponse:
    await sync(request.app)
    ctx = await asyncio.to_thread(conversation_context, request, sender)
    if ctx["summary"] is None and not ctx["turns"]:
        raise not_found()
    return page(request, "conversation.html", who, **ctx)


@router.post("/conversations/{ref}/messages/{event_id}/reveal")
async def reveal(request: Request, event_id: RowId, who: Staff = Depends(role("supervisor")),
                 sender: str = Depends(conversation_of),
                 form: dict[str, str] = Depends(form_checked)) -> HTMLResponse:
    await asyncio.to_thread(audit, sessions_of(request), who.username, "reveal", ref_of(request, sender), str(event_id))
    ctx = await asyncio.to_thread(conversation_context, request, sender, event_id)
    return page(request, "conversation.html", who, **ctx)


@router.get("/conversations/{ref}/recording")
async def recording(request: Request, who: Staff = Depends(staff),
                    sender: str = Depends(conversation_of)) -> Response:
    def load() -> Any:
        with sessions_of(request)() as s:
            return phone_turns(s, sender)[0]  # only the call row, not the whole transcript
    call = await asyncio.to_thread(load)
    path = Path(call.recording) if call is not None and call.recording else None
    if path is None or not path.is_file():
        raise not_found("录音")
    await asyncio.to_thread(audit, sessions_of(request), who.username, "listen", ref_of(request, sender))
    return FileResponse(path, media_type="audio/wav")


# ---- exports ------------------------------------------------------------------------------

@router.get("/conversations/{ref}/story.yml")
async def story(request: Request, who: Staff = Depends(staff),
                sender: str = Depends(conversation_of)) -> PlainTextResponse:
    ctx = await asyncio.to_thread(conversation_context, request, sender)
    if any(t.kind == "unreadable" for t in ctx["turns"]):
        raise ConsoleError(409, "这个对话有记录无法解密（密钥不对或已删除），不能导出。")
    try:
        text = await asyncio.to_thread(test_story, ctx["ref"], ctx["turns"])
    except TooManyNumbers as exc:
        raise ConsoleError(409, f"这个对话里的号码太多，无法导出：{exc}") from exc
    await asyncio.to_thread(audit, sessions_of(request), who.username, "export_story", ctx["ref"])
    return PlainTextResponse(text, media_type="text/yaml; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="test_story.yml"'})


@router.get("/exports/nlu.yml")
async def export_nlu(request: Request, who: Staff = Depends(staff)) -> PlainTextResponse:
    def load() -> str:
        with sessions_of(request)() as s:
            return nlu_yaml(s.scalars(select(MessageAnnotation).where(MessageAnnotation.intent.is_not(None))
                                      .order_by(MessageAnnotation.id)))
    text = await asyncio.to_thread(load)
    await asyncio.to_thread(audit, sessions_of(request), who.username, "export_nlu")
    return PlainTextResponse(text, media_type="text/yaml; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="corrections.yml"'})


# ---- JSON API (masked) ----------------------------------------------------------------------

@router.get("/api/conversations")
async def api_list(request: Request, who: Staff = Depends(staff)) -> dict[str, Any]:
    f, rows, total = await listed(request)
    return {"total": total, "page": f.page, "conversations": [
        {"id": r.ref, "channel": r.channel, "started_at": r.started_at.isoformat(), "turns": r.turns,
         "intents": r.intents.split(), "min_confidence": r.min_confidence, "rating": r.rating,
         "reviewed": r.reviewed, "tags": r.tags.split(), **{k: getattr(r, k) for k in FLAGS}} for r in rows]}


@router.get("/api/conversations/{ref}")
async def api_detail(request: Request, who: Staff = Depends(staff),
                     sender: str = Depends(conversation_of)) -> dict[str, Any]:
    ctx = await asyncio.to_thread(conversation_context, request, sender)
    return {"id": ctx["ref"], "turns": [
        {"event_id": t.event_id, "kind": t.kind, "at": t.at.isoformat(), "text": t.text, "intent": t.intent,
         "confidence": t.confidence, "entities": t.entities, **({"detail": t.detail} if t.detail else {})}
        for t in ctx["turns"]]}
