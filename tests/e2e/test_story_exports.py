"""Conversations held with the real stack, exported by the console as test stories, pass `rasa test`.

Each conversation goes through the rest channel to the real Rasa server and action server; a
reviewer corrects one message through the console; the console exports each conversation; one
`rasa test core` run (as tests/rasa/test_rasa_cli.py runs tests/stories) replays them all with the
session's trained model. No real number reaches an export: masked ones become stand-ins.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from services.models import FeedbackTicket
from services.settings import ROOT
from tests.e2e.conftest import Running, joined
from tests.rasa.cli import rasa

pytestmark = pytest.mark.e2e
PASSWORD = "story-export-" + uuid.uuid4().hex[:8]


def signed_in(running: Running) -> tuple[httpx.Client, str]:
    """A console client signed in as a new reviewer, and its CSRF token."""
    name = "exp" + uuid.uuid4().hex[:8]
    made = subprocess.run([sys.executable, "-m", "console", "create-user", "--username", name, "--password-stdin",
                           "--role", "reviewer"], input=PASSWORD + "\n", text=True, capture_output=True, cwd=ROOT,
                          env={"HEZE_DB_URL": running.settings.heze_db_url, "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    client = httpx.Client(base_url=running.console_url, timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    r = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token.group(1), "next": "/"})
    assert r.status_code == 303, r.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/conversations").text)
    assert token
    return client, token.group(1)


def test_exported_stories_pass_rasa_test(running: Running, rasa_model: Path, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    said: dict[str, list[str]] = {
        "progress": ["你好", "俺想查一下办件进度", "二〇二六幺幺〇幺〇〇〇〇〇幺", "5分"],
        "bill": ["我要缴费", "水费", "幺〇〇〇〇〇〇〇〇幺", "确认"],
        "feedback": ["路灯坏了好几天了", "投诉", "牡丹区中华路", "匿名", "查工单"],
        "guide": ["办身份证要带什么", "在哪里办理"],
        "corrected": ["嗯那个俺家那个啥弄不成了", "路灯不亮了"],
        "phone": ["13800000002", "002X", "谢谢"],
        "phone-in-form": ["查进度", "没有编号", "我手机号是幺三八 零零零零 零零零幺", "幺二三零"],
    }
    senders = {name: f"exp-{name}-{run}" for name in said}
    last: dict[str, str] = {}
    for name, messages in said.items():
        for text in messages:
            last[name] = joined(running.say(senders[name], text))
    assert "工单号" in last["feedback"], last["feedback"]
    with running.services.sessions() as s:  # the feedback conversation asks after the ticket it opened
        number = s.scalars(select(FeedbackTicket.number).where(FeedbackTicket.sender_id == senders["feedback"])).one()
    assert "已受理" in joined(running.say(senders["feedback"], number))

    client, csrf = signed_in(running)
    try:
        # The reviewer: the first message was about a broken thing at home, a feedback, not "not understood".
        ref = running.ref(senders["corrected"])
        turns = client.get(f"/api/conversations/{ref}").json()["turns"]
        first = next(t for t in turns if t["kind"] == "user")
        assert first["intent"] != "give_feedback"
        r = client.post(f"/conversations/{ref}/messages/{first['event_id']}/correct",
                        data={"csrf_token": csrf, "intent": "give_feedback", "entities": ""})
        assert r.status_code == 303, r.text
        stories_dir = tmp_path / "stories"
        stories_dir.mkdir()
        exported: dict[str, Any] = {}
        for name, sender in senders.items():
            r = client.get(f"/conversations/{running.ref(sender)}/story.yml")
            assert r.status_code == 200, r.text
            for real in ("13800000001", "13800000002", "1000000001", "幺〇〇〇〇〇〇〇〇幺", "幺三八 零零零零"):
                assert real not in r.text, (name, real)
            (stories_dir / f"test_{name}.yml").write_text(r.text, encoding="utf-8")
            exported[name] = yaml.safe_load(r.text)
    finally:
        client.close()

    assert all(story["version"] == "3.1" for story in exported.values())
    steps = {name: [s for story in e["stories"] for s in story["steps"]] for name, e in exported.items()}
    assert {"active_loop": "bill_form"} in steps["bill"] and {"active_loop": None} in steps["bill"]
    assert {"user": "[13800009001](phone_number)", "intent": "inform"} in steps["phone"]
    assert steps["corrected"][-2:] == [{"action": "feedback_form"}, {"active_loop": "feedback_form"}]
    assert "路灯不亮了" not in json.dumps(steps["corrected"], ensure_ascii=False)  # the story ends at the correction

    out = tmp_path / "out"
    result = rasa("test", "core", "--model", str(rasa_model), "--stories", str(stories_dir), "--out", str(out))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((out / "story_report.json").read_text())
    failed = out / "failed_test_stories.yml"
    assert report["conversation_accuracy"]["total"] == len(said)
    assert report["conversation_accuracy"]["accuracy"] == 1.0, failed.read_text() if failed.exists() else report
