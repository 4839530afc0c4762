"""The speaking pipeline of one call: sentences -> renderer -> player paced at 20 ms.

``say`` queues sentences; a renderer task turns them into audio (voice/tts.py, cached); a player
task sends 20 ms frames on an absolute schedule, so audio never drifts or bursts (Asterisk's
``AudioSocket()`` writes each frame to the channel as it arrives, with no jitter buffer). Barge-in
bumps a generation number, which drops everything queued or being rendered for the old prompt
at once.

Transports that need it (AudioSocket) get silence frames whenever nothing is being said: Asterisk
ends an AudioSocket call after 2 s without a frame in either direction, and a caller on a Local
channel or a silence-suppressed line sends no frames while quiet (shared/pbx/README.md, items 4
and 8). The player also keeps what it sent in the last ``ECHO_WINDOW_S``, which the
endpointer uses to tell the caller's voice from the prompt's echo (voice/vad.py)."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable, Protocol

import numpy as np

from voice.audio import FRAME_MS, frame_bytes, resample
from voice.clock import Clock
from voice.tts import TtsError
from voice.vad import EchoReference

logger = logging.getLogger(__name__)

ECHO_WINDOW_S = 0.4  # the line's echo comes back within this (round trip plus the echo path)
ECHO_LEVEL_S = 0.2  # the loudest frame this recent sets the level an echo could have


class Transport(Protocol):
    in_rate: int
    out_rate: int
    keepalive: bool  # send silence while nothing is said
    closed: bool

    async def send_audio(self, frame: bytes) -> None: ...
    async def stop_playback(self) -> None: ...
    async def close(self, next_step: str | None = None) -> None: ...  # None: the caller has gone


class Renderer(Protocol):
    out_rate: int

    async def render(self, text: str, rate: int) -> bytes: ...


class Speaking:
    def __init__(self, speaker: Renderer, transport: Transport, clock: Clock, rate: Callable[[], int],
                 on_played: Callable[[], None], call_id: str = "") -> None:
        self.speaker, self.transport, self.clock = speaker, transport, clock
        self.rate, self.on_played, self.call_id = rate, on_played, call_id
        self._frame = frame_bytes(transport.out_rate)
        self._silence = bytes(self._frame)
        self._gen = 0  # generation of what is being said; barge-in starts a new one
        self._lines: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()  # None: end of a prompt
        self._play: asyncio.Queue[tuple[int, bytes | None]] = asyncio.Queue()
        self._outstanding = 0  # prompts queued and not yet fully played
        self._first_audio: asyncio.Future[float] | None = None
        self._sent: deque[tuple[float, float, np.ndarray]] = deque()  # (time, RMS, int16 samples) sent lately

    @property
    def speaking(self) -> bool:
        return self._outstanding > 0

    def say(self, lines: list[str]) -> None:
        """Queue sentences to be said after whatever is already queued."""
        if not lines:
            return
        self._outstanding += 1
        for line in lines:
            self._lines.put_nowait((self._gen, line))
        self._lines.put_nowait((self._gen, None))

    async def stop(self) -> bool:
        """Barge-in: drop everything queued and being said. True when something was stopped."""
        if not self.speaking:
            return False
        self._gen += 1
        self._outstanding = 0
        await self.transport.stop_playback()
        return True

    def abandon(self) -> None:
        """The call is over: whoever waits for the first audio stops waiting."""
        if self._first_audio is not None and not self._first_audio.done():
            self._first_audio.cancel()

    def expect_first_audio(self) -> "asyncio.Future[float]":
        """A future that gets the time of the next audio frame of speech."""
        self._first_audio = asyncio.get_running_loop().create_future()
        return self._first_audio

    def _forget_old(self, now: float) -> None:
        while self._sent and self._sent[0][0] < now - ECHO_WINDOW_S:
            self._sent.popleft()

    def echo_reference(self) -> EchoReference | None:
        """What the gateway sent within the echo window, for the endpointer (None: it was silent)."""
        now = self.clock.now()
        self._forget_old(now)
        if not self._sent:
            return None
        level = max((rms for t, rms, _ in self._sent if t >= now - ECHO_LEVEL_S), default=0.0)
        return EchoReference(np.concatenate([x for _, _, x in self._sent]), level, self.transport.out_rate)

    async def drained(self) -> None:
        """Wait until everything queued has been sent (before hanging up)."""
        while self.speaking and not self.transport.closed:
            await self.clock.sleep(FRAME_MS / 1000)

    async def run(self) -> None:
        await asyncio.gather(self._renderer(), self._player())

    async def _renderer(self) -> None:
        while True:
            gen, line = await self._lines.get()
            if gen != self._gen:
                continue
            if line is None:
                self._play.put_nowait((gen, None))
                continue
            try:
                pcm = await self.speaker.render(line, self.rate())
                if self.speaker.out_rate != self.transport.out_rate:  # a 16 kHz WebSocket line
                    pcm = await asyncio.to_thread(resample, pcm, self.speaker.out_rate, self.transport.out_rate)
            except (TtsError, OSError, ValueError):  # one sentence is lost, not the call's voice
                logger.exception("call %s: a sentence could not be rendered", self.call_id)
                continue
            if gen == self._gen:
                self._play.put_nowait((gen, pcm))

    def _next_audio(self) -> tuple[int, bytes] | None:
        """The next clip to play, skipping what barge-in dropped; end-of-prompt marks are handled here."""
        while not self._play.empty():
            gen, pcm = self._play.get_nowait()
            if gen != self._gen:
                continue
            if pcm is None:  # a prompt has been said in full
                self._outstanding = max(0, self._outstanding - 1)
                if not self.speaking:
                    self.on_played()
                continue
            return gen, pcm
        return None

    async def _player(self) -> None:
        """One frame every 20 ms on an absolute schedule: speech when there is some, else silence
        (transports with keepalive) or nothing (waiting for the next clip)."""
        step = FRAME_MS / 1000
        next_t = self.clock.now()
        clip: tuple[int, bytes] | None = None
        pos = 0
        while not self.transport.closed:
            if clip is None or pos >= len(clip[1]) or clip[0] != self._gen:
                clip, pos = self._next_audio(), 0
            if clip is None and not self.transport.keepalive:
                gen, pcm = await self._play.get()  # nothing to send until the next clip
                self._requeue_front(gen, pcm)
                next_t = max(next_t, self.clock.now())
                continue
            if clip is None:
                frame = self._silence
            else:
                frame = clip[1][pos:pos + self._frame].ljust(self._frame, b"\0")
                pos += self._frame
                self._note_level(frame)
                if self._first_audio is not None and not self._first_audio.done():
                    self._first_audio.set_result(self.clock.now())
            await self.transport.send_audio(frame)
            next_t += step
            delay = next_t - self.clock.now()
            if delay > 0:
                await self.clock.sleep(delay)
            elif delay < -0.2:  # the loop was held up: start a new schedule rather than burst
                next_t = self.clock.now()

    def _requeue_front(self, gen: int, pcm: bytes | None) -> None:
        items = [(gen, pcm)]
        while not self._play.empty():
            items.append(self._play.get_nowait())
        for item in items:
            self._play.put_nowait(item)

    def _note_level(self, frame: bytes) -> None:
        x = np.frombuffer(frame, dtype="<i2")
        now = self.clock.now()
        self._forget_old(now)
        self._sent.append((now, float(np.sqrt(np.mean(x.astype(np.float32) ** 2))) if len(x) else 0.0, x))
