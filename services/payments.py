"""Payment providers and the paths every provider's results take: notify-and-verify, the sweep
(query silent orders, close expired ones) and refunds.

The ``sandbox`` provider is the embedded default. Its checkout page lives on the services API;
paying there makes the sandbox post a signed notification to ``/payments/notify/sandbox``
over HTTP, exactly as a real provider would, and the order changes only after the signature
and the amount check out. ``wechatpay`` (services/wechatpay.py) is the real one.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Mapping, Protocol

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.billing import InvalidTransition, OrderView, PaymentMismatch, PaymentOutcome, RefundView, SqlBilling
from services.models import PaymentNonce

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Sandbox-Signature"
TIMESTAMP_HEADER = "X-Sandbox-Timestamp"
MAX_SKEW_SECONDS = 300


class InvalidNotification(Exception):
    """The notification is not authentic, or not well formed. The message is a fixed phrase."""


class ProviderError(Exception):
    """The provider could not be reached, or refused a call (the page says: try again later)."""


@dataclass(frozen=True)
class Notification:
    """A payment, as the provider reports it (verified); ``payee`` is the appid paid to, if any."""

    order_no: str
    amount_fen: int
    txn_id: str
    payee: str | None = None


@dataclass(frozen=True)
class RefundNotification:
    """A refund's final state as the provider reports it: ``succeeded``, ``closed`` or ``abnormal``."""

    refund_no: str
    order_no: str
    amount_fen: int
    status: str
    provider_refund_id: str


@dataclass(frozen=True)
class Checkout:
    """What the payment page offers: ``sandbox`` (a form), ``jsapi`` (WeChat's in-app payment
    parameters) or ``native`` (``code_url``, shown as a QR code)."""

    kind: str
    params: dict[str, str] = field(default_factory=dict)


class PaymentProvider(Protocol):
    name: str

    def checkout_url(self, order_no: str) -> str: ...

    def checkout(self, order: OrderView) -> Checkout: ...

    def payee(self, channel: str) -> str | None: ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification | RefundNotification: ...

    def query(self, order: OrderView) -> Notification | None:
        """The payment of an order whose notification never came, or None if it is unpaid."""

    def close(self, order: OrderView) -> Notification | None:
        """Close an unpaid order at the provider; the payment instead if it turns out paid."""

    def refund(self, refund: RefundView) -> RefundNotification | None:
        """Ask for a refund; its final state if already known, else None (a notification follows)."""


class SandboxProvider:
    """HMAC-SHA256 signed JSON notifications, with a timestamp window."""

    name = "sandbox"

    def __init__(self, secret: bytes, public_base_url: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._base = public_base_url.rstrip("/")
        self._clock = clock

    def checkout_url(self, order_no: str) -> str:
        return f"{self._base}/pay/{order_no}"

    def checkout(self, order: OrderView) -> Checkout:
        return Checkout("sandbox", {"action": f"/pay/{order.order_no}/sandbox"})

    def payee(self, channel: str) -> str | None:
        return None

    def query(self, order: OrderView) -> Notification | None:
        return None  # the sandbox notifies as it takes the payment; nothing is ever silent

    def close(self, order: OrderView) -> Notification | None:
        return None

    def refund(self, refund: RefundView) -> RefundNotification | None:
        return RefundNotification(refund.refund_no, refund.order_no, refund.amount_fen, "succeeded",
                                  "SBXR" + secrets.token_hex(8))

    def _sign(self, timestamp: str, body: bytes) -> str:
        return hmac.new(self._secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

    def notification(self, order_no: str, amount_fen: int) -> tuple[bytes, dict[str, str]]:
        """The body and headers the sandbox posts when a citizen pays."""
        body = json.dumps(
            {"order_no": order_no, "amount_fen": amount_fen, "txn_id": "SBX" + secrets.token_hex(8)},
            separators=(",", ":"),
        ).encode()
        ts = str(int(self._clock()))
        return body, {SIGNATURE_HEADER: self._sign(ts, body), TIMESTAMP_HEADER: ts, "Content-Type": "application/json"}

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification:
        lower = {k.lower(): v for k, v in headers.items()}
        sig = lower.get(SIGNATURE_HEADER.lower(), "")
        ts = lower.get(TIMESTAMP_HEADER.lower(), "")
        if not ts.isdigit() or abs(self._clock() - int(ts)) > MAX_SKEW_SECONDS:
            raise InvalidNotification("timestamp missing or outside the allowed window")
        if not hmac.compare_digest(sig, self._sign(ts, body)):
            raise InvalidNotification("bad signature")
        try:
            data = json.loads(body)
            return Notification(str(data["order_no"]), int(data["amount_fen"]), str(data["txn_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidNotification("malformed notification") from exc


def handle_notification(
    provider: PaymentProvider, billing: SqlBilling, body: bytes, headers: Mapping[str, str]
) -> PaymentOutcome:
    """Verify, then apply. Raises InvalidNotification or billing.PaymentMismatch."""
    return apply(provider, billing, provider.verify(body, headers))


def apply(provider: PaymentProvider, billing: SqlBilling, note: Notification | RefundNotification) -> PaymentOutcome:
    """Apply a verified result to its order; the same result twice changes nothing."""
    if isinstance(note, RefundNotification):
        return billing.confirm_refund(note.refund_no, order_no=note.order_no, amount_fen=note.amount_fen,
                                      status=note.status, provider_refund_id=note.provider_refund_id)
    order = billing.order(note.order_no)
    if order is None:
        raise PaymentMismatch("unknown order")
    if note.payee != provider.payee(order.channel):
        raise PaymentMismatch("paid to another appid than the order's")
    return billing.confirm_payment(note.order_no, amount_fen=note.amount_fen, provider_txn_id=note.txn_id)


def request_refund(provider: PaymentProvider, billing: SqlBilling, order_no: str, amount_fen: int,
                   reason: str) -> RefundView:
    """Refund part or all of a paid order. Returns the refund as it stands (pending until the
    provider's notification, unless the provider answered with a final state)."""
    refund = billing.start_refund(order_no, amount_fen, reason)
    result = provider.refund(refund)
    if result is not None:
        apply(provider, billing, result)
    found = billing.refund(refund.refund_no)
    assert found is not None
    return found


def sweep(provider: PaymentProvider, billing: SqlBilling, now: dt.datetime, query_after: dt.timedelta) -> dict[str, int]:
    """Query pending orders older than ``query_after`` whose notification never came, and close
    those past expiry (WeChat Pay's advice: 查询订单 when no notification arrives, 关闭订单 at
    expiry). One failing order does not stop the rest. Returns counts for the log."""
    counts = {"paid": 0, "expired": 0, "failed": 0}
    for order in billing.pending_due(now + billing.order_ttl - query_after):
        try:
            expired = order.expires_at is not None and order.expires_at <= now
            note = provider.close(order) if expired else provider.query(order)
            if note is not None:
                counts["paid"] += apply(provider, billing, note).changed
            elif expired:
                counts["expired"] += billing.expire(order.order_no).changed
        except (PaymentMismatch, InvalidTransition, InvalidNotification, ProviderError) as exc:
            counts["failed"] += 1
            log.warning("payment sweep: order %s: %s", order.order_no, exc)
    return counts


class SqlNonces:
    """The (timestamp, nonce) pairs verified notifications were signed with, for the window."""

    def __init__(self, sessions: sessionmaker, provider: str, window_s: int = MAX_SKEW_SECONDS) -> None:
        self._sessions = sessions
        self._provider = provider
        self._window_s = window_s

    def claim(self, timestamp: int, nonce: str) -> bool:
        """True the first time a pair is seen; False for a replay."""
        with self._sessions() as s:
            s.execute(delete(PaymentNonce).where(PaymentNonce.timestamp < timestamp - 2 * self._window_s))
            s.add(PaymentNonce(provider=self._provider, timestamp=timestamp, nonce=nonce[:64]))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                return False
            return True
