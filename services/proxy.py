"""Family proxy (子女代办): a family member acts for an elderly citizen after the elder consents by phone.

A family member on the web chat (``family_id``, their Rasa sender id) asks to act for the owner of a
mobile number (``request``): a pending grant, and a text to that number with a 6-digit code. The
elder consents from that phone, with no smartphone: they call the hotline, say "同意代办" and key in
the code (``consent``; the phone channel gives the caller's number). Consent lasts
``consent_days``; the elder ends every grant on the line by saying "解除代办" (``revoke_by_elder``);
the family member (``end_by_family``) or staff (``end_by_staff``) end one. The web chat acts for the
elder only under a grant that ``check`` returns, and records each act with ``audit``; staff read the
trail in the console. ``request``, ``consent`` and ``revoke_by_elder`` block (database, SMS): call
them off the event loop.

A grant is ``pending`` (the code texted), ``active`` (consented), ``ended`` (by the elder, the
family, staff, or the system when the code could not be texted) or ``expired`` (its code or its
consent lapsed; marked when next read). The code is never stored: only an HMAC under a key derived
from the number index's (services/sms.py ``NumberIndex``), bound to its grant and compared in
constant time; it lapses after ``code_ttl``, and ``MAX_WRONG_CODES`` wrong codes lock it (a new
request from the family sends a new code). The elder's number is sealed and looked up by its keyed
hash; the trail holds numbers only masked. A family member makes at most ``REQUESTS_PER_DAY``
requests a day (China time), and has at most one pending grant per elder: a new request replaces
its code.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.models import ProxyAudit, ProxyGrant
from services.sms import CHINA, NumberIndex, SmsMessage, SmsSender
from textnorm.ids import is_valid_mobile
from textnorm.masking import mask
from textnorm.numerals import digits_only

log = logging.getLogger(__name__)

RequestOutcome = Literal["sent", "opted_out", "rate_limited", "failed", "invalid_phone", "too_many", "already_active"]
ConsentOutcome = Literal["granted", "wrong_code", "no_request", "locked"]

STATUSES = {"pending": "待老人确认", "active": "代办中", "ended": "已解除", "expired": "已过期"}
ENDED_BY = {"elder": "老人", "family": "家人", "staff": "工作人员", "system": "系统"}
# The trail's actions written here, as staff read them; the web chat adds its own (what was done for the elder).
ACTION_NAMES = {"requested": "家人申请，验证码已发给老人", "code_resent": "家人重新申请，发了新验证码",
                "sms_not_sent": "验证码短信没有发出", "consented": "老人来电同意", "wrong_code": "验证码不对",
                "locked": "验证码错太多次，已锁定", "expired": "到期", "revoked": "老人来电解除",
                "ended": "结束", "progress_checked": "代查办件进度", "order_created": "代下缴费订单",
                "feedback_filed": "代反映问题"}
# What the elder is to the family member (the family member's choice; anything else is 家人) -> who
# asks, as the elder hears it in the SMS and on the line ("您的子女…").
RELATIONS = {"父亲": "子女", "母亲": "子女", "爷爷": "孙子孙女", "奶奶": "孙子孙女", "外公": "孙子孙女", "外婆": "孙子孙女",
             "配偶": "老伴", "家人": "家人"}
REQUESTS_PER_DAY = 3  # per family member
MAX_WRONG_CODES = 5  # per pending grant
CODE_DIGITS = 6
LIVE = ("pending", "active")
_REQUESTS = ("requested", "code_resent")  # the trail's actions that count toward the day's requests
_NOT_SENT: dict[str, RequestOutcome] = {"opted_out": "opted_out", "rate_limited": "rate_limited", "failed": "failed"}


@dataclass(frozen=True)
class GrantView:
    id: int
    family_id: str
    elder_phone: str
    relation: str
    status: str
    created_at: dt.datetime
    consented_at: dt.datetime | None
    expires_at: dt.datetime | None
    ended_at: dt.datetime | None
    ended_by: str | None

    @property
    def asker(self) -> str:
        """Who asks, as the elder hears it: 子女, 孙子孙女, 老伴 or 家人."""
        return RELATIONS.get(self.relation, "家人")


@dataclass(frozen=True)
class AuditView:
    at: dt.datetime
    actor: str
    action: str
    detail: str


def mobile(number: str) -> str | None:
    """The 11-digit mainland mobile in ``number`` (spaces, +86, spoken digits allowed), or None."""
    digits = digits_only(number)
    for prefix in ("0086", "86"):
        if len(digits) == 11 + len(prefix) and digits.startswith(prefix):
            digits = digits[len(prefix):]
    return digits if len(digits) == 11 and is_valid_mobile(digits) else None


def _aware(when: dt.datetime) -> dt.datetime:
    """SQLite gives back naive UTC datetimes."""
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _view(g: ProxyGrant) -> GrantView:
    def at(value: dt.datetime | None) -> dt.datetime | None:
        return None if value is None else _aware(value)

    return GrantView(g.id, g.family_id, g.elder_phone, g.relation, g.status, _aware(g.created_at),
                     at(g.consented_at), at(g.expires_at), at(g.ended_at), g.ended_by)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _changed(s: Session, statement: Any) -> int:
    """How many rows an UPDATE changed (a conditional UPDATE is how a change is claimed)."""
    return cast(CursorResult[Any], s.execute(statement)).rowcount


class ProxyRecords:
    """The grants and their trail, read and ended: what the console needs (no SMS, no number index)."""

    def __init__(self, sessions: sessionmaker, now: Callable[[], dt.datetime] = _utc_now) -> None:
        self._sessions = sessions
        self._now = now

    def _audit(self, s: Session, grant_id: int, actor: str, action: str, detail: str = "") -> None:
        s.add(ProxyAudit(grant_id=grant_id, at=self._now(), actor=actor[:80], action=action[:30],
                         detail=mask(detail)[:200]))

    def _expire(self, s: Session, *where: Any) -> None:
        """Marks the grants past their time (a pending code, an active consent) expired, each with
        its trail entry; ``where`` narrows the search."""
        now = self._now()
        for grant_id in list(s.scalars(select(ProxyGrant.id).where(
                ProxyGrant.status.in_(LIVE), ProxyGrant.expires_at <= now, *where))):
            if _changed(s, update(ProxyGrant).where(ProxyGrant.id == grant_id, ProxyGrant.status.in_(LIVE))
                        .values(status="expired", code_hash=None)):
                self._audit(s, grant_id, "system", "expired")

    def _end(self, s: Session, grant_id: int, by: str, actor: str, action: str, detail: str = "") -> bool:
        ended = _changed(s, update(ProxyGrant).where(ProxyGrant.id == grant_id, ProxyGrant.status.in_(LIVE))
                         .values(status="ended", ended_at=self._now(), ended_by=by, code_hash=None)) == 1
        if ended:
            self._audit(s, grant_id, actor, action, detail)
        return ended

    def audit(self, grant_id: int, actor: str, action: str, detail: str = "") -> None:
        """One entry of a grant's trail (``actor``: family, elder, staff:<name> or system). Numbers
        in ``detail`` are masked; it is cut at 200 characters."""
        with self._sessions() as s:
            self._audit(s, grant_id, actor, action, detail)
            s.commit()

    def end_by_family(self, family_id: str, grant_id: int) -> bool:
        """The family member gives up a pending or active grant of theirs; False when there is none."""
        with self._sessions() as s:
            owner = s.scalar(select(ProxyGrant.family_id).where(ProxyGrant.id == grant_id))
            ended = owner == family_id and self._end(s, grant_id, "family", "family", "ended")
            s.commit()
            return ended

    def end_by_staff(self, grant_id: int, staff: str, *, reason: str = "",
                     also: Callable[[Session], None] | None = None) -> bool:
        """Staff end a pending or active grant (``reason`` goes into the trail, masked); ``also`` runs in
        the same transaction when it ends (the console's own audit entry), so both are kept or neither."""
        with self._sessions() as s:
            ended = self._end(s, grant_id, "staff", f"staff:{staff}", "ended", reason)
            if ended and also is not None:
                also(s)
            s.commit()
            return ended

    def of_family(self, family_id: str) -> list[GrantView]:
        """The family member's pending and active grants, newest first."""
        with self._sessions() as s:
            self._expire(s, ProxyGrant.family_id == family_id)
            s.commit()
            rows = s.scalars(select(ProxyGrant).where(ProxyGrant.family_id == family_id, ProxyGrant.status.in_(LIVE))
                             .order_by(ProxyGrant.id.desc())).all()
            return [_view(g) for g in rows]

    def check(self, grant_id: int, family_id: str) -> GrantView | None:
        """The grant, only when it is active, unexpired and this family member's."""
        with self._sessions() as s:
            self._expire(s, ProxyGrant.id == grant_id)
            s.commit()
            g = s.get(ProxyGrant, grant_id)
            return _view(g) if g is not None and g.family_id == family_id and g.status == "active" else None

    def listing(self, status: str | None = None, limit: int = 200) -> list[GrantView]:
        """Grants for staff, newest first; ``status`` one of ``STATUSES`` or None for all."""
        with self._sessions() as s:
            self._expire(s)
            s.commit()
            q = select(ProxyGrant)
            if status is not None:
                q = q.where(ProxyGrant.status == status)
            rows = s.scalars(q.order_by(ProxyGrant.id.desc()).limit(max(1, min(limit, 1000)))).all()
            return [_view(g) for g in rows]

    def trail(self, grant_id: int) -> list[AuditView]:
        with self._sessions() as s:
            rows = s.scalars(select(ProxyAudit).where(ProxyAudit.grant_id == grant_id).order_by(ProxyAudit.id)).all()
            return [AuditView(_aware(a.at), a.actor, a.action, a.detail) for a in rows]


class SqlProxies(ProxyRecords):
    """Grants made, consented to and revoked: texts the codes (``SmsSender``) and hashes numbers
    and codes (``NumberIndex``)."""

    def __init__(self, sessions: sessionmaker, sms: SmsSender, index: NumberIndex, *,
                 consent_days: int = 90, code_ttl: dt.timedelta = dt.timedelta(hours=24),
                 now: Callable[[], dt.datetime] = _utc_now, draw_code: Callable[[], str] | None = None) -> None:
        super().__init__(sessions, now)
        self.sms = sms
        self.index = index
        self.consent_days = consent_days
        self.code_ttl = code_ttl
        self._code_key = index.derived(b"heze proxy code v1")
        self._draw_code = draw_code or (lambda: f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}")

    def _code_hash(self, grant_id: int, code: str) -> str:
        return hmac.new(self._code_key, f"{grant_id}:{code}".encode(), hashlib.sha256).hexdigest()

    def _requests_today(self, s: Session, family_id: str) -> int:
        start = self._now().astimezone(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
        return s.scalar(select(func.count()).select_from(ProxyAudit)
                        .join(ProxyGrant, ProxyAudit.grant_id == ProxyGrant.id)
                        .where(ProxyGrant.family_id == family_id, ProxyAudit.action.in_(_REQUESTS),
                               ProxyAudit.at >= start.astimezone(dt.timezone.utc))) or 0

    def request(self, family_id: str, elder_phone: str, relation: str) -> tuple[RequestOutcome, GrantView | None]:
        """A pending grant and its code texted to the elder: ``("sent", grant)``; the active grant
        when there is one already; else the refusal and None. A new grant whose code could not be
        texted is ended; a pending one keeps the code texted before (a double click is no harm)."""
        phone = mobile(elder_phone)
        if phone is None:
            return "invalid_phone", None
        relation = relation if relation in RELATIONS else "家人"
        key, code, now = self.index(phone), self._draw_code(), self._now()
        with self._sessions() as s:
            self._expire(s, ProxyGrant.family_id == family_id)
            live = s.scalars(select(ProxyGrant).where(ProxyGrant.family_id == family_id, ProxyGrant.elder_phone_hash == key,
                                                      ProxyGrant.status.in_(LIVE))).all()
            active = next((g for g in live if g.status == "active"), None)
            if active is not None:
                s.commit()
                return "already_active", _view(active)
            if self._requests_today(s, family_id) >= REQUESTS_PER_DAY:
                s.commit()
                return "too_many", None
            grant = next((g for g in live if g.status == "pending"), None)
            fresh = grant is None
            if grant is None:
                grant = ProxyGrant(family_id=family_id, elder_phone=phone, elder_phone_hash=key, status="pending",
                                   relation=relation, attempts=0, created_at=now, expires_at=now + self.code_ttl)
                s.add(grant)
                s.flush()
                grant.code_hash = self._code_hash(grant.id, code)
            # Either counts toward the day's requests, whether the code reaches the elder or not.
            self._audit(s, grant.id, "family", "requested" if fresh else "code_resent", f"{relation}，{mask(phone)}")
            s.commit()
            view = _view(grant)
        days = max(1, -(-int(self.code_ttl.total_seconds()) // 86400))
        sent = self.sms.send(phone, SmsMessage("proxy_code", {"relation": RELATIONS[relation], "code": code,
                                                              "days": str(days)}))
        with self._sessions() as s:
            if sent not in ("sent", "queued"):  # queued: the gateway tries again
                if fresh:
                    self._end(s, view.id, "system", "system", "sms_not_sent", sent)
                else:
                    self._audit(s, view.id, "system", "sms_not_sent", sent)
                s.commit()
                return _NOT_SENT.get(sent, "failed"), None
            if fresh:
                return "sent", view
            # The new code replaces the old one only now that it is on its way.
            replaced = _changed(s, update(ProxyGrant).where(ProxyGrant.id == view.id, ProxyGrant.status == "pending")
                                .values(code_hash=self._code_hash(view.id, code), attempts=0, relation=relation,
                                        expires_at=now + self.code_ttl))
            s.commit()
        if not replaced:  # consented or ended a moment ago
            return "failed", None
        return "sent", dataclasses.replace(view, relation=relation, expires_at=now + self.code_ttl)

    def consent(self, elder_phone: str, code: str) -> ConsentOutcome:
        """The elder keyed in ``code`` on a call from ``elder_phone``: the pending grant with that
        code becomes active. A wrong code counts against every pending grant of that number."""
        phone = mobile(elder_phone)
        if phone is None:
            return "no_request"
        key, code, now = self.index(phone), digits_only(code), self._now()
        with self._sessions() as s:
            self._expire(s, ProxyGrant.elder_phone_hash == key)
            pending = s.scalars(select(ProxyGrant).where(ProxyGrant.elder_phone_hash == key, ProxyGrant.status == "pending")
                                .order_by(ProxyGrant.id)).all()
            open_ = [g for g in pending if g.attempts < MAX_WRONG_CODES]
            if not open_:
                s.commit()
                return "locked" if pending else "no_request"
            matches = [g for g in open_ if hmac.compare_digest(g.code_hash or "", self._code_hash(g.id, code))]
            if matches:
                grant = matches[0]
                until = now + dt.timedelta(days=self.consent_days)
                granted = _changed(s, update(ProxyGrant).where(ProxyGrant.id == grant.id, ProxyGrant.status == "pending")
                                   .values(status="active", consented_at=now, expires_at=until, code_hash=None)) == 1
                if granted:
                    self._audit(s, grant.id, "elder", "consented", f"{self.consent_days}天")
                s.commit()
                if not granted:  # consented or ended a moment ago, on another line
                    return "no_request"
                self._notify_granted(phone, RELATIONS.get(grant.relation, "家人"), until)
                return "granted"
            tries = {g.id: g.attempts + 1 for g in open_}
            for grant_id, n in tries.items():
                s.execute(update(ProxyGrant).where(ProxyGrant.id == grant_id)
                          .values(attempts=ProxyGrant.attempts + 1))
                self._audit(s, grant_id, "elder", "wrong_code", f"第{n}次")
                if n >= MAX_WRONG_CODES:
                    self._audit(s, grant_id, "system", "locked")
            s.commit()
            return "wrong_code" if any(n < MAX_WRONG_CODES for n in tries.values()) else "locked"

    def _notify_granted(self, phone: str, asker: str, until: dt.datetime) -> None:
        """A written record on the elder's phone: someone else who keyed the code in is noticed."""
        day = until.astimezone(CHINA)
        outcome = self.sms.send(phone, SmsMessage("proxy_granted", {
            "relation": asker, "until": f"{day.year}年{day.month}月{day.day}日"}), notice=True)
        if outcome not in ("sent", "queued"):
            log.info("proxy consent notice to %s not sent: %s", mask(phone), outcome)

    def of_elder(self, elder_phone: str) -> list[GrantView]:
        """The active grants of an elder's number, the latest consent first."""
        phone = mobile(elder_phone)
        if phone is None:
            return []
        key = self.index(phone)
        with self._sessions() as s:
            self._expire(s, ProxyGrant.elder_phone_hash == key)
            s.commit()
            rows = s.scalars(select(ProxyGrant).where(ProxyGrant.elder_phone_hash == key, ProxyGrant.status == "active")
                             .order_by(ProxyGrant.consented_at.desc(), ProxyGrant.id.desc())).all()
            return [_view(g) for g in rows]

    def revoke_by_elder(self, elder_phone: str) -> int:
        """Ends every pending and active grant of the number; how many."""
        phone = mobile(elder_phone)
        if phone is None:
            return 0
        key = self.index(phone)
        with self._sessions() as s:
            self._expire(s, ProxyGrant.elder_phone_hash == key)
            ids = list(s.scalars(select(ProxyGrant.id).where(ProxyGrant.elder_phone_hash == key,
                                                             ProxyGrant.status.in_(LIVE))))
            ended = sum(self._end(s, grant_id, "elder", "elder", "revoked") for grant_id in ids)
            s.commit()
            return ended
