"""Voice activity: silero-vad's ONNX model, and the endpointer that cuts a call's audio into utterances.

silero-vad (MIT; its PyPI package ships the ONNX file, which is loaded here with onnxruntime, so
neither torch nor the package's own code is imported) takes 32 ms chunks (256 samples at 8 kHz,
512 at 16 kHz) with the previous chunk's last 32/64 samples as context and a recurrent state of
shape (2, 1, 128), and answers the probability that the chunk is speech. One model (an
onnxruntime session, which is safe to call from several threads) serves every call; each call
keeps its own state. A chunk costs about 0.1 ms of CPU, so it runs on arrival.

The endpointer turns those decisions into utterances: speech starts after ``start_ms`` of speech
chunks (with ``PREROLL_MS`` of audio before it kept, so the first syllable is not lost); it ends
after ``endpoint_s`` of non-speech, after ``max_utterance_s``, or when no frames arrive at all for
``endpoint_s`` (Asterisk sends nothing while a caller on a Local channel or a silence-suppressed
SIP line is quiet: the call's listener checks that on the wall clock).

The prompt's own echo on the line is speech too, so while the gateway speaks a speech chunk is
taken as the caller only when it is (a) louder than ``echo_ratio`` times the loudest frame the
gateway sent in the last 0.2 s (a weak echo, 20 dB or more down, fails this) and (b) not a copy of
what the gateway sent: its normalised cross-correlation with the last 0.4 s of outgoing audio stays
under ``ECHO_NCC`` (a strong echo, whatever its delay and through a short echo path, correlates
above 0.9; a caller talking over the prompt stays under 0.5). Simulated with the fixtures over a
prompt whose echo came back filtered, delayed 40 ms, at 0-15 dB down in line noise: no echo-only
barge-in, and callers were heard after 0.22 s (median; `python -m bench.echo`, bench/RESULTS.md)."""
from __future__ import annotations

import importlib.util
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from voice.tuning import ENDPOINT_S

PREROLL_MS = 500
THRESHOLD = 0.5
ECHO_NCC = 0.75


@dataclass(frozen=True)
class EchoReference:
    """What the gateway sent lately: its audio (the last 0.4 s) and its loudest recent frame."""

    audio: np.ndarray  # samples at ``rate``
    level: float
    rate: int

    def correlation(self, chunk: np.ndarray) -> float:
        """The largest normalised cross-correlation of ``chunk`` with the audio, over every lag."""
        x, y = chunk.astype(np.float64), self.audio.astype(np.float64)
        n, length = len(x), len(y)
        if length < n:
            return 0.0
        size = 1 << int(np.ceil(np.log2(length + n)))
        corr = np.fft.irfft(np.fft.rfft(x[::-1], size) * np.fft.rfft(y, size), size)[n - 1:length]
        energy = np.concatenate([[0.0], np.cumsum(y * y)])
        window = energy[n:length + 1] - energy[:length - n + 1]
        audible = window > n * 100.0 ** 2  # skip the prompt's own silences
        if not audible.any():
            return 0.0
        return float(np.max(np.abs(corr[:len(window)][audible]) / (np.sqrt(window[audible] * float(x @ x)) + 1e-9)))


class SpeechDetector(Protocol):
    """Per-call speech probability for fixed chunks of audio."""

    chunk: int  # samples per decision

    def probability(self, samples: np.ndarray) -> float: ...


def silero_model_path() -> Path:
    """The ONNX file inside the installed silero-vad package (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("silero-vad is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}")
    return path


class SileroModel:
    """The process's silero-vad session."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path or silero_model_path()), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])

    def detector(self, rate: int) -> "SileroDetector":
        return SileroDetector(self, rate)


class SileroDetector:
    """One call's silero state."""

    def __init__(self, model: SileroModel, rate: int) -> None:
        if rate not in (8000, 16000):
            raise ValueError("silero-vad runs at 8 or 16 kHz")
        self.model, self.rate = model, rate
        self.chunk = 256 if rate == 8000 else 512
        self._context = np.zeros((1, 32 if rate == 8000 else 64), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._sr = np.array(rate, dtype=np.int64)

    def probability(self, samples: np.ndarray) -> float:
        x = np.concatenate([self._context, samples.reshape(1, -1).astype(np.float32) / 32768.0], axis=1)
        out, self._state = self.model.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -self._context.shape[1]:]
        return float(out[0][0])


@dataclass
class Utterance:
    """What the endpointer says about the audio it was given."""

    started: bool = False  # speech has just started (barge-in)
    speech: bool = False  # some of this audio was speech inside an utterance
    audio: list[bytes] = field(default_factory=list)  # audio that belongs to the utterance, in order
    ended: bool = False  # the utterance has just ended


class Endpointer:
    """Speech start and end for one call's audio (see the module docstring)."""

    def __init__(self, detector: SpeechDetector, rate: int, start_ms: int = 160, endpoint_s: float = ENDPOINT_S,
                 max_utterance_s: float = 15.0, echo_ratio: float = 0.1) -> None:
        self.detector, self.rate = detector, rate
        self.chunk = detector.chunk
        chunk_s = self.chunk / rate
        self.start_chunks = max(1, round(start_ms / 1000 / chunk_s))
        self.end_chunks = max(1, round(endpoint_s / chunk_s))
        self.max_chunks = max(1, round(max_utterance_s / chunk_s))
        self.echo_ratio = echo_ratio
        self._rest = np.zeros(0, dtype=np.int16)
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(PREROLL_MS / 1000 / chunk_s)))
        self._pending: list[bytes] = []  # speech chunks before speech has clearly started
        self.in_speech = False
        self._speech_run = 0
        self._quiet_run = 0
        self._length = 0
        self.speech_chunks = 0  # chunks that were speech, for the record

    def push(self, pcm: bytes, echo: EchoReference | None = None) -> Utterance:
        """Take the caller's audio as it arrives; ``echo``: what the gateway sent lately (None when
        it has been silent)."""
        result = Utterance()
        x = np.concatenate([self._rest, np.frombuffer(pcm, dtype="<i2")])
        n = len(x) // self.chunk
        self._rest = x[n * self.chunk:]
        for i in range(n):
            samples = x[i * self.chunk:(i + 1) * self.chunk]
            speech = self.detector.probability(samples) >= THRESHOLD
            if speech and echo is not None:
                speech = not self.is_echo(samples, echo)
            self._step(samples.tobytes(), speech, result)
        return result

    def is_echo(self, samples: np.ndarray, echo: EchoReference) -> bool:
        rms = float(np.sqrt(np.mean(samples.astype(np.float32) ** 2)))
        if rms <= self.echo_ratio * echo.level:
            return True
        if echo.rate != self.rate:  # a 16 kHz caller on a line the gateway speaks to at 8 kHz
            from scipy.signal import resample_poly

            g = np.gcd(self.rate, echo.rate)
            echo = EchoReference(resample_poly(echo.audio.astype(np.float32), self.rate // g, echo.rate // g),
                                 echo.level, self.rate)
        return echo.correlation(samples) > ECHO_NCC

    def _step(self, chunk: bytes, speech: bool, result: Utterance) -> None:
        if speech:
            self.speech_chunks += 1
            result.speech = result.speech or self.in_speech or self._speech_run + 1 >= self.start_chunks
        if not self.in_speech:
            if speech:
                self._speech_run += 1
                self._pending.append(chunk)
                if self._speech_run >= self.start_chunks:
                    self.in_speech, result.started = True, True
                    result.audio.extend(self._preroll)
                    result.audio.extend(self._pending)
                    self._preroll.clear()
                    self._length = len(self._pending)
                    self._pending, self._quiet_run = [], 0
            else:
                self._preroll.extend(self._pending)
                self._preroll.append(chunk)
                self._pending, self._speech_run = [], 0
            return
        result.audio.append(chunk)
        self._length += 1
        self._quiet_run = 0 if speech else self._quiet_run + 1
        if self._quiet_run >= self.end_chunks or self._length >= self.max_chunks:
            self._end(result)

    def _end(self, result: Utterance) -> None:
        self.in_speech, result.ended = False, True
        self._speech_run = self._quiet_run = self._length = 0

    def frames_stopped(self) -> Utterance:
        """No audio has arrived for the endpoint delay: an utterance in progress has ended."""
        result = Utterance()
        if self.in_speech:
            self._end(result)
        self._pending, self._speech_run = [], 0
        return result
