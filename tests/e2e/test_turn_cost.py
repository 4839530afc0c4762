"""A long conversation through the real stack (rasa_runtime's tracker store and patches in place):
the same flow gets the same answers at its 40th turn as at its first, everything is on disk, and the
trained policies predict the same from the windowed tracker as from the full one."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from services.settings import ROOT
from stack.processes import RASA_ENV
from tests.e2e.conftest import Running, joined

pytestmark = pytest.mark.e2e

FLOWS = [
    ["查工单", "10000001", "4"],
    ["交电费", "2000000001", "先不交"],
    ["你好", "你是机器人吗", "再见"],
    ["查进度", "20261101000001", "5分"],
    ["办身份证要带什么", "在哪办", "谢谢"],
]
ROUNDS = 4


@pytest.fixture(scope="module")
def long_conversation(running: Running) -> dict[str, object]:
    sender = "long-conversation-1"
    rounds = [[joined(running.say(sender, text)) for flow in FLOWS for text in flow] for _ in range(ROUNDS)]
    return {"sender": sender, "rounds": rounds}


def test_every_round_of_a_long_conversation_gets_the_first_rounds_answers(long_conversation: dict) -> None:  # type: ignore[type-arg]
    first, *later = long_conversation["rounds"]
    assert all(first), first  # every turn was answered
    assert "正在处理" in first[1] and "188.45" in first[4] and "先不交" in first[5]  # the flows ran, not fallbacks
    assert not any("系统暂时有点问题" in reply for reply in first)
    for n, answers in enumerate(later, start=2):
        assert answers == first, f"round {n} differs"


def test_every_event_of_the_long_conversation_is_on_disk(running: Running, long_conversation: dict) -> None:  # type: ignore[type-arg]
    with sqlite3.connect(running.settings.tracker_db) as db:
        users = db.execute("SELECT count(*) FROM events WHERE sender_id = ? AND type_name = 'user'",
                           (long_conversation["sender"],)).fetchone()[0]
    assert users == ROUNDS * sum(map(len, FLOWS))


def test_the_policies_predict_the_same_from_the_windowed_tracker(running: Running, long_conversation: dict,  # type: ignore[type-arg]
                                                                 rasa_model: Path, tmp_path: Path) -> None:
    r = running.http.get(f"{running.rasa_url}/conversations/{long_conversation['sender']}/tracker",
                         params={"token": running.settings.rasa_api_token.get_secret_value()})
    r.raise_for_status()
    events = r.json()["events"]
    assert len([e for e in events if e["event"] == "user"]) == ROUNDS * sum(map(len, FLOWS))  # the full tracker
    path = tmp_path / "tracker.json"
    path.write_text(json.dumps({"events": events}, ensure_ascii=False))
    result = subprocess.run([str(ROOT / ".venv-rasa" / "bin" / "python"), "tests/rasa_env/window_predictions.py",
                             str(rasa_model), str(path)], cwd=ROOT, env={**os.environ, **RASA_ENV},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["differences"] == []
    assert summary["compared"] > 120 and summary["windowed"] > 100, summary
