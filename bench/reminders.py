"""Reminder scheduler benchmark: ``python -m bench.reminders`` (``make bench-reminders``; results into
bench/RESULTS.md).

100,000 active subscriptions (half each topic, WeChat and phone citizens), on SQLite and on this
machine's PostgreSQL; measured: ``Reminders.evaluate`` on a day both yearly windows are open (every
subscription gets its reminder queued), then again the same day (nothing new: the once-per-occasion
check alone); wall time and the Python heap's peak (tracemalloc); median of ``--runs`` fresh databases."""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from bench.run import write_results
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from services.reminders import Reminders, Window
from services.sms import Limits, NumberIndex, OutboxGateway, SmsSender
from services.subscriptions import Reminder, Subscription
from tests.sandbox import PG_ADMIN_URL

DAY = dt.datetime(2026, 9, 2, 2, 0, tzinfo=dt.timezone.utc)  # 10:00 in Heze; both windows open


def fill(sessions: Any, n: int) -> None:
    rows = [{"sender_id": f"o{i:027d}", "channel": "wechat" if i % 3 else "phone",
             "topic": "medical_insurance" if i % 2 else "pension_certification", "status": "active",
             "created_at": DAY - dt.timedelta(days=30)} for i in range(n)]
    with sessions() as s:
        for i in range(0, n, 10_000):
            s.execute(insert(Subscription), rows[i:i + 10_000])
        s.commit()


def one_run(url: str, n: int) -> dict[str, float]:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    fill(sessions, n)
    sms = SmsSender(sessions, OutboxGateway(), NumberIndex(b"k" * 32), sign_name="菏泽政务", base_url="https://x",
                    limits=Limits())
    reminders = Reminders(sessions, sms, None, medical=Window.parse("09-01/12-31"),
                          pension=Window.parse("06-01/12-31"), now=lambda: DAY)
    tracemalloc.start()
    t0 = time.perf_counter()
    queued = reminders.evaluate()
    first = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    again = reminders.evaluate()
    second = time.perf_counter() - t0
    _, peak_again = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with sessions() as s:
        count = s.scalar(select(text("count(*)")).select_from(Reminder))
    assert sum(queued.values()) == n == count and not any(again.values()), (queued, again, count)
    engine.dispose()
    return {"evaluate_s": first, "peak_mb": peak / 1e6, "again_s": second, "again_peak_mb": peak_again / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/reminders-last-run.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"subscriptions": args.subscriptions, "runs": args.runs, "databases": {}}
    for kind in ("sqlite", "postgresql"):
        runs = []
        for _ in range(args.runs):
            if kind == "sqlite":
                url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='heze-bench-rem-')) / 'heze.db'}"
                runs.append(one_run(url, args.subscriptions))
                continue
            name = f"heze_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                runs.append(one_run(make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False),
                                    args.subscriptions))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        results["databases"][kind] = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        results["databases"][kind]["all_evaluate_s"] = [round(r["evaluate_s"], 3) for r in runs]
        print(kind, results["databases"][kind], flush=True)
    write_results(results, args)


if __name__ == "__main__":
    main()
