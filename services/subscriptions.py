"""Reminder subscriptions (个性化政策推送) with consent: who asked to be reminded of what, on which channel,
when they agreed and to which words, and when they withdrew.

A subscription is a citizen (the Rasa sender id of the conversation where they asked) and a topic.
Nothing is sent without one; each subscription has a ``given`` consent row holding the exact words the
citizen agreed to, and cancelling adds a ``withdrawn`` row (PIPL: who, what, when, on which channel,
and the withdrawal). How a reminder reaches the citizen follows from the channel they asked on:

- ``phone``: an SMS to the caller's own mobile (the number is sealed, looked up by its keyed hash);
- ``wechat`` / ``miniprogram``: WeChat's subscribe message to the openid (the sender id);
- ``webchat``: the official account's (or mini-program's) subscribe message to the identity WeChat
  vouched for (``web:oa:<appid>:<openid>``); a web guest cannot be reached, so cannot subscribe.

The rules that decide when a topic is due, and the delivery, are services/reminders.py."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint, func, select
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


TOPICS: dict[str, Topic] = {
    "medical_insurance": Topic(
        "居民医保缴费提醒", "每年9月1日城乡居民医保开始缴费时提醒您一次",
        "{year}年度城乡居民医保开始缴费了，请在{deadline}前缴清。说“交医保”就能办。", "/chat"),
    "pension_certification": Topic(
        "养老金资格认证提醒", "每年养老金领取资格认证开始时提醒您一次",
        "今年的养老金领取资格认证开始了，请在{deadline}前完成，逾期会暂停发放。说“养老金认证”看怎么办。", "/chat"),
}


class Subscription(Base):
    """A citizen's standing request to be reminded of a topic."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(40), index=True)
    phone: Mapped[str | None] = mapped_column(Sealed("subscriptions.phone"))  # SMS reminders (phone channel)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(12), default="active", index=True)  # active | cancelled
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

    @property
    def name(self) -> str:
        return TOPICS[self.topic].name if self.topic in TOPICS else self.topic


def _view(s: Subscription) -> SubscriptionView:
    return SubscriptionView(s.id, s.sender_id, s.channel, s.topic, s.phone, s.created_at)


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
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        """``wechat_accounts``: the WeChat accounts ("oa", "mp") with a subscribe-message template set up
        (WECHAT_REMINDER_TEMPLATE_ID, MINIPROGRAM_REMINDER_TEMPLATE_ID): only they can carry reminders."""
        self._sessions = sessions
        self._index = index
        self._wechat = wechat_accounts
        self._now = now

    def reach(self, channel: str, sender_id: str, caller: str | None) -> str | None:
        """How a reminder would reach this citizen, in words, or None when it cannot."""
        if channel == "phone":
            return f"用短信发到{mask(caller)}" if caller and is_valid_mobile(caller) else None
        target = wechat_target(channel, sender_id)
        if target is not None and target[0] in self._wechat:
            return "用微信服务通知发给您"
        return None

    def subscribe(self, *, sender_id: str, channel: str, topic: str, caller: str | None,
                  wording: str) -> tuple[SubscribeOutcome, SubscriptionView | None]:
        """Record the subscription and the consent to ``wording`` (exactly what the citizen was asked)."""
        if topic not in TOPICS:
            return "unknown_topic", None
        if self.reach(channel, sender_id, caller) is None:
            return "unreachable", None
        now = self._now()
        phone = caller if channel == "phone" else None
        with self._sessions() as s:
            existing = s.scalars(select(Subscription).where(
                Subscription.sender_id == sender_id, Subscription.topic == topic,
                Subscription.status == "active")).first()
            if existing is not None:
                return "already", _view(existing)
            sub = Subscription(sender_id=sender_id, channel=channel, topic=topic, phone=phone,
                               phone_hash=self._index(phone) if phone else None, status="active", created_at=now)
            s.add(sub)
            s.flush()
            s.add(SubscriptionConsent(subscription_id=sub.id, sender_id=sender_id, channel=channel, topic=topic,
                                      action="given", wording=wording[:300], at=now))
            s.commit()
            return "subscribed", _view(sub)

    def active(self, sender_id: str) -> list[SubscriptionView]:
        with self._sessions() as s:
            rows = s.scalars(select(Subscription).where(Subscription.sender_id == sender_id,
                                                        Subscription.status == "active").order_by(Subscription.id))
            return [_view(r) for r in rows]

    def cancel(self, sender_id: str, topic: str | None = None, *, how: str = "本人取消") -> int:
        """Cancel the citizen's subscriptions (one topic, or all); each withdrawal is recorded."""
        now = self._now()
        with self._sessions() as s:
            query = select(Subscription).where(Subscription.sender_id == sender_id, Subscription.status == "active")
            if topic is not None:
                query = query.where(Subscription.topic == topic)
            subs = list(s.scalars(query))
            for sub in subs:
                self._withdraw(s, sub, now, how)
            s.commit()
            return len(subs)

    def cancel_phone(self, phone: str, *, how: str) -> int:
        """Every SMS subscription of a number (the citizen replied TD to a reminder, say)."""
        now = self._now()
        with self._sessions() as s:
            subs = list(s.scalars(select(Subscription).where(Subscription.phone_hash == self._index(phone),
                                                             Subscription.status == "active")))
            for sub in subs:
                self._withdraw(s, sub, now, how)
            s.commit()
            return len(subs)

    @staticmethod
    def _withdraw(s: Session, sub: Subscription, now: dt.datetime, how: str) -> None:
        sub.status, sub.cancelled_at = "cancelled", now
        s.add(SubscriptionConsent(subscription_id=sub.id, sender_id=sub.sender_id, channel=sub.channel,
                                  topic=sub.topic, action="withdrawn", wording=how, at=now))

    def consents(self, sender_id: str) -> list[tuple[str, str, str, dt.datetime]]:
        """(topic, given|withdrawn, wording, when) of a citizen, oldest first: what staff show on request."""
        with self._sessions() as s:
            rows = s.execute(select(SubscriptionConsent.topic, SubscriptionConsent.action, SubscriptionConsent.wording,
                                    SubscriptionConsent.at).where(SubscriptionConsent.sender_id == sender_id)
                             .order_by(SubscriptionConsent.id)).all()
            return [(r[0], r[1], r[2], r[3]) for r in rows]
