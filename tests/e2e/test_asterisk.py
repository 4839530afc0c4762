"""Real calls through a real Asterisk 20 and the project's dialplan into the voice gateway.

The telephone users are Local channels (tests/pbx.py): they send no frames while quiet, hang up
with a bare TCP close, key DTMF with SendDTMF and speak by playing the Mandarin fixtures
(tests/fixtures/speech). Behind the gateway: the real Rasa and action servers, Whisper base for
the speech. CI always runs these (.ci/run fails without shared/pbx); elsewhere they are skipped
when the Asterisk build is not there."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from services.models import Handoff, PhoneCall, PhoneTurn
from tests.e2e.conftest import Running
from tests.pbx import Pbx, available
from voice.audio import read_wav
from voice.tts import choose_voice
from voice.voicecheck import foreign

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(available() is not None, reason=available() or "")]

FIXTURES = Path(__file__).parents[1] / "fixtures" / "speech" / "zh"


def speech(name: str) -> str:
    return f"play:{FIXTURES / name}"


@pytest.fixture(scope="module")
def pbx(running: Running) -> Iterator[Pbx]:
    v = running.voice
    box = Pbx(v.voice_audiosocket_host, v.voice_http_port, v.voice_audiosocket_port,
              v.voice_gateway_token.get_secret_value())
    yield box
    box.stop()


def the_call(running: Running, known: set[str], timeout: float = 20) -> str:
    """The call id of the call that has just started (not one of ``known``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with running.services.sessions() as s:
            ids = [c for c in s.scalars(select(PhoneCall.call_id).where(PhoneCall.transport == "audiosocket"))
                   if c not in known]
        if ids:
            return ids[-1]
        time.sleep(0.2)
    raise AssertionError("the call never reached the gateway")


def known_calls(running: Running) -> set[str]:
    with running.services.sessions() as s:
        return set(s.scalars(select(PhoneCall.call_id)))


def wait_ended(running: Running, call_id: str, timeout: float = 120) -> tuple[PhoneCall, list[PhoneTurn]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with running.services.sessions() as s:
            call = s.scalar(select(PhoneCall).where(PhoneCall.call_id == call_id))
            if call is not None and call.ended_at is not None:
                turns = list(s.scalars(select(PhoneTurn).where(PhoneTurn.call_pk == call.id).order_by(PhoneTurn.seq)))
                s.expunge_all()
                return call, turns
        time.sleep(0.3)
    raise AssertionError(f"call {call_id} did not end")


def tracker(running: Running, sender: str) -> dict[str, Any]:
    return running.http.get(f"{running.rasa_url}/conversations/{sender}/tracker",
                            params={"token": running.settings.rasa_api_token.get_secret_value(),
                                    "include_events": "ALL"}).json()


def intents(running: Running, sender: str) -> list[str]:
    return [e["parse_data"]["intent"]["name"] for e in tracker(running, sender)["events"] if e["event"] == "user"]


def place(running: Running, pbx: Pbx, script: str) -> tuple[str, Any]:
    before = known_calls(running)
    result = pbx.call(script)
    return the_call(running, before), result


def no_errors_in_gateway_log(running: Running) -> None:
    log = running.stack.log_tail("voice-gateway", 400)
    assert "ERROR" not in log and "Traceback" not in log, log


def test_a_caller_who_only_presses_keys(running: Running, pbx: Pbx) -> None:
    # Silent (no frames) through the greeting, then 1 for the progress check, the number, then listens.
    call_id, result = place(running, pbx, "wait:4^dtmf:1^wait:7^dtmf:20261101000001#^wait:14")
    call, turns = wait_ended(running, call_id)
    assert call.end_reason == "caller_hangup" and call.caller == "13800000008"
    assert [t.kind for t in turns[:3]] == ["start", "dtmf", "dtmf"]
    assert turns[1].dtmf == "1" and "受理编号" in (turns[1].reply or "")
    answer = turns[2].reply or ""
    assert answer.startswith("您输入的是：二零二六，幺幺零幺，零零零零，零幺。") and "审核中" in answer
    # The line never went quiet for Asterisk's 2 s limit, though the caller sent nothing for seconds.
    assert "Reached timeout" not in pbx.log()
    # What the caller heard: the gateway's speech, all the way through (MixMonitor of the caller leg).
    heard, rate = read_wav(result.heard.read_bytes())
    assert rate == 8000 and len(heard) / 2 / rate > 20
    # Rasa was told the call ended: no form left waiting.
    t = tracker(running, call_id)
    assert t["active_loop"] == {} or not t["active_loop"].get("name")
    assert any(e["event"] == "restart" for e in t["events"])
    no_errors_in_gateway_log(running)


def test_a_caller_who_never_presses_a_key(running: Running, pbx: Pbx) -> None:
    call_id, _ = place(running, pbx, "wait:90")
    call, turns = wait_ended(running, call_id)
    assert call.end_reason == "silence" and call.next_step == "hangup"
    assert [t.kind for t in turns] == ["start", "silence", "silence", "silence"]
    assert "您还在吗" in (turns[2].reply or "") and "再见" in (turns[3].reply or "")
    assert "Reached timeout" not in pbx.log()
    deadline = time.monotonic() + 10
    while pbx.channels() != 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert pbx.channels() == 0  # the gateway hung up, and Asterisk hung up the caller


def test_a_caller_who_speaks_chinese(running: Running, pbx: Pbx) -> None:
    # "社保卡俺都办了半个月了，好了没" (check progress) by voice, the number by keys.
    call_id, _ = place(running, pbx, f"wait:3^{speech('progress_009')}^wait:9^dtmf:20261101000001#^wait:12")
    call, turns = wait_ended(running, call_id)
    said = intents(running, call_id)
    assert said[1] == "check_progress", said
    speech_turn = next(t for t in turns if t.kind == "speech")
    assert speech_turn.transcript and "社保" in speech_turn.transcript and speech_turn.barge_in
    assert "审核中" in (turns[-1].reply or "")
    no_errors_in_gateway_log(running)


def test_a_spoken_complaint_becomes_a_ticket(running: Running, pbx: Pbx) -> None:
    # "俺想投诉，有人往俺地里乱倒垃圾": a complaint, said during the greeting.
    call_id, _ = place(running, pbx, f"wait:2^{speech('feedback_014')}^wait:25")
    call, turns = wait_ended(running, call_id)
    said = intents(running, call_id)
    assert "give_feedback" in said[1:3], said
    spoken = next(t for t in turns if t.kind == "speech")
    assert "投诉" in (spoken.transcript or "")
    # The feedback form takes it and asks its next question (which kind, what happened, or where).
    assert any(w in (spoken.reply or "") for w in ("投诉", "什么事", "哪里")), spoken.reply


def test_star_reaches_a_person_while_a_number_is_keyed(running: Running, pbx: Pbx) -> None:
    call_id, _ = place(running, pbx, "wait:3^dtmf:1^wait:5^dtmf:2026*^wait:12")
    call, turns = wait_ended(running, call_id)
    assert call.end_reason == "handoff" and call.next_step == "human"
    with running.services.sessions() as s:
        assert s.scalar(select(Handoff.channel).where(Handoff.sender_id == call_id)) == "phone"
    deadline = time.monotonic() + 15
    while f"HEZE-HUMAN {call_id}" not in pbx.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert f"HEZE-HUMAN {call_id}" in pbx.log()  # the dialplan's human branch was taken


def test_a_spoken_request_for_a_person(running: Running, pbx: Pbx) -> None:
    # "转人工吧，俺跟机器说不明白"
    call_id, _ = place(running, pbx, f"wait:2^{speech('human_002')}^wait:15")
    call, _ = wait_ended(running, call_id)
    assert call.next_step == "human"
    deadline = time.monotonic() + 15
    while f"HEZE-HUMAN {call_id}" not in pbx.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert f"HEZE-HUMAN {call_id}" in pbx.log()


def test_a_caller_who_hangs_up_mid_answer(running: Running, pbx: Pbx) -> None:
    call_id, _ = place(running, pbx, "wait:1.5")  # hangs up during the greeting
    call, turns = wait_ended(running, call_id)
    assert call.end_reason == "caller_hangup"
    assert not any(e["event"] == "active_loop" and e.get("name") for e in tracker(running, call_id)["events"][-3:])
    no_errors_in_gateway_log(running)


def test_every_sentence_the_callers_heard_was_mandarin(running: Running, pbx: Pbx) -> None:
    with running.services.sessions() as s:
        replies = [r for r in s.scalars(select(PhoneTurn.reply)) if r]
    assert len(replies) >= 10
    assert foreign(choose_voice(running.voice.voice_tts_voice), replies) == []
