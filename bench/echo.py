"""Barge-in against the prompt's echo: ``python -m bench.echo`` (results into bench/RESULTS.md by hand).

The greeting is rendered by the gateway's own speaker; the line sends it back as echo through a
short echo path (a 5-tap filter), 40 ms late, 0 to 15 dB down, in line noise (RMS 100). Echo alone
must never start an utterance; callers (the Mandarin fixtures) who start talking over the prompt at
several points must be heard soon. Everything runs through the gateway's real Endpointer with
silero-vad and the EchoReference the speaking pipeline builds, frame by frame."""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import pct, write_results
from tests.voice.speech import transcripts, utterance
from voice.speaking import ECHO_LEVEL_S, ECHO_WINDOW_S
from voice.tts import Speaker, choose_voice
from voice.vad import EchoReference, Endpointer, SileroModel
from voice.wording import sentences

GREETING = "您好，菏泽政务热线。请说要办的事。查进度按1，缴费按2，反映问题按3，查工单按4。转人工按星号键。"
ECHO_PATH = np.array([1.0, 0.5, -0.3, 0.2, -0.1])
RATE = 8000
FRAME = 160  # samples in 20 ms


async def render() -> np.ndarray:
    speaker = Speaker(choose_voice(""), Path(tempfile.mkdtemp(prefix="heze-echo-")))
    try:
        pcm = b"".join([await speaker.render(s, 150) for s in sentences(GREETING)])
    finally:
        speaker.close()
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32)


def first_speech(model: SileroModel, prompt: np.ndarray, line: np.ndarray, ratio: float) -> float | None:
    """When the endpointer starts an utterance on ``line`` while ``prompt`` is being sent (seconds)."""
    ep = Endpointer(model.detector(RATE), RATE, start_ms=160, echo_ratio=ratio)
    frames = len(line) // FRAME
    levels = np.sqrt((prompt[:len(prompt) // FRAME * FRAME].reshape(-1, FRAME) ** 2).mean(axis=1))
    window, level_window = int(ECHO_WINDOW_S * 50), int(ECHO_LEVEL_S * 50)
    pcm = np.clip(line, -32768, 32767).astype("<i2")
    for f in range(frames):
        ref = None
        lo = max(0, f + 1 - window)
        if f < len(levels) and levels[lo:f + 1].max() > 0:
            ref = EchoReference(prompt[lo * FRAME:(f + 1) * FRAME], float(levels[max(0, f + 1 - level_window):f + 1].max()),
                                RATE)
        if ep.push(pcm[f * FRAME:(f + 1) * FRAME].tobytes(), ref).started:
            return (f + 1) * 0.02
    return None


def line_with(prompt: np.ndarray, erl_db: float, caller: np.ndarray | None, at_s: float, rng: np.random.Generator) -> np.ndarray:
    echo = np.zeros_like(prompt)
    delay = int(0.04 * RATE)
    echo[delay:] = np.convolve(prompt, ECHO_PATH)[:len(prompt) - delay] * 10 ** (-erl_db / 20)
    line = echo + rng.normal(0, 100, len(prompt))
    if caller is not None:
        start = int(at_s * RATE)
        n = min(len(caller), len(line) - start)
        line[start:start + n] += caller[:n]
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--callers", type=int, default=40)
    parser.add_argument("--out", default="bench/echo-last-run.json")
    args = parser.parse_args()
    prompt = asyncio.run(render())
    model = SileroModel()
    rng = np.random.default_rng(0)
    seconds = len(prompt) / RATE
    false_starts = {erl: first_speech(model, prompt, line_with(prompt, erl, None, 0, rng), args.ratio)
                    for erl in (0, 3, 6, 10, 12, 15, 20)}
    delays: list[float] = []
    missed = 0
    rows = transcripts()[::3][:args.callers]
    for k, row in enumerate(rows):
        caller = np.frombuffer(utterance(row["id"]), dtype="<i2").astype(np.float32)
        at = 0.5 + (k % 6) * (seconds - 3) / 6
        t = first_speech(model, prompt, line_with(prompt, 12, caller, at, rng), args.ratio)
        if t is None or t < at:
            missed += 1
        else:
            delays.append((t - at) * 1000)
    results: dict[str, Any] = {
        "prompt_s": round(seconds, 2), "echo_ratio": args.ratio,
        "echo_only_barge_in_at_erl_db": {str(k): v for k, v in false_starts.items()},
        "callers": len(rows), "callers_missed_or_early": missed,
        "barge_in_p50_ms": round(statistics.median(delays), 1), "barge_in_p95_ms": round(pct(delays, 0.95), 1),
        "barge_in_max_ms": round(max(delays), 1)}
    print(results)
    write_results(results, args)


if __name__ == "__main__":
    main()
