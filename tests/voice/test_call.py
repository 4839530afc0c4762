"""The call's state machine in virtual time: a fake clock, a scripted recogniser, a loudness
detector standing in for silero, a scripted Rasa, and a transport that keeps what was sent.

The same code runs against real Asterisk, Vosk, Whisper and Rasa in tests/e2e/test_asterisk.py;
here every timer (silence, digits, frame gaps, pacing) is driven without waiting."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np

from voice.asr import Final
from voice.call import Call, Gateway
from voice.clock import FakeClock
from voice.settings import VoiceSettings
from voice.wording import PROMPTS

RATE = 8000
FRAME = 320


def tone(seconds: float, amplitude: float = 6000) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def voice(seconds: float, amplitude: float = 6000) -> bytes:
    """A stand-in for a caller's voice: loud noise, unlike the prompt's tone."""
    x = np.random.default_rng(7).normal(0, amplitude, int(RATE * seconds))
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


class LoudnessDetector:
    """Stands in for silero-vad: a chunk is speech when it is loud."""

    chunk = 256

    def probability(self, samples: np.ndarray) -> float:
        return 1.0 if float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) > 500 else 0.0


class LoudnessVad:
    def detector(self, rate: int) -> LoudnessDetector:
        return LoudnessDetector()


class ScriptedStream:
    def __init__(self, script: list[str]) -> None:
        self.script, self.fed = script, 0

    def limit_to(self, phrases: Any) -> None:
        pass

    async def feed(self, pcm: bytes) -> None:
        self.fed += len(pcm)

    async def finish(self) -> Final | None:
        return Final(self.script.pop(0), 0.9) if self.script else None


@dataclass
class ScriptedRecogniser:
    script: list[str] = field(default_factory=list)
    name: str = "scripted"
    rate: int = 16000
    model_dir: Path = Path("scripted")

    def stream(self, input_rate: int) -> ScriptedStream:
        return ScriptedStream(self.script)


class Speaker:
    """0.25 s of a loud tone per character: long enough to barge in on, quick to make."""

    out_rate = RATE

    async def render(self, text: str, rate: int) -> bytes:
        return tone(0.25 * len(text), 8000)


class Line:
    in_rate = out_rate = RATE
    keepalive = True

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.closed = clock, False
        self.sent: list[tuple[float, bytes]] = []
        self.stops = 0

    async def send_audio(self, frame: bytes) -> None:
        self.sent.append((self.clock.now(), frame))

    async def stop_playback(self) -> None:
        self.stops += 1

    async def close(self, next_step: str | None = None) -> None:
        self.closed = True
        self.next_step = next_step

    def speech_since(self, t: float) -> int:
        return sum(1 for when, f in self.sent if when >= t and any(f))


class MemoryRecords:
    def __init__(self) -> None:
        self.turns: list[Any] = []
        self.ended: tuple[str, str] | None = None
        self.used: set[str] = set()
        self.refusals: list[tuple[str, str]] = []

    async def start(self, *args: Any) -> None: ...

    def decided(self, call_id: str, next_step: str) -> None:
        self.next_step = next_step
    async def turn(self, call_id: str, seq: int, record: Any) -> None:
        self.turns.append(record)

    async def end(self, call_id: str, reason: str, next_step: str, *args: Any) -> None:
        self.ended = (reason, next_step)

    async def known(self, call_id: str) -> bool:
        return call_id in self.used

    async def refused(self, call_id: str, reason: str) -> None:
        self.refusals.append((call_id, reason))


def menu(text: str = "请说要办的事。", expect: str | None = None, buttons: bool = True,
         handoff: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"text": text}
    if buttons:
        msg["buttons"] = [{"title": "查办件进度", "payload": "/check_progress"},
                          {"title": "转人工", "payload": "/request_human"}]
    messages = [msg] + ([{"custom": {"handoff": {"id": 1}}}] if handoff else [])
    return {"messages": messages, "expect": expect}


@dataclass
class Harness:
    clock: FakeClock
    line: Line
    call: Call
    records: MemoryRecords
    said: list[dict[str, Any]]  # what Rasa was sent
    task: asyncio.Task[None]

    async def run(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    async def talk(self, seconds: float, amplitude: float = 6000) -> None:
        """Send 20 ms frames of a voice in step with the clock, then stop sending (a Local channel)."""
        pcm = voice(seconds, amplitude)
        for i in range(0, len(pcm), FRAME):
            self.call.audio(pcm[i:i + FRAME])
            await self.clock.advance(0.02)

    async def echo(self, seconds: float, gain: float, delay_frames: int = 2) -> None:
        """The line sends back what the gateway says, ``gain`` times as loud, a little later."""
        for _ in range(int(seconds / 0.02)):
            sent = self.line.sent[-1 - delay_frames][1] if len(self.line.sent) > delay_frames else bytes(FRAME)
            x = np.frombuffer(sent, dtype="<i2").astype(np.float32) * gain
            self.call.audio(x.astype("<i2").tobytes())
            await self.clock.advance(0.02)

    def texts(self) -> list[str]:
        return [m["message"] for m in self.said]


async def start_call(replies: Callable[[str], dict[str, Any]], script: list[str] | None = None,
                     reminder: str | None = None, **settings: Any) -> Harness:
    clock = FakeClock()
    said: list[dict[str, Any]] = []

    def rasa(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        said.append(body)
        try:
            return httpx.Response(200, json=replies(body["message"]))
        except ConnectionError:
            return httpx.Response(502)

    values: dict[str, Any] = {"heze_env": "test", "voice_silence_timeout_s": 4.0, "voice_digit_timeout_s": 3.0,
                              "voice_endpoint_s": 0.5, **settings}
    s = VoiceSettings(_env_file=None, **values)  # type: ignore[call-arg]
    records = MemoryRecords()
    gw = Gateway(s, ScriptedRecogniser(script or []), Speaker(),  # type: ignore[arg-type]
                 httpx.AsyncClient(transport=httpx.MockTransport(rasa)), records, LoudnessVad(),  # type: ignore[arg-type]
                 clock=clock)
    line = Line(clock)
    if reminder:  # what the dialplan's /calls/{id}/start registers for a reminder call
        gw.reminders["call-1"] = reminder
    call = Call(gw, "call-1", line, "audiosocket", "13800000001")
    task = asyncio.create_task(call.run())
    h = Harness(clock, line, call, records, said, task)
    await h.run(0.1)
    return h


def greeting(message: str) -> dict[str, Any]:
    return menu("您好，请说要办的事。") if message == "/greet" else {"messages": [], "expect": None}


async def test_the_line_is_never_quiet_for_asterisk() -> None:
    h = await start_call(greeting)
    await h.run(9.0)  # the greeting takes about 7.5 s here; afterwards there is nothing to say
    times = [t for t, _ in h.line.sent]
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.0199
    assert max(b - a for a, b in zip(times, times[1:])) <= 0.021  # a frame every 20 ms, speech or silence
    assert not any(h.line.sent[-1][1])  # silence frames once the greeting is over
    h.call.hangup()
    await h.run(0.1)
    assert h.records.ended == ("caller_hangup", "hangup")
    # Rasa is told: the conversation is restarted, so no form is left active.
    assert h.said[-1]["message"] == "/restart" and h.said[-1]["metadata"]["call_ended"] == "caller_hangup"


async def test_an_utterance_ends_when_the_frames_stop() -> None:
    def replies(message: str) -> dict[str, Any]:
        if message == "/greet":
            return menu("您好。")
        return {"messages": [{"text": "请说受理编号。"}], "expect": "digits"}

    h = await start_call(replies, script=["我要查办件进度"])
    await h.run(3.0)
    await h.talk(1.2)  # then no frames at all, as over a Local channel
    await h.run(0.4)
    assert "我要查办件进度" not in h.texts()  # not before the endpoint delay
    await h.run(0.3)
    assert h.texts()[1] == "我要查办件进度"
    turn = h.records.turns[-1]
    assert turn.kind == "speech" and turn.transcript == "我要查办件进度"
    assert 400 <= turn.latency_ms <= 800  # end of speech -> first audio: the endpoint delay and no more
    h.call.hangup()
    await h.run(0.1)


async def test_silence_reprompts_then_asks_then_says_goodbye() -> None:
    h = await start_call(greeting)
    await h.run(60)
    kinds = [t.kind for t in h.records.turns]
    assert kinds == ["start", "silence", "silence", "silence"]
    assert h.records.turns[1].reply == h.records.turns[0].reply
    assert "您还在吗" in h.records.turns[2].reply and "再见" in h.records.turns[3].reply
    assert h.records.ended == ("silence", "hangup")
    await asyncio.wait_for(h.task, 1)


async def test_star_reaches_a_person_even_while_a_number_is_keyed() -> None:
    def replies(message: str) -> dict[str, Any]:
        if message == "/greet":
            return {"messages": [{"text": "请说受理编号，输完按井号键。"}], "expect": "digits"}
        if message == "/request_human":
            return menu("好的，马上为您转人工。", buttons=False, handoff=True)
        return {"messages": [{"text": "没有查到。"}], "expect": None}

    h = await start_call(replies)
    await h.run(1.0)
    for k in "2026":
        h.call.key(k)
    h.call.key("0")  # 0 is a digit here
    h.call.key("*")
    await h.run(6.0)
    assert h.texts()[:2] == ["/greet", "/request_human"]
    assert h.records.ended == ("handoff", "human")
    assert h.records.turns[1].dtmf == "*"
    await asyncio.wait_for(h.task, 1)
    assert h.line.closed and h.line.next_step == "human"  # the PBX is told before anything else


async def test_star_reaches_a_person_even_when_rasa_is_down() -> None:
    def replies(message: str) -> dict[str, Any]:
        if message == "/greet":
            return menu("您好。")
        raise ConnectionError("Rasa is down")

    h = await start_call(replies)
    await h.run(3.0)
    h.call.key("*")
    await h.run(8.0)
    assert h.records.ended == ("handoff", "human") and PROMPTS["to_human"] in h.records.turns[-1].reply
    await asyncio.wait_for(h.task, 1)


async def test_hash_with_nothing_keyed_says_the_prompt_again_and_digits_are_read_back() -> None:
    def replies(message: str) -> dict[str, Any]:
        if message == "/greet":
            return {"messages": [{"text": "请说受理编号。"}], "expect": "digits"}
        return {"messages": [{"text": "审核中。"}], "expect": None}

    h = await start_call(replies)
    await h.run(3.0)
    h.call.key("#")
    await h.run(0.2)
    assert h.records.turns[-1].dtmf == "#" and h.records.turns[-1].reply == "请说受理编号。"
    for k in "1230#":
        h.call.key(k)
    await h.run(0.5)
    turn = h.records.turns[-1]
    assert h.texts()[-1] == "1230" and turn.reply.startswith("您输入的是：幺二三零。")
    assert turn.tts_ms is None and turn.latency_ms is not None and turn.latency_ms >= 0
    h.call.hangup()
    await h.run(0.1)


async def test_a_long_answer_comes_in_parts() -> None:
    numbers = "一二三四五六"
    long = "".join(f"这是第{n}句比较长的回答，用来测试分段。" for n in numbers)

    def replies(message: str) -> dict[str, Any]:
        if message == "/greet":
            return menu("您好。")
        return {"messages": [{"text": long}], "expect": None}

    h = await start_call(replies)
    await h.run(3.0)
    h.call.key("1")
    await h.run(0.5)
    first = h.call.last_prompt
    assert first[0].startswith("这是第一句") and first[-1] == PROMPTS["more"] and len(first) < 7
    h.call.key("#")  # the caller wants the next part now
    await h.run(0.5)
    second = h.call.last_prompt
    assert second[0].startswith(f"这是第{numbers[len(first) - 1]}句")
    await h.run(60)  # the caller just listens: the parts follow one another after a short pause
    assert h.call.last_prompt[-1].startswith("这是第六句") and not h.call.parts
    assert h.texts()[1:2] == ["/check_progress"] and set(h.texts()[2:]) <= {"/restart"}  # no other turn
    h.call.hangup()
    await h.run(0.1)


async def test_the_prompts_echo_does_not_barge_in_but_the_caller_does() -> None:
    h = await start_call(lambda m: menu("您好，这里是菏泽市民政务助手，请直接说要办的事，也可以按键。"))
    await h.run(0.5)
    for gain in (1.0, 0.5, 0.25, 0.1):  # the prompt's echo, from as loud as the prompt to 20 dB down
        await h.echo(1.0, gain)
    assert h.line.stops == 0 and h.call.mouth.speaking
    await h.talk(0.4, amplitude=3000)  # the caller talks over the prompt (quieter than it)
    assert h.line.stops == 1
    h.call.hangup()
    await h.run(0.1)


async def test_a_stray_key_is_recorded_and_ignored() -> None:
    h = await start_call(greeting)
    await h.run(3.0)
    h.call.key("A")
    await h.run(0.2)
    assert h.records.turns[-1].dtmf == "A" and h.texts() == ["/greet"]
    h.call.hangup()
    await h.run(0.1)


async def test_admission_one_place_one_policy() -> None:
    h = await start_call(greeting, voice_max_calls=2)  # call-1 runs in the harness, but not through admit
    gw = h.call.gw
    h.records.used.add("old-call")
    assert await gw.admit("old-call") == "reused"  # a call id is accepted once
    assert await gw.admit("a") is None  # holds the place at once ...
    assert await gw.admit("a") == "duplicate"
    assert await gw.admit("b") is None
    assert await gw.admit("c") == "busy"  # ... so the third caller hears the busy prompt
    assert h.records.refusals == [("c", "busy")]
    h.call.hangup()
    await h.run(0.1)


async def test_a_reminder_call_starts_with_the_reminder_and_its_own_keys() -> None:
    def replies(message: str) -> dict[str, Any]:
        if message == "/reminder_call":
            # as the phone channel hands it on: the custom part is a message of its own
            return {"messages": [{"text": "医保开始缴费了。现在办理请按1，转人工请按0。",
                                  "buttons": [{"title": "现在办理", "payload": "/pay_bill"},
                                              {"title": "转人工", "payload": "/request_human"}]},
                                 {"custom": {"keys": {"1": "/pay_bill", "0": "/request_human", "x": "/no"}}}]}
        return menu("请说户号。", buttons=False)

    h = await start_call(replies, reminder="42")
    await h.run(12.0)
    first = h.said[0]
    assert first["message"] == "/reminder_call" and first["metadata"]["reminder"] == "42"
    assert h.records.turns[0].reply == "医保开始缴费了。现在办理请按1，转人工请按0。"  # the buttons not said again
    h.call.key("1")
    await h.run(0.5)
    assert h.said[1]["message"] == "/pay_bill" and "reminder" not in h.said[1]["metadata"]
    h.call.hangup()
    await h.run(0.1)


async def test_an_ordinary_call_is_greeted() -> None:
    h = await start_call(greeting)
    await h.run(0.5)
    assert h.said[0]["message"] == "/greet" and "reminder" not in h.said[0]["metadata"]
    h.call.hangup()
    await h.run(0.1)
