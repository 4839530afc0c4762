"""Payments benchmark: ``python -m bench.payments`` (``make bench-payments``; results into bench/RESULTS.md).

(a) WeChat Pay notify handling through the services API on a real port, with the real crypto:
each notification is signed with the local v3 server's platform key and its resource encrypted
under the APIv3 key (tests/fakes/wechatpay.py); the API verifies the signature and window, claims
the nonce, decrypts, checks the order and marks it paid in the database. Latency is measured at
the client (one keep-alive connection, one notification at a time), p50/p95 per run, median of runs.

(b) Daily reconciliation of 100,000 paid orders against a trade bill of the same size, with five
planted differences: the whole path (bill applied for and downloaded from the local v3 server,
SHA1 checked, parsed, compared, run stored), median of runs; and the comparison alone (bill read
from a file) under tracemalloc for its peak Python memory, plus the process's peak RSS.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import BinaryIO

import httpx
from pydantic import SecretStr
from sqlalchemy import insert

from services.api import create_app
from services.billing import OrderView
from services.container import Services, build_services
from services.db import make_engine
from services.migrate import upgrade
from services.models import Bill, PaymentOrder
from services.payments import Notification
from services.reconcile import CHINA, day_window, reconcile_day
from services.settings import Settings
from tests.fakes.wechat_api import serve_app
from tests.fakes.wechatpay import FakeWeChatPay, bill_csv, bill_line, new_key, write_private, write_public
from tests.sandbox import TEST_DATA_KEYS, free_port

MCHID, OA, SERIAL = "1900000109", "wx0fficialaccount1", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3 = "heze-apiv3-key-0123456789abcdefg"[:32]
PLATFORM_KEY_ID = "PUB_KEY_ID_0110000000000000000000000000000001"
DAY = dt.date(2026, 6, 1)  # far from today: orders paid by (a) fall on another day


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def add_orders(services: Services, prefix: str, n: int, paid: bool) -> list[str]:
    """``n`` bills and their orders (paid on DAY, or pending), inserted in one transaction."""
    start, _ = day_window(DAY)
    now = dt.datetime.now(dt.timezone.utc)
    with services.sessions() as s:
        first = s.execute(insert(Bill).returning(Bill.id, sort_by_parameter_order=True), [
            {"bill_type": "water", "account": f"{prefix}{i:08d}", "holder_name": "测试", "district": "牡丹区",
             "period": "2026年11月", "amount_fen": 1000 + i % 9000, "due_date": DAY, "status": "paid" if paid else "unpaid"}
            for i in range(n)]).scalars().all()
        numbers = [DAY.strftime("%Y%m%d") + prefix[-2:] + f"{i:08d}" for i in range(n)]
        s.execute(insert(PaymentOrder), [
            {"order_no": no, "bill_id": bill_id, "active_bill_id": bill_id, "amount_fen": 1000 + i % 9000,
             "status": "paid" if paid else "pending", "provider": "wechatpay", "channel": "wechat",
             "sender_id": f"oBench{i:022d}", "provider_txn_id": f"42{prefix}{i:024d}" if paid else None,
             "paid_at": start + dt.timedelta(seconds=i * 86_000 / n) if paid else None,
             "expires_at": now + dt.timedelta(hours=2)}
            for i, (no, bill_id) in enumerate(zip(numbers, first))])
        s.commit()
    return numbers


def notify_run(fake: FakeWeChatPay, api: str, orders: list[str], amounts: dict[str, int]) -> list[float]:
    bodies = []
    for no in orders:  # built before timing: the server's work is what is measured
        resource = {"mchid": MCHID, "appid": OA, "out_trade_no": no, "transaction_id": "42" + secrets.token_hex(13),
                    "trade_type": "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
                    "success_time": dt.datetime.now(CHINA).isoformat(timespec="seconds"),
                    "payer": {"openid": "oBenchPayer"}, "amount": {"total": amounts[no], "currency": "CNY",
                                                                   "payer_total": amounts[no], "payer_currency": "CNY"}}
        bodies.append(fake.notification("TRANSACTION.SUCCESS", resource))
    times = []
    with httpx.Client(timeout=30) as client:
        for body, headers in bodies:
            t0 = time.perf_counter()
            r = client.post(f"{api}/payments/notify/wechatpay", content=body, headers=headers)
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"notification refused: {r.status_code} {r.text}")
    return times


class FileBill:
    """A bill source reading a file (the comparison alone, for its memory); nothing is paid there."""

    name = "wechatpay"

    def __init__(self, path: Path) -> None:
        self._path = path

    def download_bill(self, day: dt.date, into: BinaryIO) -> bool:
        with self._path.open("rb") as f:
            while chunk := f.read(1 << 16):
                into.write(chunk)
        return True

    def query(self, order: OrderView) -> Notification | None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notifications", type=int, default=300)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db-url", default="", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--out", default="bench/payments-last-run.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heze-bench-payments-"))
    merchant_key, platform_key = new_key(), new_key()
    fake = FakeWeChatPay(MCHID, {OA}, merchant_key.public_key(), SERIAL, APIV3.encode(), platform_key)
    fake_port, api_port = free_port(), free_port()
    fake.base_url = f"http://127.0.0.1:{fake_port}"
    db_url = args.db_url or f"sqlite:///{tmp / 'heze.db'}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, heze_env="test", heze_db_url=db_url, data_keys=SecretStr(TEST_DATA_KEYS),
        rasa_api_token=SecretStr("bench-" + uuid.uuid4().hex), payment_provider="wechatpay",
        wechatpay_mchid=MCHID, wechatpay_cert_serial=SERIAL, wechatpay_apiv3_key=SecretStr(APIV3),
        wechatpay_private_key_path=str(write_private(merchant_key, tmp / "apiclient_key.pem")),
        wechatpay_public_key_path=str(write_public(platform_key.public_key(), tmp / "pub_key.pem")),
        wechatpay_public_key_id=PLATFORM_KEY_ID, wechatpay_api_base=fake.base_url, wechat_appid=OA,
        public_base_url=f"http://127.0.0.1:{api_port}", payment_sweep_s=0, sms_sweep_s=0, reconcile_check_s=0)
    engine = make_engine(db_url)
    upgrade(engine)
    services = build_services(settings, engine)
    results: dict[str, object] = {"machine": machine(), "database": engine.dialect.name, "date": dt.date.today().isoformat()}

    # (a) notify handling
    pending = add_orders(services, "91", args.notifications * args.runs, paid=False)
    amounts = {no: 1000 + i % 9000 for i, no in enumerate(pending)}
    runs = []
    with serve_app(fake.app(), fake_port), serve_app(create_app(settings, services), api_port) as api:
        for r in range(args.runs):
            times = notify_run(fake, api, pending[r * args.notifications:(r + 1) * args.notifications], amounts)
            runs.append({"p50_ms": statistics.median(times), "p95_ms": pct(times, 0.95), "max_ms": max(times)})
            print(f"notify run {r + 1}: p50 {runs[-1]['p50_ms']:.1f} ms, p95 {runs[-1]['p95_ms']:.1f} ms")
        results["notify"] = {"notifications_per_run": args.notifications, "runs": runs,
                             "median_p50_ms": statistics.median(x["p50_ms"] for x in runs),
                             "median_p95_ms": statistics.median(x["p95_ms"] for x in runs)}

        # (b) reconciliation of a day's orders against a bill of the same size
        t0 = time.perf_counter()
        orders = add_orders(services, "92", args.orders, paid=True)
        inserted_s = time.perf_counter() - t0
        order_amounts = {no: 1000 + i % 9000 for i, no in enumerate(orders)}
        planted_amount, planted_missing = orders[10], orders[20]  # amount differs; paid here, not there
        lines = [bill_line(f"{DAY} 10:00:00", OA, MCHID, f"42{i:026d}", no, "oBenchPayer", "JSAPI",
                           order_amounts[no] + (1 if no == planted_amount else 0))
                 for i, no in enumerate(orders) if no != planted_missing]
        lines += [bill_line(f"{DAY} 11:00:00", OA, MCHID, "4299", f"20260601X{i}", "oBenchPayer", "NATIVE", 100)
                  for i in range(3)]  # three orders the merchant never made
        fake.bills[DAY.isoformat()] = bill = bill_csv(lines)
        (tmp / "bill.csv").write_bytes(bill)
        del lines
        timings = []
        for r in range(args.runs):
            t0 = time.perf_counter()
            run = reconcile_day(services.sessions, services.billing, services.payments, DAY)  # type: ignore[arg-type]
            timings.append(time.perf_counter() - t0)
            assert (run.status, run.bill_rows, run.mismatch_count) == ("mismatches", args.orders + 2, 5), run.status
            print(f"reconcile run {r + 1}: {timings[-1]:.2f} s")
    tracemalloc.start()
    t0 = time.perf_counter()
    run = reconcile_day(services.sessions, services.billing, FileBill(tmp / "bill.csv"), DAY)
    traced_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert run.mismatch_count == 5
    results["reconcile"] = {
        "orders": args.orders, "bill_rows": args.orders + 2, "bill_mb": round(len(bill) / 1e6, 1),
        "planted_mismatches": 5, "insert_orders_s": round(inserted_s, 2), "runs_s": [round(t, 2) for t in timings],
        "median_s": round(statistics.median(timings), 2),
        "compare_only_peak_python_mb": round(peak / 1e6, 1), "compare_only_under_tracemalloc_s": round(traced_s, 2),
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    engine.dispose()
    print(json.dumps(results, ensure_ascii=False, indent=2))
    Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
