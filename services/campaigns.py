"""Reminder campaigns (提醒推送): staff write one message for the subscribers of a topic, see how many
it reaches, send themselves a test, schedule it, cancel it, and read what became of it.

A campaign reaches only citizens who subscribed to its topic (services/subscriptions.py) and whose
subscription is active, each on the channel they subscribed on. The channel filter narrows that:

- ``all``: every active subscriber of the topic;
- ``wechat``: those who subscribed in WeChat (official account, mini-program, or web chat with a
  WeChat identity), reached by WeChat's subscribe message;
- ``sms`` / ``call``: those who subscribed on the phone line, texted or called as each agreed (a
  caller who chose 打电话提醒, or called from a landline, is called; the others are texted). Nobody is
  reached in a way they did not agree to: a campaign never calls a citizen who asked for texts.

Scheduling writes one ``reminders`` row per recipient, due key ``campaign:<id>``, due at the send
time; the reminder scheduler delivers them like any other reminder (quiet hours, the per-citizen
limit, retries), so a campaign needs no sender of its own. The rows are written in the same
transaction as the status change and the staff member's audit entry, so a campaign is queued
completely or not at all, and only once.

The text goes into fixed wording: the SMS ``reminder`` template ("您订阅的${topic}：${what}，请在
${deadline}前办理。回复TD退订短信。", services/sms.py) and the WeChat subscribe message's fields
(topic, deadline, text). Hence its length limits: a WeChat ``thing`` field takes 20 characters
(WeChat's 订阅消息 parameter rules), an SMS template variable 35 (Alibaba Cloud's limit for a
variable of type 其他, ``services.sms.MAX_PARAM``). Longer text would be cut by the sender, so it is
refused here instead. A campaign has a deadline (办理截止日) because both wordings carry one.

A test message is queued here by the console (which holds no SMS credentials) and sent by the
services process (``send_tests``), through its ``SmsSender`` with the same template: what staff
receive is what a phone subscriber would.

Figures are SQL aggregates over the campaign's reminders and the withdrawals (``subscription_consents``
rows ``withdrawn``) of its recipients after it was scheduled: counts only, nothing personal."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (Date, DateTime, ForeignKey, Index, Integer, String, cast, distinct, exists, func, insert,
                        literal, select, update)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from services.models import Base
from services.sealed import Sealed
from services.sms import MAX_PARAM, SmsMessage, SmsSender
from services.subscriptions import TOPICS, YEARLY_TOPICS, Reminder, Subscription, SubscriptionConsent
from textnorm.ids import is_valid_mobile
from textnorm.masking import mask

CHINA = dt.timezone(dt.timedelta(hours=8))
BATCH = 5000  # recipients written per INSERT (memory stays flat with the number of subscribers)
KEY_PREFIX = "campaign:"
# A send time up to this much in the past is taken as "now": the form's default is the time the page
# was opened, and staff take a minute or two to write.
GRACE = dt.timedelta(minutes=15)
FURTHEST = dt.timedelta(days=366)

CHANNELS: dict[str, str] = {
    "all": "全部订阅人（按各自订阅的渠道）",
    "wechat": "只发微信订阅的（服务通知）",
    "sms": "只发电话里订了短信提醒的（短信）",
    "call": "只发电话里选了打电话提醒的（外呼电话）",
}
# The subscription channels each filter takes (services/subscriptions.py); None: every one.
SUBSCRIPTION_CHANNELS: dict[str, tuple[str, ...] | None] = {
    "all": None, "wechat": ("wechat", "miniprogram", "webchat"), "sms": ("phone",), "call": ("phone",)}
WECHAT_THING = 20  # a WeChat subscribe message's ``thing`` value: at most 20 characters
TEXT_LIMITS: dict[str, int] = {"all": WECHAT_THING, "wechat": WECHAT_THING, "sms": MAX_PARAM, "call": MAX_PARAM}
LIMIT_WHERE = {"all": "微信服务通知", "wechat": "微信服务通知", "sms": "短信", "call": "电话"}
STATUSES: dict[str, str] = {"draft": "草稿", "scheduled": "已安排", "sent": "已发完", "cancelled": "已撤销"}
TEST_RESULTS: dict[str, str] = {
    "queued": "等待发送", "sending": "发送中", "sent": "已发出", "opted_out": "这个号码退订了短信",
    "rate_limited": "这个号码刚收过短信，稍后再试", "failed": "没有发出去"}
# Words of official notices that citizens stumble on, with what to say instead (STYLE: plain Chinese).
OFFICIALESE: dict[str, str] = {
    "兹": "直接说事", "特此": "可以删掉", "届时": "可以说“到时候”", "务必于": "可以说“请在……前”",
    "逾期不候": "可以说“过了日子就办不了”", "即日起": "可以说“从今天起”", "相关事宜": "请说清楚要办什么",
    "予以": "可以删掉", "知悉": "可以删掉", "周知": "可以删掉", "广大群众": "可以说“您”",
}
_LINK = re.compile(r"https?://|www\.|[A-Za-z0-9-]+\.(?:com|cn|net|org|gov)\b", re.IGNORECASE)
_SHOUTING = re.compile(r"[A-Z]{3,}|[!！]{2,}")
_CHINESE = re.compile(r"[\u4e00-\u9fff]")

Audit = Callable[[Session, int], None]


class Campaign(Base):
    """One message to the subscribers of a topic, from draft to sent or cancelled."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(40))  # a TOPICS key
    channel: Mapped[str] = mapped_column(String(12))  # a CHANNELS key
    subscribed_before: Mapped[dt.date | None] = mapped_column(Date)  # China date; None: whenever
    text: Mapped[str] = mapped_column(String(60))
    deadline: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12), index=True)  # a STATUSES key
    scheduled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))  # when it goes out
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # when it was scheduled
    queued: Mapped[int] = mapped_column(Integer, default=0)  # recipients written then
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignTest(Base):
    """A test of a campaign to a staff member's mobile: queued by the console, sent by the services."""

    __tablename__ = "campaign_tests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    phone: Mapped[str] = mapped_column(Sealed("campaign_tests.phone"))
    status: Mapped[str] = mapped_column(String(12), index=True)  # queued | sending | a TEST_RESULTS outcome
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# Campaigns read their reminders by due key; the reminders table's own indexes lead with the subscription.
Index("ix_reminders_due_key", Reminder.due_key)


class CampaignRefused(ValueError):
    """What staff asked cannot be done; the message says why, in Chinese, for the console to show."""


@dataclass(frozen=True)
class CampaignView:
    id: int
    topic: str
    channel: str
    subscribed_before: dt.date | None
    text: str
    deadline: dt.date
    status: str
    scheduled_at: dt.datetime
    created_by: str
    created_at: dt.datetime
    queued_at: dt.datetime | None
    queued: int

    @property
    def due_key(self) -> str:
        return due_key(self.id)

    @property
    def topic_name(self) -> str:
        return TOPICS[self.topic].name if self.topic in TOPICS else self.topic

    @property
    def deadline_text(self) -> str:
        """As the SMS template and WeChat's ``time`` field carry it: 12月31日."""
        return f"{self.deadline.month}月{self.deadline.day}日"

    @property
    def what(self) -> str:
        """The text as it fits into the SMS wording ("…：${what}，请在…"): no closing punctuation."""
        return self.text.rstrip("。．.！!，,；;、 ")


@dataclass(frozen=True)
class Figures:
    recipients: int = 0
    queued: int = 0
    sent: int = 0
    refused: int = 0
    failed: int = 0
    skipped: int = 0
    opted_out: int = 0  # recipients who withdrew their subscription after the campaign was scheduled


@dataclass(frozen=True)
class CampaignTestView:
    id: int
    phone: str
    status: str
    requested_by: str
    requested_at: dt.datetime
    sent_at: dt.datetime | None


def due_key(campaign_id: int) -> str:
    return f"{KEY_PREFIX}{campaign_id}"


def campaign_id_of(key: str) -> int | None:
    """The campaign a reminder's due key belongs to, or None for an ordinary reminder."""
    rest = key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def check_text(text: str, channel: str) -> str | None:
    """Why ``text`` cannot go out on ``channel`` (a sentence for staff), or None when it can.

    Numbers are found by the one masking policy (textnorm/masking.py): whatever it would mask is
    refused, a landline included (the hotline's 12345 is not a personal number)."""
    if not text:
        return "请写推送的内容。"
    limit = TEXT_LIMITS.get(channel, WECHAT_THING)
    if len(text) > limit:
        return f"太长了：现在 {len(text)} 个字，发{LIMIT_WHERE.get(channel, '微信服务通知')}最多 {limit} 个字（含标点）。"
    if mask(text) != text:
        return "推送里不能有手机号、身份证号这样的号码。要留电话请写热线 12345。"
    if _LINK.search(text):
        return "推送里不能放网址链接，市民分不清真假。请写“在微信里说……”或“拨打12345”。"
    if not _CHINESE.search(text):
        return "请用中文写。"
    if _SHOUTING.search(text):
        return "不要用连串的大写字母或感叹号，平平常常地说就好。"
    for word, instead in OFFICIALESE.items():
        if word in text:
            return f"“{word}”是公文用语，市民不好懂，请换成大白话（{instead}）。"
    return None


def clean_text(text: str) -> str:
    """One line, single spaces: what is checked is what is sent."""
    return " ".join(text.split())


def audience(topic: str, channel: str, subscribed_before: dt.date | None) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a campaign's recipients: active subscriptions of the topic, on the
    channels of the filter, made before the day given (China time)."""
    clauses: list[ColumnElement[bool]] = [Subscription.topic == topic, Subscription.status == "active"]
    channels = SUBSCRIPTION_CHANNELS.get(channel)
    if channels is not None:
        clauses.append(Subscription.channel.in_(channels))
    if channel in ("sms", "call"):  # each reached only as they agreed: texted, or called
        clauses.append(Subscription.by_call.is_(channel == "call"))
    if subscribed_before is not None:
        start = dt.datetime.combine(subscribed_before, dt.time(), CHINA).astimezone(dt.timezone.utc)
        clauses.append(Subscription.created_at < start)
    return clauses


def sms_message(campaign: CampaignView) -> SmsMessage:
    """The campaign as an SMS: the ``reminder`` template, as a phone subscriber (and a test) gets it."""
    return SmsMessage("reminder", {"topic": campaign.topic_name, "what": campaign.what,
                                   "deadline": campaign.deadline_text})


def sms_preview(campaign: CampaignView) -> str:
    """The SMS's wording without the signature (the gateway's signature name is the services' setting)."""
    return sms_message(campaign).render("", "").removeprefix("【】")


def _campaign_key() -> ColumnElement[str]:
    """A campaign's due key in SQL, to join its reminders."""
    return literal(KEY_PREFIX, String) + cast(Campaign.id, String)


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite gives back naive UTC datetimes."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _view(c: Campaign) -> CampaignView:
    return CampaignView(c.id, c.topic, c.channel, c.subscribed_before, c.text, c.deadline, c.status,
                        _aware(c.scheduled_at), c.created_by, _aware(c.created_at),
                        _aware(c.queued_at) if c.queued_at else None, c.queued)


def _added(s: Session, row: Campaign | CampaignTest, audit: Audit | None) -> int:
    """A new row and its audit entry, committed together; its id."""
    s.add(row)
    s.flush()
    if audit is not None:
        audit(s, row.id)
    s.commit()
    return row.id


def _refusal(status: str) -> CampaignRefused:
    """Why a campaign in ``status`` cannot be scheduled, cancelled or tested again."""
    return CampaignRefused({"scheduled": "这条推送已经安排好了，不会重复发送。",
                            "sent": "这条推送已经发完了。",
                            "cancelled": "这条推送已经撤销了。"}.get(status, "这条推送现在不能这样操作。"))


class Campaigns:
    def __init__(self, sessions: sessionmaker,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self._sessions = sessions
        self._now = now

    def _utcnow(self) -> dt.datetime:
        """The clock in UTC: SQLite stores a datetime's wall time and drops its zone, so only UTC is stored."""
        return self._now().astimezone(dt.timezone.utc)

    # -- composing -------------------------------------------------------------------------

    def _send_time(self, at: dt.datetime | None, now: dt.datetime) -> dt.datetime:
        """When to send, in UTC."""
        if at is None:
            return now
        if at.tzinfo is None:
            raise ValueError("a send time carries its time zone")
        if at < now - GRACE:
            raise CampaignRefused("发送时间已经过了，请改成现在或以后的时间。")
        if at > now + FURTHEST:
            raise CampaignRefused("发送时间太远了，请定在一年以内。")
        return max(at, now).astimezone(dt.timezone.utc)

    def create(self, *, topic: str, channel: str, text: str, deadline: dt.date | None, created_by: str,
               send_at: dt.datetime | None = None, subscribed_before: dt.date | None = None,
               audit: Audit | None = None) -> int:
        """A draft; CampaignRefused with the reason when something is wrong. ``audit(session, id)``
        runs in the same transaction. Nothing is sent until ``schedule``."""
        if topic not in YEARLY_TOPICS:
            raise CampaignRefused("没有这个推送主题。")
        if channel not in CHANNELS:
            raise CampaignRefused("没有这个发送渠道。")
        text = clean_text(text)
        reason = check_text(text, channel)
        if reason:
            raise CampaignRefused(reason)
        now = self._utcnow()
        when = self._send_time(send_at, now)
        if deadline is None:
            raise CampaignRefused("请填办理截止日期，短信和微信通知里都要写“请在几月几日前办理”。")
        if deadline < when.astimezone(CHINA).date():
            raise CampaignRefused("办理截止日期不能早于发送的那天。")
        with self._sessions() as s:
            c = Campaign(topic=topic, channel=channel, subscribed_before=subscribed_before, text=text,
                         deadline=deadline, status="draft", scheduled_at=when, created_by=created_by,
                         created_at=now, queued=0)
            return _added(s, c, audit)

    def preview(self, topic: str, channel: str, subscribed_before: dt.date | None = None) -> int:
        """How many citizens the rule reaches now (cancelled subscriptions are not counted)."""
        with self._sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Subscription)
                                .where(*audience(topic, channel, subscribed_before))) or 0)

    # -- reading ---------------------------------------------------------------------------

    def _settle(self, s: Session) -> None:
        """A scheduled campaign whose time has come and that has nothing left queued is sent. The
        reminder scheduler knows nothing of campaigns, so this is noted when campaigns are read."""
        left = exists().where(Reminder.due_key == _campaign_key(), Reminder.status == "queued")
        s.execute(update(Campaign).where(Campaign.status == "scheduled", Campaign.scheduled_at <= self._utcnow(), ~left)
                  .values(status="sent").execution_options(synchronize_session=False))
        s.commit()

    def get(self, campaign_id: int) -> CampaignView | None:
        with self._sessions() as s:
            self._settle(s)
            c = s.get(Campaign, campaign_id)
            return _view(c) if c is not None else None

    def listing(self, limit: int = 50) -> list[CampaignView]:
        """Campaigns, newest first."""
        with self._sessions() as s:
            self._settle(s)
            return [_view(c) for c in s.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(limit))]

    def figures(self, campaign_ids: list[int]) -> dict[int, Figures]:
        """Each campaign's reminders by status and its recipients' withdrawals since it was scheduled."""
        keys = {due_key(i): i for i in campaign_ids}
        counts: dict[int, dict[str, int]] = {i: {} for i in campaign_ids}
        if not keys:
            return {}
        with self._sessions() as s:
            for key, status, n in s.execute(select(Reminder.due_key, Reminder.status, func.count())
                                            .where(Reminder.due_key.in_(keys)).group_by(Reminder.due_key, Reminder.status)):
                counts[keys[key]][status] = int(n)
            withdrawn = s.execute(
                select(Reminder.due_key, func.count(distinct(SubscriptionConsent.subscription_id)))
                .join(SubscriptionConsent, SubscriptionConsent.subscription_id == Reminder.subscription_id)
                .join(Campaign, Reminder.due_key == _campaign_key())
                .where(Reminder.due_key.in_(keys), SubscriptionConsent.action == "withdrawn",
                       SubscriptionConsent.at >= Campaign.queued_at)
                .group_by(Reminder.due_key)).all()
        opted = {keys[key]: int(n) for key, n in withdrawn}
        return {i: Figures(recipients=sum(c.values()), queued=c.get("queued", 0), sent=c.get("sent", 0),
                           refused=c.get("refused", 0), failed=c.get("failed", 0), skipped=c.get("skipped", 0),
                           opted_out=opted.get(i, 0)) for i, c in counts.items()}

    # -- scheduling and cancelling ---------------------------------------------------------

    def schedule(self, campaign_id: int, send_at: dt.datetime | None = None, *, audit: Audit | None = None) -> int:
        """Queue the campaign for its recipients as they are now, due at ``send_at`` (or the time the
        draft gave); returns how many were queued. Only a draft can be scheduled: the status changes
        with a conditional UPDATE, so two clicks (or two consoles) queue it once. ``audit(session,
        queued)`` runs in the same transaction as the rows."""
        now = self._utcnow()
        with self._sessions() as s:
            self._settle(s)
            c = s.get(Campaign, campaign_id)
            if c is None:
                raise CampaignRefused("没有这条推送。")
            if c.status != "draft":
                raise _refusal(c.status)
            when = self._send_time(send_at if send_at is not None else max(_aware(c.scheduled_at), now), now)
            if c.deadline < when.astimezone(CHINA).date():
                raise CampaignRefused("发送的那天已经过了办理截止日期，请撤销后重新写一条。")
            claimed = s.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "draft")
                                .values(status="scheduled", scheduled_at=when, queued_at=now)
                                .execution_options(synchronize_session=False)).rowcount
            if claimed != 1:
                s.rollback()
                raise _refusal("scheduled")
            queued = self._queue(s, _view(c), when)
            if queued == 0:
                s.rollback()
                raise CampaignRefused("按这个条件现在没有订阅人，不用发送。")
            s.execute(update(Campaign).where(Campaign.id == campaign_id).values(queued=queued)
                      .execution_options(synchronize_session=False))
            if audit is not None:
                audit(s, queued)
            s.commit()
            return queued

    @staticmethod
    def _queue(s: Session, c: CampaignView, when: dt.datetime) -> int:
        """One reminder row per recipient, written in batches by subscription id."""
        rule = audience(c.topic, c.channel, c.subscribed_before)
        last, count = 0, 0
        while True:
            ids = list(s.scalars(select(Subscription.id).where(*rule, Subscription.id > last)
                                 .order_by(Subscription.id).limit(BATCH)))
            if not ids:
                return count
            s.execute(insert(Reminder), [{"subscription_id": i, "due_key": c.due_key, "text": c.text,
                                          "status": "queued", "attempts": 0, "next_attempt_at": when} for i in ids])
            count += len(ids)
            last = ids[-1]

    def cancel(self, campaign_id: int, *, audit: Audit | None = None) -> int:
        """Stop a draft or scheduled campaign: what is still queued is skipped (result 已撤销); what
        went out stays counted. Returns how many were skipped; ``audit(session, skipped)`` runs in
        the same transaction."""
        with self._sessions() as s:
            self._settle(s)
            current = s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
            if current is None:
                raise CampaignRefused("没有这条推送。")
            stopped = s.execute(update(Campaign).where(Campaign.id == campaign_id,
                                                       Campaign.status.in_(("draft", "scheduled")))
                                .values(status="cancelled", cancelled_at=self._utcnow())
                                .execution_options(synchronize_session=False)).rowcount
            if stopped != 1:
                s.rollback()
                raise _refusal(current)
            skipped = s.execute(update(Reminder).where(Reminder.due_key == due_key(campaign_id),
                                                       Reminder.status == "queued")
                                .values(status="skipped", result="已撤销")
                                .execution_options(synchronize_session=False)).rowcount
            if audit is not None:
                audit(s, skipped)
            s.commit()
            return skipped

    # -- tests to staff ---------------------------------------------------------------------

    def request_test(self, campaign_id: int, phone: str, requested_by: str, *, audit: Audit | None = None) -> int:
        """Queue a test of a draft or scheduled campaign to ``phone`` (a staff member's mobile) for
        the services process; ``audit(session, test id)`` runs in the same transaction."""
        phone = re.sub(r"[\s\-－]", "", phone)
        if not is_valid_mobile(phone):
            raise CampaignRefused("请填一个 11 位手机号。")
        with self._sessions() as s:
            c = s.get(Campaign, campaign_id)
            if c is None:
                raise CampaignRefused("没有这条推送。")
            if c.status not in ("draft", "scheduled"):
                raise _refusal(c.status)
            test = CampaignTest(campaign_id=campaign_id, phone=phone, status="queued", requested_by=requested_by,
                                requested_at=self._utcnow())
            return _added(s, test, audit)

    def tests(self, campaign_id: int, limit: int = 20) -> list[CampaignTestView]:
        with self._sessions() as s:
            rows = s.scalars(select(CampaignTest).where(CampaignTest.campaign_id == campaign_id)
                             .order_by(CampaignTest.id.desc()).limit(limit))
            return [CampaignTestView(t.id, t.phone, t.status, t.requested_by, _aware(t.requested_at),
                             _aware(t.sent_at) if t.sent_at else None) for t in rows]

    def send_tests(self, sms: SmsSender, limit: int = 20) -> int:
        """Send the queued tests (the services process calls this; the console has no SMS gateway).
        Each is claimed with a conditional UPDATE first, so two processes never send one twice; the
        SMS rules (opt-outs, per-number limits) hold for staff numbers too. Returns how many were tried."""
        with self._sessions() as s:
            waiting = s.execute(select(CampaignTest.id, CampaignTest.phone, Campaign)
                                .join(Campaign, Campaign.id == CampaignTest.campaign_id)
                                .where(CampaignTest.status == "queued").order_by(CampaignTest.id).limit(limit)).all()
            todo = [(test_id, phone, _view(c)) for test_id, phone, c in waiting]
        tried = 0
        for test_id, phone, campaign in todo:
            with self._sessions() as s:
                claimed = s.execute(update(CampaignTest).where(CampaignTest.id == test_id, CampaignTest.status == "queued")
                                    .values(status="sending")).rowcount
                s.commit()
            if claimed != 1:
                continue
            outcome = sms.send(phone, sms_message(campaign))
            with self._sessions() as s:
                s.execute(update(CampaignTest).where(CampaignTest.id == test_id).values(
                    status="sent" if outcome in ("sent", "queued") else outcome,
                    sent_at=self._utcnow() if outcome in ("sent", "queued") else None))
                s.commit()
            tried += 1
        return tried


def for_reminder(s: Session, key: str) -> CampaignView | None:
    """The campaign behind a reminder's due key (for the delivery: its channel, deadline and wording),
    or None for an ordinary reminder or a campaign that was cancelled."""
    campaign_id = campaign_id_of(key)
    c = s.get(Campaign, campaign_id) if campaign_id is not None else None
    return _view(c) if c is not None and c.status != "cancelled" else None

