"""Payment providers and the notify-and-verify path every provider's notification takes.

The ``sandbox`` provider is the embedded default. Its checkout page lives on the services API;
paying there makes the sandbox post a signed notification to ``/payments/notify/sandbox``
over HTTP, exactly as a real provider would, and the order changes only after the signature
and the amount check out.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Mapping, Protocol

from services.billing import BillingBackend, PaymentOutcome

SIGNATURE_HEADER = "X-Sandbox-Signature"
TIMESTAMP_HEADER = "X-Sandbox-Timestamp"
MAX_SKEW_SECONDS = 300


class InvalidNotification(Exception):
    """The notification is not authentic, or not well formed."""


@dataclass(frozen=True)
class Notification:
    order_no: str
    amount_fen: int
    txn_id: str


class PaymentProvider(Protocol):
    name: str

    def checkout_url(self, order_no: str) -> str: ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification: ...


class SandboxProvider:
    """HMAC-SHA256 signed JSON notifications, with a timestamp window."""

    name = "sandbox"

    def __init__(self, secret: bytes, public_base_url: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._base = public_base_url.rstrip("/")
        self._clock = clock

    def checkout_url(self, order_no: str) -> str:
        return f"{self._base}/pay/{order_no}"

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
    provider: PaymentProvider, billing: BillingBackend, body: bytes, headers: Mapping[str, str]
) -> PaymentOutcome:
    """Verify, then apply. Raises InvalidNotification or billing.PaymentMismatch."""
    note = provider.verify(body, headers)
    return billing.confirm_payment(note.order_no, amount_fen=note.amount_fen, provider_txn_id=note.txn_id)
