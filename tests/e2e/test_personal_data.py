"""Personal numbers a citizen gives, in the formats the review found shown in clear, never reach a
log line of any process of the running stack (every process installs textnorm's masking filter),
nor the tracker store's database file in clear (rasa_runtime/tracker_store.py seals every event)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Running

pytestmark = pytest.mark.e2e

SAID = ["查进度", "138－0000－0123", "+86 139 1234 5678", "手机号8613800000456", "身份证号371702198001011230",
        "tel13800000789", "转人工"]
RAW = ["13800000123", "13912345678", "13800000456", "371702198001011230", "13800000789"]


def test_no_log_line_of_any_process_holds_a_personal_number(running: Running) -> None:
    sender = "pd-" + uuid.uuid4().hex[:10]
    for text in SAID:
        running.say(sender, text)
    running.stack.stop(only="action-server")  # a failed action logs the turn's error in Rasa and the channel
    try:
        running.say(sender, "我的电话是13800000123")
    finally:
        running.stack.start(only="action-server")
    logs = {path.name: path.read_text(encoding="utf-8", errors="replace")
            for path in running.stack.log_dir.glob("*.log")}
    assert {"rasa.log", "action-server.log", "console.log"} <= set(logs)
    for name, text in logs.items():
        flat = text.replace(" ", "").replace("-", "").replace("－", "").replace("+", "")
        for number in RAW:
            assert number not in flat, (name, number)


def test_the_tracker_store_file_holds_no_personal_number_in_clear(running: Running) -> None:
    sender = "pd-" + uuid.uuid4().hex[:10]
    for text in SAID + ["我的电话是13800000123"]:
        running.say(sender, text)
    tracker = running.http.get(f"{running.rasa_url}/conversations/{sender}/tracker",
                               params={"token": running.settings.rasa_api_token.get_secret_value()}).json()
    said = [e["text"] for e in tracker["events"] if e["event"] == "user"]
    assert "身份证号371702198001011230" in said  # Rasa itself reads them back whole
    db = Path(running.settings.tracker_db)
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the file, its WAL and shared memory
    assert sender.encode() in raw  # the right file: the conversation is there
    for text in SAID[1:] + ["我的电话是13800000123"]:
        for form in (text, json.dumps(text)[1:-1]):  # as written, and as JSON escapes it
            assert form.encode() not in raw, form
    for number in RAW:
        assert number.encode() not in raw, number
