"""A reviewer's day in the console: the list says what each conversation was about and how it ended,
intents read in Chinese, slot lines only when a value changes, tags come off, "review next" walks
the unreviewed conversations, tickets and conversations link to each other."""
from __future__ import annotations

import datetime as dt
import json
import re
import time

from fastapi.testclient import TestClient
from sqlalchemy import insert

from console.conversations import EVENTS
from services.models import FeedbackTicket
from tests.console.conftest import csrf_of, ref, sign_in


def test_the_list_shows_what_was_said_how_it_ended_and_intents_in_chinese(console: TestClient) -> None:
    sign_in(console, "rev")
    page = console.get("/conversations").text
    assert "群众说的话" in page and "路灯不亮了" in page  # the first words of a conversation, masked
    assert "<td>转人工</td>" in page and "<td>自助办结</td>" in page  # outcomes
    assert "查办件进度" in page and 'title="check_progress"' in page  # Chinese label, the code on hover
    assert "13812345678" not in page


def test_slot_lines_only_when_the_value_changes(console: TestClient) -> None:
    sender = "rest-0-000001"
    tracker = console.app.state.tracker  # type: ignore[attr-defined]
    now = time.time()
    rows = [{"sender_id": sender, "type_name": "slot", "timestamp": now + i, "intent_name": None, "action_name": None,
             "data": json.dumps({"event": "slot", "name": name, "value": value, "timestamp": now + i})}
            for i, (name, value) in enumerate([("bill_type", None), ("bill_type", "water"), ("bill_type", "water"),
                                               ("account_number", None), ("bill_type", None)])]
    with tracker.begin() as t:
        t.execute(insert(EVENTS), rows)
    sign_in(console, "rev")
    page = console.get(f"/conversations/{ref(console, sender)}").text
    lines = re.findall(r"✎ ([^<]+)<", page)
    assert lines == ['bill_type = &#34;water&#34;', "bill_type = null"]  # set, then cleared; no null-to-null lines


def test_tags_come_off_and_review_next_walks_the_unreviewed(console: TestClient) -> None:
    csrf = sign_in(console, "rev")
    first = console.get("/review/next")
    assert first.status_code == 303 and first.headers["location"].startswith("/conversations/c")
    conversation = first.headers["location"]
    console.post(f"{conversation}/tags", data={"csrf_token": csrf, "add": "方言 待训练"})
    assert console.post(f"{conversation}/tags", data={"csrf_token": csrf, "remove": "方言"}).status_code == 303
    page = console.get(conversation).text
    assert "去掉标签 待训练" in page and "去掉标签 方言" not in page
    seen = [conversation]
    for _ in range(3):  # "已审核，看下一个": the next unreviewed, never one already seen
        r = console.post(f"{seen[-1]}/review", data={"csrf_token": csrf, "reviewed": "yes", "next": "yes"})
        assert r.status_code == 303 and r.headers["location"].startswith("/review/next?after=c")
        nxt = console.get(r.headers["location"]).headers["location"]
        assert nxt.startswith("/conversations/c") and nxt not in seen
        seen.append(nxt)
    listed = console.get("/api/conversations", params={"reviewed": "yes"}).json()
    assert {f"/conversations/{c['id']}" for c in listed["conversations"]} == set(seen[:3])


def test_tickets_and_conversations_link_to_each_other(console: TestClient) -> None:
    sender = "wechat-0-000000"
    with console.app.state.sessions() as s:  # type: ignore[attr-defined]
        s.add(FeedbackTicket(number="10009999", category="complaint", content="路灯不亮", location="牡丹区",
                             contact_phone=None, department="城市管理", status="received",
                             due_date=dt.date.today() + dt.timedelta(days=10), channel="wechat", sender_id=sender))
        s.commit()
    sign_in(console, "rev")
    tickets = console.get("/tickets").text
    assert 'id="t10009999"' in tickets and f'href="/conversations/{ref(console, sender)}"' in tickets
    page = console.get(f"/conversations/{ref(console, sender)}").text
    assert 'href="/tickets#t10009999"' in page
    assert csrf_of(page)


def test_the_inbox_gathers_unsure_messages_for_labelling_in_one_go(console: TestClient) -> None:
    csrf = sign_in(console, "rev")
    page = console.get("/inbox").text
    picks = re.findall(r'name="pick" value="([^"]+)"', page)
    assert picks and "这个咋弄啊" in page and "138****5678" in page and "13812345678" not in page
    assert "好的" not in re.findall(r"<td>([^<]*)</td>", page)  # a confident message is not in the inbox
    chosen = picks[:2]
    data: dict[str, object] = {"csrf_token": csrf, "pick": chosen}
    for pick in chosen:
        conversation, event = pick.split(":")
        data[f"intent-{conversation}-{event}"] = "inform"
    assert console.post("/inbox", data=data).status_code == 303
    after = re.findall(r'name="pick" value="([^"]+)"', console.get("/inbox").text)
    assert not set(chosen) & set(after) and len(after) == len(picks) - 2  # labelled: out of the inbox
    nlu = console.get("/exports/nlu.yml").text
    assert "intent: inform" in nlu
    bad = {"csrf_token": csrf, "pick": [after[0]], f"intent-{after[0].replace(':', '-')}": "no_such_intent"}
    assert console.post("/inbox", data=bad).status_code == 400
    sign_in(console, "admin")
    assert console.get("/admin/audit").text.count("<td>correct</td>") >= 2


def test_bulk_mark_reviewed_and_tag_from_the_list(console: TestClient) -> None:
    csrf = sign_in(console, "rev")
    page = console.get("/conversations", params={"channel": "wechat"}).text
    refs = re.findall(r'name="ref" value="([^"]+)"', page)[:2]
    assert len(refs) == 2
    assert console.post("/conversations/bulk", data={"csrf_token": csrf, "ref": refs, "action": "reviewed",
                                                     "back": "channel=wechat"}).headers["location"] == \
        "/conversations?channel=wechat"
    assert console.post("/conversations/bulk", data={"csrf_token": csrf, "ref": refs, "action": "tag",
                                                     "tag": "已回访"}).status_code == 303
    listed = console.get("/api/conversations", params={"reviewed": "yes", "tag": "已回访"}).json()
    assert sorted(c["id"] for c in listed["conversations"]) == sorted(refs)
    assert console.post("/conversations/bulk", data={"csrf_token": csrf, "ref": refs, "action": "delete"}).status_code == 400
    assert console.post("/conversations/bulk", data={"csrf_token": "forged", "ref": refs, "action": "reviewed"}).status_code == 403


def test_dashboard_charts_fit_their_cards_speak_chinese_and_link_to_the_list(console: TestClient) -> None:
    sign_in(console, "rev")
    page = console.get("/").text
    charts = re.findall(r"<svg[^>]*>", page)
    assert charts and not any(re.search(r'\swidth="\d', svg) for svg in charts)  # scaled by CSS, never wider than a card
    assert ">公众号<" in page and ">电话<" in page and ">wechat<" not in page  # the legend in staff's words
    assert ">查办件进度<" in page and ">check_progress<" not in page
    assert 'href="/conversations?intent=check_progress"' in page
    assert 'href="/conversations?flag=handoff"' in page and 'href="/conversations?flag=fallback"' in page
    assert re.search(r'href="/conversations\?channel=phone&amp;date_from=\d{4}-\d\d-\d\d&amp;date_to=', page)
    assert "svg.chart { width: 100%" in console.get("/static/console.css").text
    # the trend over days: a line per rate, each day's point linking to that day's conversations
    assert "每天转人工和没听懂的比率" in page and page.count("<polyline") == 2
    assert re.search(r'href="/conversations\?flag=fallback&amp;date_from=(\d{4}-\d\d-\d\d)&amp;date_to=\1"', page)
