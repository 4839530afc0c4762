"""Reminder campaigns (提醒推送; supervisors and admins): compose, preview the recipients, send a
test, schedule, cancel, and read the delivery and opt-out figures. Every change is audited in the
transaction that makes it (services/campaigns.py takes the audit entry as a callback)."""
from __future__ import annotations

import asyncio
import datetime as dt
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from console.auth import Staff, audited
from console.web import BEIJING, RowId, bad_input, form_checked, not_found, page, role, sessions_of
from services.campaigns import (CHANNELS, STATUSES, TEST_RESULTS, TEXT_LIMITS, CampaignRefused, Campaigns,
                                CampaignView, sms_preview)
from services.subscriptions import TOPICS, YEARLY_TOPICS
from textnorm.masking import mask

router = APIRouter()
SHOWN = 50
supervisor = role("supervisor")


def campaigns_of(request: Request) -> Campaigns:
    return Campaigns(sessions_of(request))


def form_time(value: str) -> dt.datetime | None:
    """A ``datetime-local`` field, in Beijing time; empty: now."""
    value = value.strip()
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=BEIJING)
    except ValueError:
        raise bad_input("发送时间的格式不对，请用日期时间选择框填写。") from None


def form_date(value: str, what: str) -> dt.date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise bad_input(f"{what}的格式不对，请用日期选择框填写。") from None


def local_input(when: dt.datetime) -> str:
    """A time as a ``datetime-local`` field shows it (Beijing time, to the minute)."""
    return when.astimezone(BEIJING).strftime("%Y-%m-%dT%H:%M")


def rule_text(c: CampaignView) -> str:
    """The audience in words, for the audit log and the page."""
    before = f"，{c.subscribed_before.isoformat()}之前订阅的" if c.subscribed_before else ""
    return f"{c.topic_name}，{CHANNELS[c.channel]}{before}"


async def refused_as_400(call: partial[int]) -> int:
    try:
        return await asyncio.to_thread(call)
    except CampaignRefused as exc:
        raise bad_input(str(exc)) from exc


@router.get("/campaigns")
async def campaigns(request: Request, who: Staff = Depends(supervisor)) -> HTMLResponse:
    service = campaigns_of(request)
    rows = await asyncio.to_thread(service.listing, SHOWN)
    figures = await asyncio.to_thread(service.figures, [c.id for c in rows])
    return page(request, "campaigns.html", who, rows=rows, figures=figures, topics={k: TOPICS[k] for k in YEARLY_TOPICS}, channels=CHANNELS,
                statuses=STATUSES, limits=TEXT_LIMITS, now=local_input(dt.datetime.now(BEIJING)), limit=SHOWN)


@router.post("/campaigns")
async def compose(request: Request, who: Staff = Depends(supervisor),
                  form: dict[str, str] = Depends(form_checked)) -> Response:
    topic, channel = form.get("topic", ""), form.get("channel", "")

    def entry(s: Session, campaign_id: int) -> None:
        audited(s, who.username, "campaign_create", None,
                f"推送 {campaign_id}：{TOPICS[topic].name}，{CHANNELS[channel]}")

    campaign_id = await refused_as_400(partial(
        campaigns_of(request).create, topic=topic, channel=channel, text=form.get("text", ""),
        deadline=form_date(form.get("deadline", ""), "办理截止日期"), send_at=form_time(form.get("send_at", "")),
        subscribed_before=form_date(form.get("subscribed_before", ""), "订阅日期"), created_by=who.username,
        audit=entry))
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)


async def campaign_or_404(request: Request, campaign_id: int) -> CampaignView:
    found = await asyncio.to_thread(campaigns_of(request).get, campaign_id)
    if found is None:
        raise not_found("推送")
    return found


@router.get("/campaigns/{campaign_id}")
async def campaign(request: Request, campaign_id: RowId, who: Staff = Depends(supervisor)) -> HTMLResponse:
    service = campaigns_of(request)
    shown = await campaign_or_404(request, campaign_id)
    recipients = None
    if shown.status == "draft":  # the count before scheduling: the rule applied to the subscriptions now
        recipients = await asyncio.to_thread(service.preview, shown.topic, shown.channel, shown.subscribed_before)
    figures = (await asyncio.to_thread(service.figures, [shown.id]))[shown.id]
    tests = await asyncio.to_thread(service.tests, shown.id)
    send_at = max(shown.scheduled_at, dt.datetime.now(dt.timezone.utc))
    return page(request, "campaign.html", who, c=shown, rule=rule_text(shown), recipients=recipients,
                figures=figures, tests=tests, sms=sms_preview(shown), statuses=STATUSES, results=TEST_RESULTS,
                send_at=local_input(send_at))


@router.post("/campaigns/{campaign_id}/test")
async def send_test(request: Request, campaign_id: RowId, who: Staff = Depends(supervisor),
                    form: dict[str, str] = Depends(form_checked)) -> Response:
    phone = form.get("phone", "")

    def entry(s: Session, test_id: int) -> None:
        audited(s, who.username, "campaign_test", None, f"推送 {campaign_id}：测试短信发往 {mask(phone)}")

    await refused_as_400(partial(campaigns_of(request).request_test, campaign_id, phone, who.username, audit=entry))
    return RedirectResponse(f"/campaigns/{campaign_id}#tests", status_code=303)


@router.post("/campaigns/{campaign_id}/schedule")
async def schedule(request: Request, campaign_id: RowId, who: Staff = Depends(supervisor),
                   form: dict[str, str] = Depends(form_checked)) -> Response:
    send_at = form_time(form.get("send_at", ""))

    def entry(s: Session, queued: int) -> None:
        when = "立即" if send_at is None else send_at.strftime("%Y-%m-%d %H:%M")
        audited(s, who.username, "campaign_schedule", None, f"推送 {campaign_id}：{queued} 人，{when}发送")

    await refused_as_400(partial(campaigns_of(request).schedule, campaign_id, send_at, audit=entry))
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)


@router.post("/campaigns/{campaign_id}/cancel")
async def cancel(request: Request, campaign_id: RowId, who: Staff = Depends(supervisor),
                 form: dict[str, str] = Depends(form_checked)) -> Response:
    def entry(s: Session, skipped: int) -> None:
        audited(s, who.username, "campaign_cancel", None, f"推送 {campaign_id}：撤销，{skipped} 条不再发送")

    await refused_as_400(partial(campaigns_of(request).cancel, campaign_id, audit=entry))
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)
