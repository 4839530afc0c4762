"""Daily reconciliation: a provider's trade bill for one day against our payment orders and refunds.

The bill is WeChat Pay's ``ALL`` trade bill (交易账单, pay.weixin.qq.com/docs/merchant/products/
bill-download/format-trade.html): a header line naming the columns (the order may change, so
columns are found by name), one line per payment (交易状态 ``SUCCESS``, dated by its success time)
or refund (``REFUND``, dated when WeChat Pay accepted it), every field prefixed with a backtick
(so Excel keeps long numbers), amounts in yuan with two decimals, then a summary header
(总交易单数, ...) and one summary line. A payment row appears on the day it was paid even if it was
refunded later; a refund row shows the refund's state when the bill was made (a snapshot).

The bill is read line by line and never held whole: what is held is a dict of the day's paid
orders and refunds (number -> amount and state), which rows strike out as they come; bill rows
not in it (paid here on another day, or not paid here at all) are looked up in batches at the end.
A paid order missing from the bill is confirmed with 查询订单 before it is flagged: a payment at
23:59:59 whose notification came at 00:00:01 is in the previous day's bill. The summary line is
checked against what was read (row count, totals), so a truncated or altered bill is refused
(``MalformedBill``) before anything is stored: a run's mismatches, counts and status are written in
one transaction, and a refused bill leaves a ``failed`` run with the reason and no mismatches.
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import BinaryIO, Protocol, runtime_checkable

from sqlalchemy import insert, select
from sqlalchemy.orm import sessionmaker

from services.billing import OrderView, SqlBilling
from services.models import PaymentOrder, PaymentRefund, ReconciliationMismatch, ReconciliationRun
from services.payments import Notification, ProviderError

log = logging.getLogger(__name__)
CHINA = dt.timezone(dt.timedelta(hours=8))
BATCH = 500  # order numbers per lookup query

# mismatch kind -> what staff read (console/templates/reconciliation.html)
KINDS: dict[str, str] = {
    "not_paid_here": "微信已收款，本系统未记为已缴（通知没收到）",
    "not_paid_there": "本系统记为已缴，微信没有这笔收款",
    "amount": "金额不一致",
    "refund": "退款不一致",
    "unknown_order": "账单里的订单号本系统没有",
}
# run status -> what staff read
STATUSES: dict[str, str] = {"running": "进行中", "ok": "一致", "mismatches": "有差异", "failed": "失败"}

# The ALL bill's columns this comparison reads (交易账单文件格式说明, ALL类型账单)
TRADE_TIME, OUT_TRADE_NO, TRADE_STATE = "交易时间", "商户订单号", "交易状态"
ORDER_AMOUNT, OUT_REFUND_NO, REFUND_AMOUNT, REFUND_STATUS = "订单金额", "商户退款单号", "申请退款金额", "退款状态"
COLUMNS = (TRADE_TIME, OUT_TRADE_NO, TRADE_STATE, ORDER_AMOUNT, OUT_REFUND_NO, REFUND_AMOUNT, REFUND_STATUS)
SUMMARY_COUNT, SUMMARY_ORDERS, SUMMARY_REFUNDS = "总交易单数", "订单总金额", "申请退款总金额"
# 交易状态 -> the kind of row (a JSAPI/Native merchant's bill has only these two)
ROW_KINDS: dict[str, str] = {"SUCCESS": "payment", "REFUND": "refund"}


class MalformedBill(Exception):
    """The bill is not a well-formed trade bill; the message says where, and is safe to show."""


@dataclass(frozen=True)
class BillRow:
    kind: str  # "payment" | "refund"
    order_no: str
    amount_fen: int  # 订单金额 of a payment, 申请退款金额 of a refund
    refund_no: str = ""
    refund_status: str = ""  # SUCCESS | PROCESSING | CLOSED | ABNORMAL, as the bill was made


def fen(text: str, where: str) -> int:
    """``"56.30"`` (yuan) -> 5630; MalformedBill for anything else."""
    try:
        value = Decimal(text) * 100
    except InvalidOperation:
        raise MalformedBill(f"{where}: amount is not a number") from None
    if value != value.to_integral_value():
        raise MalformedBill(f"{where}: amount has more than two decimals")
    return int(value)


def _fields(line: str, where: str) -> list[str]:
    """A detail or summary line's fields: each starts with a backtick, so splitting on ``,``` keeps
    a comma inside a product name in its field."""
    if not line.startswith("`"):
        raise MalformedBill(f"{where}: fields do not start with a backtick")
    return line[1:].split(",`")


def read_bill(lines: Iterable[str]) -> Iterator[BillRow]:
    """The rows of a trade bill, one at a time; raises MalformedBill (also after the last row, if
    the summary is missing or does not agree with the rows)."""
    it = iter(lines)
    header = next(it, "").lstrip("\ufeff").rstrip("\r\n")
    names = header.split(",")
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise MalformedBill("line 1: not a trade bill header (missing " + ", ".join(missing) + ")")
    at = {c: names.index(c) for c in COLUMNS}
    count = orders_fen = refunds_fen = 0
    summary: dict[str, str] | None = None
    for n, raw in enumerate(it, start=2):
        line = raw.rstrip("\r\n")
        where = f"line {n}"
        if summary is not None:
            if line.strip():
                raise MalformedBill(f"{where}: text after the summary")
            continue
        if line.startswith(SUMMARY_COUNT):
            heads = line.split(",")
            values = _fields(next(it, "").rstrip("\r\n"), f"line {n + 1}")
            if len(values) != len(heads):
                raise MalformedBill(f"line {n + 1}: summary has {len(values)} fields, its header {len(heads)}")
            summary = dict(zip(heads, values))
            continue
        if not line.strip():
            continue
        fields = _fields(line, where)
        if len(fields) != len(names):
            raise MalformedBill(f"{where}: {len(fields)} fields, the header has {len(names)}")
        kind = ROW_KINDS.get(fields[at[TRADE_STATE]])
        if kind is None:
            raise MalformedBill(f"{where}: unexpected 交易状态 {fields[at[TRADE_STATE]][:12]!r}")
        order_amount = fen(fields[at[ORDER_AMOUNT]], where)
        refund_amount = fen(fields[at[REFUND_AMOUNT]], where)
        count += 1
        orders_fen += order_amount
        refunds_fen += refund_amount
        if kind == "payment":
            yield BillRow("payment", fields[at[OUT_TRADE_NO]], order_amount)
        else:
            yield BillRow("refund", fields[at[OUT_TRADE_NO]], refund_amount, fields[at[OUT_REFUND_NO]],
                          fields[at[REFUND_STATUS]])
    if summary is None:
        raise MalformedBill("the bill ends without its summary (cut short?)")
    if summary.get(SUMMARY_COUNT) != str(count):
        raise MalformedBill(f"summary says {summary.get(SUMMARY_COUNT)!r} rows, the bill has {count}")
    for name, total in ((SUMMARY_ORDERS, orders_fen), (SUMMARY_REFUNDS, refunds_fen)):
        if name in summary and fen(summary[name], "summary") != total:
            raise MalformedBill(f"summary {name} does not add up")


@dataclass
class Outcome:
    """What one comparison found (mismatches as column dicts, ready to insert)."""

    bill_rows: int = 0
    payments: int = 0
    refunds: int = 0
    matched: int = 0
    mismatches: list[dict[str, object]] = field(default_factory=list)

    def flag(self, kind: str, order_no: str, detail: str, here: int | None = None, there: int | None = None,
             refund_no: str | None = None) -> None:
        self.mismatches.append({"kind": kind, "order_no": order_no[:32], "refund_no": refund_no and refund_no[:64],
                                "here_fen": here, "there_fen": there, "detail": detail[:200]})


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """A China-time day as UTC instants [start, end)."""
    start = dt.datetime.combine(day, dt.time(), CHINA).astimezone(dt.timezone.utc)
    return start, start + dt.timedelta(days=1)


PAID = frozenset({"paid", "refunded"})


class Comparison:
    """One day's bill against our records (see the module docstring for the order of work)."""

    def __init__(self, sessions: sessionmaker, provider: str, day: dt.date,
                 paid_there: Callable[[str], bool | None]) -> None:
        self._sessions = sessions
        self._provider = provider
        self._paid_there = paid_there  # 查询订单: True paid, False not, None could not ask
        start, end = day_window(day)
        with sessions() as s:
            self.orders: dict[str, tuple[int, str]] = {
                no: (amount, status) for no, amount, status in s.execute(
                    select(PaymentOrder.order_no, PaymentOrder.amount_fen, PaymentOrder.status).where(
                        PaymentOrder.provider == provider, PaymentOrder.paid_at >= start, PaymentOrder.paid_at < end))}
            self.refunds: dict[str, tuple[str, int, str]] = {
                no: (order_no, amount, status) for no, order_no, amount, status in s.execute(
                    select(PaymentRefund.refund_no, PaymentOrder.order_no, PaymentRefund.amount_fen, PaymentRefund.status)
                    .join(PaymentOrder, PaymentRefund.order_id == PaymentOrder.id)
                    .where(PaymentOrder.provider == provider, PaymentRefund.created_at >= start,
                           PaymentRefund.created_at < end))}
        self._later_payments: list[BillRow] = []
        self._later_refunds: list[BillRow] = []
        self.out = Outcome()

    def run(self, rows: Iterable[BillRow]) -> Outcome:
        for row in rows:
            self.out.bill_rows += 1
            if row.kind == "payment":
                self.out.payments += 1
                found = self.orders.pop(row.order_no, None)
                if found is None:
                    self._later_payments.append(row)
                else:
                    self._payment(row, *found)
            else:
                self.out.refunds += 1
                ours = self.refunds.pop(row.refund_no, None)
                if ours is None:
                    self._later_refunds.append(row)
                else:
                    self._refund(row, ours[1], ours[2])
        self._look_up_later()
        self._missing_from_bill()
        return self.out

    def _payment(self, row: BillRow, amount: int, status: str) -> None:
        if status not in PAID:
            self.out.flag("not_paid_here", row.order_no, f"本系统订单状态为 {status}", amount, row.amount_fen)
        elif amount != row.amount_fen:
            self.out.flag("amount", row.order_no, "订单金额与账单不同", amount, row.amount_fen)
        else:
            self.out.matched += 1

    def _refund(self, row: BillRow, amount: int, status: str) -> None:
        if amount != row.amount_fen:
            detail = "退款金额与账单不同"
        elif row.refund_status == "SUCCESS" and status != "succeeded":
            detail = f"微信已退款，本系统退款状态为 {status}"
        elif row.refund_status == "CLOSED" and status == "succeeded":
            detail = "微信的退款已关闭，本系统记为退款成功"
        else:
            self.out.matched += 1
            return
        self.out.flag("refund", row.order_no, detail, amount, row.amount_fen, row.refund_no)

    def _look_up_later(self) -> None:
        """Bill rows whose order was not paid here that day: paid another day, not paid, or unknown."""
        for i in range(0, len(self._later_payments), BATCH):
            chunk = self._later_payments[i:i + BATCH]
            with self._sessions() as s:
                known = {no: (amount, status) for no, amount, status in s.execute(
                    select(PaymentOrder.order_no, PaymentOrder.amount_fen, PaymentOrder.status).where(
                        PaymentOrder.provider == self._provider,
                        PaymentOrder.order_no.in_([r.order_no for r in chunk])))}
            for row in chunk:
                if row.order_no in known:
                    self._payment(row, *known[row.order_no])
                else:
                    self.out.flag("unknown_order", row.order_no, "账单里有这笔收款，本系统没有这个订单", None, row.amount_fen)
        for i in range(0, len(self._later_refunds), BATCH):
            chunk = self._later_refunds[i:i + BATCH]
            with self._sessions() as s:
                refunds = {no: (amount, status) for no, amount, status in s.execute(
                    select(PaymentRefund.refund_no, PaymentRefund.amount_fen, PaymentRefund.status).where(
                        PaymentRefund.refund_no.in_([r.refund_no for r in chunk])))}
                orders = set(s.scalars(select(PaymentOrder.order_no).where(
                    PaymentOrder.order_no.in_([r.order_no for r in chunk]))))
            for row in chunk:
                if row.refund_no in refunds:
                    self._refund(row, *refunds[row.refund_no])
                elif row.order_no in orders:
                    self.out.flag("refund", row.order_no, "微信有这笔退款，本系统没有记录", None, row.amount_fen,
                                  row.refund_no)
                else:
                    self.out.flag("unknown_order", row.order_no, "账单里有这笔退款，本系统没有这个订单", None,
                                  row.amount_fen, row.refund_no)

    def _missing_from_bill(self) -> None:
        for order_no, (amount, _status) in sorted(self.orders.items()):
            paid = self._paid_there(order_no)
            if paid is True:  # in the bill of the day before or after (paid around midnight)
                continue
            detail = "账单里没有，查询订单也不是已支付" if paid is False else "账单里没有（查询订单失败）"
            self.out.flag("not_paid_there", order_no, detail, amount, None)
        for refund_no, (order_no, amount, status) in sorted(self.refunds.items()):
            if status != "closed":  # a refund closed here may never have been accepted there
                self.out.flag("refund", order_no, f"账单里没有这笔退款（本系统状态 {status}）", amount, None, refund_no)


@runtime_checkable
class BillSource(Protocol):
    """A payment provider that has daily trade bills (services/wechatpay.py WeChatPayProvider)."""

    name: str

    def download_bill(self, day: dt.date, into: BinaryIO) -> bool: ...

    def query(self, order: OrderView) -> Notification | None: ...


def _paid_there(source: BillSource, billing: SqlBilling) -> Callable[[str], bool | None]:
    def ask(order_no: str) -> bool | None:
        order = billing.order(order_no)
        if order is None:
            return False
        try:
            return source.query(order) is not None
        except ProviderError as exc:
            log.warning("reconcile: query of order %s failed: %s", order_no, exc)
            return None
    return ask


def _text_lines(raw: BinaryIO) -> Iterator[str]:
    """The downloaded file's lines (only ``\n`` ends one: a stray character in a product name does not)."""
    raw.seek(0)
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="\n")
    try:
        yield from text
    except UnicodeDecodeError:
        raise MalformedBill("the bill is not UTF-8 text") from None
    finally:
        text.detach()  # the caller closes the file


def reconcile_day(sessions: sessionmaker, billing: SqlBilling, source: BillSource, day: dt.date,
                  clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> ReconciliationRun:
    """Download the day's bill, compare, store the run. A failure (provider, malformed bill) is
    stored as a failed run with its reason, never as a partial list of mismatches."""
    with sessions() as s:
        run = ReconciliationRun(bill_date=day, provider=source.name, status="running", started_at=clock(),
                                bill_rows=0, payments=0, refunds=0, matched=0, mismatch_count=0)
        s.add(run)
        s.commit()
        run_id = run.id
    t0 = time.perf_counter()
    error, out = None, Outcome()
    try:
        with tempfile.TemporaryFile() as raw:
            rows = read_bill(_text_lines(raw)) if source.download_bill(day, raw) else iter(())
            out = Comparison(sessions, source.name, day, _paid_there(source, billing)).run(rows)
    except MalformedBill as exc:
        error = f"账单格式不对：{exc}"
    except ProviderError as exc:
        error = f"下载账单失败：{exc}"
    except Exception as exc:  # noqa: BLE001 - stored as failed, never left "running"
        log.exception("reconcile %s %s failed", source.name, day)
        error = f"对账出错：{type(exc).__name__}"
    with sessions() as s:
        run = s.get(ReconciliationRun, run_id)
        assert run is not None
        run.finished_at = clock()
        if error is not None:
            run.status, run.error = "failed", error[:200]
        else:
            run.status = "mismatches" if out.mismatches else "ok"
            run.bill_rows, run.payments, run.refunds = out.bill_rows, out.payments, out.refunds
            run.matched, run.mismatch_count = out.matched, len(out.mismatches)
            if out.mismatches:
                s.execute(insert(ReconciliationMismatch), [dict(m, run_id=run_id) for m in out.mismatches])
        s.commit()
        s.refresh(run)
        s.expunge(run)
    log.info("reconcile %s %s: %s, %d rows, %d mismatches, %.1f s", source.name, day, run.status, run.bill_rows,
             run.mismatch_count, time.perf_counter() - t0)
    return run


RUN_STALE = dt.timedelta(hours=1)  # a "running" run older than this died with its process
ATTEMPTS = 3  # failed runs of one day before the daily task stops trying (the CLI still can)


def due_day(sessions: sessionmaker, provider: str, now: dt.datetime, after_hour: int) -> dt.date | None:
    """The day the daily task should reconcile now: yesterday (China time) once the bill is out
    (WeChat Pay makes it from 9:00; it advises fetching after 10:00), unless it is done, under way,
    or failed ``ATTEMPTS`` times."""
    local = now.astimezone(CHINA)
    if local.hour < after_hour:
        return None
    day = local.date() - dt.timedelta(days=1)
    with sessions() as s:
        runs = s.execute(select(ReconciliationRun.status, ReconciliationRun.started_at).where(
            ReconciliationRun.provider == provider, ReconciliationRun.bill_date == day)).all()
    for status, started in runs:
        started = started if started.tzinfo else started.replace(tzinfo=dt.timezone.utc)
        if status in ("ok", "mismatches") or (status == "running" and now - started < RUN_STALE):
            return None
    return None if sum(status == "failed" for status, _ in runs) >= ATTEMPTS else day
