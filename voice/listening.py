"""The listening side of one call: caller audio -> endpointer (VAD) -> recogniser -> transcript.

Audio is judged on arrival (``audio``): the endpointer says when speech starts (the call stops its
prompt) and which audio belongs to an utterance; only that audio is handed to the recogniser, in
order, by one decoding task, so callers who are listening cost no recognition. An utterance also
ends when frames stop arriving for the endpoint delay (checked on the call's clock), since a PBX
may send nothing at all while the caller is quiet."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from voice.asr import AsrStream, Final
from voice.audio import StreamResampler
from voice.clock import Clock
from voice.vad import EchoReference, Endpointer, Utterance

logger = logging.getLogger(__name__)

GAP_CHECK_S = 0.05
MIN_FEED_CHUNKS = 3  # about 100 ms of speech per recogniser call while the caller talks (a 32 ms
FEED_WAIT_S = 0.06  # chunk per call costs Vosk several times its real-time factor)


@dataclass(frozen=True)
class SpeechStarted:
    at: float


@dataclass(frozen=True)
class Heard:
    """A finished utterance: its transcript (None when nothing was recognised) and when it ended."""

    final: Final | None
    speech_end: float


class Listener:
    def __init__(self, endpointer: Endpointer, stream: AsrStream, clock: Clock, endpoint_s: float,
                 emit: Callable[[object], None], recording: object | None = None,
                 resampler: StreamResampler | None = None) -> None:
        self.endpointer, self.stream, self.clock = endpointer, stream, clock
        self.endpoint_s, self.emit, self.recording = endpoint_s, emit, recording
        self.resampler = resampler  # for PBX rates the VAD does not take (24, 32, 48 kHz ...)
        # Speech to decode, in order, and the end time of each utterance after its audio.
        self._work: deque[bytes | float] = deque()
        self._ready = asyncio.Event()
        self._last_frame_at: float | None = None
        self._last_speech_at = 0.0

    def audio(self, pcm: bytes, echo: EchoReference | None = None) -> None:
        """The caller's audio as it arrives."""
        now = self.clock.now()
        self._last_frame_at = now
        if self.recording is not None:
            self.recording.write(pcm)  # type: ignore[attr-defined]
        if self.resampler is not None:
            pcm = self.resampler.feed(pcm)
        self._take(self.endpointer.push(pcm, echo), now)

    def reconfigure(self, endpointer: Endpointer, stream: AsrStream, resampler: StreamResampler | None) -> None:
        """Listen at another rate (the PBX's first audio frame said which); before any speech."""
        self.endpointer, self.stream, self.resampler = endpointer, stream, resampler

    def limit_to(self, phrases: Iterable[str] | None) -> None:
        self.stream.limit_to(phrases)

    @property
    def in_speech(self) -> bool:
        return self.endpointer.in_speech

    def _take(self, u: Utterance, now: float) -> None:
        if u.started:
            self.emit(SpeechStarted(now))
        self._work.extend(u.audio)
        if u.speech:
            self._last_speech_at = now
        if u.ended:
            self._work.append(self._last_speech_at or now)
        if self._work:
            self._ready.set()

    async def run(self) -> None:
        await asyncio.gather(self._decode(), self._watch_gaps())

    async def _decode(self) -> None:
        while True:
            await self._ready.wait()
            if self.endpointer.in_speech and len(self._work) < MIN_FEED_CHUNKS:
                await self.clock.sleep(FEED_WAIT_S)  # let a few more chunks arrive: fewer, larger calls
            chunks: list[bytes] = []
            end: float | None = None
            while self._work and end is None:
                item = self._work.popleft()
                if isinstance(item, bytes):
                    chunks.append(item)
                else:
                    end = item
            if not self._work:
                self._ready.clear()
            if chunks:
                await self.stream.feed(b"".join(chunks))
            if end is None:
                continue
            try:
                final = await self.stream.finish()
            except Exception:  # noqa: BLE001 - a recogniser failure loses one utterance, not the call
                logger.exception("recognition failed")
                final = None
            self.emit(Heard(final, end))

    async def _watch_gaps(self) -> None:
        while True:
            await self.clock.sleep(GAP_CHECK_S)
            last = self._last_frame_at
            if self.endpointer.in_speech and last is not None and self.clock.now() - last >= self.endpoint_s:
                self._take(self.endpointer.frames_stopped(), self.clock.now())
