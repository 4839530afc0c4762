"""Reviewing: mark reviewed (and go on to the next unreviewed one), the inbox of unsure messages
labelled several at a time, bulk actions from the list, tags, notes, flags and corrections. Each
change and its audit row are written in one transaction."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import and_, or_, select

from console.auth import Staff, audited
from console.conversations import InboxItem, inbox, transcript
from console.web import (RowId, back, bad_input, conversation_of, form_checked, index_of, page, parse_entities,
                         ref_of, sessions_of, staff, sync)
from services.models import ConversationSummary, MessageAnnotation
from textnorm.masking import mask

router = APIRouter()


def update_summary(request: Request, sender: str, who: Staff, action: str, **changes: Any) -> None:
    with sessions_of(request)() as s:
        summary = s.get(ConversationSummary, sender)
        if summary is None:
            return
        for key, value in changes.items():
            setattr(summary, key, value)
        audited(s, who.username, action, ref_of(request, sender))
        s.commit()


def annotate(request: Request, sender: str, event_id: int, who: Staff, action: str, detail: str,
             **changes: Any) -> None:
    """A reviewer's flag or correction on one citizen message (refused for any other event)."""
    with sessions_of(request)() as s:
        ann = s.scalar(select(MessageAnnotation).where(MessageAnnotation.sender_id == sender,
                                                       MessageAnnotation.event_id == event_id))
        if ann is None:
            turn = next((t for t in transcript(request.app.state.tracker, s, sender, None, index_of(request).keyring)
                         if t.event_id == event_id and t.kind == "user"), None)
            if turn is None:
                raise bad_input("这条不是群众说的话，不能标注。")
            ann = MessageAnnotation(sender_id=sender, event_id=event_id, flagged=False, text=turn.text,
                                    username=who.username, updated_at=dt.datetime.now(dt.timezone.utc))
            s.add(ann)
        for key, value in changes.items():
            setattr(ann, key, value)
        ann.username, ann.updated_at = who.username, dt.datetime.now(dt.timezone.utc)
        audited(s, who.username, action, ref_of(request, sender), detail)
        s.commit()


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


@router.post("/conversations/{ref}/review")
async def review(request: Request, who: Staff = Depends(staff), sender: str = Depends(conversation_of),
                 form: dict[str, str] = Depends(form_checked)) -> Response:
    done = form.get("reviewed", "yes") == "yes"
    await asyncio.to_thread(update_summary, request, sender, who, "reviewed" if done else "unreviewed", reviewed=done)
    if form.get("next") == "yes":  # "已审核，看下一个"
        return RedirectResponse(f"/review/next?after={ref_of(request, sender)}", status_code=303)
    return back(request, sender)


@router.get("/review/next")
async def review_next(request: Request, who: Staff = Depends(staff), after: str = "") -> Response:
    await sync(request.app)
    found = await asyncio.to_thread(next_unreviewed, request, after[:32])
    return RedirectResponse(f"/conversations/{found}" if found else "/conversations?reviewed=no", status_code=303)


@router.get("/inbox")
async def inbox_page(request: Request, who: Staff = Depends(staff)) -> HTMLResponse:
    await sync(request.app)

    def load() -> list[InboxItem]:
        with sessions_of(request)() as s:
            return inbox(request.app.state.tracker, s, index_of(request).key, keyring=index_of(request).keyring)
    items = await asyncio.to_thread(load)
    return page(request, "inbox.html", who, items=items, intents=request.app.state.intents)


@router.post("/inbox")
async def inbox_label(request: Request, who: Staff = Depends(staff),
                      form: dict[str, str] = Depends(form_checked)) -> Response:
    picked = (await request.form()).getlist("pick")[:200]  # "ref:event_id" of each message ticked
    for pick in picked:
        ref, _, event = str(pick).partition(":")
        intent = form.get(f"intent-{ref}-{event}", "")
        if not event.isdigit() or len(event) > 18 or intent not in request.app.state.intents:
            raise bad_input("有一条消息没有选意图，或者意图不对。")
        sender = await conversation_of(request, ref)
        await asyncio.to_thread(annotate, request, sender, int(event), who, "correct", f"{event}: {intent}",
                                intent=intent, entities="[]")
    return RedirectResponse("/inbox", status_code=303)


@router.post("/conversations/bulk")
async def bulk(request: Request, who: Staff = Depends(staff), form: dict[str, str] = Depends(form_checked)) -> Response:
    refs = [str(r) for r in (await request.form()).getlist("ref")][:200]
    action, tag = form.get("action", ""), mask(form.get("tag", "").strip())[:20]
    if action not in ("reviewed", "tag") or (action == "tag" and (not tag or " " in tag)):
        raise bad_input("请选择操作；加标签时填一个标签（不含空格）。")

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


@router.post("/conversations/{ref}/tags")
async def tags(request: Request, who: Staff = Depends(staff), sender: str = Depends(conversation_of),
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
            audited(s, who.username, "tags", ref_of(request, sender),
                    f"+{mask(form.get('add', ''))} -{mask(form.get('remove', ''))}")
            s.commit()
    await asyncio.to_thread(change)
    return back(request, sender)


@router.post("/conversations/{ref}/note")
async def note(request: Request, who: Staff = Depends(staff), sender: str = Depends(conversation_of),
               form: dict[str, str] = Depends(form_checked)) -> Response:
    await asyncio.to_thread(update_summary, request, sender, who, "note", note=mask(form.get("note", "")[:2000]))
    return back(request, sender)


@router.post("/conversations/{ref}/messages/{event_id}/flag")
async def flag(request: Request, event_id: RowId, who: Staff = Depends(staff), sender: str = Depends(conversation_of),
               form: dict[str, str] = Depends(form_checked)) -> Response:
    on = form.get("flagged", "yes") == "yes"
    await asyncio.to_thread(annotate, request, sender, event_id, who, "flag" if on else "unflag", str(event_id),
                            flagged=on)
    return back(request, sender, f"#e{event_id}")


@router.post("/conversations/{ref}/messages/{event_id}/correct")
async def correct(request: Request, event_id: RowId, who: Staff = Depends(staff), sender: str = Depends(conversation_of),
                  form: dict[str, str] = Depends(form_checked)) -> Response:
    intent = form.get("intent", "")
    if intent not in request.app.state.intents:
        raise bad_input("没有这个意图。")
    entities = [{"entity": e["entity"], "value": mask(e["value"])} for e in parse_entities(form.get("entities", ""))]
    unknown = sorted({e["entity"] for e in entities} - request.app.state.entities)
    if unknown:
        raise bad_input(f"没有这个实体：{'、'.join(unknown)}。")
    await asyncio.to_thread(annotate, request, sender, event_id, who, "correct", f"{event_id}: {intent}",
                            intent=intent, entities=json.dumps(entities, ensure_ascii=False))
    return back(request, sender, f"#e{event_id}")
