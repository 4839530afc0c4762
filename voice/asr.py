"""Speech recognition behind one interface: Vosk (streaming, the default) and faster-whisper
(CTranslate2, on whole utterances).

A recogniser owns the process's model and a bounded thread pool for live calls; POST /asr gets a
pool of its own (one thread, niced), so a long upload cannot delay a caller. A call asks for one
:class:`AsrStream` and feeds it only the speech the endpointer (voice/vad.py) cut out, then calls
``finish()`` for the transcript of that utterance.

- Vosk (Kaldi, C++ behind cffi, which releases the GIL) decodes while the caller speaks, so
  ``finish()`` only flushes; phrase lists (grammars) limit it to digits or yes/no. Each stream
  resamples telephone audio to the model's own rate (``conf/mfcc.conf``; Kaldi's default is 16 kHz).
- faster-whisper decodes the utterance at ``finish()``. Its output is sometimes in Traditional
  characters (converted with OpenCC) and it collapses long runs of one digit, so keyed digits stay
  the reliable way to give numbers. Beam search (``VOICE_WHISPER_BEAM``, 5) at temperature 0, with no
  fallback to sampling, keeps the time bounded.

Transcripts are joined the Chinese way and spoken numerals become digits (textnorm)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from textnorm.numerals import normalize_numbers
from voice.audio import StreamResampler, resample
from voice.tuning import WHISPER_BEAM

logger = logging.getLogger(__name__)

KALDI_DEFAULT_RATE = 16000
WHISPER_RATE = 16000
# Domain words in Simplified characters: Whisper follows the prompt's script and vocabulary.
WHISPER_PROMPT = "菏泽市民政务热线。办件进度，缴费，转人工，身份证，社保，医保，工单，投诉。"

# The prompt's phrases in order. On audio it cannot make out, Whisper may write the prompt back
# ("慢点说，俺耳朵背" came out as "办件进度，转人工", a hand-over nobody asked for): without_prompt_echo.
_PROMPT_ORDER = {p: i for i, p in enumerate(p for p in re.split(r"[。，]", WHISPER_PROMPT) if p)}
_CLAUSE = re.compile(r"[^，。,.!?！？、\s]+")

# Phrase lists for answers that can only be a few words (Vosk grammar mode).
# "要" / "要的": the answer to a "要不要……" question (the progress-notice offer); without them the
# grammar would hear a "要" as its nearest phrase, "不要".
YES_NO_PHRASES = ("是", "是的", "对", "对的", "好", "好的", "要", "要的", "可以", "行", "确认", "没错", "不", "不是", "不对",
                  "不要", "不用", "取消", "人工", "转人工", "重复", "再说一遍")
DIGIT_PHRASES = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "幺", "两", "洞", "拐",
                 "没有", "匿名", "人工", "转人工", "取消", "重复", "再说一遍")


@dataclass(frozen=True)
class Final:
    text: str
    confidence: float | None


class AsrStream(Protocol):
    """One call's recogniser: fed one utterance at a time, never shared."""

    def limit_to(self, phrases: Iterable[str] | None) -> None: ...
    async def feed(self, pcm: bytes) -> None: ...
    async def finish(self) -> Final | None: ...


class Recogniser(Protocol):
    name: str
    model_dir: Path
    rate: int  # the model's own sample rate

    def stream(self, input_rate: int) -> AsrStream: ...
    async def transcribe(self, pcm: bytes, rate: int) -> Final: ...
    def close(self) -> None: ...


_LONE_ZERO = re.compile(r"(?<![0-9０-９])０(?![0-9０-９])")
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_REPEATS = re.compile(r"([^\d])\1{4,}")  # five or more of one character: a decoding loop, not speech (digits repeat)
_CJK_SPACE = re.compile(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff0-9])|(?<=[0-9])\s+(?=[\u3400-\u9fff0-9])")


def without_prompt_echo(text: str) -> str:
    """The transcript without the prompt written back. A clause said twice in a row is kept once
    ("转人工，转人工"; Whisper base also loops: "身份证丢门，医保，医保，医保"). Two or more prompt
    phrases running in the prompt's own order ("办件进度，转人工", "身份证，医保") are the prompt, not the
    caller, and go; phrases in another order ("投诉，转人工") or a single one ("转人工") stay."""
    clauses = _CLAUSE.findall(text)
    once = [c for i, c in enumerate(clauses) if i == 0 or c != clauses[i - 1]]
    echo: set[int] = set()
    for i in range(len(once) - 1):
        a, b = _PROMPT_ORDER.get(once[i]), _PROMPT_ORDER.get(once[i + 1])
        if a is not None and b is not None and a < b:
            echo |= {i, i + 1}
    if not echo and len(once) == len(clauses):
        return text
    return "，".join(c for i, c in enumerate(once) if i not in echo)


def clean_transcript(text: str) -> str:
    """Words joined the Chinese way ('我 要 查 进度' -> '我要查进度'), numbers as digits."""
    text = text.replace("[unk]", " ").strip()
    text = _CJK_SPACE.sub("", " ".join(text.split()))
    return normalize_numbers(text)


def model_sample_rate(model_dir: Path) -> int:
    """The sample rate a Vosk model was trained on: ``--sample-frequency`` in its mfcc.conf."""
    conf = model_dir / "conf" / "mfcc.conf"
    if conf.is_file():
        m = re.search(r"--sample-frequency=(\d+)", conf.read_text())
        if m:
            return int(m.group(1))
    return KALDI_DEFAULT_RATE


def _nice_thread() -> None:
    """Runs in each POST /asr thread: Linux nice values are per thread, so live calls come first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
    except (OSError, AttributeError):
        pass


class _Pools:
    def __init__(self, workers: int) -> None:
        self.live = ThreadPoolExecutor(workers, thread_name_prefix="asr")
        self.upload = ThreadPoolExecutor(1, thread_name_prefix="asr-upload", initializer=_nice_thread)

    def close(self) -> None:
        self.live.shutdown(wait=False, cancel_futures=True)
        self.upload.shutdown(wait=False, cancel_futures=True)


# ---- Vosk ------------------------------------------------------------------------------------

class VoskRecogniser:
    """The process's Vosk model."""

    name = "vosk"

    def __init__(self, model_dir: Path, workers: int = 2) -> None:
        import vosk

        if not (model_dir / "am").is_dir() and not (model_dir / "final.mdl").exists():
            raise FileNotFoundError(f"no Vosk model in {model_dir} (make models)")
        vosk.SetLogLevel(-1)
        self._vosk = vosk
        self.model_dir = model_dir
        self.model = vosk.Model(str(model_dir))
        self.rate = model_sample_rate(model_dir)
        self.pools = _Pools(workers)

    def vocabulary(self, phrases: Iterable[str]) -> list[str]:
        """The phrases whose every word the model knows (a grammar with unknown words is refused)."""
        return [p for p in phrases if all(self.model.vosk_model_find_word(w) >= 0 for w in p.split())]

    def stream(self, input_rate: int) -> "VoskStream":
        return VoskStream(self, input_rate, self.pools.live)

    async def transcribe(self, pcm: bytes, rate: int) -> Final:
        stream = VoskStream(self, rate, self.pools.upload)
        step = rate * 2  # one second per hop into the pool
        for i in range(0, len(pcm), step):
            await stream.feed(pcm[i:i + step])
        return await stream.finish() or Final("", None)

    def recogniser(self, grammar: list[str] | None) -> Any:
        if grammar:
            kaldi = self._vosk.KaldiRecognizer(self.model, self.rate, json.dumps([*grammar, "[unk]"]))
        else:
            kaldi = self._vosk.KaldiRecognizer(self.model, self.rate)
        kaldi.SetWords(True)
        return kaldi

    def close(self) -> None:
        self.pools.close()


class VoskStream:
    def __init__(self, rec: VoskRecogniser, input_rate: int, pool: ThreadPoolExecutor) -> None:
        self.rec, self.pool = rec, pool
        self.input_rate = input_rate
        self.resampler = StreamResampler(input_rate, rec.rate)
        self.grammar: list[str] | None = None
        self._wanted: list[str] | None = None
        # Made in the pool on first use: a recogniser takes ~55 ms to build, too long for the event loop.
        self._kaldi: Any = None
        self._in_utterance = False  # a new phrase list applies from the next utterance, never inside one

    def limit_to(self, phrases: Iterable[str] | None) -> None:
        """Listen only for these phrases from the next utterance on (None: free speech).
        Phrases the model does not know are dropped; with none left the stream stays free."""
        self._wanted = (self.rec.vocabulary(phrases) if phrases is not None else []) or None

    async def feed(self, pcm: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self._feed, pcm)

    async def finish(self) -> Final | None:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._finish)

    def _ready(self) -> Any:
        if self._kaldi is None or (self._wanted != self.grammar and not self._in_utterance):
            self.grammar = self._wanted
            self._kaldi = self.rec.recogniser(self.grammar)
        return self._kaldi

    def _feed(self, pcm: bytes) -> None:
        data = self.resampler.feed(pcm)
        if data:
            kaldi = self._ready()
            self._in_utterance = True
            kaldi.AcceptWaveform(data)

    def _finish(self) -> Final | None:
        kaldi = self._ready()
        self._in_utterance = False
        tail = self.resampler.flush()
        if tail:
            kaldi.AcceptWaveform(tail)
        self.resampler = StreamResampler(self.input_rate, self.rec.rate)
        result = json.loads(kaldi.FinalResult())
        words = [w for w in result.get("result", []) if w.get("word") != "[unk]"]
        text = clean_transcript(result.get("text", ""))
        if not text:
            return None
        conf = sum(float(w.get("conf", 0)) for w in words) / len(words) if words else None
        return Final(text, conf)


# ---- faster-whisper ----------------------------------------------------------------------------

class WhisperRecogniser:
    """A faster-whisper (CTranslate2) model, int8 on the CPU."""

    name = "whisper"
    rate = WHISPER_RATE

    def __init__(self, model_dir: Path, workers: int = 2, threads: int = 2, beam: int = WHISPER_BEAM) -> None:
        from faster_whisper import WhisperModel
        from opencc import OpenCC

        if not (model_dir / "model.bin").is_file():
            raise FileNotFoundError(f"no faster-whisper model in {model_dir} (make models)")
        self.model_dir, self.beam = model_dir, beam
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                  num_workers=workers + 1, local_files_only=True)
        self.to_simplified = OpenCC("t2s")
        self.pools = _Pools(workers)

    def stream(self, input_rate: int) -> "WhisperStream":
        return WhisperStream(self, input_rate, self.pools.live)

    async def transcribe(self, pcm: bytes, rate: int) -> Final:
        pcm16 = await asyncio.get_running_loop().run_in_executor(self.pools.upload, resample, pcm, rate, WHISPER_RATE)
        return await asyncio.get_running_loop().run_in_executor(self.pools.upload, self.decode, pcm16) or Final("", None)

    def decode(self, pcm16: bytes) -> Final | None:
        """16 kHz PCM -> transcript (runs in a pool)."""
        audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        if len(audio) < WHISPER_RATE // 5:
            return None
        # A caller says at most about 6 characters a second; more tokens than that is Whisper
        # repeating itself ("务务务务..."), which the cap cuts short.
        cap = int(len(audio) / WHISPER_RATE * 8) + 8
        segments, _ = self.model.transcribe(
            audio, language="zh", beam_size=self.beam, temperature=0.0, condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, initial_prompt=WHISPER_PROMPT, max_new_tokens=cap)
        kept = [s for s in segments if s.no_speech_prob < 0.6]
        raw = self.to_simplified.convert("".join(s.text for s in kept))
        # Whisper base sometimes writes a sentence end as a lone full-width zero ("好了没０").
        raw = _LONE_ZERO.sub("。", raw).translate(_FULL_WIDTH_DIGITS).replace("\ufffd", "")  # and broken bytes
        text = clean_transcript(raw)
        text = _REPEATS.sub(r"\1", text)
        text = without_prompt_echo(text).strip(" ，。,.!?！？")
        if not text:
            return None
        conf = float(np.exp(np.mean([s.avg_logprob for s in kept])))
        return Final(text, round(conf, 3))

    def close(self) -> None:
        self.pools.close()


class WhisperStream:
    """Keeps the utterance's audio; decodes it at ``finish()``."""

    def __init__(self, rec: WhisperRecogniser, input_rate: int, pool: ThreadPoolExecutor) -> None:
        self.rec, self.pool, self.input_rate = rec, pool, input_rate
        self._audio = bytearray()

    def limit_to(self, phrases: Iterable[str] | None) -> None:
        """Whisper has no grammar; the prompt and the NLU do that job."""

    async def feed(self, pcm: bytes) -> None:
        self._audio += pcm

    async def finish(self) -> Final | None:
        pcm, self._audio = bytes(self._audio), bytearray()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._decode, pcm)

    def _decode(self, pcm: bytes) -> Final | None:
        return self.rec.decode(resample(pcm, self.input_rate, WHISPER_RATE))


def open_recogniser(engine: str, model_dir: Path, workers: int, beam: int = WHISPER_BEAM) -> Recogniser:
    """The recogniser the settings name (VOICE_ASR_ENGINE; VOICE_WHISPER_BEAM for Whisper)."""
    if engine == "whisper":
        return WhisperRecogniser(model_dir, workers, beam=beam)
    return VoskRecogniser(model_dir, workers)
