"""A telephone stand-in for tests and benchmarks: an AudioSocket client that streams real audio
(20 ms frames on the clock, like Asterisk), presses keys, and records what comes back and when."""
from __future__ import annotations

import asyncio
import struct
import time
import uuid as uuidlib
from dataclasses import dataclass, field

FRAME = 320  # 20 ms of 8 kHz 16-bit mono


@dataclass
class Received:
    frames: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic time, audio) of speech
    silent_frames: int = 0  # the gateway's keepalive while it has nothing to say
    times: list[float] = field(default_factory=list)  # arrival of every audio frame, speech or silence
    hangup_at: float | None = None
    other: list[tuple[int, bytes]] = field(default_factory=list)


class PhoneClient:
    def __init__(self, host: str, port: int, call_id: str | None = None, silent_line: bool = False,
                 rate: int = 8000) -> None:
        self.host, self.port = host, port
        # AudioSocket() sends 0x10 (8 kHz); Dial(AudioSocket/...c(slin16)) sends 0x12 (16 kHz, 640 bytes).
        self.kind, self.frame = (0x10, FRAME) if rate == 8000 else (0x12, FRAME * 2)
        self.silent_line = silent_line  # like Asterisk's Local channels: no frames while quiet
        self.call_id = call_id or str(uuidlib.uuid4())
        self.got = Received()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._talking: asyncio.Task[None] | None = None
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def connect(self, send_uuid: bool = True) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._reading = asyncio.create_task(self._read())
        if send_uuid:
            self.raw(0x01, uuidlib.UUID(self.call_id).bytes)
        self._talking = asyncio.create_task(self._line())

    def raw(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame now (tests use this for malformed input too)."""
        assert self._writer is not None
        self._writer.write(struct.pack(">BH", kind, len(payload)) + payload)

    def raw_bytes(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def speak(self, pcm: bytes) -> None:
        """Queue audio to be sent in real time after what is already queued."""
        for i in range(0, len(pcm), self.frame):
            self._outgoing.put_nowait(pcm[i:i + self.frame].ljust(self.frame, b"\0"))

    def press(self, keys: str) -> None:
        for k in keys:
            self.raw(0x03, k.encode())

    async def _line(self) -> None:
        """Like a phone: a frame every 20 ms, silence when there is nothing to say."""
        loop = asyncio.get_running_loop()
        t = loop.time()
        self.sent_speech_until: float | None = None
        while not self.closed.is_set():
            try:
                frame = self._outgoing.get_nowait()
                self.last_speech_frame_at = time.monotonic()
            except asyncio.QueueEmpty:
                if self.silent_line:
                    t += 0.02
                    await asyncio.sleep(max(0.0, t - loop.time()))
                    continue
                frame = bytes(self.frame)
            try:
                self.raw(self.kind, frame)
                assert self._writer is not None
                await self._writer.drain()
            except (ConnectionError, AssertionError):
                return
            t += 0.02
            await asyncio.sleep(max(0.0, t - loop.time()))

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                head = await self._reader.readexactly(3)
                kind, n = struct.unpack(">BH", head)
                payload = await self._reader.readexactly(n) if n else b""
                if kind == 0x10:
                    self.got.times.append(time.monotonic())
                if kind == 0x10 and any(payload):
                    self.got.frames.append((time.monotonic(), payload))
                elif kind == 0x10:
                    self.got.silent_frames += 1
                elif kind == 0x00:
                    self.got.hangup_at = time.monotonic()
                else:
                    self.got.other.append((kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()

    def frames_since(self, t: float) -> list[tuple[float, bytes]]:
        return [f for f in self.got.frames if f[0] >= t]

    async def wait_quiet(self, quiet_s: float = 0.6, timeout: float = 90) -> None:
        """Wait until the gateway has spoken and then sent only silence (or nothing) for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.got.frames[-1][0] if self.got.frames else None
            if last is not None and time.monotonic() - last >= quiet_s:
                return
            if self.closed.is_set():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the gateway kept talking (or never spoke)")

    async def wait_audio_after(self, t: float, timeout: float = 15) -> float:
        """The time of the first audio frame after ``t``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = self.frames_since(t)
            if later:
                return later[0][0]
            if self.closed.is_set():
                break
            await asyncio.sleep(0.01)
        raise TimeoutError("no audio came back")

    async def drop(self) -> None:
        """Hang up as Asterisk does: close the connection, no 0x00 frame."""
        await self.close()

    async def hang_up(self) -> None:
        if not self.closed.is_set():
            try:
                self.raw(0x00)
                assert self._writer is not None
                await self._writer.drain()
            except (ConnectionError, AssertionError):
                pass
        await self.close()

    async def close(self) -> None:
        self.closed.set()
        for t in (self._talking, self._reading):
            if t:
                t.cancel()
        if self._writer:
            self._writer.close()
