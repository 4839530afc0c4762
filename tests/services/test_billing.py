import threading

import pytest
from sqlalchemy import func, select

from services.billing import InvalidTransition, PaymentMismatch, transition
from services.container import Services
from services.models import PaymentOrder


def _water_bill(services: Services) -> int:
    (bill,) = services.billing.outstanding("water", "1000000001")
    return bill.id


def test_outstanding_bill_of_a_seeded_account(seeded: Services) -> None:
    (bill,) = seeded.billing.outstanding("water", "1000000001")
    assert bill.amount_fen == 5630 and bill.type_name == "水费"
    assert seeded.billing.account_exists("water", "1000000001")
    assert not seeded.billing.account_exists("water", "1999999999")
    assert seeded.billing.outstanding("electricity", "1000000001") == []


def test_the_same_confirmation_twice_makes_one_order(seeded: Services) -> None:
    bill_id = _water_bill(seeded)
    first = seeded.billing.create_order(bill_id, channel="wechat", sender_id="u1", provider="sandbox")
    second = seeded.billing.create_order(bill_id, channel="wechat", sender_id="u1", provider="sandbox")
    assert first.created and not second.created
    assert first.order_no == second.order_no
    with seeded.sessions() as s:
        assert s.scalar(select(func.count()).select_from(PaymentOrder)) == 1


def test_concurrent_confirmations_make_one_order(seeded: Services) -> None:
    bill_id = _water_bill(seeded)
    results = []

    def confirm() -> None:
        results.append(seeded.billing.create_order(bill_id, channel="rest", sender_id="u", provider="sandbox"))

    threads = [threading.Thread(target=confirm) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.order_no for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_payment_confirms_once_and_marks_the_bill_paid(seeded: Services) -> None:
    order = seeded.billing.create_order(_water_bill(seeded), channel="rest", sender_id="u", provider="sandbox")
    paid = seeded.billing.confirm_payment(order.order_no, amount_fen=5630, provider_txn_id="T1")
    again = seeded.billing.confirm_payment(order.order_no, amount_fen=5630, provider_txn_id="T1")
    assert paid.changed and paid.status == "paid"
    assert not again.changed and again.status == "paid"
    assert seeded.billing.outstanding("water", "1000000001") == []
    # A new confirmation after payment returns the paid order, never a second one.
    assert seeded.billing.create_order(order.bill_id, channel="rest", sender_id="u", provider="sandbox").status == "paid"


def test_payment_with_the_wrong_amount_changes_nothing(seeded: Services) -> None:
    order = seeded.billing.create_order(_water_bill(seeded), channel="rest", sender_id="u", provider="sandbox")
    with pytest.raises(PaymentMismatch):
        seeded.billing.confirm_payment(order.order_no, amount_fen=1, provider_txn_id="T1")
    with pytest.raises(PaymentMismatch):
        seeded.billing.confirm_payment("nope", amount_fen=5630, provider_txn_id="T1")
    assert seeded.billing.order(order.order_no).status == "pending"  # type: ignore[union-attr]


def test_a_paid_order_rejects_a_different_transaction(seeded: Services) -> None:
    order = seeded.billing.create_order(_water_bill(seeded), channel="rest", sender_id="u", provider="sandbox")
    seeded.billing.confirm_payment(order.order_no, amount_fen=5630, provider_txn_id="T1")
    with pytest.raises(PaymentMismatch):
        seeded.billing.confirm_payment(order.order_no, amount_fen=5630, provider_txn_id="T2")


def test_order_state_machine() -> None:
    order = PaymentOrder(order_no="1", bill_id=7, active_bill_id=7, amount_fen=1, status="pending",
                         provider="sandbox", channel="rest", sender_id="u")
    transition(order, "cancelled")
    assert order.active_bill_id is None  # a cancelled order frees the bill for a new one
    with pytest.raises(InvalidTransition):
        transition(order, "paid")
