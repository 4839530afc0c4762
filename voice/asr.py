"""Speech recognition with Vosk: one model per process, one stream per call, decoding off the loop.

Vosk's decoder is C++ behind cffi, which releases the GIL, so a small thread pool decodes several
calls at once on several cores; the pool is bounded so a burst of calls queues instead of
starving the event loop. Each stream resamples telephone audio to the model's own rate (read from
``conf/mfcc.conf``; Kaldi's default is 16 kHz) and ends an utterance either by the model's
endpoint rules, or after ``endpoint_s`` of quiet once words were heard (``VoiceActivity``)."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import vosk

from textnorm.numerals import normalize_numbers
from voice.audio import StreamResampler

logger = logging.getLogger(__name__)

KALDI_DEFAULT_RATE = 16000
STABLE_PARTIAL_S = 2.0  # an utterance also ends when its words have not changed for this long

# Phrase lists for answers that can only be a few words (Vosk grammar mode).
YES_NO_PHRASES = ("是", "是的", "对", "对的", "好", "好的", "可以", "行", "确认", "没错", "不", "不是", "不对",
                  "不要", "不用", "取消", "人工", "转人工", "重复", "再说一遍")
DIGIT_PHRASES = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "幺", "两", "洞", "拐",
                 "没有", "匿名", "人工", "转人工", "取消", "重复", "再说一遍")


def model_sample_rate(model_dir: Path) -> int:
    """The sample rate a Vosk model was trained on: ``--sample-frequency`` in its mfcc.conf."""
    conf = model_dir / "conf" / "mfcc.conf"
    if conf.is_file():
        m = re.search(r"--sample-frequency=(\d+)", conf.read_text())
        if m:
            return int(m.group(1))
    return KALDI_DEFAULT_RATE


_CJK_SPACE = re.compile(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff0-9])|(?<=[0-9])\s+(?=[\u3400-\u9fff0-9])")


def clean_transcript(text: str) -> str:
    """Vosk's words joined the Chinese way ('我 要 查 进度' -> '我要查进度'), numbers as digits."""
    text = text.replace("[unk]", " ").strip()
    text = _CJK_SPACE.sub("", " ".join(text.split()))
    return normalize_numbers(text)


@dataclass(frozen=True)
class Partial:
    text: str


class VoiceActivity:
    """Loudness per 20 ms frame of the caller's audio: when speech started, how long it has been quiet.

    Vosk's partial results need a word's worth of audio (about a second with the test model,
    bench/RESULTS.md) before they say anything; energy says "someone is talking" within
    ``start_ms``, and trailing quiet says "they stopped" without waiting for the partial text to
    settle. A noisy line that is never quiet still ends utterances by the model's endpoint rules
    and by ``STABLE_PARTIAL_S``. For barge-in the call pushes every frame as it arrives (a few
    microseconds of numpy), so a busy recogniser never delays it."""

    def __init__(self, rate: int, threshold_rms: float, start_ms: int) -> None:
        self.frame = rate * 20 // 1000
        self.threshold = threshold_rms
        self.start_frames = max(1, start_ms // 20)
        self.loud_run = 0
        self.quiet_run = 0
        self.started = False
        self._rest = np.zeros(0, dtype=np.float32)

    def push(self, pcm: bytes) -> bool:
        """Take audio; True when speech has just started."""
        x = np.concatenate([self._rest, np.frombuffer(pcm, dtype="<i2").astype(np.float32)])
        n = len(x) // self.frame
        self._rest = x[n * self.frame:]
        if n == 0:
            return False
        rms = np.sqrt(np.mean(x[:n * self.frame].reshape(n, self.frame) ** 2, axis=1))
        started_now = False
        for loud in rms > self.threshold:
            if loud:
                self.loud_run, self.quiet_run = self.loud_run + 1, 0
                if not self.started and self.loud_run >= self.start_frames:
                    self.started = started_now = True
            else:
                self.loud_run, self.quiet_run = 0, self.quiet_run + 1
        return started_now

    @property
    def quiet_s(self) -> float:
        return self.quiet_run * 0.02

    def utterance_done(self) -> None:
        self.started = False


@dataclass(frozen=True)
class Final:
    text: str
    confidence: float | None
    # Seconds of stream audio at which the last word ended (None when no word timing came back).
    speech_end_s: float | None


class Recogniser:
    """The process's Vosk model and its decoding pool."""

    def __init__(self, model_dir: Path, workers: int = 2) -> None:
        if not (model_dir / "am").is_dir() and not (model_dir / "final.mdl").exists():
            raise FileNotFoundError(f"no Vosk model in {model_dir} (make models)")
        vosk.SetLogLevel(-1)
        self.model_dir = model_dir
        self.model = vosk.Model(str(model_dir))
        self.rate = model_sample_rate(model_dir)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="asr")

    def vocabulary(self, phrases: Iterable[str]) -> list[str]:
        """The phrases whose every word the model knows (a grammar with unknown words is refused)."""
        return [p for p in phrases if all(self.model.vosk_model_find_word(w) >= 0 for w in p.split())]

    def stream(self, input_rate: int, endpoint_s: float = 0.5, max_utterance_s: float = 15.0,
               speech_rms: float = 600, barge_in_ms: int = 160) -> "AsrStream":
        return AsrStream(self, input_rate, endpoint_s, max_utterance_s, VoiceActivity(input_rate, speech_rms, barge_in_ms))

    async def transcribe(self, pcm: bytes, rate: int) -> Final:
        """A whole recording (POST /asr): every utterance in it, joined."""
        stream = self.stream(rate, endpoint_s=10.0, max_utterance_s=3600, speech_rms=float("inf"))
        finals: list[Final] = []
        step = rate * 2  # one second per call into the pool
        for i in range(0, len(pcm), step):
            finals.extend(e for e in await stream.feed(pcm[i:i + step]) if isinstance(e, Final))
        last = await stream.finish()
        if last:
            finals.append(last)
        confs = [f.confidence for f in finals if f.confidence is not None]
        return Final(" ".join(f.text for f in finals if f.text).strip(),
                     sum(confs) / len(confs) if confs else None, None)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class AsrStream:
    """One call's recogniser. Not shared: a call feeds its own stream, one chunk at a time.

    ``vad`` follows the audio as it is decoded, to end an utterance after enough quiet. (The call
    keeps a second one, pushed on arrival, for barge-in.)"""

    def __init__(self, rec: Recogniser, input_rate: int, endpoint_s: float, max_utterance_s: float,
                 vad: VoiceActivity) -> None:
        self.rec = rec
        self.resampler = StreamResampler(input_rate, rec.rate)
        self.vad = vad
        self.endpoint_s = endpoint_s
        self.stable_samples = int(max(STABLE_PARTIAL_S, endpoint_s) * rec.rate)
        self.max_samples = int(max_utterance_s * rec.rate)
        self.grammar: list[str] | None = None
        self._pending_grammar: list[str] | None = None
        self._grammar_changed = False
        # Made in the pool on first use: a recogniser takes ~55 ms to build, too long for the event loop.
        self._kaldi: vosk.KaldiRecognizer | None = None
        self._offset = 0  # samples fed before the current recogniser was made
        self._fed = 0  # samples fed in all
        self._utt_start = 0  # where the current utterance's audio began (first partial)
        self._last_partial = ""
        self._partial_changed_at = 0

    def _new_recogniser(self) -> vosk.KaldiRecognizer:
        if self.grammar:
            kaldi = vosk.KaldiRecognizer(self.rec.model, self.rec.rate, json.dumps([*self.grammar, "[unk]"]))
        else:
            kaldi = vosk.KaldiRecognizer(self.rec.model, self.rec.rate)
        kaldi.SetWords(True)
        return kaldi

    def limit_to(self, phrases: Iterable[str] | None) -> None:
        """Listen only for these phrases from the next utterance on (None: free speech).

        Phrases the model does not know are dropped; with none left the stream stays free."""
        known = self.rec.vocabulary(phrases) if phrases is not None else []
        wanted = known or None
        if wanted != self.grammar:
            self._pending_grammar, self._grammar_changed = wanted, True

    async def feed(self, pcm: bytes) -> list[Partial | Final]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.rec.executor, self._feed, pcm)

    async def finish(self) -> Final | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.rec.executor, self._finish)

    # The methods below run in the pool.
    def _feed(self, pcm: bytes) -> list[Partial | Final]:
        events: list[Partial | Final] = []
        self.vad.push(pcm)  # in step with decoding: the trailing quiet is audio the recogniser has seen
        data = self.resampler.feed(pcm)
        if not data:
            return events
        if self._kaldi is None or (self._grammar_changed and not self._last_partial):
            self._swap_recogniser()
        assert self._kaldi is not None
        self._fed += len(data) // 2
        if self._kaldi.AcceptWaveform(data):
            final = self._final(self._kaldi.Result())
            if final:
                events.append(final)
            return events
        partial = json.loads(self._kaldi.PartialResult()).get("partial", "")
        partial = clean_transcript(partial)
        if partial != self._last_partial:
            if not self._last_partial:
                self._utt_start = self._fed
            self._last_partial, self._partial_changed_at = partial, self._fed
            if partial:
                events.append(Partial(partial))
        elif partial and (self.vad.quiet_s >= self.endpoint_s  # the caller has stopped talking
                          or self._fed - self._partial_changed_at >= self.stable_samples  # a noisy line
                          or self._fed - self._utt_start >= self.max_samples):
            final = self._final(self._kaldi.FinalResult())
            if final:
                events.append(final)
        return events

    def _finish(self) -> Final | None:
        if self._kaldi is None:
            self._swap_recogniser()
        assert self._kaldi is not None
        tail = self.resampler.flush()
        if tail:
            self._fed += len(tail) // 2
            self._kaldi.AcceptWaveform(tail)
        return self._final(self._kaldi.FinalResult())

    def _swap_recogniser(self) -> None:
        self.grammar, self._grammar_changed = self._pending_grammar, False
        self._offset = self._fed
        self._kaldi = self._new_recogniser()

    def _final(self, raw: str) -> Final | None:
        self._last_partial = ""
        self.vad.utterance_done()
        result = json.loads(raw)
        words = [w for w in result.get("result", []) if w.get("word") != "[unk]"]
        text = clean_transcript(result.get("text", ""))
        if self._grammar_changed:
            self._swap_recogniser()
        if not text:
            return None
        conf = sum(float(w.get("conf", 0)) for w in words) / len(words) if words else None
        end = self._offset / self.rec.rate + float(words[-1]["end"]) if words else None
        return Final(text, conf, end)


class ArrivalClock:
    """Maps a position in a call's audio stream to the wall-clock time it arrived."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._marks: deque[tuple[float, float]] = deque(maxlen=4096)  # (stream seconds at end, time)
        self._seconds = 0.0

    def arrived(self, nbytes: int, when: float) -> None:
        self._seconds += nbytes / 2 / self.rate
        self._marks.append((self._seconds, when))

    def time_of(self, stream_s: float) -> float | None:
        for end_s, when in self._marks:
            if end_s >= stream_s:
                return when
        return self._marks[-1][1] if self._marks else None
