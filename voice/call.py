"""One phone call: the turn loop between the caller, Vosk, Rasa and espeak-ng.

Transport-neutral: AudioSocket and the WebSocket media endpoint feed ``audio``, ``dtmf`` and
``hangup`` into a Call and give it a :class:`Transport` to send audio back. The call keeps the
elderly caller in mind: short spoken prompts, any key or word stops the prompt (barge-in),
silence is met with a re-prompt, then "您还在吗", then a polite goodbye."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import httpx

from textnorm.numerals import spell_digits
from voice.asr import (DIGIT_PHRASES, YES_NO_PHRASES, ArrivalClock, AsrStream, Final, Partial, Recogniser,
                       VoiceActivity)
from voice.audio import FRAME_MS, frame_bytes
from voice.records import CallRecords, TurnRecord, log_caller
from voice.settings import VoiceSettings
from voice.tts import Speaker, TtsError, sentences, speakable

logger = logging.getLogger(__name__)

# What the gateway itself says (everything else comes from Rasa). Short, one idea per sentence.
PROMPTS = {
    "still_there": "您还在吗？需要帮忙，请直接说，或者按键。",
    "goodbye_silence": "没有听到您说话，先挂断了。需要时请再打来。再见。",
    "rasa_down": "不好意思，系统有点忙。请稍后再说一遍。",
    "busy": "现在来电的人多，请稍后再打。再见。",
}
HUMAN_PAYLOAD = "/request_human"
GREET_PAYLOAD = "/greet"
ASR_CHUNK_MS = 100  # audio handed to Vosk at a time: barge-in reacts within this plus decoding


class Transport(Protocol):
    in_rate: int
    out_rate: int

    async def send_audio(self, frame: bytes) -> None: ...
    async def stop_playback(self) -> None: ...
    async def close(self) -> None: ...


@dataclass
class Gateway:
    """What every call shares: the model, the speaker, the Rasa client, the records."""

    settings: VoiceSettings
    recogniser: Recogniser
    speaker: Speaker
    rasa: httpx.AsyncClient
    records: CallRecords
    calls: dict[str, "Call"] = field(default_factory=dict)
    callers: dict[str, tuple[str, float]] = field(default_factory=dict)  # uuid -> (caller id, when)
    recorder: Callable[[str, int], Any] | None = None

    def refusal(self, call_id: str) -> str | None:
        """Why a new call cannot be taken ('duplicate', 'busy'), or None."""
        if call_id in self.calls:
            return "duplicate"
        if len(self.calls) >= self.settings.voice_max_calls:
            logger.warning("%d calls already, refusing %s", len(self.calls), call_id)
            return "busy"
        return None

    async def attend(self, call: "Call", reading: Awaitable[None]) -> bool:
        """Run a call beside its transport's reader until either ends; True when the gateway ended
        the call (goodbye, silence, hand-off), False when the caller hung up. When the reader
        fails (malformed input), the call is ended with reason "error" and the error re-raised."""
        self.calls[call.call_id] = call
        runner = asyncio.create_task(call.run())
        reader = asyncio.ensure_future(reading)
        try:
            done, _ = await asyncio.wait({runner, reader}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                reader.cancel()
                return True
            error = reader.exception()
            if error is not None:
                call.hangup()
                call.end_reason = "error"
            await runner  # the call writes its records
            if error is not None:
                raise error
            return False
        except asyncio.CancelledError:
            runner.cancel()
            reader.cancel()
            raise
        finally:
            self.calls.pop(call.call_id, None)

    def caller_for(self, call_id: str) -> str | None:
        """The caller number the dialplan registered for this call (POST /calls/{uuid}/start)."""
        entry = self.callers.pop(call_id, None)
        cutoff = time.monotonic() - 300
        for key in [k for k, (_, when) in self.callers.items() if when < cutoff]:
            del self.callers[key]
        return entry[0] if entry else None


def spoken_choices(buttons: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    """Buttons said with their keys, in one sentence ("查办件进度请按1，缴费请按2。"), and the
    key -> payload map.

    Keys are 1, 2, 3 ... in order, unless every title starts with its own digit ("5分 很满意"),
    which is then the key. The hand-off button is always key 0, as it is everywhere on the line."""
    usable = [(str(b.get("title", "")).strip(), str(b.get("payload", ""))) for b in buttons if b.get("payload")]
    others = [(t, p) for t, p in usable if p != HUMAN_PAYLOAD]
    leading = [t[:1] for t, _ in others]
    own_digits = all(d.isdigit() and d != "0" for d in leading) and len(set(leading)) == len(leading)
    keys: dict[str, str] = {}
    said: list[str] = []
    for n, (title, payload) in enumerate(others[:9], start=1):
        key = title[0] if own_digits else str(n)
        keys[key] = payload
        said.append(f"{title}请按{key}")
    if len(others) < len(usable):
        keys["0"] = HUMAN_PAYLOAD
        said.append("转人工请按0")
    return ("，".join(said) + "。") if said else "", keys


def is_yes_no(keys: dict[str, str]) -> bool:
    payloads = {p.split("{")[0] for p in keys.values()}
    return bool(payloads) and payloads <= {"/affirm", "/deny", HUMAN_PAYLOAD}


class Call:
    """The turn loop of one call.

    Speaking is a pipeline: ``say`` queues sentences, a renderer task turns them into audio, a
    player task sends it in 20 ms frames. Barge-in bumps a generation number, which drops
    everything queued or being rendered for the old prompt at once."""

    def __init__(self, gw: Gateway, call_id: str, transport: Transport, kind: str, caller: str | None) -> None:
        self.gw, self.s = gw, gw.settings
        self.call_id, self.transport, self.kind, self.caller = call_id, transport, kind, caller
        self.asr: AsrStream = gw.recogniser.stream(transport.in_rate, self.s.voice_endpoint_s,
                                                   self.s.voice_max_utterance_s, self.s.voice_speech_rms,
                                                   self.s.voice_barge_in_ms)
        self.clock = ArrivalClock(transport.in_rate)
        self.barge = VoiceActivity(transport.in_rate, self.s.voice_speech_rms, self.s.voice_barge_in_ms)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._frame = frame_bytes(transport.out_rate)
        self._gen = 0  # generation of what is being said; barge-in starts a new one
        self._lines: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()  # None: end of a prompt
        self._play: asyncio.Queue[tuple[int, bytes | None]] = asyncio.Queue()
        self._outstanding = 0  # prompts queued and not yet fully played
        self._sending = False
        self._first_audio: asyncio.Future[float | None] | None = None
        self.last_prompt: list[str] = []
        self.keys: dict[str, str] = {}
        self.expect: str | None = None
        self.digits = ""
        self.slow = False
        self.ended = False
        self.end_reason = "hangup"
        self.next_step = "hangup"
        self.seq = 0
        self.silences = 0
        self.barged = False
        self.recording: Any = gw.recorder(call_id, transport.in_rate) if gw.recorder else None

    # ---- input from the transport ------------------------------------------------------
    def audio(self, pcm: bytes) -> None:
        if self.ended:
            return
        self.clock.arrived(len(pcm), time.monotonic())
        # Loudness is judged on arrival, not after decoding: a busy recogniser must not delay barge-in.
        if self.barge.push(pcm):
            self.events.put_nowait(("partial", ""))
        self._audio.put_nowait(pcm)

    def dtmf(self, digit: str) -> None:
        if not self.ended:
            self.events.put_nowait(("dtmf", (digit, time.monotonic())))

    def hangup(self) -> None:
        if not self.ended:
            self.end_reason = "caller_hangup"
            self.events.put_nowait(("hangup", None))

    @property
    def speaking(self) -> bool:
        return self._outstanding > 0

    # ---- the call ----------------------------------------------------------------------
    async def run(self) -> None:
        await self.gw.records.start(self.call_id, self.kind, self.caller)
        logger.info("call %s started (%s, caller %s)", self.call_id, self.kind, log_caller(self.caller))
        tasks = [asyncio.create_task(t) for t in (self._listen(), self._renderer(), self._player())]
        try:
            await self._turn(GREET_PAYLOAD, TurnRecord(kind="start"), started=time.monotonic())
            await self._loop()
        finally:
            self.ended = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            path = self.recording.close() if self.recording else None
            await self.gw.records.end(self.call_id, self.end_reason, self.next_step, path)
            logger.info("call %s ended: %s -> %s", self.call_id, self.end_reason, self.next_step)

    async def _loop(self) -> None:
        while not self.ended:
            try:
                kind, value = await asyncio.wait_for(self.events.get(), timeout=self._timeout())
            except asyncio.TimeoutError:
                if self.digits:
                    await self._submit_digits(time.monotonic())
                elif not self.speaking:
                    await self._silence()
                continue
            if kind == "hangup":
                return
            if kind == "partial":
                self.silences = 0
                if self.speaking:
                    await self._barge_in()
            elif kind == "final":
                self.barge.utterance_done()
                final: Final = value
                await self._barge_in()
                end = self.clock.time_of(final.speech_end_s) if final.speech_end_s is not None else None
                await self._turn(final.text, TurnRecord(kind="speech", transcript=final.text,
                                                        asr_confidence=final.confidence),
                                 started=end or time.monotonic(), asr_confidence=final.confidence)
            elif kind == "dtmf":
                await self._key(*value)
            # "played": only wakes the loop, so the silence timer starts after a prompt ends.

    def _timeout(self) -> float | None:
        if self.digits:
            return self.s.voice_digit_timeout_s
        if self.speaking:
            return None
        # While the caller talks, partial results keep restarting this wait; a noise that started
        # "speech" but never became words ends as silence.
        return self.s.voice_silence_timeout_s

    async def _key(self, digit: str, when: float) -> None:
        self.silences = 0
        await self._barge_in()
        collecting = self.expect == "digits" or bool(self.digits)
        if digit == "*":
            self.digits = ""
            self.say(self.last_prompt)
        elif digit == "#":
            if self.digits:
                await self._submit_digits(when)
        elif digit == "0" and not collecting:
            await self._turn(HUMAN_PAYLOAD, TurnRecord(kind="dtmf", dtmf="0"), started=when)
        elif not collecting and digit in self.keys:
            await self._turn(self.keys[digit], TurnRecord(kind="dtmf", dtmf=digit), started=when)
        elif digit.isdigit():
            self.digits += digit
        # Any other key is ignored, as an elderly caller's stray press should be.

    async def _submit_digits(self, when: float) -> None:
        digits, self.digits = self.digits, ""
        await self._turn(digits, TurnRecord(kind="dtmf", dtmf=digits + "#", transcript=digits), started=when,
                         readback=f"您输入的是：{spell_digits(digits)}。")

    async def _silence(self) -> None:
        self.silences += 1
        if self.silences == 1 and self.last_prompt:
            lines = self.last_prompt
        elif self.silences <= 2:
            lines = [PROMPTS["still_there"]]
        else:
            lines = sentences(PROMPTS["goodbye_silence"])
            self.end_reason = "silence"
        self.seq += 1
        self.say(lines)
        await self.gw.records.turn(self.call_id, self.seq, TurnRecord(kind="silence", reply="".join(lines)))
        if self.end_reason == "silence":
            await self._finish_speaking()
            self.ended = True

    async def _barge_in(self) -> None:
        """Stop the prompt now: the caller spoke or pressed a key."""
        if not self.speaking:
            return
        self._gen += 1
        self._outstanding = 0
        self.barged = True
        await self.transport.stop_playback()

    # ---- one exchange with Rasa ----------------------------------------------------------
    async def _turn(self, text: str, record: TurnRecord, started: float, readback: str | None = None,
                    asr_confidence: float | None = None) -> None:
        self.seq += 1
        record.barge_in, self.barged = self.barged, False
        self._first_audio = asyncio.get_running_loop().create_future()
        if readback:
            self.say([readback])  # the digits are read back while Rasa works
        metadata: dict[str, Any] = {"call_id": self.call_id, "transport": self.kind}
        if self.caller:
            metadata["caller"] = self.caller
        if asr_confidence is not None:
            metadata["asr_confidence"] = round(asr_confidence, 3)
        if record.dtmf:
            metadata["dtmf"] = record.dtmf
        t0 = time.monotonic()
        reply = await self._ask_rasa(text, metadata)
        record.rasa_ms = int((time.monotonic() - t0) * 1000)
        lines, handoff = self._read_reply(reply)
        spoken = lines or [PROMPTS["rasa_down"]]
        record.reply = "".join([readback or "", *spoken])
        if handoff:
            self.next_step, self.end_reason = "human", "handoff"
        self.say(spoken)
        self.last_prompt = spoken
        first = await self._await_first_audio()
        if first is not None:
            record.latency_ms = int((first - started) * 1000)
            record.tts_ms = int((first - t0) * 1000) - record.rasa_ms
        await self.gw.records.turn(self.call_id, self.seq, record)
        if handoff:
            await self._finish_speaking()
            self.ended = True

    async def _ask_rasa(self, text: str, metadata: dict[str, Any]) -> dict[str, Any] | None:
        try:
            r = await self.gw.rasa.post(
                self.s.rasa_webhook, json={"sender": self.call_id, "message": text, "metadata": metadata},
                headers={"Authorization": f"Bearer {self.s.phone_channel_token.get_secret_value()}"},
                timeout=self.s.voice_rasa_timeout_s)
            r.raise_for_status()
            body = r.json()
            return body if isinstance(body, dict) else None
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("call %s: Rasa did not answer (%s)", self.call_id, type(exc).__name__)
            return None

    def _read_reply(self, reply: dict[str, Any] | None) -> tuple[list[str], bool]:
        """Sentences to say, and whether the bot handed the caller to a human."""
        if reply is None:
            return [], False
        lines: list[str] = []
        keys: dict[str, str] = {}
        handoff = False
        for m in reply.get("messages") or []:
            if not isinstance(m, dict):
                continue
            if m.get("text"):
                lines.extend(sentences(speakable(str(m["text"]))))
            if m.get("buttons"):
                said, keys = spoken_choices(m["buttons"])
                lines.extend(sentences(said))
            custom = m.get("custom")
            if isinstance(custom, dict):
                if custom.get("handoff"):
                    handoff = True
                if (custom.get("speech") or {}).get("rate") == "slow":
                    self.slow = True
        self.keys = keys
        self.expect = "digits" if reply.get("expect") == "digits" else None
        if self.expect == "digits":
            self.asr.limit_to(DIGIT_PHRASES)
        elif is_yes_no(keys):
            self.asr.limit_to(YES_NO_PHRASES)
        else:
            self.asr.limit_to(None)
        return lines, handoff

    # ---- speaking ------------------------------------------------------------------------
    def say(self, lines: list[str]) -> None:
        """Queue sentences to be said after whatever is already queued."""
        if not lines:
            return
        self.barge.utterance_done()  # every prompt can be interrupted, even after a noise that was no speech
        self._outstanding += 1
        for line in lines:
            self._lines.put_nowait((self._gen, line))
        self._lines.put_nowait((self._gen, None))

    async def _finish_speaking(self) -> None:
        """Wait until everything queued has been sent (before hanging up)."""
        while self.speaking and not self.transport_closed():
            await asyncio.sleep(FRAME_MS / 1000)

    def transport_closed(self) -> bool:
        return bool(getattr(self.transport, "closed", False))

    async def _await_first_audio(self, timeout: float = 10) -> float | None:
        fut = self._first_audio
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None

    async def _renderer(self) -> None:
        while True:
            gen, line = await self._lines.get()
            if gen != self._gen:
                continue
            if line is None:
                self._play.put_nowait((gen, None))
                continue
            rate = self.s.voice_tts_slow_rate if self.slow else self.s.voice_tts_rate
            try:
                pcm = await self.gw.speaker.render(line, rate)
            except TtsError:
                logger.exception("call %s: a sentence could not be rendered", self.call_id)
                continue
            if gen == self._gen:
                self._play.put_nowait((gen, pcm))

    async def _player(self) -> None:
        """Send audio in 20 ms frames on an absolute schedule, so it never drifts."""
        loop = asyncio.get_running_loop()
        step = FRAME_MS / 1000
        next_t = loop.time()
        while True:
            gen, pcm = await self._play.get()
            if gen != self._gen:
                continue
            if pcm is None:  # a prompt has been said in full
                self._outstanding = max(0, self._outstanding - 1)
                if not self.speaking:
                    self.events.put_nowait(("played", None))
                continue
            next_t = max(next_t, loop.time())
            for i in range(0, len(pcm), self._frame):
                if gen != self._gen:
                    break  # barge-in
                frame = pcm[i:i + self._frame]
                await self.transport.send_audio(frame.ljust(self._frame, b"\0"))
                if self._first_audio is not None and not self._first_audio.done():
                    self._first_audio.set_result(time.monotonic())
                next_t += step
                delay = next_t - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

    # ---- listening -----------------------------------------------------------------------
    async def _listen(self) -> None:
        chunk = self.transport.in_rate * ASR_CHUNK_MS // 1000 * 2
        buf = bytearray()
        while True:
            pcm = await self._audio.get()
            if pcm is None:
                return
            if self.recording:
                self.recording.write(pcm)
            buf += pcm
            if len(buf) < chunk:
                continue
            data, buf = bytes(buf), bytearray()
            for event in await self.asr.feed(data):
                if isinstance(event, Partial):
                    self.events.put_nowait(("partial", event.text))
                elif event.text:
                    self.events.put_nowait(("final", event))


def normalise_caller(raw: str) -> str | None:
    """A caller number as the PBX gives it ("+86 138-0000-0008", "013800000008") -> "13800000008";
    other numbers (landlines with area codes) keep their digits."""
    digits = "".join(c for c in raw if c.isdigit())[:20]
    if len(digits) == 13 and digits.startswith("86") and digits[2] == "1":
        digits = digits[2:]
    elif len(digits) == 12 and digits.startswith("01"):
        digits = digits[1:]
    return digits or None


_UUID = re.compile(r"^[0-9A-Za-z._:-]{1,64}$")


def valid_call_id(value: str) -> bool:
    return bool(_UUID.match(value))
