"""The family proxy page: staff read the grants (numbers masked) and their trails, and end one."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from services.db import make_engine, make_sessionmaker
from services.models import AuditEntry
from services.proxy import SqlProxies
from services.sms import Limits, NumberIndex, OutboxGateway, SmsSender
from tests.console.conftest import sign_in

ELDER = "13800000041"
FAMILY = "web:oa:openid-daughter"


def seed_grants(tmp_path: Path) -> tuple[int, int]:
    """An active grant and a pending one, in the console fixture's service database."""
    engine = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    sessions = make_sessionmaker(engine)
    index = NumberIndex(b"k" * 32)
    sms = SmsSender(sessions, OutboxGateway(), index, sign_name="菏泽政务", base_url="https://h",
                    limits=Limits(dt.timedelta(0), 10))
    codes = iter(["111111", "222222"])
    proxies = SqlProxies(sessions, sms, index, draw_code=lambda: next(codes))
    _, active = proxies.request(FAMILY, ELDER, "母亲")
    _, pending = proxies.request(FAMILY, "13900000042", "父亲")
    assert active is not None and pending is not None and proxies.consent(ELDER, "111111") == "granted"
    proxies.audit(active.id, "family", "bill_paid", f"替{ELDER}交水费 56.30 元")
    engine.dispose()
    return active.id, pending.id


def test_staff_read_the_grants_and_a_trail_with_numbers_masked(console: TestClient, tmp_path: Path) -> None:
    active, pending = seed_grants(tmp_path)
    sign_in(console, "rev")
    assert 'href="/proxies"' in console.get("/conversations").text  # in the menu
    html = console.get("/proxies").text
    assert "138****0041" in html and "139****0042" in html and ELDER not in html and FAMILY not in html
    assert "代办中" in html and "待老人确认" in html and "母亲" in html
    assert html.count('action="/proxies/') == 2 and '<label for="status">' in html and "<caption>" in html
    only_active = console.get("/proxies", params={"status": "active"}).text
    assert f'id="g{active}"' in only_active and f'id="g{pending}"' not in only_active
    trail = console.get("/proxies", params={"grant": active}).text
    assert "家人申请，验证码已发给老人" in trail and "老人来电同意" in trail and "bill_paid" in trail
    assert "138****0041" in trail.split('id="trail"')[1] and ELDER not in trail
    assert console.get("/proxies", params={"grant": "x1"}).status_code == 422


def test_staff_end_a_grant_with_the_csrf_token_and_it_is_audited(console: TestClient, tmp_path: Path) -> None:
    active, _ = seed_grants(tmp_path)
    csrf = sign_in(console, "rev")
    assert console.post(f"/proxies/{active}/end", data={}).status_code == 403
    assert console.post(f"/proxies/{active}/end", data={"csrf_token": "forged"}).status_code == 403
    r = console.post(f"/proxies/{active}/end", data={"csrf_token": csrf, "reason": f"老人来电 {ELDER} 要求停止"})
    assert r.status_code == 303 and r.headers["location"] == f"/proxies?grant={active}"
    html = console.get(r.headers["location"]).text
    assert "已解除" in html and "工作人员 rev" in html and "老人来电 138****0041 要求停止" in html
    again = console.post(f"/proxies/{active}/end", data={"csrf_token": csrf})
    assert again.status_code == 400 and "已经结束" in again.text
    assert console.post("/proxies/999999/end", data={"csrf_token": csrf}).status_code == 400
    engine = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    with make_sessionmaker(engine)() as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.action == "proxy_end")).all()
    engine.dispose()
    assert entry.username == "rev" and entry.detail == f"代办 {active}：老人来电 138****0041 要求停止"


def test_the_page_and_the_form_need_a_session(console: TestClient) -> None:
    r = console.get("/proxies")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert console.post("/proxies/1/end", data={}).status_code == 401
