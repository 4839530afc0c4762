"""Speech synthesis: pyttsx3 over espeak-ng's Mandarin voice, rendered to telephone PCM.

espeak-ng keeps global state, so one worker process owns the engine and renders one sentence at
a time; a crash there cannot take the gateway down, and the event loop never waits on it.
pyttsx3 2.98's ``runAndWait`` renders only once per engine on Linux, so the worker asks the
espeak driver to write the file and waits with ``espeak_Synchronize``; the driver leaves the last
audio block of each sentence in its buffer, which the worker puts back where it belongs. Rendered prompts are kept
in memory (LRU) and on disk, keyed by voice, rate and text.

The voice is chosen by what it does, not by its name: on Debian 12's espeak-ng 1.51 the voice
``cmn`` is "Chinese (Mandarin, latin as English)" and reads every character after the first as
English pinyin ("yao four"), while ``cmn-latn-pinyin`` speaks Mandarin. :func:`choose_voice` asks
espeak-ng for the phonemes of a probe sentence and takes the first Mandarin voice whose phonemes
never switch language (``(en)`` in ``espeak-ng -x``)."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import os
import subprocess
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from voice.audio import read_wav, resample, trim_silence

logger = logging.getLogger(__name__)

_engine: Any = None
_tmpdir: str = ""


PROBE = "您好，请问您要办什么事？查办件进度请按1，转人工请按星号键。"
MANDARIN_VOICES = ("cmn-latn-pinyin", "cmn", "zh")


def phonemes(voice: str, text: str) -> str:
    """espeak-ng's phoneme transcription of ``text`` in ``voice`` ('' when espeak-ng refuses it)."""
    try:
        out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, text], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout if out.returncode == 0 else ""


def speaks_mandarin(voice: str, text: str = PROBE) -> bool:
    """True when ``voice`` reads ``text`` without switching to another language."""
    ph = phonemes(voice, text)
    return bool(ph.strip()) and "(" not in ph


def choose_voice(configured: str = "") -> str:
    """The espeak-ng voice to speak with: the configured one if it speaks Mandarin, else the first
    of MANDARIN_VOICES that does. Raises RuntimeError when none does (espeak-ng missing?)."""
    tried = [v for v in (configured, *MANDARIN_VOICES) if v]
    for voice in dict.fromkeys(tried):
        if speaks_mandarin(voice):
            if configured and voice != configured:
                logger.warning("espeak-ng voice %r does not speak Mandarin; using %r", configured, voice)
            return voice
    raise RuntimeError(f"no espeak-ng voice speaks Mandarin (tried {', '.join(tried)}); is espeak-ng-data installed?")


def _init_worker(voice: str) -> None:
    global _engine, _tmpdir
    import pyttsx3

    _engine = pyttsx3.init("espeak")
    # pyttsx3 names voices by their display name; the language code is what espeak-ng -v takes.
    match = next((v.id for v in _engine.getProperty("voices") if voice in (v.languages or []) or v.id == voice), voice)
    _engine.setProperty("voice", match)
    _tmpdir = tempfile.mkdtemp(prefix="heze-tts-")


def _render(text: str, rate: int, out_rate: int) -> bytes:
    """Runs in the worker: text -> 16-bit PCM at ``out_rate``."""
    from pyttsx3.drivers import _espeak

    _engine.setProperty("rate", rate)
    driver = _engine.proxy._driver
    path = os.path.join(_tmpdir, "out.wav")
    if os.path.exists(path):
        os.remove(path)
    driver._data_buffer = b""
    driver.save_to_file(text, path)
    _espeak.Synchronize()
    with open(path, "rb") as f:
        pcm, src = read_wav(f.read())
    # The driver writes the file when espeak reports the end, then appends that last callback's
    # samples to its buffer: they belong at the end of this sentence, not the start of the next.
    pcm += driver._data_buffer
    driver._data_buffer = b""
    return resample(trim_silence(pcm, src), src, out_rate)


class TtsError(RuntimeError):
    pass


class Speaker:
    """Renders sentences through the worker, with a memory and disk cache."""

    def __init__(self, voice: str, cache_dir: Path | None, entries: int = 512, out_rate: int = 8000) -> None:
        """``cache_dir`` None: memory only (the web chat's read-aloud, whose texts are anyone's: a disk
        cache of them would grow without bound)."""
        self.voice, self.out_rate, self.entries = voice, out_rate, entries
        self.cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = asyncio.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.voice,))

    def _key(self, text: str, rate: int) -> str:
        return hashlib.sha256(f"{self.voice}|{rate}|{self.out_rate}|{text}".encode()).hexdigest()

    def _in_memory(self, key: str) -> bytes | None:
        pcm = self._memory.get(key)
        if pcm is not None:
            self._memory.move_to_end(key)
        return pcm

    def _remember(self, key: str, pcm: bytes) -> None:
        self._memory[key] = pcm
        self._memory.move_to_end(key)
        while len(self._memory) > self.entries:
            self._memory.popitem(last=False)

    def _read_disk(self, key: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.pcm"
        return path.read_bytes() if path.is_file() else None

    def _write_disk(self, key: str, pcm: bytes) -> None:
        """Written beside and renamed into place; the temporary name is this process's and thread's own,
        so gateways sharing a cache directory (several replicas on one host) never rename each other's
        file (two gateways rendering the same prompt at start-up crashed one of them)."""
        if self.cache_dir is None:
            return
        tmp = self.cache_dir / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(pcm)
        tmp.replace(self.cache_dir / f"{key}.pcm")

    async def render(self, text: str, rate: int) -> bytes:
        """PCM for one sentence (memory, then disk, then the worker); raises TtsError when espeak-ng fails.
        File reads and writes run in a thread: never on the event loop that paces the calls' audio."""
        key = self._key(text, rate)
        hit = self._in_memory(key)
        if hit is not None:
            return hit
        loop = asyncio.get_running_loop()
        async with self._lock:  # one sentence at a time through the single worker
            hit = self._in_memory(key) or await asyncio.to_thread(self._read_disk, key)
            if hit is not None:
                self._remember(key, hit)
                return hit
            try:
                pcm = await loop.run_in_executor(self._pool, _render, text, rate, self.out_rate)
            except BrokenProcessPool as exc:
                self._pool = self._new_pool()
                raise TtsError("the speech worker died; restarted") from exc
            except (OSError, ValueError) as exc:
                raise TtsError(f"speech rendering failed: {exc}") from exc
            if not pcm:
                raise TtsError("speech rendering produced no audio")
            self._remember(key, pcm)
        await asyncio.to_thread(self._write_disk, key, pcm)
        return pcm

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
