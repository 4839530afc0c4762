"""Reminder campaigns: the text checks, the audience count, scheduling once and atomically with its
audit entry, cancelling, the figures (statuses and opt-outs), and tests sent through the SMS outbox."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.campaigns import (Campaign, CampaignRefused, Campaigns, CampaignTest, campaign_id_of, check_text,
                                due_key, for_reminder, sms_preview)
from services.container import Services
from services.models import AuditEntry, SmsOutbox
from services.subscriptions import Reminder, SqlSubscriptions
from tests.fakes.clock import WallClock

CHINA = dt.timezone(dt.timedelta(hours=8))
MORNING = dt.datetime(2026, 12, 1, 10, 0, tzinfo=CHINA)
TEXT = "2027年度城乡居民医保开始缴费了"
DEADLINE = dt.date(2026, 12, 31)
OA = "web:oa:wx0123456789abcdef:oWeb000000000000000000001"


@pytest.fixture
def clock() -> WallClock:
    return WallClock(MORNING.astimezone(dt.timezone.utc))


@pytest.fixture
def subscriptions(services: Services, clock: WallClock) -> SqlSubscriptions:
    return SqlSubscriptions(services.sessions, services.sms.index, wechat_accounts=frozenset({"oa", "mp"}), now=clock)


@pytest.fixture
def campaigns(services: Services, clock: WallClock) -> Campaigns:
    return Campaigns(services.sessions, now=clock)


def subscribe(subs: SqlSubscriptions, sender: str, channel: str, topic: str = "medical_insurance",
              caller: str | None = None) -> int:
    outcome, view = subs.subscribe(sender_id=sender, channel=channel, topic=topic, caller=caller, wording="同意")
    assert outcome == "subscribed" and view is not None
    return view.id


def town(subs: SqlSubscriptions, clock: WallClock) -> dict[str, int]:
    """Medical-insurance subscribers on every channel, one of them cancelled, and a pension subscriber;
    the last two subscribed a day later than the rest."""
    ids = {"phone": subscribe(subs, "call-1", "phone", caller="13800000001"),
           "gone": subscribe(subs, "call-2", "phone", caller="13800000002"),
           "wechat": subscribe(subs, "oWx0000000000000000000000001", "wechat"),
           "webchat": subscribe(subs, OA, "webchat")}
    clock.advance(days=1)
    ids["mini"] = subscribe(subs, "oMp0000000000000000000000001", "miniprogram")
    ids["pension"] = subscribe(subs, "call-3", "phone", topic="pension_certification", caller="13800000003")
    assert subs.cancel("call-2") == 1
    return ids


def draft(campaigns: Campaigns, channel: str = "all", text: str = TEXT, **more: object) -> int:
    return campaigns.create(topic="medical_insurance", channel=channel, text=text, deadline=DEADLINE,
                            created_by="lead", **more)  # type: ignore[arg-type]


def reminders(services: Services, campaign_id: int) -> list[Reminder]:
    with services.sessions() as s:
        rows = list(s.scalars(select(Reminder).where(Reminder.due_key == due_key(campaign_id)).order_by(Reminder.id)))
        s.expunge_all()
        return rows


@pytest.mark.parametrize("text, channel, reason", [
    ("", "all", "请写推送的内容"),
    ("城乡居民医保开始缴费了请大家抓紧时间到村里办理一下", "all", "太长了：现在 25 个字，发微信服务通知最多 20 个字"),
    ("城乡居民医保开始缴费了，请大家抓紧时间，可以在微信里说交医保，也可以到村里办理。", "sms", "最多 35 个字"),
    ("医保缴费有疑问请打13800000001", "sms", "手机号、身份证号"),
    ("您的身份证370102199003071234要认证", "sms", "手机号、身份证号"),
    ("医保缴费请点 https://heze.example/pay", "sms", "链接"),
    ("医保缴费请上www.heze.gov.cn", "sms", "链接"),
    ("PAY YOUR INSURANCE NOW", "sms", "请用中文写"),
    ("医保缴费 URGENT", "sms", "大写字母或感叹号"),
    ("医保开始缴费了！！", "sms", "大写字母或感叹号"),
    ("兹定于明年一月起调整缴费标准", "sms", "“兹”是公文用语"),
    ("即日起开始缴纳医保", "sms", "“即日起”是公文用语"),
    ("届时请带好身份证", "sms", "“届时”"),
    ("务必于月底前缴清", "sms", "“务必于”"),
    ("医保缴费逾期不候", "sms", "“逾期不候”"),
    ("医保缴费相关事宜", "sms", "“相关事宜”"),
    ("特此通知医保开始缴费", "sms", "“特此”"),
])
def test_text_that_citizens_should_not_get_is_refused_with_a_reason(text: str, channel: str, reason: str) -> None:
    refusal = check_text(text, channel)
    assert refusal is not None and reason in refusal


def test_plain_text_passes_and_the_limits_follow_the_channel() -> None:
    assert check_text(TEXT, "all") is None
    assert check_text("医保开始缴费了，在微信里说“交医保”就能办，有问题打12345", "sms") is None  # 28 characters
    assert check_text("医保开始缴费了，在微信里说“交医保”就能办，有问题打12345", "wechat") is not None


def test_the_preview_counts_active_subscribers_of_the_topic_by_channel(
        services: Services, subscriptions: SqlSubscriptions, campaigns: Campaigns, clock: WallClock) -> None:
    town(subscriptions, clock)
    assert campaigns.preview("medical_insurance", "all") == 4  # the cancelled one and the pension one are not counted
    assert campaigns.preview("medical_insurance", "wechat") == 3  # official account, web chat, mini-program
    assert campaigns.preview("medical_insurance", "sms") == 1
    assert campaigns.preview("medical_insurance", "call") == 0  # nobody asked to be called
    calls = SqlSubscriptions(services.sessions, services.sms.index, now=clock, calls=True)
    assert calls.subscribe(sender_id="call-9", channel="phone", topic="medical_insurance", caller="05302345678",
                           wording="同意", by_call=True)[0] == "subscribed"  # a landline: called
    assert campaigns.preview("medical_insurance", "call") == 1
    assert campaigns.preview("medical_insurance", "sms") == 1  # a caller who asked for texts is never called
    assert campaigns.preview("medical_insurance", "all") == 5
    assert campaigns.preview("pension_certification", "all") == 1
    assert campaigns.preview("medical_insurance", "all", subscribed_before=dt.date(2026, 12, 2)) == 3  # not the mini-program
    assert campaigns.preview("medical_insurance", "all", subscribed_before=dt.date(2026, 12, 3)) == 5


def test_a_draft_is_refused_for_each_wrong_field(campaigns: Campaigns, clock: WallClock) -> None:
    def refused(match: str, **fields: object) -> None:
        values: dict[str, object] = {"topic": "medical_insurance", "channel": "all", "text": TEXT,
                                     "deadline": DEADLINE, "created_by": "lead"}
        values.update(fields)
        with pytest.raises(CampaignRefused, match=match):
            campaigns.create(**values)  # type: ignore[arg-type]

    refused("没有这个推送主题", topic="parking_fines")
    refused("没有这个发送渠道", channel="fax")
    refused("公文用语", text="届时请缴费")
    refused("发送时间已经过了", send_at=MORNING - dt.timedelta(hours=1))
    refused("一年以内", send_at=MORNING + dt.timedelta(days=400))
    refused("请填办理截止日期", deadline=None)
    refused("不能早于发送的那天", deadline=dt.date(2026, 11, 30))
    # a time the form showed a few minutes ago is "now"; the text is kept on one line
    campaign_id = draft(campaigns, text=f" {TEXT}\n", send_at=MORNING - dt.timedelta(minutes=5))
    shown = campaigns.get(campaign_id)
    assert shown is not None and shown.status == "draft" and shown.text == TEXT
    assert shown.scheduled_at == MORNING and shown.deadline_text == "12月31日"


def test_scheduling_queues_each_recipient_once_with_its_audit_entry(
        services: Services, subscriptions: SqlSubscriptions, campaigns: Campaigns, clock: WallClock) -> None:
    ids = town(subscriptions, clock)
    campaign_id = draft(campaigns, channel="wechat")

    def entry(s: Session, queued: int) -> None:
        s.add(AuditEntry(at=clock(), username="lead", action="campaign_schedule", detail=f"{queued} 人"))

    at = clock().astimezone(CHINA) + dt.timedelta(hours=2)
    assert campaigns.schedule(campaign_id, at, audit=entry) == 3
    rows = reminders(services, campaign_id)
    assert sorted(r.subscription_id for r in rows) == sorted([ids["wechat"], ids["webchat"], ids["mini"]])
    assert {(r.status, r.text, r.attempts) for r in rows} == {("queued", TEXT, 0)}
    assert {r.next_attempt_at.replace(tzinfo=dt.timezone.utc) if r.next_attempt_at.tzinfo is None else r.next_attempt_at
            for r in rows} == {at}
    shown = campaigns.get(campaign_id)
    assert shown is not None and shown.status == "scheduled" and shown.queued == 3 and shown.scheduled_at == at
    with pytest.raises(CampaignRefused, match="已经安排好了"):  # a second click queues nothing
        campaigns.schedule(campaign_id, at, audit=entry)
    assert len(reminders(services, campaign_id)) == 3
    with services.sessions() as s:
        assert list(s.scalars(select(AuditEntry.detail).where(AuditEntry.action == "campaign_schedule"))) == ["3 人"]


def test_scheduling_is_all_or_nothing_and_needs_recipients(
        services: Services, subscriptions: SqlSubscriptions, campaigns: Campaigns, clock: WallClock) -> None:
    town(subscriptions, clock)
    campaign_id = draft(campaigns)

    def broken(s: Session, queued: int) -> None:
        raise RuntimeError("the audit entry could not be written")

    with pytest.raises(RuntimeError):
        campaigns.schedule(campaign_id, audit=broken)
    shown = campaigns.get(campaign_id)
    assert shown is not None and shown.status == "draft" and reminders(services, campaign_id) == []
    assert campaigns.schedule(campaign_id) == 4  # and it can be scheduled afterwards
    nobody = campaigns.create(topic="medical_insurance", channel="all", text=TEXT, deadline=DEADLINE,
                              created_by="lead", subscribed_before=dt.date(2020, 1, 1))
    with pytest.raises(CampaignRefused, match="没有订阅人"):
        campaigns.schedule(nobody)
    assert campaigns.get(nobody).status == "draft"  # type: ignore[union-attr]
    with pytest.raises(CampaignRefused, match="没有这条推送"):
        campaigns.schedule(99999)


def test_cancelling_skips_what_is_still_queued(
        services: Services, subscriptions: SqlSubscriptions, campaigns: Campaigns, clock: WallClock) -> None:
    town(subscriptions, clock)
    campaign_id = draft(campaigns)
    assert campaigns.schedule(campaign_id) == 4
    first = reminders(services, campaign_id)[0]
    with services.sessions() as s:  # one went out before staff cancelled
        s.execute(update(Reminder).where(Reminder.id == first.id).values(status="sent", sent_at=clock()))
        s.commit()
    seen: list[int] = []
    assert campaigns.cancel(campaign_id, audit=lambda s, skipped: seen.append(skipped)) == 3
    assert seen == [3]
    assert sorted((r.status, r.result) for r in reminders(services, campaign_id)) == [
        ("sent", None), ("skipped", "已撤销"), ("skipped", "已撤销"), ("skipped", "已撤销")]
    assert campaigns.get(campaign_id).status == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(CampaignRefused, match="已经撤销了"):
        campaigns.cancel(campaign_id)
    with pytest.raises(CampaignRefused, match="已经撤销了"):
        campaigns.schedule(campaign_id)
    untouched = draft(campaigns)  # a draft is cancelled with nothing to skip
    assert campaigns.cancel(untouched) == 0 and reminders(services, untouched) == []


def test_figures_count_the_statuses_and_the_opt_outs_after_scheduling(
        services: Services, subscriptions: SqlSubscriptions, campaigns: Campaigns, clock: WallClock) -> None:
    town(subscriptions, clock)
    campaign_id = draft(campaigns)
    other = draft(campaigns, channel="sms")
    assert campaigns.figures([campaign_id])[campaign_id].recipients == 0
    clock.advance(minutes=1)
    assert campaigns.schedule(campaign_id) == 4
    rows = reminders(services, campaign_id)
    with services.sessions() as s:
        for row, status in zip(rows, ("sent", "sent", "refused", "failed")):
            s.execute(update(Reminder).where(Reminder.id == row.id).values(status=status))
        s.commit()
    clock.advance(minutes=5)
    assert subscriptions.cancel("call-1") == 1  # a recipient opts out after the campaign (TD, or "取消提醒")
    figures = campaigns.figures([campaign_id, other])
    mine = figures[campaign_id]
    assert (mine.recipients, mine.sent, mine.refused, mine.failed, mine.queued, mine.skipped, mine.opted_out) == (
        4, 2, 1, 1, 0, 0, 1)
    assert figures[other].recipients == 0 and figures[other].opted_out == 0  # a draft: nobody, whoever withdrew
    assert campaigns.figures([]) == {}
    # nothing is left queued and the time has passed: the campaign is sent
    assert campaigns.get(campaign_id).status == "sent"  # type: ignore[union-attr]
    with pytest.raises(CampaignRefused, match="已经发完了"):
        campaigns.cancel(campaign_id)
    assert [c.id for c in campaigns.listing()] == [other, campaign_id]


def test_a_campaign_scheduled_for_later_stays_scheduled_until_its_reminders_go(
        services: Services, subscriptions: SqlSubscriptions, campaigns: Campaigns, clock: WallClock) -> None:
    town(subscriptions, clock)
    campaign_id = draft(campaigns, channel="sms")
    assert campaigns.schedule(campaign_id, clock() + dt.timedelta(days=1)) == 1
    with services.sessions() as s:
        s.execute(update(Reminder).where(Reminder.due_key == due_key(campaign_id)).values(status="skipped"))
        s.commit()
    assert campaigns.get(campaign_id).status == "scheduled"  # type: ignore[union-attr]
    clock.advance(days=1)
    assert campaigns.get(campaign_id).status == "sent"  # type: ignore[union-attr]


def test_a_test_goes_through_the_sms_rules_to_the_outbox(services: Services, campaigns: Campaigns) -> None:
    campaign_id = draft(campaigns, channel="sms", text="医保开始缴费了，在微信里说“交医保”就能办。")
    for bad in ("", "1380000000", "23800000001", "abc"):
        with pytest.raises(CampaignRefused, match="11 位手机号"):
            campaigns.request_test(campaign_id, bad, "lead")
    seen: list[int] = []
    test_id = campaigns.request_test(campaign_id, "138 0000 0009", "lead", audit=lambda s, i: seen.append(i))
    assert seen == [test_id] and [t.status for t in campaigns.tests(campaign_id)] == ["queued"]
    assert campaigns.send_tests(services.sms) == 1
    assert campaigns.send_tests(services.sms) == 0  # sent once
    [test] = campaigns.tests(campaign_id)
    assert test.status == "sent" and test.phone == "13800000009" and test.sent_at is not None
    with services.sessions() as s:
        [sms] = s.scalars(select(SmsOutbox).where(SmsOutbox.kind == "reminder")).all()
        assert sms.phone == "13800000009"
        assert sms.text.endswith("您订阅的居民医保缴费提醒：医保开始缴费了，在微信里说“交医保”就能办，请在12月31日前办理。回复TD退订短信。")
        sealed = s.execute(select(func.count()).select_from(CampaignTest)
                           .where(CampaignTest.phone.like("%13800000009%"))).scalar()
    assert sealed == 0  # the number is sealed at rest
    shown = campaigns.get(campaign_id)
    assert shown is not None and sms_preview(shown) in sms.text
    # the per-number limit holds for staff too: a second test within the minute is not sent
    campaigns.request_test(campaign_id, "13800000009", "lead")
    campaigns.send_tests(services.sms)
    assert campaigns.tests(campaign_id)[0].status == "rate_limited"
    campaigns.cancel(campaign_id)
    with pytest.raises(CampaignRefused, match="已经撤销了"):
        campaigns.request_test(campaign_id, "13800000009", "lead")


def test_the_delivery_finds_the_campaign_behind_a_due_key(services: Services, campaigns: Campaigns) -> None:
    campaign_id = draft(campaigns, channel="call")
    assert campaign_id_of(due_key(campaign_id)) == campaign_id
    assert campaign_id_of("medical_insurance:2027") is None and campaign_id_of("campaign:x") is None
    with services.sessions() as s:
        found = for_reminder(s, due_key(campaign_id))
        assert found is not None and found.channel == "call" and found.deadline_text == "12月31日"
        assert for_reminder(s, "pension_certification:2026") is None
    campaigns.cancel(campaign_id)
    with services.sessions() as s:
        assert for_reminder(s, due_key(campaign_id)) is None
        assert s.get(Campaign, campaign_id) is not None
