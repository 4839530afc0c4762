"""Reminder subscriptions (个性化政策推送) with consent: who asked to be reminded of what, on which channel,
when they agreed and to which words, and when they withdrew.

A subscription is a citizen (the Rasa sender id of the conversation where they asked) and a topic.
Nothing is sent without one; each subscription has a ``given`` consent row holding the exact words the
citizen agreed to, and cancelling adds a ``withdrawn`` row (PIPL: who, what, when, on which channel,
and the withdrawal). How a reminder reaches the citizen follows from the channel they asked on:

- ``phone``: an SMS to the caller's own mobile (the number is sealed, looked up by its keyed hash),
  or, for a caller who asked for it, a call from the assistant (``by_call``; services/calls.py). A
  caller is the same citizen on every call: their subscriptions are found by the number;
- ``wechat`` / ``miniprogram``: WeChat's subscribe message to the openid (the sender id);
- ``webchat``: the official account's (or mini-program's) subscribe message to the identity WeChat
  vouched for (``web:oa:<appid>:<openid>``); a web guest cannot be reached, so cannot subscribe.

The rules that decide when a topic is due, and the delivery, are services/reminders.py."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint, and_, false, func, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from services.models import Base
from services.sealed import Sealed
from services.sms import NumberIndex
from textnorm.ids import is_valid_mobile
from textnorm.masking import mask

SubscribeOutcome = Literal["subscribed", "already", "unreachable", "unknown_topic"]
WECHAT_CHANNELS = ("wechat", "miniprogram")


@dataclass(frozen=True)
class Topic:
    name: str  # as the citizen hears it: 居民医保缴费提醒
    describe: str  # what is sent and when, in the consent question
    text: str  # the reminder; {year} and {deadline} filled by services/reminders.py
    page: str  # where a WeChat reminder opens (the mini-program page or web chat path)
    act: str  # what "按1办理" on a reminder call sends to the assistant: the request, as a citizen says it
    # About one thing (the subscription's ``subject``): subscribed where that thing is answered, never
    # chosen by name nor campaigned for; ``name`` takes the subject ({subject}).
    per_subject: bool = False


TOPICS: dict[str, Topic] = {
    "medical_insurance": Topic(
        "居民医保缴费提醒", "每年9月1日城乡居民医保开始缴费时提醒您一次",
        "{year}年度城乡居民医保开始缴费了，请在{deadline}前缴清。说“交医保”就能办。", "/chat",
        '/pay_bill{"bill_type": "medical_insurance"}'),
    "pension_certification": Topic(
        "养老金资格认证提醒", "每年养老金领取资格认证开始时提醒您一次",
        "今年的养老金领取资格认证开始了，请在{deadline}前完成，逾期会暂停发放。说“养老金认证”看怎么办。", "/chat",
        "养老金资格认证怎么办"),
    # Offered after a citizen checked an application that is not finished (actions/progress.py); sent
    # when the department adds a step (services/updates.py), until the application is finished.
    "application_progress": Topic(
        "办件{subject}进度通知", "办件有新进展时告诉您，办结后自动停止",
        "办件{subject}有新进展：{progress}。", "/chat", "/check_progress", per_subject=True),
}
# The topics citizens subscribe to by name and staff write campaigns for.
YEARLY_TOPICS = tuple(name for name, topic in TOPICS.items() if not topic.per_subject)
FINISHED_STATUSES = ("已办结", "不予受理", "已撤回", "已退件")  # an application past any news
PROGRESS_KEY = "progress:"  # a progress notice's due key: progress:<application number>:<step id>


class Subscription(Base):
    """A citizen's standing request to be reminded of a topic."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(40), index=True)
    phone: Mapped[str | None] = mapped_column(Sealed("subscriptions.phone"))  # SMS reminders (phone channel)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    by_call: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # a call, not an SMS
    subject: Mapped[str | None] = mapped_column(String(40), index=True)  # per-subject topics: the application number
    # active | cancelled (withdrawn) | ended (a per-subject topic whose subject is over: the application finished)
    status: Mapped[str] = mapped_column(String(12), default="active", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class SubscriptionConsent(Base):
    """The consent record: given (with the words agreed to) or withdrawn. Append-only in the database."""

    __tablename__ = "subscription_consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    sender_id: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(12))  # given | withdrawn
    wording: Mapped[str] = mapped_column(String(300))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Reminder(Base):
    """One reminder due for one subscription: queued, then sent, refused, failed or skipped. One per
    (subscription, due key): a reminder is never queued twice for the same occasion."""

    __tablename__ = "reminders"
    __table_args__ = (UniqueConstraint("subscription_id", "due_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    due_key: Mapped[str] = mapped_column(String(64))  # the occasion: "medical_insurance:2026"
    text: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(12), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(String(200))


@dataclass(frozen=True)
class SubscriptionView:
    id: int
    sender_id: str
    channel: str
    topic: str
    phone: str | None
    created_at: dt.datetime
    by_call: bool = False
    subject: str | None = None

    @property
    def name(self) -> str:
        return topic_name(self.topic, self.subject)


def topic_name(topic: str, subject: str | None = None) -> str:
    """A topic as the citizen hears it (a per-subject one with its subject: 办件20261101000001进度通知)."""
    return TOPICS[topic].name.replace("{subject}", subject or "") if topic in TOPICS else topic


def _view(s: Subscription) -> SubscriptionView:
    return SubscriptionView(s.id, s.sender_id, s.channel, s.topic, s.phone, s.created_at, bool(s.by_call), s.subject)


def wechat_target(channel: str, sender_id: str) -> tuple[str, str] | None:
    """(account, openid) a WeChat subscribe message goes to: ``oa`` (official account) or ``mp``
    (mini-program); None when the citizen has no WeChat identity here."""
    if channel == "wechat":
        return "oa", sender_id
    if channel == "miniprogram":
        return "mp", sender_id
    if channel == "webchat" and sender_id.startswith(("web:oa:", "web:mp:")):
        _, account, _, openid = sender_id.split(":", 3)
        return account, openid
    return None


class SqlSubscriptions:
    def __init__(self, sessions: sessionmaker, index: NumberIndex, wechat_accounts: frozenset[str] = frozenset(),
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc), *,
                 calls: bool = False, progress_notices: bool = False) -> None:
        """``wechat_accounts``: the WeChat accounts ("oa", "mp") with a subscribe-message template set up
        (WECHAT_REMINDER_TEMPLATE_ID, MINIPROGRAM_REMINDER_TEMPLATE_ID): only they can carry reminders.
        ``calls``: reminders can be calls from the assistant (REMINDER_CALL_SPOOL is set).
        ``progress_notices``: applications' steps are written here (the open API), so notices of them
        can be offered (not when the provincial platform keeps the progress)."""
        self._sessions = sessions
        self._index = index
        self._wechat = wechat_accounts
        self._now = now
        self.calls = calls
        self.progress_notices = progress_notices

    def reach(self, channel: str, sender_id: str, caller: str | None, by_call: bool = False) -> str | None:
        """How a reminder would reach this citizen, in words, or None when it cannot."""
        if channel == "phone":
            if not caller or not (is_valid_mobile(caller) or (by_call and self.calls and caller.isdigit())):
                return None  # (a landline can take a call, not an SMS)
            return f"打电话到{mask(caller)}告诉您" if by_call and self.calls else f"用短信发到{mask(caller)}"
        target = wechat_target(channel, sender_id)
        if target is not None and target[0] in self._wechat:
            return "用微信服务通知发给您"
        return None

    def _whose(self, sender_id: str, phone: str | None) -> ColumnElement[bool]:
        """The citizen's subscriptions: by the conversation, and on the phone line by the number (each
        call is a conversation of its own; the caller is the same)."""
        if phone:
            return or_(Subscription.sender_id == sender_id, Subscription.phone_hash == self._index(phone))
        return Subscription.sender_id == sender_id

    def subscribe(self, *, sender_id: str, channel: str, topic: str, caller: str | None,
                  wording: str, by_call: bool = False,
                  subject: str | None = None) -> tuple[SubscribeOutcome, SubscriptionView | None]:
        """Record the subscription and the consent to ``wording`` (exactly what the citizen was asked).
        ``by_call``: a caller asked to be called rather than texted (when calls are set up). ``subject``:
        what a per-subject topic is about (needed for those, refused for the others)."""
        if topic not in TOPICS or bool(subject) != TOPICS[topic].per_subject:
            return "unknown_topic", None
        by_call = by_call and channel == "phone" and self.calls and not subject  # news is texted, not rung
        if self.reach(channel, sender_id, caller, by_call) is None:
            return "unreachable", None
        now = self._now()
        phone = caller if channel == "phone" else None
        with self._sessions() as s:
            existing = s.scalars(select(Subscription).where(
                self._whose(sender_id, phone), Subscription.topic == topic, Subscription.subject == subject
                if subject else Subscription.subject.is_(None), Subscription.status == "active")).first()
            if existing is not None:
                return "already", _view(existing)
            sub = Subscription(sender_id=sender_id, channel=channel, topic=topic, phone=phone,
                               phone_hash=self._index(phone) if phone else None, by_call=by_call,
                               subject=subject, status="active", created_at=now)
            s.add(sub)
            s.flush()
            s.add(SubscriptionConsent(subscription_id=sub.id, sender_id=sender_id, channel=channel, topic=topic,
                                      action="given", wording=wording[:300], at=now))
            s.commit()
            return "subscribed", _view(sub)

    def active(self, sender_id: str, phone: str | None = None) -> list[SubscriptionView]:
        """The citizen's subscriptions; ``phone``: the caller's number on the phone line."""
        with self._sessions() as s:
            rows = s.scalars(select(Subscription).where(self._whose(sender_id, phone),
                                                        Subscription.status == "active").order_by(Subscription.id))
            return [_view(r) for r in rows]

    def cancel(self, sender_id: str, topic: str | None = None, *, phone: str | None = None,
               how: str = "本人取消") -> int:
        """Cancel the citizen's subscriptions (one topic, or all); each withdrawal is recorded."""
        now = self._now()
        with self._sessions() as s:
            # An ended subscription (its application finished) whose last notice still waits is withdrawn too.
            pending = select(Reminder.id).where(Reminder.subscription_id == Subscription.id, Reminder.status == "queued")
            query = select(Subscription).where(self._whose(sender_id, phone), or_(
                Subscription.status == "active", and_(Subscription.status == "ended", pending.exists())))
            if topic is not None:
                query = query.where(Subscription.topic == topic)
            subs = list(s.scalars(query))
            for sub in subs:
                self.withdraw(s, sub, now, how)
            s.commit()
            return len(subs)

    @staticmethod
    def withdraw(s: Session, sub: Subscription, now: dt.datetime, how: str) -> None:
        sub.status, sub.cancelled_at = "cancelled", now
        s.add(SubscriptionConsent(subscription_id=sub.id, sender_id=sub.sender_id, channel=sub.channel,
                                  topic=sub.topic, action="withdrawn", wording=how, at=now))

    def answered(self, reminder_id: int, called: str | None) -> tuple[str, Topic] | None:
        """A reminder call was picked up (the dialplan's first turn names the reminder): it counts as
        delivered. Its text and topic; None unless that reminder is being called to that very number."""
        if not called:
            return None
        with self._sessions() as s:
            row = s.execute(select(Reminder, Subscription).join(Subscription, Subscription.id == Reminder.subscription_id)
                            .where(Reminder.id == reminder_id)).first()
            if row is None:
                return None
            reminder, sub = row
            if reminder.status not in ("calling", "sent") or sub.phone_hash != self._index(called) \
                    or sub.topic not in TOPICS:
                return None
            if reminder.status == "calling":
                reminder.status, reminder.sent_at, reminder.result = "sent", self._now(), "call answered"
                s.commit()
            return reminder.text, TOPICS[sub.topic]

    def consents(self, sender_id: str) -> list[tuple[str, str, str, dt.datetime]]:
        """(topic, given|withdrawn, wording, when) of a citizen, oldest first: what staff show on request."""
        with self._sessions() as s:
            rows = s.execute(select(SubscriptionConsent.topic, SubscriptionConsent.action, SubscriptionConsent.wording,
                                    SubscriptionConsent.at).where(SubscriptionConsent.sender_id == sender_id)
                             .order_by(SubscriptionConsent.id)).all()
            return [(r[0], r[1], r[2], r[3]) for r in rows]
