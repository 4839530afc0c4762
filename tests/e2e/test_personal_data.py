"""Personal numbers a citizen gives, in the formats the review found shown in clear, never reach a
log line of any process of the running stack (every process installs textnorm's masking filter)."""
from __future__ import annotations

import uuid

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
