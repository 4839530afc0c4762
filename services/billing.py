"""Bills and payment orders. An order moves pending -> paid | cancelled | expired."""
from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.models import Bill, PaymentOrder, PaymentRefund

# bill type -> how citizens call it. Insurance contributions are looked up by ID-card number.
BILL_TYPES: dict[str, str] = {
    "water": "水费",
    "electricity": "电费",
    "gas": "燃气费",
    "medical_insurance": "城乡居民医保",
    "pension_insurance": "城乡居民养老保险",
}
ID_NUMBER_BILLS = frozenset({"medical_insurance", "pension_insurance"})

# order state machine: state -> states it may move to
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"paid", "cancelled", "expired"}),
    "paid": frozenset({"refunded"}),
    "cancelled": frozenset(),
    "expired": frozenset(),
    "refunded": frozenset(),
}
LIVE_STATES = frozenset({"pending", "paid"})
# refund state machine; a refund that counts against the order's amount is any but "closed"
REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "closed", "abnormal"}),
    "abnormal": frozenset({"succeeded", "closed"}),
    "succeeded": frozenset(),
    "closed": frozenset(),
}
ORDER_TTL = dt.timedelta(minutes=30)


class InvalidTransition(Exception):
    """An order was asked to move to a state its current state does not allow."""


class PaymentMismatch(Exception):
    """A payment notification does not match its order (unknown order or wrong amount)."""


@dataclass(frozen=True)
class BillView:
    id: int
    bill_type: str
    account: str
    period: str
    amount_fen: int
    due_date: dt.date
    status: str

    @property
    def type_name(self) -> str:
        return BILL_TYPES[self.bill_type]


@dataclass(frozen=True)
class OrderView:
    order_no: str
    bill_id: int
    amount_fen: int
    status: str
    created: bool = False
    channel: str = ""
    sender_id: str = ""
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class RefundView:
    refund_no: str
    order_no: str
    amount_fen: int
    order_amount_fen: int
    status: str


@dataclass(frozen=True)
class PaymentOutcome:
    order_no: str
    status: str
    changed: bool


class BillingBackend(Protocol):
    def account_exists(self, bill_type: str, account: str) -> bool: ...

    def outstanding(self, bill_type: str, account: str) -> list[BillView]: ...

    def bill(self, bill_id: int) -> BillView | None: ...

    def create_order(self, bill_id: int, *, channel: str, sender_id: str, provider: str) -> OrderView: ...

    def order(self, order_no: str) -> OrderView | None: ...

    def confirm_payment(self, order_no: str, *, amount_fen: int, provider_txn_id: str) -> PaymentOutcome: ...


def format_yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _bill_view(b: Bill) -> BillView:
    return BillView(b.id, b.bill_type, b.account, b.period, b.amount_fen, b.due_date, b.status)


def _order_view(o: PaymentOrder, created: bool = False) -> OrderView:
    expires = o.expires_at.replace(tzinfo=dt.timezone.utc) if o.expires_at and o.expires_at.tzinfo is None else o.expires_at
    return OrderView(o.order_no, o.bill_id, o.amount_fen, o.status, created, o.channel, o.sender_id, expires)


def _refund_view(r: PaymentRefund) -> RefundView:
    return RefundView(r.refund_no, r.order.order_no, r.amount_fen, r.order.amount_fen, r.status)


def transition(order: PaymentOrder, to: str) -> None:
    if to not in TRANSITIONS[order.status]:
        raise InvalidTransition(f"order {order.order_no}: {order.status} -> {to} is not allowed")
    order.status = to
    order.active_bill_id = order.bill_id if to in LIVE_STATES else None


class SqlBilling:
    def __init__(
        self, sessions: sessionmaker, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        order_ttl: dt.timedelta = ORDER_TTL,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.order_ttl = order_ttl

    def outstanding(self, bill_type: str, account: str) -> list[BillView]:
        with self._sessions() as s:
            bills = s.scalars(
                select(Bill)
                .where(Bill.bill_type == bill_type, Bill.account == account, Bill.status == "unpaid")
                .order_by(Bill.period)
            ).all()
            return [_bill_view(b) for b in bills]

    def account_exists(self, bill_type: str, account: str) -> bool:
        with self._sessions() as s:
            return s.scalar(select(Bill.id).where(Bill.bill_type == bill_type, Bill.account == account).limit(1)) is not None

    def bill(self, bill_id: int) -> BillView | None:
        with self._sessions() as s:
            b = s.get(Bill, bill_id)
            return _bill_view(b) if b else None

    def _live_order(self, s: Session, bill_id: int) -> PaymentOrder | None:
        return s.scalar(select(PaymentOrder).where(PaymentOrder.active_bill_id == bill_id))

    def create_order(self, bill_id: int, *, channel: str, sender_id: str, provider: str) -> OrderView:
        """Create the payment order for a bill, or return the live one: never two per bill."""
        with self._sessions() as s:
            existing = self._live_order(s, bill_id)
            if existing is not None:
                return _order_view(existing)
            bill = s.get(Bill, bill_id)
            if bill is None:
                raise PaymentMismatch(f"no bill {bill_id}")
            now = self._clock()
            order = PaymentOrder(
                order_no=now.strftime("%Y%m%d") + f"{secrets.randbelow(10**10):010d}",
                expires_at=now + self.order_ttl,
                bill_id=bill.id,
                active_bill_id=bill.id,
                amount_fen=bill.amount_fen,
                status="pending",
                provider=provider,
                channel=channel,
                sender_id=sender_id,
            )
            s.add(order)
            try:
                s.commit()
            except IntegrityError:
                # A concurrent confirmation created the live order first: return that one.
                s.rollback()
                existing = self._live_order(s, bill_id)
                if existing is None:
                    raise
                return _order_view(existing)
            return _order_view(order, created=True)

    def order(self, order_no: str) -> OrderView | None:
        with self._sessions() as s:
            o = s.scalar(select(PaymentOrder).where(PaymentOrder.order_no == order_no))
            return _order_view(o) if o else None

    def order_bill(self, order_no: str) -> tuple[OrderView, BillView] | None:
        with self._sessions() as s:
            o = s.scalar(select(PaymentOrder).where(PaymentOrder.order_no == order_no))
            return (_order_view(o), _bill_view(o.bill)) if o else None

    def confirm_payment(self, order_no: str, *, amount_fen: int, provider_txn_id: str) -> PaymentOutcome:
        """Apply a verified payment notification. A repeated notification changes nothing."""
        with self._sessions() as s:
            o = s.scalar(select(PaymentOrder).where(PaymentOrder.order_no == order_no).with_for_update())
            if o is None:
                raise PaymentMismatch("unknown order")
            if amount_fen != o.amount_fen:
                raise PaymentMismatch("amount does not match the order")
            if o.status in ("paid", "refunded"):
                if o.provider_txn_id != provider_txn_id:
                    raise PaymentMismatch("order already paid by another transaction")
                return PaymentOutcome(o.order_no, o.status, changed=False)
            if o.status != "pending":
                raise PaymentMismatch(f"payment for an order that is {o.status}: refund it")
            transition(o, "paid")
            o.provider_txn_id = provider_txn_id
            o.paid_at = self._clock()
            o.bill.status = "paid"
            s.commit()
            return PaymentOutcome(o.order_no, o.status, changed=True)

    def pending_due(self, before: dt.datetime) -> list[OrderView]:
        """Pending orders that expire before ``before`` (the sweep's work list), oldest first."""
        with self._sessions() as s:
            rows = s.scalars(select(PaymentOrder).where(PaymentOrder.status == "pending",
                                                        PaymentOrder.expires_at <= before)
                             .order_by(PaymentOrder.expires_at)).all()
            return [_order_view(o) for o in rows]

    def expire(self, order_no: str) -> PaymentOutcome:
        """A pending order that the provider has closed: expired, its bill free for a new order."""
        with self._sessions() as s:
            o = s.scalar(select(PaymentOrder).where(PaymentOrder.order_no == order_no).with_for_update())
            if o is None:
                raise PaymentMismatch("unknown order")
            if o.status != "pending":
                return PaymentOutcome(o.order_no, o.status, changed=False)
            transition(o, "expired")
            s.commit()
            return PaymentOutcome(o.order_no, o.status, changed=True)

    def start_refund(self, order_no: str, amount_fen: int, reason: str) -> RefundView:
        """Record a refund about to be asked of the provider; never more than is left to refund."""
        with self._sessions() as s:
            o = s.scalar(select(PaymentOrder).where(PaymentOrder.order_no == order_no).with_for_update())
            if o is None or o.status != "paid":
                raise InvalidTransition(f"order {order_no} is not paid; nothing to refund")
            taken = s.scalar(select(func.coalesce(func.sum(PaymentRefund.amount_fen), 0))
                             .where(PaymentRefund.order_id == o.id, PaymentRefund.status != "closed"))
            if not 0 < amount_fen <= o.amount_fen - int(taken or 0):
                raise InvalidTransition(f"order {order_no}: a refund of {amount_fen} fen exceeds what is left")
            count = s.scalar(select(func.count()).select_from(PaymentRefund).where(PaymentRefund.order_id == o.id))
            refund = PaymentRefund(refund_no=f"{o.order_no}R{int(count or 0) + 1:02d}", order=o,
                                   amount_fen=amount_fen, status="pending", reason=reason[:80])
            s.add(refund)
            s.commit()
            return _refund_view(refund)

    def refund(self, refund_no: str) -> RefundView | None:
        with self._sessions() as s:
            r = s.scalar(select(PaymentRefund).where(PaymentRefund.refund_no == refund_no))
            return _refund_view(r) if r else None

    def confirm_refund(self, refund_no: str, *, order_no: str, amount_fen: int, status: str,
                       provider_refund_id: str) -> PaymentOutcome:
        """Apply a verified refund result (``succeeded``, ``closed`` or ``abnormal``); repeats change
        nothing. When the succeeded refunds cover the order, the order is refunded."""
        with self._sessions() as s:
            r = s.scalar(select(PaymentRefund).where(PaymentRefund.refund_no == refund_no).with_for_update())
            if r is None or r.order.order_no != order_no:
                raise PaymentMismatch("unknown refund")
            if amount_fen != r.amount_fen:
                raise PaymentMismatch("refund amount does not match")
            if r.status == status:
                return PaymentOutcome(order_no, r.order.status, changed=False)
            if status not in REFUND_TRANSITIONS[r.status]:
                raise PaymentMismatch(f"refund is {r.status}; {status} does not apply")
            r.status = status
            r.provider_refund_id = provider_refund_id
            if status == "succeeded":
                r.succeeded_at = self._clock()
                s.flush()
                refunded = s.scalar(select(func.sum(PaymentRefund.amount_fen))
                                    .where(PaymentRefund.order_id == r.order_id, PaymentRefund.status == "succeeded"))
                if int(refunded or 0) >= r.order.amount_fen:
                    # The bill keeps its status: a refund (most often of a bill paid twice) does not
                    # say the bill is owed again; staff settle that with the biller.
                    transition(r.order, "refunded")
            s.commit()
            return PaymentOutcome(order_no, r.order.status, changed=True)
