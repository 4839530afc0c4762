"""The reminder campaigns page: supervisors compose, preview, test, schedule and cancel, each step
audited with the change; bad input gets a Chinese reason; reviewers may not see or post."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.campaigns import due_key
from services.db import make_engine, make_sessionmaker
from services.models import AuditEntry
from services.sms import NumberIndex
from services.subscriptions import Reminder, SqlSubscriptions
from tests.console.conftest import sign_in

BEIJING = dt.timezone(dt.timedelta(hours=8))
TEXT = "2027年度城乡居民医保开始缴费了"


def database(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'heze.db'}")  # the console fixture's service database


def seed_subscribers(tmp_path: Path) -> None:
    """Two phone subscribers (one cancelled) and one in WeChat, of the medical-insurance topic."""
    engine = database(tmp_path)
    subs = SqlSubscriptions(make_sessionmaker(engine), NumberIndex(b"k" * 32), wechat_accounts=frozenset({"oa"}))
    for sender, channel, caller in (("call-1", "phone", "13800000051"), ("call-2", "phone", "13800000052"),
                                    ("oWx0000000000000000000000051", "wechat", None)):
        assert subs.subscribe(sender_id=sender, channel=channel, topic="medical_insurance", caller=caller,
                              wording="同意")[0] == "subscribed"
    assert subs.cancel("call-2") == 1
    engine.dispose()


def audit_entries(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    engine = database(tmp_path)
    with make_sessionmaker(engine)() as s:
        rows = [(e.username, e.action, e.detail) for e in
                s.scalars(select(AuditEntry).where(AuditEntry.action.like("campaign_%")).order_by(AuditEntry.id))]
    engine.dispose()
    return rows


def queued(tmp_path: Path, campaign_id: int) -> list[str]:
    engine = database(tmp_path)
    with make_sessionmaker(engine)() as s:
        rows = list(s.scalars(select(Reminder.status).where(Reminder.due_key == due_key(campaign_id))))
    engine.dispose()
    return rows


def later(hours: int = 1) -> str:
    return (dt.datetime.now(BEIJING) + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")


def compose(console: TestClient, csrf: str, **fields: str) -> Any:  # the test client's response
    values = {"csrf_token": csrf, "topic": "medical_insurance", "channel": "all", "text": TEXT,
              "deadline": f"{dt.date.today().year + 1}-01-31", "send_at": later(), "subscribed_before": ""}
    values.update(fields)
    return console.post("/campaigns", data=values)


def test_a_supervisor_composes_previews_tests_schedules_and_reads_the_figures(console: TestClient,
                                                                               tmp_path: Path) -> None:
    seed_subscribers(tmp_path)
    csrf = sign_in(console, "lead")
    assert 'href="/campaigns"' in console.get("/conversations").text  # in the menu
    html = console.get("/campaigns").text
    assert "还没有推送" in html and 'action="/campaigns"' in html and "居民医保缴费提醒" in html

    r = compose(console, csrf)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    campaign_id = int(location.rsplit("/", 1)[1])
    detail = console.get(location).text
    assert re.search(r"会发给 <b>2</b> 人", detail)  # the cancelled subscriber is not counted
    assert "您订阅的居民医保缴费提醒：2027年度城乡居民医保开始缴费了，请在1月31日前办理。回复TD退订短信。" in detail
    assert "草稿" in detail and f'action="/campaigns/{campaign_id}/schedule"' in detail

    r = console.post(f"/campaigns/{campaign_id}/test", data={"csrf_token": csrf, "phone": "13800000099"})
    assert r.status_code == 303 and r.headers["location"] == f"/campaigns/{campaign_id}#tests"
    detail = console.get(f"/campaigns/{campaign_id}").text
    assert "138****0099" in detail and "13800000099" not in detail and "等待发送" in detail

    when = later(2)
    r = console.post(f"/campaigns/{campaign_id}/schedule", data={"csrf_token": csrf, "send_at": when})
    assert r.status_code == 303
    assert sorted(queued(tmp_path, campaign_id)) == ["queued", "queued"]
    again = console.post(f"/campaigns/{campaign_id}/schedule", data={"csrf_token": csrf, "send_at": when})
    assert again.status_code == 400 and "已经安排好了" in again.text and len(queued(tmp_path, campaign_id)) == 2
    detail = console.get(f"/campaigns/{campaign_id}").text
    assert "已安排" in detail and "2 人" in detail and f'action="/campaigns/{campaign_id}/schedule"' not in detail
    listing = console.get("/campaigns").text
    row = listing.split(f'id="c{campaign_id}"')[1].split("</tr>")[0]
    assert TEXT in row and "已安排" in row and row.count("<td>2</td>") == 2  # recipients and waiting

    r = console.post(f"/campaigns/{campaign_id}/cancel", data={"csrf_token": csrf})
    assert r.status_code == 303 and queued(tmp_path, campaign_id) == ["skipped", "skipped"]
    detail = console.get(f"/campaigns/{campaign_id}").text
    assert "已撤销" in detail and 'id="cancel"' not in detail
    refused = console.post(f"/campaigns/{campaign_id}/cancel", data={"csrf_token": csrf})
    assert refused.status_code == 400 and "已经撤销了" in refused.text

    assert audit_entries(tmp_path) == [
        ("lead", "campaign_create", f"推送 {campaign_id}：居民医保缴费提醒，全部订阅人（按各自订阅的渠道）"),
        ("lead", "campaign_test", f"推送 {campaign_id}：测试短信发往 138****0099"),
        ("lead", "campaign_schedule", f"推送 {campaign_id}：2 人，{when.replace('T', ' ')}发送"),
        ("lead", "campaign_cancel", f"推送 {campaign_id}：撤销，2 条不再发送"),
    ]


def test_bad_input_is_refused_with_a_reason_and_nothing_is_kept(console: TestClient, tmp_path: Path) -> None:
    seed_subscribers(tmp_path)
    csrf = sign_in(console, "admin")
    past = (dt.datetime.now(BEIJING) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    for fields, reason in (
            ({"text": ""}, "请写推送的内容"),
            ({"text": "城乡居民医保开始缴费了请大家抓紧时间到村里办理一下"}, "太长了"),
            ({"text": "届时请到村里缴费"}, "公文用语"),
            ({"text": "缴费请打13800000001"}, "手机号"),
            ({"topic": "parking"}, "没有这个推送主题"),
            ({"channel": "fax"}, "没有这个发送渠道"),
            ({"send_at": past}, "发送时间已经过了"),
            ({"send_at": "tomorrow"}, "发送时间的格式不对"),
            ({"deadline": ""}, "请填办理截止日期"),
            ({"deadline": "31/01"}, "办理截止日期的格式不对")):
        r = compose(console, csrf, **fields)
        assert r.status_code == 400 and reason in r.text, (fields, r.text)
    assert "还没有推送" in console.get("/campaigns").text and audit_entries(tmp_path) == []

    campaign_id = int(compose(console, csrf).headers["location"].rsplit("/", 1)[1])
    for phone in ("", "1380000", "23800000001", "138000000011"):
        r = console.post(f"/campaigns/{campaign_id}/test", data={"csrf_token": csrf, "phone": phone})
        assert r.status_code == 400 and "11 位手机号" in r.text
    r = console.post(f"/campaigns/{campaign_id}/schedule", data={"csrf_token": csrf, "send_at": past})
    assert r.status_code == 400 and "发送时间已经过了" in r.text and queued(tmp_path, campaign_id) == []
    assert console.post("/campaigns/99999/schedule", data={"csrf_token": csrf}).status_code == 400
    assert console.get("/campaigns/99999").status_code == 404
    assert console.get("/campaigns/x1").status_code == 422
    assert [action for _, action, _ in audit_entries(tmp_path)] == ["campaign_create"]


def test_forms_need_the_csrf_token(console: TestClient, tmp_path: Path) -> None:
    csrf = sign_in(console, "lead")
    assert console.post("/campaigns", data={"topic": "medical_insurance", "text": TEXT}).status_code == 403
    campaign_id = int(compose(console, csrf).headers["location"].rsplit("/", 1)[1])
    for action in ("test", "schedule", "cancel"):
        assert console.post(f"/campaigns/{campaign_id}/{action}", data={"csrf_token": "forged"}).status_code == 403
    assert [action for _, action, _ in audit_entries(tmp_path)] == ["campaign_create"]


def test_a_reviewer_gets_403_and_no_menu_entry(console: TestClient, tmp_path: Path) -> None:
    csrf = sign_in(console, "lead")
    campaign_id = int(compose(console, csrf).headers["location"].rsplit("/", 1)[1])
    console.cookies.clear()
    csrf = sign_in(console, "rev")
    assert 'href="/campaigns"' not in console.get("/conversations").text
    assert console.get("/campaigns").status_code == 403
    assert console.get(f"/campaigns/{campaign_id}").status_code == 403
    assert compose(console, csrf).status_code == 403
    for action in ("test", "schedule", "cancel"):
        r = console.post(f"/campaigns/{campaign_id}/{action}", data={"csrf_token": csrf, "phone": "13800000099"})
        assert r.status_code == 403
    assert queued(tmp_path, campaign_id) == [] and [a for _, a, _ in audit_entries(tmp_path)] == ["campaign_create"]


def test_the_page_needs_a_session(console: TestClient) -> None:
    r = console.get("/campaigns")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert console.post("/campaigns", data={}).status_code == 401
