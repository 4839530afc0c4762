"""One phone call as a state machine, and what all calls share (the Gateway: admission, models, Rasa).

Transports (voice/audiosocket.py, voice/media_ws.py) turn bytes into three inputs: ``audio``,
``key`` and ``hangup``. Audio goes to the call's Listener (voice/listening.py), which says when
speech starts and what was said; everything else becomes an event on the call's queue, handled
one at a time by :meth:`Call.run`: speech started, heard, key, played, timer, hung up. Timers run
on the injected clock (voice/clock.py), so the unit tests drive a whole call in virtual time.

Keys (voice/wording.py): ``*`` reaches a person from any state, number entry included; ``#``
ends a keyed number, hears the next part of an answer that was split, and otherwise says the last
prompt again; in a menu the keys said in the prompt (already while it is being said), and ``0``
for a person too.
Silence after a prompt: the prompt again, then "您还在吗", then a goodbye and the end of the call.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx

from voice.asr import Recogniser
from voice.audio import StreamResampler
from voice.clock import Clock, LoopClock
from voice.listening import Heard, Listener, SpeechStarted
from voice.records import CallRecords, TurnRecord, log_caller
from voice.replies import Reply, read_reply
from voice.settings import VoiceSettings
from voice.speaking import Renderer, Speaking, Transport
from voice.vad import Endpointer, SileroModel
from voice.wording import (CALL_ENDED_PAYLOAD, END_KEY, GREET_PAYLOAD, REMINDER_PAYLOAD, HUMAN_KEY, HUMAN_PAYLOAD, MENU_HUMAN_ALIAS,
                           PROMPTS, readback, seconds_of, sentences, split_turns)

logger = logging.getLogger(__name__)

MORE_PAUSE_S = 3.0  # after a part of a split answer, the next part comes by itself after this pause
MORE_WORDS = ("接着说", "接着", "继续", "往下说", "下面", "还有呢")


@dataclass(frozen=True)
class KeyPress:
    key: str
    at: float


@dataclass(frozen=True)
class HungUp:
    reason: str


@dataclass(frozen=True)
class Played:
    pass


@dataclass(frozen=True)
class Timer:
    kind: str  # silence | digits | more
    token: int


@dataclass
class Gateway:
    """What every call shares: the models, the speaker, the Rasa client, the records, admission."""

    settings: VoiceSettings
    recogniser: Recogniser
    speaker: Renderer
    rasa: httpx.AsyncClient
    records: CallRecords
    vad: SileroModel
    clock: Clock = field(default_factory=LoopClock)
    calls: dict[str, "Call"] = field(default_factory=dict)
    callers: dict[str, tuple[str, float]] = field(default_factory=dict)  # uuid -> (caller id, when)
    reminders: dict[str, str] = field(default_factory=dict)  # uuid -> the reminder a reminder call is for
    recorder: Callable[[str, int], Any] | None = None
    admitting: set[str] = field(default_factory=set)  # admitted, not yet attended

    async def admit(self, call_id: str) -> str | None:
        """Why a new call cannot be taken, or None. One place, one policy: 'duplicate' (that call id
        is connected now), 'reused' (that call id was used before: ids are accepted once), 'busy'
        (VOICE_MAX_CALLS reached; the caller hears PROMPTS['busy']). The place is held from here on
        (before anything is awaited), so two calls arriving together cannot both take the last one."""
        if call_id in self.calls or call_id in self.admitting:
            return "duplicate"
        if len(self.calls) + len(self.admitting) >= self.settings.voice_max_calls:
            logger.warning("%d calls already, refusing %s", len(self.calls), call_id)
            await self.records.refused(call_id, "busy")
            return "busy"
        self.admitting.add(call_id)
        if await self.records.known(call_id):
            self.admitting.discard(call_id)
            return "reused"
        return None

    async def attend(self, call: "Call", reading: Awaitable[None]) -> bool:
        """Run a call beside its transport's reader until either ends; True when the gateway ended
        the call (goodbye, silence, hand-off), False when the caller hung up. When the reader
        fails (malformed input), the call is ended with reason "error" and the error re-raised."""
        self.calls[call.call_id] = call
        self.admitting.discard(call.call_id)
        runner = asyncio.create_task(call.run())
        reader = asyncio.ensure_future(reading)
        try:
            done, _ = await asyncio.wait({runner, reader}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                runner.result()
                return True
            error = reader.exception()
            if error is not None:
                call.hangup("error")
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
            self.admitting.discard(call.call_id)

    def caller_for(self, call_id: str) -> str | None:
        """The caller number the dialplan registered for this call (POST /calls/{uuid}/start)."""
        entry = self.callers.pop(call_id, None)
        cutoff = self.clock.now() - 300
        for key in [k for k, (_, when) in self.callers.items() if when < cutoff]:
            del self.callers[key]
            self.reminders.pop(key, None)
        return entry[0] if entry else None

    async def ask_rasa(self, call_id: str, text: str, metadata: dict[str, Any]) -> dict[str, Any] | None:
        try:
            r = await self.rasa.post(
                self.settings.rasa_webhook, json={"sender": call_id, "message": text, "metadata": metadata},
                headers={"Authorization": f"Bearer {self.settings.phone_channel_token.get_secret_value()}"},
                timeout=self.settings.voice_rasa_timeout_s)
            r.raise_for_status()
            body = r.json()
            return body if isinstance(body, dict) else None
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("call %s: Rasa did not answer (%s)", call_id, type(exc).__name__)
            return None


class Call:
    """The state machine of one call (see the module docstring)."""

    def __init__(self, gw: Gateway, call_id: str, transport: Transport, kind: str, caller: str | None) -> None:
        self.gw, self.s, self.clock = gw, gw.settings, gw.clock
        self.call_id, self.transport, self.kind, self.caller = call_id, transport, kind, caller
        # A call the assistant placed to remind a citizen (services/calls.py) starts with the reminder.
        self.reminder = gw.reminders.pop(call_id, None) if caller else None
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self.recording: Any = gw.recorder(call_id, transport.in_rate) if gw.recorder else None
        endpointer, stream, resampler = self._ears(transport.in_rate)
        self.listener = Listener(endpointer, stream, self.clock, self.s.voice_endpoint_s, self.events.put_nowait,
                                 self.recording, resampler)
        self.mouth = Speaking(gw.speaker, transport, self.clock, self._rate, lambda: self.events.put_nowait(Played()),
                              call_id)
        self.last_prompt: list[str] = []
        self.keys: dict[str, str] = {}
        self.expect_digits = False
        self.digits = ""
        self.parts: list[list[str]] = []  # the rest of a split answer
        self.pending: Reply | None = None  # its keys and expectations, applied with the last part
        self.slow = False
        self.ended = False
        self.end_reason = "hangup"
        self.next_step = "hangup"
        self.seq = 0
        self.silences = 0
        self.barged = False
        self.unknown_frames = 0
        self._timer: asyncio.Task[None] | None = None
        self._timer_token = 0
        self._reply_at = 0.0  # when the current answer started: speech that began before it is stale
        self._writing: set[asyncio.Task[None]] = set()  # turn records waiting for their first audio

    # ---- input from the transport (never blocks) ------------------------------------------
    def audio(self, pcm: bytes) -> None:
        if not self.ended:
            self.listener.audio(pcm, self.mouth.echo_reference())

    def key(self, digit: str) -> None:
        if not self.ended:
            self.events.put_nowait(KeyPress(digit, self.clock.now()))

    def hangup(self, reason: str = "caller_hangup") -> None:
        if not self.ended:
            self.events.put_nowait(HungUp(reason))

    def _ears(self, rate: int) -> tuple[Endpointer, Any, StreamResampler | None]:
        """Endpointer, recogniser stream and resampler for caller audio at ``rate`` (silero-vad takes
        8 or 16 kHz; other PBX rates are resampled to 16 kHz on arrival)."""
        listen = rate if rate in (8000, 16000) else 16000
        endpointer = Endpointer(self.gw.vad.detector(listen), listen, self.s.voice_barge_in_ms,
                                self.s.voice_endpoint_s, self.s.voice_max_utterance_s, self.s.voice_echo_ratio)
        return (endpointer, self.gw.recogniser.stream(listen),
                StreamResampler(rate, listen) if listen != rate else None)

    def input_rate(self, rate: int) -> None:
        """The PBX's audio comes at ``rate`` (AudioSocket 0x11-0x18); said before the first audio frame."""
        self.transport.in_rate = rate
        self.listener.reconfigure(*self._ears(rate))
        if self.recording is not None:
            self.recording.set_rate(rate)

    def _rate(self) -> int:
        return self.s.voice_tts_slow_rate if self.slow else self.s.voice_tts_rate

    # ---- the call ----------------------------------------------------------------------
    async def run(self) -> None:
        await self.gw.records.start(self.call_id, self.kind, self.caller)
        logger.info("call %s started (%s, caller %s)", self.call_id, self.kind, log_caller(self.caller))
        tasks = [asyncio.create_task(t) for t in (self.listener.run(), self.mouth.run())]
        for task in tasks:
            task.add_done_callback(self._part_ended)
        try:
            await self._turn(REMINDER_PAYLOAD if self.reminder else GREET_PAYLOAD, TurnRecord(kind="start"),
                             started=self.clock.now())
            while not self.ended:
                await self._handle(await self.events.get())
        finally:
            self.ended = True
            self._cancel_timer()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # First the PBX: it asks /calls/{uuid}/next at once, and a silent line without our
            # frames is hung up by Asterisk after 2 s, before the dialplan could reach a person.
            self.gw.records.decided(self.call_id, self.next_step)
            if self.end_reason not in ("caller_hangup", "error"):  # (after an error the transport reports it)
                await self.transport.close(self.next_step)
            self.mouth.abandon()  # no first audio is coming now: pending turn records are written without it
            await asyncio.gather(*self._writing, return_exceptions=True)
            path = self.recording.close() if self.recording else None
            await self.gw.records.end(self.call_id, self.end_reason, self.next_step, path, self.unknown_frames)
            # Rasa is told the call is over, so no form is left waiting in the tracker.
            await self.gw.ask_rasa(self.call_id, CALL_ENDED_PAYLOAD,
                                   {"call_id": self.call_id, "call_ended": self.end_reason})
            logger.info("call %s ended: %s -> %s", self.call_id, self.end_reason, self.next_step)

    def _part_ended(self, task: "asyncio.Task[None]") -> None:
        """The listener or the speaking pipeline stopped by itself: the call cannot go on."""
        if task.cancelled() or self.ended:
            return
        logger.error("call %s: %s stopped", self.call_id, task.get_coro().__qualname__,  # type: ignore[union-attr]
                     exc_info=task.exception())
        self.hangup("error")

    async def _handle(self, event: object) -> None:
        if isinstance(event, HungUp):
            self.end_reason, self.ended = event.reason, True
        elif isinstance(event, SpeechStarted):
            if event.at < self._reply_at:
                return  # the caller spoke while the answer was being prepared: it must not cut it off
            self.silences = 0
            self._cancel_timer()
            await self._barge_in()
        elif isinstance(event, Heard):
            await self._heard(event)
        elif isinstance(event, KeyPress):
            await self._key(event.key, event.at)
        elif isinstance(event, Played):
            self._arm_after_prompt()
        elif isinstance(event, Timer) and event.token == self._timer_token:
            await self._timeout(event.kind)

    async def _heard(self, event: Heard) -> None:
        final = event.final
        if final is None:  # a noise that was no words
            if self.barged and self.last_prompt:  # ... that stopped the prompt: say it again at once
                self.barged = False
                self.say(self.last_prompt)
            else:
                self._arm_after_prompt()
            return
        if self.parts and any(w in final.text for w in MORE_WORDS):
            self._next_part()
            return
        await self._turn(final.text, TurnRecord(kind="speech", transcript=final.text, asr_confidence=final.confidence),
                         started=event.speech_end, asr_confidence=final.confidence)

    # ---- keys: one table of what each key does -------------------------------------------
    async def _key(self, key: str, at: float) -> None:
        self.silences = 0
        self._cancel_timer()
        await self._barge_in()
        collecting = self.expect_digits or bool(self.digits)
        if key == HUMAN_KEY:
            self.digits = ""
            await self._turn(HUMAN_PAYLOAD, TurnRecord(kind="dtmf", dtmf=key), started=at)
        elif key == END_KEY:
            if self.digits:
                await self._submit_digits(at)
            elif self.parts:
                self._next_part()
            else:
                await self._repeat(key)
        elif collecting and key.isdigit():
            self.digits += key
            self._arm("digits", self.s.voice_digit_timeout_s)
        elif key in self.keys:
            await self._turn(self.keys[key], TurnRecord(kind="dtmf", dtmf=key), started=at)
        elif key == MENU_HUMAN_ALIAS and self.keys:
            await self._turn(HUMAN_PAYLOAD, TurnRecord(kind="dtmf", dtmf=key), started=at)
        elif key.isdigit():  # a number keyed without being asked for: taken as one
            self.digits += key
            self._arm("digits", self.s.voice_digit_timeout_s)
        else:  # A-D and anything else: an elderly caller's stray press is ignored, but kept
            await self._record(TurnRecord(kind="dtmf", dtmf=key))
            self._arm_after_prompt()

    async def _submit_digits(self, at: float) -> None:
        digits, self.digits = self.digits, ""
        await self._turn(digits, TurnRecord(kind="dtmf", dtmf=digits + END_KEY, transcript=digits), started=at,
                         readback=readback(digits))

    async def _repeat(self, key: str) -> None:
        lines = self.last_prompt or sentences(PROMPTS["still_there"])
        self.say(lines)
        await self._record(TurnRecord(kind="dtmf", dtmf=key, reply="".join(lines)))

    # ---- timers -------------------------------------------------------------------------
    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel_timer()
        self._timer_token += 1
        token = self._timer_token

        async def fire() -> None:
            await self.clock.sleep(seconds)
            self.events.put_nowait(Timer(kind, token))

        self._timer = asyncio.create_task(fire())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_token += 1

    def _arm_after_prompt(self) -> None:
        """Nothing is being said: wait for the caller (or go on with a split answer)."""
        if self.mouth.speaking or self.listener.in_speech or self.ended:
            return
        if self.digits:
            self._arm("digits", self.s.voice_digit_timeout_s)
        elif self.parts:
            self._arm("more", MORE_PAUSE_S)
        else:
            self._arm("silence", self.s.voice_silence_timeout_s)

    async def _timeout(self, kind: str) -> None:
        if kind == "digits" and self.digits:
            await self._submit_digits(self.clock.now())
        elif kind == "more" and self.parts:
            self._next_part()
        elif kind == "silence":
            await self._silence()

    async def _silence(self) -> None:
        self.silences += 1
        if self.silences == 1 and self.last_prompt:
            lines = self.last_prompt
        elif self.silences <= 2:
            lines = sentences(PROMPTS["still_there"])
        else:
            lines = sentences(PROMPTS["goodbye_silence"])
        self.say(lines)
        await self._record(TurnRecord(kind="silence", reply="".join(lines)))
        if self.silences > 2:
            self.end_reason = "silence"
            await self.mouth.drained()
            self.ended = True

    async def _barge_in(self) -> None:
        """Stop the prompt now: the caller spoke or pressed a key."""
        if await self.mouth.stop():
            self.barged = True

    # ---- one exchange with Rasa ----------------------------------------------------------
    async def _turn(self, text: str, record: TurnRecord, started: float, readback: str | None = None,
                    asr_confidence: float | None = None) -> None:
        record.barge_in, self.barged = self.barged, False
        self.parts, self.pending = [], None
        first = self.mouth.expect_first_audio()
        if readback:
            self.say([readback])  # the digits are read back while Rasa works
        metadata: dict[str, Any] = {"call_id": self.call_id, "transport": self.kind}
        if self.reminder and record.kind == "start":
            metadata["reminder"] = self.reminder
        if self.caller:
            metadata["caller"] = self.caller
        if asr_confidence is not None:
            metadata["asr_confidence"] = round(asr_confidence, 3)
        if record.dtmf:
            metadata["dtmf"] = record.dtmf
        t0 = self.clock.now()
        reply = read_reply(await self.gw.ask_rasa(self.call_id, text, metadata))
        record.rasa_ms = int((self.clock.now() - t0) * 1000)
        if (reply is None or not reply.lines) and text == HUMAN_PAYLOAD:
            reply = Reply(lines=sentences(PROMPTS["to_human"]), handoff=True)  # a person, even without Rasa
        elif reply is None or not reply.lines:
            reply = Reply(lines=sentences(PROMPTS["rasa_down"]))
        if reply.slow:
            self.slow = True
        record.reply = "".join([readback or "", *reply.lines])
        if reply.handoff:
            self.next_step, self.end_reason = "human", "handoff"
            parts = [reply.lines]  # said whole: no "接着听" when nothing follows
        else:
            parts = split_turns(reply.lines, self._rate(), self.s.voice_max_turn_s,
                                lead_s=seconds_of(readback, self._rate()) if readback else 0.0)
        self.parts, self.pending = parts[1:], reply
        self._reply_at = self.clock.now()
        self._speak_part(parts[0])
        self._record_when_heard(record, first, started, t0, readback is not None)
        if reply.handoff:
            await self.mouth.drained()
            self.ended = True

    def _record_when_heard(self, record: TurnRecord, first: "asyncio.Future[float]", started: float, t0: float,
                           readback: bool) -> None:
        """Write the turn once its first audio went out (latency), without holding up the call."""
        self.seq += 1
        seq = self.seq

        async def write() -> None:
            try:
                heard = await asyncio.wait_for(asyncio.shield(first), 10)
                record.latency_ms = int((heard - started) * 1000)
                if not readback:
                    record.tts_ms = max(0, int((heard - t0) * 1000) - (record.rasa_ms or 0))
            except (asyncio.TimeoutError, asyncio.CancelledError):  # none came, or the call ended first
                pass
            await self.gw.records.turn(self.call_id, seq, record)

        task = asyncio.create_task(write())
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    def _speak_part(self, lines: list[str]) -> None:
        """Say one part of an answer. The answer's keys work from its first part on (a caller who
        knows the menu need not wait for it); the next part comes on #, on "接着说", or by itself."""
        if self.parts:
            lines = [*lines, PROMPTS["more"]]
        self.say(lines)
        self.last_prompt = lines
        if self.pending is not None:
            self.keys, self.expect_digits = self.pending.keys, self.pending.expect_digits
            self.listener.limit_to(self.pending.phrases)

    def _next_part(self) -> None:
        self._cancel_timer()
        if self.parts:
            lines = self.parts.pop(0)
            self._speak_part(lines)

    def say(self, lines: list[str]) -> None:
        self.mouth.say(lines)

    async def _record(self, record: TurnRecord) -> None:
        self.seq += 1
        await self.gw.records.turn(self.call_id, self.seq, record)


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
