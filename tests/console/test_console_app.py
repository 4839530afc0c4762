"""Access rules, CSRF, lock-out, the learning loop and masking, against the console app in-process."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from services.settings import ROOT
from tests.console.conftest import PASSWORD, csrf_of, ref, sign_in
from tests.console.synthetic import ID_NUMBER, PHONE, SECRETS

SOME_REF = "c" + "0" * 20  # without a session every route answers the same, whether the conversation exists or not
GET_ROUTES = ["/", "/conversations", f"/conversations/{SOME_REF}", f"/conversations/{SOME_REF}/story.yml",
              f"/conversations/{SOME_REF}/recording", "/exports/nlu.yml", "/tickets", "/admin/users",
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
    assert console.post(f"/conversations/{ref(console, 'phone-0-000002')}/messages/{event}/reveal",
                        data={"csrf_token": csrf}).status_code == 403
    assert console.get("/conversations").status_code == 200


def test_forms_without_the_csrf_token_are_refused(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    assert console.post(f"/conversations/{ref(console, 'phone-0-000002')}/review", data={"reviewed": "yes"}).status_code == 403
    assert console.post(f"/conversations/{ref(console, 'phone-0-000002')}/review",
                        data={"reviewed": "yes", "csrf_token": "forged"}).status_code == 403
    assert console.post(f"/conversations/{ref(console, 'phone-0-000002')}/review",
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
    # Locked, wrong password, unknown name: the same answer (once "已暂时锁定" told a guesser the name exists).
    answers = set()
    for username, password in (("lead", PASSWORD), ("lead", "wrong password"), ("nobody-here", PASSWORD)):
        token = csrf_of(console.get("/login").text)
        r = console.post("/login", data={"username": username, "password": password, "csrf_token": token})
        answers.add((r.status_code, re.sub(r'name="csrf_token" value="[^"]+"', "", r.text)))
    assert len(answers) == 1


def test_numbers_out_of_range_get_422_not_500(console: TestClient) -> None:
    sign_in(console, "rev")
    huge = "9" * 40
    for path in (f"/conversations?page={huge}", f"/conversations?min_turns={huge}", f"/conversations?rating={huge}",
                 f"/?days={huge}", f"/api/conversations?page={huge}", "/conversations?page=-1",
                 "/conversations?rating=６"):
        assert console.get(path).status_code == 422, path
    csrf = csrf_of(console.get("/conversations").text)
    assert console.post(f"/conversations/{ref(console, 'phone-0-000002')}/messages/{huge}/flag",
                        data={"csrf_token": csrf, "flagged": "yes"}).status_code == 422
    assert console.post(f"/tickets/{huge}/status", data={"csrf_token": csrf, "status": "resolved"}).status_code == 422
    assert console.get("/conversations?page=2&rating=low&min_turns=3").status_code == 200


def test_security_headers_and_no_caching_of_conversations(console: TestClient) -> None:
    sign_in(console, "rev")
    for path in ("/conversations", f"/conversations/{ref(console, 'phone-0-000002')}", "/api/conversations", "/login", "/humans"):
        r = console.get(path)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store", path
    assert console.get("/static/console.css").headers.get("cache-control") != "no-store"
    assert "onchange=" not in console.get("/").text  # no inline script for the policy to block


def test_easy_passwords_are_refused(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    for weak in ("1234567890", "abcdefghij", "aaaaaaaaaaaa", "abcabcabcabc", "woaini1314", "Password123",
                 "qwertyuiop", "newstaff-2026"):
        r = console.post("/admin/users", data={"csrf_token": csrf, "username": "newstaff", "password": weak,
                                               "role": "admin"})
        assert r.status_code == 400, weak
    r = console.post("/admin/users", data={"csrf_token": csrf, "username": "newstaff", "password": "菏泽 牡丹 2026 春",
                                           "role": "reviewer"})
    assert r.status_code == 303


def test_an_admin_disables_unlocks_and_resets_accounts_and_each_is_audited(console: TestClient) -> None:
    reviewer = TestClient(console.app, follow_redirects=False)
    sign_in(reviewer, "rev")
    csrf = sign_in(console, "admin")
    assert "重置密码" in console.get("/admin/users").text
    rev_id = user_id(console, "rev")
    assert console.post(f"/admin/users/{rev_id}/disable", data={"csrf_token": csrf}).status_code == 303
    assert reviewer.get("/conversations").status_code in (303, 401)  # the session ended with the account
    token = csrf_of(reviewer.get("/login").text)
    assert reviewer.post("/login", data={"username": "rev", "password": PASSWORD, "csrf_token": token}).status_code == 401
    assert console.post(f"/admin/users/{rev_id}/enable", data={"csrf_token": csrf}).status_code == 303
    assert console.post(f"/admin/users/{rev_id}/reset", data={"csrf_token": csrf, "password": "1234567890"}).status_code == 400
    assert console.post(f"/admin/users/{rev_id}/reset",
                        data={"csrf_token": csrf, "password": "新的 密码 牡丹 2026"}).status_code == 303
    sign_in(reviewer, "rev", "新的 密码 牡丹 2026")
    for _ in range(5):
        token = csrf_of(reviewer.get("/login").text)
        reviewer.post("/login", data={"username": "rev", "password": "wrong password", "csrf_token": token})
    assert console.post(f"/admin/users/{rev_id}/unlock", data={"csrf_token": csrf}).status_code == 303
    sign_in(reviewer, "rev", "新的 密码 牡丹 2026")  # unlocked at once
    admin_id = user_id(console, "admin")
    assert console.post(f"/admin/users/{admin_id}/disable", data={"csrf_token": csrf}).status_code == 400
    assert console.post(f"/admin/users/{rev_id}/bogus", data={"csrf_token": csrf}).status_code == 400
    audit = console.get("/admin/audit").text
    assert all(a in audit for a in ("user_disable", "user_enable", "user_reset", "user_unlock"))
    reviewer.close()


def user_id(console: TestClient, username: str) -> int:
    from sqlalchemy import select

    from services.models import ConsoleUser
    with console.app.state.accounts._sessions() as s:
        return int(s.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)))


def first_user_event(console: TestClient, sender: str) -> int:
    turns = console.get(f"/api/conversations/{ref(console, sender)}").json()["turns"]
    return next(t["event_id"] for t in turns if t["kind"] == "user")


def test_correct_export_review_and_audit(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    sender = "rest-0-000003"  # the script whose first message was not understood
    event = first_user_event(console, sender)
    r = console.post(f"/conversations/{ref(console, sender)}/messages/{event}/correct",
                     data={"csrf_token": csrf, "intent": "ask_guide", "entities": "district=牡丹区"})
    assert r.status_code == 303
    assert console.post(f"/conversations/{ref(console, sender)}/messages/{event}/correct",
                        data={"csrf_token": csrf, "intent": "no_such_intent"}).status_code == 400
    for bad in ({"intent": "nlu_fallback"}, {"intent": "ask_guide", "entities": "证件=身份证"}):
        assert console.post(f"/conversations/{ref(console, sender)}/messages/{event}/correct",
                            data={"csrf_token": csrf, **bad}).status_code == 400, bad
    nlu = yaml.safe_load(console.get("/exports/nlu.yml").text)
    assert nlu["nlu"] == [{"intent": "ask_guide", "examples": "- 这个咋弄啊\n"}]
    story = yaml.safe_load(console.get(f"/conversations/{ref(console, sender)}/story.yml").text)
    steps = story["stories"][0]["steps"]
    # The fallback the bot gave was the answer to a wrong intent: the story ends with what the rules do for the right one.
    assert steps == [{"user": "这个咋弄啊", "intent": "ask_guide"}, {"action": "action_answer_guide"}]
    assert console.post(f"/conversations/{ref(console, sender)}/review", data={"csrf_token": csrf, "reviewed": "yes"}).status_code == 303
    assert console.post(f"/conversations/{ref(console, sender)}/tags", data={"csrf_token": csrf, "add": "方言 待训练"}).status_code == 303
    listed = console.get("/api/conversations", params={"reviewed": "yes", "tag": "方言"}).json()
    assert [c["id"] for c in listed["conversations"]] == [ref(console, sender)]
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
    refs = [c["id"] for c in console.get("/api/conversations").json()["conversations"]]
    turns = console.get(f"/api/conversations/{refs[0]}").json()["turns"]
    event = next(t["event_id"] for t in turns if t["kind"] == "user")
    console.post(f"/conversations/{refs[0]}/messages/{event}/correct", data={"csrf_token": csrf, "intent": "inform"})
    console.post(f"/conversations/{refs[0]}/note", data={"csrf_token": csrf, "note": f"回电 {PHONE}"})
    console.post(f"/conversations/{refs[0]}/tags", data={"csrf_token": csrf, "add": PHONE})  # once stored and shown raw
    pages = ["/", "/conversations", "/tickets", "/admin/audit", "/exports/nlu.yml", "/api/conversations"]
    for conversation in refs:
        pages += [f"/conversations/{conversation}", f"/conversations/{conversation}/story.yml",
                  f"/api/conversations/{conversation}"]
    for path in pages:
        body = console.get(path).text
        for secret in SECRETS:
            assert secret not in body, f"{secret} in the clear on {path}"
    assert "138****5678" in console.get(f"/conversations/{ref(console, 'phone-0-000002')}").text  # masked, not dropped


def test_a_supervisor_reveals_one_message_and_it_is_audited(console: TestClient) -> None:
    csrf = sign_in(console, "lead")
    sender = "miniprogram-0-000001"  # the script with an ID-card number in its second message
    turns = console.get(f"/api/conversations/{ref(console, sender)}").json()["turns"]
    event = [t["event_id"] for t in turns if t["kind"] == "user"][1]
    r = console.post(f"/conversations/{ref(console, sender)}/messages/{event}/reveal", data={"csrf_token": csrf})
    assert r.status_code == 200 and ID_NUMBER in r.text and r.headers["cache-control"] == "no-store"
    assert ID_NUMBER not in console.get(f"/conversations/{ref(console, sender)}").text  # masked again on the next view
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
    assert "oHandedOff123" not in listing  # the openid is nowhere on the page: links and forms carry its pseudonym
    assert f'href="/conversations/{ref(console, "oHandedOff123")}"' in listing
    back = f"/humans/{ref(console, 'oHandedOff123')}/return"
    assert console.post(back, data={"csrf_token": "forged"}).status_code in (400, 403)
    assert store.with_human("wx00000000000000a1", "oHandedOff123") is not None
    assert console.post(back, data={"csrf_token": csrf}).status_code == 303
    assert store.with_human("wx00000000000000a1", "oHandedOff123") is None
    assert console.post(back, data={"csrf_token": csrf}).status_code == 400  # already handed back
    listing = console.get("/humans").text
    assert ref(console, "mWaiting456") in listing and ref(console, "oHandedOff123") not in listing
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


def test_filters_by_entity_action_flagged_message_and_reviewer(console: TestClient) -> None:
    from sqlalchemy import insert

    from console.conversations import EVENTS
    from tests.console.synthetic import conversation

    rows = conversation("rest-entity-1", "rest", [("交水费户号1000000002", "pay_bill", 0.95)], time.time() - 3600)
    data = json.loads(rows[1]["data"])
    data["parse_data"]["entities"] = [{"entity": "bill_type", "value": "水费"}, {"entity": "account_number", "value": "1000000002"}]
    rows[1]["data"] = json.dumps(data, ensure_ascii=False)
    with console.app.state.tracker.begin() as t:  # type: ignore[attr-defined]
        t.execute(insert(EVENTS), rows)
    csrf = sign_in(console, "rev")
    found = console.get("/api/conversations", params={"entity": "account_number"}).json()
    assert [c["id"] for c in found["conversations"]] == [ref(console, "rest-entity-1")]
    assert console.get("/api/conversations", params={"entity": "district"}).json()["total"] == 0
    handed = console.get("/api/conversations", params={"action": "action_handoff"}).json()
    assert handed["total"] == 3 and all(c["handoff"] for c in handed["conversations"])
    sender = "rest-0-000003"
    event = first_user_event(console, sender)
    assert console.post(f"/conversations/{ref(console, sender)}/messages/{event}/flag",
                        data={"csrf_token": csrf, "on": "yes"}).status_code == 303
    flagged = console.get("/api/conversations", params={"flagged": "yes"}).json()
    assert [c["id"] for c in flagged["conversations"]] == [ref(console, sender)]
    other = "wechat-0-000000"
    assert console.post(f"/conversations/{ref(console, other)}/review",
                        data={"csrf_token": csrf, "reviewed": "yes"}).status_code == 303
    by_rev = {c["id"] for c in console.get("/api/conversations", params={"reviewer": "rev"}).json()["conversations"]}
    assert by_rev == {ref(console, sender), ref(console, other)}
    assert console.get("/api/conversations", params={"reviewer": "lead"}).json()["total"] == 0
    page = console.get("/conversations", params={"reviewer": "rev"}).text
    assert "<option value=\"rev\" selected>" in page, re.findall(r"<option value=\"rev\"[^>]*>", page)
    assert "<option value=\"bill_type\"" in page


def test_a_row_that_does_not_open_is_shown_as_such_and_not_exported(console: TestClient) -> None:
    """Rows sealed under a key the console does not have: the transcript says so where they are,
    the export is refused, and the index stops at them rather than fill the list with empty
    summaries (a conversation after them waits until the keys are right)."""
    from sqlalchemy import insert

    from console.conversations import EVENTS, UNREADABLE
    from tests.console.synthetic import conversation
    from textnorm.sealing import Keyring, new_key

    stray = Keyring.parse(f"x1:{new_key()}")
    rows = conversation("rest-lost-1", "rest", [("查一下进度", "check_progress", 0.95)], time.time() - 3600)
    with console.app.state.tracker.begin() as t:  # type: ignore[attr-defined]
        t.execute(insert(EVENTS), rows[:2])  # readable: the index has read them
    sign_in(console, "admin")
    assert console.get("/api/conversations", params={"q": "查一下进度"}).json()["total"] == 1
    after = conversation("rest-after-1", "rest", [("交电费", "pay_bill", 0.95)], time.time() - 3500)
    with console.app.state.tracker.begin() as t:  # type: ignore[attr-defined]
        t.execute(insert(EVENTS), [{**r, "data": stray.seal(r["data"], r["sender_id"])} for r in rows[2:]])
        t.execute(insert(EVENTS), after)
    turns = console.get(f"/api/conversations/{ref(console, 'rest-lost-1')}").json()["turns"]
    assert [t["kind"] for t in turns].count("unreadable") == len(rows) - 2
    assert UNREADABLE in console.get(f"/conversations/{ref(console, 'rest-lost-1')}").text
    refused = console.get(f"/conversations/{ref(console, 'rest-lost-1')}/story.yml")
    assert refused.status_code == 409 and "无法解密" in refused.text
    assert console.get("/api/conversations", params={"q": "交电费"}).json()["total"] == 0  # stopped, not skipped
