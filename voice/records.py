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
from textnorm.ids import mask

logger = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class TurnRecord:
    kind: str  # start | speech | dtmf | silence
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

    async def end(self, call_id: str, reason: str, next_step: str, recording: str | None) -> None:
        self._next[call_id] = (next_step, time.monotonic())
        self._forget_old()
        await self._run(self._end, call_id, reason, next_step, recording)

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

    def _end(self, call_id: str, reason: str, next_step: str, recording: str | None) -> None:
        with self._sessions() as s:
            call = s.scalar(select(PhoneCall).where(PhoneCall.call_id == call_id))
            if call is None:
                return
            call.ended_at, call.end_reason, call.next_step, call.recording = _now(), reason, next_step, recording
            s.commit()


def log_caller(caller: str | None) -> str:
    """A caller number as it may appear in a log line."""
    return mask(caller) if caller else "unknown"
