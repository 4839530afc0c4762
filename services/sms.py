"""Text messages to citizens: approved templates, opt-outs, per-number limits, and a record of each.

Mainland carriers deliver only messages made from a template registered with the gateway and
signed with an approved signature name (【菏泽政务】), so every message here is a template kind
and its parameters (``TEMPLATES``), never free text. ``SmsSender`` is what actions call: it
refuses an opted-out number and one over its limits, writes the message to ``sms_outbox`` (sealed)
before any gateway sees it, then hands it to the gateway (``SmsGateway``): the embedded
``OutboxGateway`` leaves it there; a real one (services/aliyun_sms.py) sends it. A gateway's
temporary failure (timeout, 5xx, flow control) leaves the row in ``retry`` for ``sweep``; a
permanent one in ``failed`` with the gateway's code. ``sweep`` also asks the gateway for delivery
receipts of sent messages.

Numbers that are looked up (opt-outs, quotas) are stored as ``NumberIndex`` hashes: HMAC-SHA256
under ``SMS_NUMBER_KEY``, or, where that is unset (the embedded default), a key derived from the
first ``DATA_KEYS`` key. A plain SHA-256 of an 11-digit number is reversed by trying all of them;
the key lives apart from the database, as ``DATA_KEYS`` does. ``SMS_NUMBER_KEY`` is not rotated:
a new key forgets every opt-out, which is why production sets its own rather than deriving it from
a keyring meant to rotate.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.models import SmsOptOut, SmsOutbox, SmsQuota
from textnorm.ids import is_valid_mobile
from textnorm.masking import mask
from textnorm.numerals import digits_only

log = logging.getLogger(__name__)
CHINA = dt.timezone(dt.timedelta(hours=8))

# What the caller is told happened: sent (to the gateway, or to the outbox), queued (the gateway
# failed for now; it is tried again), and the three refusals.
Outcome = Literal["sent", "queued", "opted_out", "rate_limited", "failed"]
HELD = "held"  # error_code of a message waiting for the number's per-number limits (send(hold=True))
# Replies that opt a number out (the carriers' convention: TD, T, 退订, N and the like).
OPT_OUT_REPLIES = frozenset({"TD", "T", "N", "退订", "退", "取消", "退订短信", "STOP"})


@dataclass(frozen=True)
class Template:
    """A message as registered with the gateway: ``${name}`` are its variables; ``{base}`` is the
    services API's public address, written into the registered wording (carriers do not take a
    whole link as a variable), filled here only when the outbox renders the text."""

    wording: str
    params: tuple[str, ...]


# kind -> template; deploy/sms.md lists them for registration. A variable is at most 35 characters.
TEMPLATES: dict[str, Template] = {
    "payment_link": Template("您的缴费订单${order}，金额${amount}元。点此缴费：{base}/pay/${order}", ("order", "amount")),
    "ticket_receipt": Template("您反映的问题已受理，工单号${ticket}，${due}前答复。", ("ticket", "due")),
    "guide_link": Template("${title}（${section}）办事指南：{base}/guide/${slug}", ("title", "section", "slug")),
    # relation: who asks, as the elder hears it (services/proxy.py RELATIONS: 子女, 孙子孙女, 老伴, 家人)
    # {hotline}: the line's number (HOTLINE_NUMBER), written into the registered wording as {base} is.
    "proxy_code": Template("您的${relation}申请代您办理政务服务，验证码${code}，${days}天内有效。同意请用本机拨打{hotline}，"
                           "说“同意代办”，再按键输入验证码。验证码不要告诉别人，工作人员不会向您要。不同意请不要理会。",
                           ("relation", "code", "days")),
    # a department moved a ticket on (services/updates.py): to the number its filer left for the answer
    "ticket_update": Template("您反映的问题（工单${ticket}）有新进展：${status}。查看详情请拨打热线或在微信里说“查工单”。",
                              ("ticket", "status")),
    # a department added a step to an application whose progress the citizen asked to be told of
    # (services/updates.py; progress: the step and its result, services/updates.py progress_text)
    "progress_update": Template("您的办件${number}有新进展：${progress}。查看详情请拨打热线或在微信里说“查办件进度”。"
                                "回复TD退订短信。", ("number", "progress")),
    # a reminder citizens subscribed to (services/subscriptions.py TOPICS, services/reminders.py)
    "reminder": Template("您订阅的${topic}：${what}，请在${deadline}前办理。回复TD退订短信。", ("topic", "what", "deadline")),
    "proxy_granted": Template("您的${relation}现在可以代您办理政务服务，${until}前有效。不是您同意的，或不想让家人代办了，"
                              "请拨打{hotline}说“解除代办”。",
                              ("relation", "until")),
}
MAX_PARAM = 35


@dataclass(frozen=True)
class SmsMessage:
    kind: str
    params: Mapping[str, str]

    def __post_init__(self) -> None:
        template = TEMPLATES.get(self.kind)
        if template is None:
            raise ValueError(f"no SMS template {self.kind!r}")
        if set(self.params) != set(template.params):
            raise ValueError(f"the {self.kind} template takes {', '.join(template.params)}")
        object.__setattr__(self, "params", {k: str(v)[:MAX_PARAM] for k, v in self.params.items()})

    def render(self, sign_name: str, base_url: str, hotline: str = "12345") -> str:
        """The text the citizen reads: the signature in 【】, then the template filled in."""
        text = TEMPLATES[self.kind].wording.replace("{base}", base_url.rstrip("/")).replace("{hotline}", hotline)
        return f"【{sign_name}】" + re.sub(r"\$\{(\w+)\}", lambda m: self.params[m.group(1)], text)


class SmsGatewayError(Exception):
    """The gateway did not take a message: ``code`` as it answered (or ``timeout``, ``http_503``);
    ``temporary`` errors are tried again."""

    def __init__(self, code: str, temporary: bool) -> None:
        super().__init__(f"SMS gateway: {code}")
        self.code = code
        self.temporary = temporary


@dataclass(frozen=True)
class Receipt:
    delivered: bool
    code: str  # the carrier's status, e.g. DELIVERED, MK:0001
    at: dt.datetime | None


class SmsGateway(Protocol):
    name: str

    def submit(self, phone: str, message: SmsMessage, out_id: str) -> str | None:
        """Sends one message; the gateway's id for it (None for the outbox). Raises SmsGatewayError."""
        ...

    def receipt(self, phone: str, biz_id: str, sent_at: dt.datetime) -> Receipt | None:
        """The delivery receipt, or None while the carrier has not reported."""
        ...


class OutboxGateway:
    """The embedded default: the ``sms_outbox`` row is the message; nothing leaves the machine."""

    name = "outbox"

    def submit(self, phone: str, message: SmsMessage, out_id: str) -> str | None:
        return None

    def receipt(self, phone: str, biz_id: str, sent_at: dt.datetime) -> Receipt | None:
        return None


class NumberIndex:
    """The keyed hash a number is looked up by (opt-outs, quotas, receipts' numbers)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_settings(cls, number_key: str, data_keys: str) -> "NumberIndex":
        if number_key:
            return cls(number_key.encode())
        first = next((p for p in (x.strip() for x in data_keys.split(",")) if p), "")
        if not first:
            raise ValueError("SMS needs SMS_NUMBER_KEY or DATA_KEYS to hash numbers it looks up")
        secret = first.partition(":")[2].strip().encode()
        return cls(hmac.new(secret, b"heze sms number index v1", hashlib.sha256).digest())

    def __call__(self, phone: str) -> str:
        return hmac.new(self._key, digits_only(phone)[-11:].encode(), hashlib.sha256).hexdigest()

    def derived(self, purpose: bytes) -> bytes:
        """A key of its own for another keyed hash (a family proxy's code), derived from this one."""
        return hmac.new(self._key, purpose, hashlib.sha256).digest()


@dataclass(frozen=True)
class Limits:
    min_interval: dt.timedelta = dt.timedelta(minutes=1)
    per_day: int = 10


class SmsSender:
    """Sends template messages through a gateway, with the city's rules around it."""

    def __init__(self, sessions: sessionmaker, gateway: SmsGateway, index: NumberIndex, *, sign_name: str,
                 base_url: str, limits: Limits = Limits(), hotline: str = "12345",
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self._sessions = sessions
        self.gateway = gateway
        self.index = index
        self.sign_name = sign_name
        self.base_url = base_url
        self.hotline = hotline
        self.limits = limits
        self._now = now

    def send(self, phone: str, message: SmsMessage, *, notice: bool = False, hold: bool = False) -> Outcome:
        """``notice``: a security notice the number's owner must get (someone consented to a family proxy
        in their name): counted, but never held back by the per-number limits. ``hold``: over the limits,
        the message waits (``queued``) and the sweep sends it once the number may have one (for an
        hour at most), rather than being dropped (a department's answer the citizen asked for). Opt-outs
        hold for all."""
        phone = digits_only(phone)[-11:]
        if not is_valid_mobile(phone):
            return "failed"
        key = self.index(phone)
        if self.is_opted_out(phone):
            return "opted_out"
        now = self._now()
        allowed = self._take_quota(key, now) or notice
        if not allowed and not hold:
            log.info("SMS to %s not sent: over the per-number limit", mask(phone))
            return "rate_limited"
        with self._sessions() as s:
            row = SmsOutbox(phone=phone, text=message.render(self.sign_name, self.base_url, self.hotline), kind=message.kind,
                            params=json.dumps(dict(message.params), ensure_ascii=False), provider=self.gateway.name,
                            status="pending" if allowed else "retry", phone_hash=key, attempts=0, created_at=now,
                            error_code=None if allowed else HELD,
                            next_attempt_at=None if allowed else now + self.limits.min_interval)
            s.add(row)
            s.commit()
            row_id = row.id
        if not allowed:
            log.info("SMS %s to %s held: over the per-number limit", row_id, mask(phone))
            return "queued"
        return self._attempt(row_id, phone, message, now)

    def _attempt(self, row_id: int, phone: str, message: SmsMessage, now: dt.datetime) -> Outcome:
        values: dict[str, object]
        outcome: Outcome
        try:
            biz_id = self.gateway.submit(phone, message, str(row_id))
        except SmsGatewayError as exc:
            log.warning("SMS %s to %s not taken: %s", row_id, mask(phone), exc.code)
            if exc.temporary:
                values, outcome = {"status": "retry", "next_attempt_at": now + RETRY_AFTER}, "queued"
            else:
                values, outcome = {"status": "failed", "next_attempt_at": None}, "failed"
            values["error_code"] = exc.code[:64]
        else:
            status = "outbox" if self.gateway.name == "outbox" else "sent"
            values, outcome = {"status": status, "biz_id": biz_id, "sent_at": now, "error_code": None,
                               "next_attempt_at": None}, "sent"
        with self._sessions() as s:
            s.execute(update(SmsOutbox).where(SmsOutbox.id == row_id)
                      .values(attempts=SmsOutbox.attempts + 1, **values))
            s.commit()
        return outcome

    def _take_quota(self, key: str, now: dt.datetime) -> bool:
        """One conditional UPDATE: true when the number had no SMS in the interval and is under
        the day's count; atomic on SQLite and PostgreSQL, so every process agrees."""
        day = now.astimezone(CHINA).strftime("%Y%m%d")
        with self._sessions() as s:
            try:
                s.add(SmsQuota(phone_hash=key, day=day, count=0))
                s.commit()
            except IntegrityError:
                s.rollback()
            taken = s.execute(
                update(SmsQuota)
                .where(SmsQuota.phone_hash == key, SmsQuota.day == day, SmsQuota.count < self.limits.per_day,
                       or_(SmsQuota.last_at.is_(None), SmsQuota.last_at <= now - self.limits.min_interval))
                .values(count=SmsQuota.count + 1, last_at=now))
            s.commit()
            return taken.rowcount == 1

    def is_opted_out(self, phone: str) -> bool:
        with self._sessions() as s:
            return s.get(SmsOptOut, self.index(phone)) is not None

    def opt_out(self, phone: str, source: str = "staff") -> bool:
        """True when the number is newly opted out; its waiting messages are not sent."""
        key = self.index(phone)
        with self._sessions() as s:
            if s.get(SmsOptOut, key) is not None:
                return False
            s.add(SmsOptOut(phone_hash=key, source=source))
            s.execute(update(SmsOutbox).where(SmsOutbox.phone_hash == key, SmsOutbox.status == "retry")
                      .values(status="failed", error_code="opted_out", next_attempt_at=None))
            try:
                s.commit()
            except IntegrityError:  # opted out at the same moment by another process
                return False
        log.info("SMS opt-out of %s (%s)", mask(digits_only(phone)), source)
        return True

    def opt_in(self, phone: str) -> bool:
        with self._sessions() as s:
            row = s.get(SmsOptOut, self.index(phone))
            if row is None:
                return False
            s.delete(row)
            s.commit()
            return True

    def reply(self, phone: str, content: str) -> bool:
        """A citizen's reply to one of our messages; an opt-out word opts the number out."""
        word = re.sub(r"[\s。.!！]", "", content).upper()
        return word in OPT_OUT_REPLIES and self.opt_out(phone, "reply")

    def report(self, biz_id: str, phone: str, receipt: Receipt) -> bool:
        """A receipt pushed by the gateway: applied to the message with that id and that number."""
        with self._sessions() as s:
            done = s.execute(update(SmsOutbox)
                             .where(SmsOutbox.biz_id == biz_id, SmsOutbox.phone_hash == self.index(phone),
                                    SmsOutbox.status == "sent")
                             .values(**_receipt_values(receipt, self._now())))
            s.commit()
            return done.rowcount == 1

    def sweep(self, give_up_after: dt.timedelta = dt.timedelta(hours=1),
              receipts_for: dt.timedelta = dt.timedelta(hours=48), batch: int = 100) -> dict[str, int]:
        """Tries messages in ``retry`` again (until ``give_up_after``), then asks the gateway for
        receipts of sent messages (for ``receipts_for``). Returns counts by what happened."""
        now = self._now()
        counts = {"sent": 0, "queued": 0, "failed": 0, "expired": 0, "delivered": 0, "undelivered": 0}
        with self._sessions() as s:
            due = s.scalars(select(SmsOutbox).where(SmsOutbox.status == "retry", SmsOutbox.next_attempt_at <= now)
                            .order_by(SmsOutbox.id).limit(batch)).all()
            waiting = s.scalars(select(SmsOutbox).where(SmsOutbox.status == "sent", SmsOutbox.biz_id.is_not(None),
                                                        SmsOutbox.sent_at >= now - receipts_for)
                                .order_by(SmsOutbox.id).limit(batch)).all()
            s.expunge_all()
        for row in due:
            if _aware(row.created_at) < now - give_up_after or row.phone_hash is None or row.kind is None:
                self._set(row.id, status="failed", error_code="expired", next_attempt_at=None)
                counts["expired"] += 1
                continue
            if row.error_code == HELD and not self._take_quota(row.phone_hash, now):
                self._set(row.id, next_attempt_at=now + self.limits.min_interval)  # still over the limits
                continue
            message = SmsMessage(row.kind, json.loads(row.params or "{}"))
            outcome = self._attempt(row.id, row.phone, message, now)
            counts["failed" if outcome == "failed" else outcome] += 1
        for row in waiting:
            assert row.biz_id is not None and row.sent_at is not None
            try:
                receipt = self.gateway.receipt(row.phone, row.biz_id, _aware(row.sent_at))
            except SmsGatewayError as exc:
                log.warning("SMS receipts not read: %s", exc.code)
                break
            if receipt is not None:
                self._set(row.id, **_receipt_values(receipt, now))
                counts["delivered" if receipt.delivered else "undelivered"] += 1
        with self._sessions() as s:  # yesterday's quotas are no longer read
            s.execute(delete(SmsQuota).where(
                SmsQuota.day < (now.astimezone(CHINA) - dt.timedelta(days=2)).strftime("%Y%m%d")))
            s.commit()
        return counts

    def _set(self, row_id: int, **values: object) -> None:
        with self._sessions() as s:
            s.execute(update(SmsOutbox).where(SmsOutbox.id == row_id).values(**values))
            s.commit()


RETRY_AFTER = dt.timedelta(minutes=2)


def _receipt_values(receipt: Receipt, now: dt.datetime) -> dict[str, object]:
    return {"status": "delivered" if receipt.delivered else "undelivered", "error_code": receipt.code[:64],
            "reported_at": receipt.at or now}


def _aware(when: dt.datetime) -> dt.datetime:
    """SQLite gives back naive UTC datetimes."""
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
