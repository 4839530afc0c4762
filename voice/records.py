"""Review records of calls and turns (services DB tables phone_calls and phone_turns), and what the
PBX does when the gateway ends a call (``GET /calls/{uuid}/next``)."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.models import PhoneCall, PhoneTurn
from textnorm.masking import mask

logger = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class TurnRecord:
    kind: str  # start | speech | dtmf (keys: a number, *, #, a menu key, a stray key) | silence
    transcript: str | None = None
    asr_confidence: float | None = None
    dtmf: str | None = None
    reply: str | None = None
    latency_ms: int | None = None
    rasa_ms: int | None = None
    tts_ms: int | None = None
    barge_in: bool = False


class CallRecords:
    """Writes call records off the event loop; a failed write is logged, never fatal to a call."""

    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions
        self._next: dict[str, tuple[str, float]] = {}  # call id -> (next step, when)

    async def start(self, call_id: str, transport: str, caller: str | None) -> None:
        await self._run(self._start, call_id, transport, caller)

    async def turn(self, call_id: str, seq: int, record: TurnRecord) -> None:
        await self._run(self._turn, call_id, seq, record)

    def decided(self, call_id: str, next_step: str) -> None:
        """What the PBX gets from /calls/{uuid}/next, known before the gateway hangs up (it asks at once)."""
        self._next[call_id] = (next_step, time.monotonic())
        self._forget_old()

    async def end(self, call_id: str, reason: str, next_step: str, recording: str | None,
                  unknown_frames: int = 0) -> None:
        self.decided(call_id, next_step)
        await self._run(self._end, call_id, reason, next_step, recording, unknown_frames)

    async def known(self, call_id: str) -> bool:
        """True when this call id was used before (ids are accepted once). A failed read says no."""
        if call_id in self._next:
            return True
        try:
            return await asyncio.to_thread(self._known, call_id)
        except Exception:  # noqa: BLE001 - a database hiccup must not refuse every caller
            logger.exception("could not check a call id")
            return False

    async def refused(self, call_id: str, reason: str) -> None:
        """A call that was not taken (busy), for the review console and the capacity figures."""
        await self._run(self._refused, call_id, reason)

    def next_step(self, call_id: str) -> str | None:
        """'human' or 'hangup' for a call that ended; None for one that is unknown."""
        if call_id in self._next:
            return self._next[call_id][0]
        with self._sessions() as s:
            return s.scalar(select(PhoneCall.next_step).where(PhoneCall.call_id == call_id,
                                                              PhoneCall.ended_at.is_not(None)))

    def _forget_old(self, keep_s: float = 3600) -> None:
        cutoff = time.monotonic() - keep_s
        for key in [k for k, (_, when) in self._next.items() if when < cutoff]:
            del self._next[key]

    async def _run(self, fn: object, *args: object) -> None:
        try:
            await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - records must never end a call
            logger.exception("could not write a call record")

    def _start(self, call_id: str, transport: str, caller: str | None) -> None:
        with self._sessions() as s:
            s.add(PhoneCall(call_id=call_id, transport=transport, caller=caller, started_at=_now(),
                            next_step="hangup"))
            s.commit()

    def _known(self, call_id: str) -> bool:
        with self._sessions() as s:
            return s.scalar(select(PhoneCall.id).where(PhoneCall.call_id == call_id)) is not None

    def _refused(self, call_id: str, reason: str) -> None:
        with self._sessions() as s:
            now = _now()
            s.add(PhoneCall(call_id=call_id, transport="refused", started_at=now, ended_at=now, end_reason=reason,
                            next_step="hangup"))
            s.commit()

    def _turn(self, call_id: str, seq: int, r: TurnRecord) -> None:
        with self._sessions() as s:
            call = s.scalar(select(PhoneCall).where(PhoneCall.call_id == call_id))
            if call is None:
                return
            s.add(PhoneTurn(call_pk=call.id, seq=seq, kind=r.kind, transcript=r.transcript,
                            asr_confidence=r.asr_confidence, dtmf=r.dtmf, reply=r.reply,
                            latency_ms=r.latency_ms, rasa_ms=r.rasa_ms, tts_ms=r.tts_ms,
                            barge_in=r.barge_in, created_at=_now()))
            s.commit()

    def _end(self, call_id: str, reason: str, next_step: str, recording: str | None, unknown_frames: int) -> None:
        with self._sessions() as s:
            call = s.scalar(select(PhoneCall).where(PhoneCall.call_id == call_id))
            if call is None:
                return
            call.ended_at, call.end_reason, call.next_step, call.recording = _now(), reason, next_step, recording
            call.unknown_frames = unknown_frames
            s.commit()


def log_caller(caller: str | None) -> str:
    """A caller number as it may appear in a log line (the one masking policy, textnorm/masking.py)."""
    return mask(caller) if caller else "unknown"
