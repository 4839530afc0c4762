"""Access rules, CSRF, lock-out, the learning loop and masking, against the console app in-process."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from services.settings import ROOT
from tests.console.conftest import PASSWORD, csrf_of, sign_in
from tests.console.synthetic import ID_NUMBER, PHONE, SECRETS

GET_ROUTES = ["/", "/conversations", "/conversations/phone-0-000002", "/conversations/phone-0-000002/story.yml",
              "/conversations/phone-0-000002/recording", "/exports/nlu.yml", "/tickets", "/admin/users",
              "/admin/audit", "/api/conversations", "/api/conversations/phone-0-000002"]
POST_ROUTES = ["/logout", "/conversations/x/review", "/conversations/x/tags", "/conversations/x/note",
               "/conversations/x/messages/1/flag", "/conversations/x/messages/1/correct",
               "/conversations/x/messages/1/reveal", "/tickets/1/status", "/tickets/1/department", "/admin/users"]


def test_every_route_needs_a_session(console: TestClient) -> None:
    for path in GET_ROUTES:
        r = console.get(path)
        if path.startswith(("/api/", "/exports/")):
            assert r.status_code == 401, path
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    for path in POST_ROUTES:
        assert console.post(path, data={}).status_code == 401, path
    assert console.get("/health").status_code == 200
    assert console.get("/login").status_code == 200
    assert console.get("/static/console.css").status_code == 200


def test_session_cookie_is_httponly_and_samesite(console: TestClient) -> None:
    token = csrf_of(console.get("/login").text)
    r = console.post("/login", data={"username": "rev", "password": PASSWORD, "csrf_token": token})
    cookie = r.headers["set-cookie"]
    assert "heze_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_a_reviewer_cannot_reach_admin_pages_or_reveal(console: TestClient) -> None:
    csrf = sign_in(console, "rev")
    assert console.get("/admin/users").status_code == 403
    assert console.get("/admin/audit").status_code == 403
    assert console.post("/admin/users", data={"csrf_token": csrf, "username": "x", "password": "p" * 12,
                                              "role": "admin"}).status_code == 403
    event = first_user_event(console, "phone-0-000002")
    assert console.post(f"/conversations/phone-0-000002/messages/{event}/reveal",
                        data={"csrf_token": csrf}).status_code == 403
    assert console.get("/conversations").status_code == 200


def test_forms_without_the_csrf_token_are_refused(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    assert console.post("/conversations/phone-0-000002/review", data={"reviewed": "yes"}).status_code == 403
    assert console.post("/conversations/phone-0-000002/review",
                        data={"reviewed": "yes", "csrf_token": "forged"}).status_code == 403
    assert console.post("/conversations/phone-0-000002/review",
                        data={"reviewed": "yes", "csrf_token": csrf}).status_code == 303
    # The login form has its own token (a cookie and a hidden field that must match).
    console.cookies.clear()
    assert console.post("/login", data={"username": "admin", "password": PASSWORD}).status_code == 403


def test_repeated_failures_lock_the_account(console: TestClient) -> None:
    for _ in range(5):
        token = csrf_of(console.get("/login").text)
        r = console.post("/login", data={"username": "lead", "password": "wrong password", "csrf_token": token})
        assert r.status_code == 401 and "不对" in r.text
    token = csrf_of(console.get("/login").text)
    r = console.post("/login", data={"username": "lead", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401 and "锁定" in r.text  # even the right password waits out the lock


def first_user_event(console: TestClient, sender: str) -> int:
    turns = console.get(f"/api/conversations/{sender}").json()["turns"]
    return next(t["event_id"] for t in turns if t["kind"] == "user")


def test_correct_export_review_and_audit(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    sender = "rest-0-000003"  # the script whose first message was not understood
    event = first_user_event(console, sender)
    r = console.post(f"/conversations/{sender}/messages/{event}/correct",
                     data={"csrf_token": csrf, "intent": "ask_guide", "entities": "service=身份证"})
    assert r.status_code == 303
    assert console.post(f"/conversations/{sender}/messages/{event}/correct",
                        data={"csrf_token": csrf, "intent": "no_such_intent"}).status_code == 400
    nlu = yaml.safe_load(console.get("/exports/nlu.yml").text)
    assert nlu["nlu"] == [{"intent": "ask_guide", "examples": "- 这个咋弄啊\n"}]
    story = yaml.safe_load(console.get(f"/conversations/{sender}/story.yml").text)
    steps = story["stories"][0]["steps"]
    assert steps[0] == {"user": "这个咋弄啊", "intent": "ask_guide"} and {"action": "action_fallback"} in steps
    assert console.post(f"/conversations/{sender}/review", data={"csrf_token": csrf, "reviewed": "yes"}).status_code == 303
    assert console.post(f"/conversations/{sender}/tags", data={"csrf_token": csrf, "add": "方言 待训练"}).status_code == 303
    listed = console.get("/api/conversations", params={"reviewed": "yes", "tag": "方言"}).json()
    assert [c["sender_id"] for c in listed["conversations"]] == [sender]
    audit = console.get("/admin/audit").text
    for action in ("login", "correct", "export_nlu", "export_story", "reviewed", "tags"):
        assert f"<td>{action}</td>" in audit


def test_filters_paginate_and_sort(console: TestClient) -> None:
    sign_in(console, "rev")
    phone = console.get("/api/conversations", params={"channel": "phone"}).json()
    assert phone["total"] == 3 and all(c["channel"] == "phone" for c in phone["conversations"])
    low = console.get("/api/conversations", params={"max_confidence": "0.5", "sort": "min_confidence"}).json()
    assert low["total"] == 3 and all(c["min_confidence"] < 0.5 for c in low["conversations"])
    handed = console.get("/api/conversations", params={"flag": "handoff"}).json()
    assert handed["total"] == 3 and all(c["handoff"] for c in handed["conversations"])
    assert console.get("/api/conversations", params={"intent": "pay_bill"}).json()["total"] == 3
    assert console.get("/api/conversations", params={"min_turns": "3"}).json()["total"] == 12
    assert console.get("/api/conversations", params={"min_turns": "4"}).json()["total"] == 0
    assert console.get("/api/conversations", params={"q": "路灯"}).json()["total"] == 3
    assert "第 1 / 1 页" in console.get("/conversations", params={"channel": "wechat"}).text


def test_no_page_export_or_api_shows_a_personal_number(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    senders = [c["sender_id"] for c in console.get("/api/conversations").json()["conversations"]]
    event = first_user_event(console, senders[0])
    console.post(f"/conversations/{senders[0]}/messages/{event}/correct", data={"csrf_token": csrf, "intent": "inform"})
    console.post(f"/conversations/{senders[0]}/note", data={"csrf_token": csrf, "note": f"回电 {PHONE}"})
    pages = ["/", "/conversations", "/tickets", "/admin/audit", "/exports/nlu.yml", "/api/conversations"]
    for sender in senders:
        pages += [f"/conversations/{sender}", f"/conversations/{sender}/story.yml", f"/api/conversations/{sender}"]
    for path in pages:
        body = console.get(path).text
        for secret in SECRETS:
            assert secret not in body, f"{secret} in the clear on {path}"
    assert "138****5678" in console.get("/conversations/phone-0-000002").text  # masked, not dropped


def test_a_supervisor_reveals_one_message_and_it_is_audited(console: TestClient) -> None:
    csrf = sign_in(console, "lead")
    sender = "miniprogram-0-000001"  # the script with an ID-card number in its second message
    turns = console.get(f"/api/conversations/{sender}").json()["turns"]
    event = [t["event_id"] for t in turns if t["kind"] == "user"][1]
    r = console.post(f"/conversations/{sender}/messages/{event}/reveal", data={"csrf_token": csrf})
    assert r.status_code == 200 and ID_NUMBER in r.text and r.headers["cache-control"] == "no-store"
    assert ID_NUMBER not in console.get(f"/conversations/{sender}").text  # masked again on the next view
    sign_in(console, "admin")
    assert re.search(r"<td>lead</td><td>reveal</td>", console.get("/admin/audit").text)


def test_tickets_change_status_and_department(console: TestClient) -> None:
    csrf = sign_in(console, "rev")
    page = console.get("/tickets").text
    ticket_id = int(re.search(r'/tickets/(\d+)/status', page).group(1))  # type: ignore[union-attr]
    assert console.post(f"/tickets/{ticket_id}/status", data={"csrf_token": csrf, "status": "resolved"}).status_code == 303
    assert console.post(f"/tickets/{ticket_id}/department", data={"csrf_token": csrf, "department": "水务"}).status_code == 303
    assert console.post(f"/tickets/{ticket_id}/status", data={"csrf_token": csrf, "status": "bogus"}).status_code == 400
    assert "水务" in console.get("/tickets", params={"department": "水务"}).text


def test_citizens_with_a_human_are_listed_and_handed_back(console: TestClient, tmp_path: Path) -> None:
    import time

    from channels.wechat_store import Human, SqliteClaims
    store = SqliteClaims(str(tmp_path / "wechat.db"))
    store.hand_to_human(Human("wx00000000000000a1", "oHandedOff123", "wechat", "kf2001@heze", time.time() - 60,
                              time.time() + 1800))
    store.hand_to_human(Human("wx00000000000000b2", "mWaiting456", "miniprogram", "", time.time() - 30,
                              time.time() + 1800))
    csrf = sign_in(console, "rev")
    listing = console.get("/humans").text
    assert "公众号" in listing and "小程序" in listing and "kf2001@heze" in listing and "任一在线客服" in listing
    assert ">oHande…</a>" in listing  # the openid is shortened on the page; the link opens the conversation
    back = "/humans/wx00000000000000a1/oHandedOff123/return"
    assert console.post(back, data={"csrf_token": "forged"}).status_code in (400, 403)
    assert store.with_human("wx00000000000000a1", "oHandedOff123") is not None
    assert console.post(back, data={"csrf_token": csrf}).status_code == 303
    assert store.with_human("wx00000000000000a1", "oHandedOff123") is None
    assert console.post(back, data={"csrf_token": csrf}).status_code == 400  # already handed back
    assert "mWaiti…" in console.get("/humans").text and "oHande…" not in console.get("/humans").text
    sign_in(console, "admin")
    assert "hand_back" in console.get("/admin/audit").text


def test_create_user_command(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'heze.db'}"

    def create(username: str, password: str = "a good long password") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "console", "create-user", "--username", username,
                               "--password-stdin"], input=password + "\n", text=True, capture_output=True, cwd=ROOT,
                              env={"HEZE_DB_URL": db, "PATH": "/usr/bin:/bin"})

    ok = create("first-admin")
    assert ok.returncode == 0 and "已创建" in ok.stdout
    assert create("first-admin").returncode == 1  # exists
    assert create("short", "short").returncode == 1  # password too short
