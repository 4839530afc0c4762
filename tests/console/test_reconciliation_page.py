"""The reconciliation page: supervisors and admins read the runs and their mismatches; reviewers may not."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient

from services.db import make_engine, make_sessionmaker
from services.models import ReconciliationMismatch, ReconciliationRun
from services.reconcile import KINDS
from tests.console.conftest import sign_in

STARTED = dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.timezone.utc)  # 10:00 Beijing time


def seed_runs(tmp_path: Path) -> int:
    engine = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")  # the console fixture's service database
    with make_sessionmaker(engine)() as s:
        failed = ReconciliationRun(bill_date=dt.date(2026, 12, 1), provider="wechatpay", status="failed",
                                   started_at=STARTED - dt.timedelta(days=1), bill_rows=0, payments=0, refunds=0,
                                   matched=0, mismatch_count=0, error="账单格式不对：the bill ends without its summary")
        run = ReconciliationRun(bill_date=dt.date(2026, 12, 2), provider="wechatpay", status="mismatches",
                                started_at=STARTED, finished_at=STARTED + dt.timedelta(seconds=3), bill_rows=120,
                                payments=118, refunds=2, matched=118, mismatch_count=2)
        run.mismatches = [
            ReconciliationMismatch(order_no="202612020000000001", kind="amount", here_fen=5630, there_fen=5631,
                                   detail="订单金额与账单不同"),
            ReconciliationMismatch(order_no="202612020000000002", refund_no="202612020000000002R01", kind="refund",
                                   here_fen=1000, there_fen=None, detail="账单里没有这笔退款（本系统状态 pending）")]
        s.add_all([failed, run])
        s.commit()
        failed_id = failed.id
    engine.dispose()
    return failed_id


def test_supervisors_read_the_runs_and_their_mismatches(console: TestClient, tmp_path: Path) -> None:
    failed_id = seed_runs(tmp_path)
    sign_in(console, "lead")
    assert 'href="/payments/reconciliation"' in console.get("/conversations").text  # in the menu
    page = console.get("/payments/reconciliation")
    assert page.status_code == 200
    html = page.text
    assert "2026-12-02" in html and "有差异" in html and "10:00" in html  # started, in Beijing time
    assert "202612020000000001" in html and "56.30" in html and "56.31" in html and KINDS["amount"] in html
    assert "202612020000000002R01" in html and KINDS["refund"] in html
    assert '<label for="run">' in html and '<th scope="col">订单号</th>' in html and "<caption>" in html
    assert "<form method=\"post\"" not in html.split("</header>")[1]  # read-only: no form that changes anything
    failed = console.get("/payments/reconciliation", params={"run": failed_id}).text
    assert "ends without its summary" in failed and "这次对账没有完成" in failed
    assert console.get("/payments/reconciliation", params={"run": "x1"}).status_code == 422
    console.cookies.clear()
    sign_in(console, "admin")
    assert console.get("/payments/reconciliation").status_code == 200


def test_a_reviewer_gets_403_and_no_menu_entry(console: TestClient, tmp_path: Path) -> None:
    seed_runs(tmp_path)
    sign_in(console, "rev")
    assert "/payments/reconciliation" not in console.get("/conversations").text
    page = console.get("/payments/reconciliation")
    assert page.status_code == 403 and "202612020000000001" not in page.text
    console.cookies.clear()
    assert console.get("/payments/reconciliation").status_code == 303  # not signed in: to the login page
