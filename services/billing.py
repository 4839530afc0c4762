"""Bills and payment orders. An order moves pending -> paid | cancelled | expired."""
from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.models import Bill, PaymentOrder

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
    return OrderView(o.order_no, o.bill_id, o.amount_fen, o.status, created)


def transition(order: PaymentOrder, to: str) -> None:
    if to not in TRANSITIONS[order.status]:
        raise InvalidTransition(f"order {order.order_no}: {order.status} -> {to} is not allowed")
    order.status = to
    order.active_bill_id = order.bill_id if to in LIVE_STATES else None


class SqlBilling:
    def __init__(
        self, sessions: sessionmaker, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    ) -> None:
        self._sessions = sessions
        self._clock = clock

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
            order = PaymentOrder(
                order_no=self._clock().strftime("%Y%m%d") + f"{secrets.randbelow(10**10):010d}",
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
            if o.status == "paid":
                if o.provider_txn_id != provider_txn_id:
                    raise PaymentMismatch("order already paid by another transaction")
                return PaymentOutcome(o.order_no, o.status, changed=False)
            transition(o, "paid")
            o.provider_txn_id = provider_txn_id
            o.paid_at = self._clock()
            o.bill.status = "paid"
            s.commit()
            return PaymentOutcome(o.order_no, o.status, changed=True)
