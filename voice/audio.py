"""PCM helpers: telephone frames, resampling (one-shot and streaming), WAV in and out.

All audio inside the gateway is signed 16-bit little-endian mono PCM ("slin")."""
from __future__ import annotations

import io
import wave
from math import gcd

import numpy as np
from scipy.signal import resample_poly

PHONE_RATE = 8000
FRAME_MS = 20


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms frame: 320 at 8 kHz (AudioSocket), 640 at 16 kHz."""
    return rate * FRAME_MS // 1000 * 2


def resample(pcm: bytes, src: int, dst: int) -> bytes:
    """Resample a whole clip (polyphase filter)."""
    if src == dst or not pcm:
        return pcm
    g = gcd(src, dst)
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    y = resample_poly(x, dst // g, src // g)
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


class StreamResampler:
    """Resample a stream chunk by chunk without clicks at the chunk edges.

    Each call filters the new samples together with ``HISTORY`` samples before them and a
    ``LOOKAHEAD`` held back until the next chunk, and keeps only the middle, where the filter saw
    real neighbours on both sides. The held-back tail comes out on ``flush``."""

    HISTORY = 64
    LOOKAHEAD = 64

    def __init__(self, src: int, dst: int) -> None:
        g = gcd(src, dst)
        self.up, self.down = dst // g, src // g
        self.passthrough = src == dst
        self._buf = np.zeros(0, dtype=np.float32)  # history + not yet emitted input
        self._hist = 0  # how many samples at the start of _buf are history only

    def feed(self, pcm: bytes) -> bytes:
        if self.passthrough:
            return pcm
        self._buf = np.concatenate([self._buf, np.frombuffer(pcm, dtype="<i2").astype(np.float32)])
        # Emit a whole number of ``down`` blocks so output indexes stay exact.
        ready = (len(self._buf) - self._hist - self.LOOKAHEAD) // self.down * self.down
        if ready <= 0:
            return b""
        return self._emit(ready)

    def flush(self) -> bytes:
        if self.passthrough:
            return b""
        ready = (len(self._buf) - self._hist) // self.down * self.down
        if ready <= 0:
            return b""
        self._buf = np.concatenate([self._buf, np.zeros(self.LOOKAHEAD, dtype=np.float32)])
        out = self._emit(ready)
        self._buf = np.zeros(0, dtype=np.float32)
        self._hist = 0
        return out

    def _emit(self, ready: int) -> bytes:
        y = resample_poly(self._buf, self.up, self.down)
        start = self._hist * self.up // self.down
        out = y[start:start + ready * self.up // self.down]
        keep_from = max(0, self._hist + ready - self.HISTORY)
        keep_from -= keep_from % self.down
        self._buf = self._buf[keep_from:]
        self._hist = self._hist + ready - keep_from
        return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


def wav_rate(data: bytes) -> int:
    """The sample rate a WAV header claims, read without decoding; ValueError when it is no WAV."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            return int(w.getframerate())
    except (wave.Error, EOFError, RuntimeError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc


def read_wav(data: bytes) -> tuple[bytes, int]:
    """(PCM, sample rate) of a 16-bit WAV; stereo is mixed down. Raises ValueError otherwise."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2:
                raise ValueError("only 16-bit PCM WAV is read directly")
            pcm, rate, channels = w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
    except (wave.Error, EOFError, RuntimeError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc
    if channels > 1:
        x = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).mean(axis=1)
        pcm = x.astype("<i2").tobytes()
    return pcm, rate


def write_wav(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def silence(seconds: float, rate: int = PHONE_RATE) -> bytes:
    return bytes(int(seconds * rate) * 2)


def trim_silence(pcm: bytes, rate: int, keep_lead_s: float = 0.05, keep_tail_s: float = 0.25,
                 threshold: int = 200) -> bytes:
    """Cut leading and trailing silence down to short margins (a prompt should start at once)."""
    x = np.frombuffer(pcm, dtype="<i2")
    loud = np.nonzero(np.abs(x.astype(np.int32)) > threshold)[0]
    if len(loud) == 0:
        return pcm
    start = max(0, int(loud[0]) - int(keep_lead_s * rate))
    end = min(len(x), int(loud[-1]) + 1 + int(keep_tail_s * rate))
    return x[start:end].tobytes()
