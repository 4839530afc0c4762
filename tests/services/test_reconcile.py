"""Daily reconciliation against the local v3 server (tests/fakes/wechatpay.py): the bill is built by
the fake from its own orders and refunds, in WeChat Pay's format, with planted differences; it is
applied for, downloaded with a signed request and its SHA1 checked, as in production."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from services.__main__ import main
from services.models import Bill, ReconciliationMismatch, ReconciliationRun
from services.payments import request_refund
from services.reconcile import CHINA, KINDS, MalformedBill, due_day, read_bill, reconcile_day
from tests.sandbox import make_settings
from tests.fakes.wechatpay import BILL_HEADER, BILL_SUMMARY, bill_csv, bill_line
from tests.services.paying import MCHID, OA, OPENID, Pay, wechatpay_settings

UNKNOWN = "20260101" + "7" * 10


def ordered(pay: Pay, account: str, amount: int) -> str:
    """A bill of its own, ordered through JSAPI (NOTPAY at WeChat Pay)."""
    with pay.services.sessions() as s:
        s.add(Bill(bill_type="water", account=account, holder_name="测试", district="牡丹区", period="2026年11月",
                   amount_fen=amount, due_date=dt.date(2026, 12, 31)))
        s.commit()
    order_no = pay.order(account=account)
    pay.jsapi(order_no)
    return order_no


def paid_order(pay: Pay, account: str, amount: int, notify: bool = True) -> str:
    """An order paid at WeChat Pay, its notification delivered or lost."""
    order_no = ordered(pay, account, amount)
    pay.fake.notify = notify
    pay.fake.pay(order_no)
    pay.fake.notify = True
    return order_no


def today() -> str:
    return dt.datetime.now(CHINA).date().isoformat()


def mismatches(pay: Pay, run_id: int) -> list[ReconciliationMismatch]:
    with pay.services.sessions() as s:
        return list(s.scalars(select(ReconciliationMismatch).where(ReconciliationMismatch.run_id == run_id)))


def reconcile(pay: Pay, day: str) -> ReconciliationRun:
    return reconcile_day(pay.services.sessions, pay.services.billing, pay.services.payments,  # type: ignore[arg-type]
                         dt.date.fromisoformat(day))


def test_each_planted_difference_is_flagged_once(pay: Pay) -> None:
    matched = paid_order(pay, "9100000001", 5000)
    missed = paid_order(pay, "9100000002", 2500, notify=False)  # paid at WeChat Pay, notification lost
    wrong_amount = paid_order(pay, "9100000003", 3000)
    refunded = paid_order(pay, "9100000004", 4000)
    good_refund = request_refund(pay.services.payments, pay.services.billing, matched, 1000, "多缴退费")
    bad_refund = request_refund(pay.services.payments, pay.services.billing, refunded, 1500, "多缴退费")
    for refund in (good_refund, bad_refund):
        assert pay.fake.finish_refund(refund.refund_no).status_code == 200
    # Paid here without WeChat Pay having it (ordered there, never paid): the query confirms it.
    phantom = ordered(pay, "9100000005", 700)
    pay.services.billing.confirm_payment(phantom, amount_fen=700, provider_txn_id="4200000000000000000000000001")
    day = today()
    stranger = bill_line(day + " 09:00:00", OA, MCHID, "4200000000000000000000000009", UNKNOWN, OPENID, "NATIVE", 990)
    pay.fake.bill_for(day, amounts={wrong_amount: 3001}, refund_amounts={bad_refund.refund_no: 1400},
                      extra=(stranger,))

    run = reconcile(pay, day)

    assert run.status == "mismatches" and run.error is None
    assert (run.bill_rows, run.payments, run.refunds) == (7, 5, 2)  # 4 orders + the stranger; 2 refunds
    assert run.matched == 3  # matched's and refunded's payments, the good refund
    found = {(m.kind, m.order_no): m for m in mismatches(pay, run.id)}
    assert Counter(kind for kind, _ in found) == Counter(set(KINDS))  # each kind once
    assert set(found) == {("not_paid_here", missed), ("not_paid_there", phantom), ("amount", wrong_amount),
                          ("refund", refunded), ("unknown_order", UNKNOWN)}
    amount = found[("amount", wrong_amount)]
    assert (amount.here_fen, amount.there_fen) == (3000, 3001)
    refund = found[("refund", refunded)]
    assert (refund.refund_no, refund.here_fen, refund.there_fen) == (bad_refund.refund_no, 1500, 1400)
    assert (found[("not_paid_there", phantom)].here_fen, found[("not_paid_there", phantom)].there_fen) == (700, None)
    assert run.mismatch_count == 5
    for m in found.values():  # nothing personal is kept
        assert OPENID not in repr(vars(m)) and KINDS[m.kind]
    assert any(c.startswith("GET /v3/billdownload/file") for c in pay.fake.calls)
    assert pay.fake.rejected == []


def test_a_bill_that_agrees_and_a_day_without_a_bill(pay: Pay) -> None:
    paid_order(pay, "9100000011", 1200)
    day = today()
    pay.fake.bill_for(day)
    run = reconcile(pay, day)
    assert (run.status, run.bill_rows, run.matched, run.mismatch_count) == ("ok", 1, 1, 0)
    # No bill at all (NO_STATEMENT_EXIST) on a day with no payments: nothing to flag.
    empty = reconcile(pay, "2026-01-02")
    assert (empty.status, empty.bill_rows, empty.mismatch_count) == ("ok", 0, 0)


def test_a_download_altered_in_transit_is_refused(pay: Pay) -> None:
    missed = paid_order(pay, "9100000021", 1200, notify=False)
    day = today()
    pay.fake.bill_for(day)
    pay.fake.bill_tamper = True
    run = reconcile(pay, day)
    assert run.status == "failed" and "BILL_HASH_MISMATCH" in (run.error or "")
    assert mismatches(pay, run.id) == [] and run.mismatch_count == 0
    assert pay.status(missed) == "pending"  # reconciliation reports; it changes no order


def test_a_malformed_bill_is_refused_and_nothing_is_half_written(pay: Pay) -> None:
    paid_order(pay, "9100000031", 1200)
    paid_order(pay, "9100000032", 1300, notify=False)  # would be a mismatch
    day = today()
    whole = pay.fake.bill_for(day)
    pay.fake.bills[day] = whole[:whole.index(BILL_SUMMARY.encode())]  # cut short before the summary
    run = reconcile(pay, day)
    assert run.status == "failed" and "ends without its summary" in (run.error or "")
    assert run.error.startswith("账单格式不对")  # type: ignore[union-attr]
    assert mismatches(pay, run.id) == [] and (run.bill_rows, run.mismatch_count) == (0, 0)


def lines(*rows: str, summary: str | None = None) -> list[str]:
    body = [BILL_HEADER + "\r\n", *rows]
    return body + ([BILL_SUMMARY + "\r\n", summary] if summary is not None else [])


ROW = bill_line("2026-12-02 10:00:00", OA, MCHID, "4200000000000000000000000001", "202612020000000001", OPENID,
                "JSAPI", 5630)


@pytest.mark.parametrize(("bill", "message"), [
    (["交易时间,商户号\r\n"], "not a trade bill header"),
    (lines(ROW), "ends without its summary"),
    (lines(ROW, summary="`2,`56.30,`0.00,`0.00,`0.00000,`56.30,`0.00\r\n"), "summary says '2' rows"),
    (lines(ROW, summary="`1,`56.30,`0.00,`0.00,`0.00000,`56.31,`0.00\r\n"), "订单总金额 does not add up"),
    (lines(ROW.replace("`56.30", "`56.3x"), summary="`1,`0,`0,`0,`0,`0,`0\r\n"), "line 2: amount is not a number"),
    (lines(ROW.replace("`SUCCESS", "`REVOKED"), summary="`1,`0,`0,`0,`0,`0,`0\r\n"), "unexpected 交易状态"),
    (lines(ROW.replace(",`0.60%", ""), summary="`1,`0,`0,`0,`0,`0,`0\r\n"), "26 fields, the header has 27"),
    (lines(ROW.lstrip("`"), summary="`1,`0,`0,`0,`0,`0,`0\r\n"), "do not start with a backtick"),
    (lines(ROW, summary="`1,`56.30,`0.00,`0.00,`0.00000,`56.30,`0.00\r\n") + ["`more\r\n"], "text after the summary"),
])
def test_read_bill_refuses_what_is_not_a_whole_bill(bill: list[str], message: str) -> None:
    with pytest.raises(MalformedBill, match=message):
        list(read_bill(bill))


def test_read_bill_reads_wechat_pays_format() -> None:
    refund = bill_line("2026-12-02 11:00:00", OA, MCHID, "4200000000000000000000000001", "202612020000000001",
                       OPENID, "JSAPI", 0, ("50300000000000000000000001", "202612020000000001R01", 1000, "SUCCESS"))
    comma = ROW.replace("菏泽政务缴费", "水费,2026年11月")  # a comma inside a field stays in it
    text = bill_csv([comma, refund]).decode("utf-8-sig")
    rows = list(read_bill(text.splitlines(keepends=True)))
    assert [(r.kind, r.order_no, r.amount_fen, r.refund_no, r.refund_status) for r in rows] == [
        ("payment", "202612020000000001", 5630, "", ""),
        ("refund", "202612020000000001", 1000, "202612020000000001R01", "SUCCESS")]


def test_the_cli_reconciles_a_day(pay: Pay, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    missed = paid_order(pay, "9100000041", 1200, notify=False)
    day = today()
    pay.fake.bill_for(day)
    settings = wechatpay_settings(tmp_path, heze_db_url=db_url, wechatpay_api_base=pay.fake.base_url)
    monkeypatch.setattr("services.__main__.get_settings", lambda: settings)
    monkeypatch.setattr("services.__main__.configure_logging", lambda: None)
    monkeypatch.setattr("sys.argv", ["python -m services", "reconcile", "--date", day])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1  # mismatches
    assert f"{day} 有差异 / mismatches: 1 rows, 0 matched, 1 mismatches" in capsys.readouterr().out
    with pay.services.sessions() as s:
        assert s.scalars(select(ReconciliationMismatch.order_no)).all() == [missed]
    # The embedded default (sandbox) has no trade bills: refused with a plain sentence.
    monkeypatch.setattr("services.__main__.get_settings", lambda: make_settings(heze_db_url=db_url))
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "PAYMENT_PROVIDER=wechatpay" in capsys.readouterr().out


def test_the_daily_task_takes_yesterday_once_the_bill_is_out(pay: Pay) -> None:
    sessions = pay.services.sessions
    morning = dt.datetime(2026, 12, 3, 9, 59, tzinfo=CHINA)
    assert due_day(sessions, "wechatpay", morning, 10) is None  # the bill is not out yet
    ten = (morning + dt.timedelta(minutes=1)).astimezone(dt.timezone.utc)  # stored as the services store times
    assert due_day(sessions, "wechatpay", ten, 10) == dt.date(2026, 12, 2)

    def add(status: str, started: dt.datetime) -> None:
        with sessions() as s:
            s.add(ReconciliationRun(bill_date=dt.date(2026, 12, 2), provider="wechatpay", status=status,
                                    started_at=started, bill_rows=0, payments=0, refunds=0, matched=0,
                                    mismatch_count=0))
            s.commit()

    add("running", ten - dt.timedelta(hours=2))  # died with its process
    assert due_day(sessions, "wechatpay", ten, 10) == dt.date(2026, 12, 2)
    add("failed", ten)
    add("failed", ten)
    assert due_day(sessions, "wechatpay", ten, 10) == dt.date(2026, 12, 2)
    add("failed", ten)
    assert due_day(sessions, "wechatpay", ten, 10) is None  # three failures: left to staff and the CLI
    with sessions() as s:
        s.execute(delete(ReconciliationRun))
        s.commit()
    add("ok", ten)
    assert due_day(sessions, "wechatpay", ten, 10) is None
