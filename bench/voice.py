"""Voice gateway benchmark: ``python -m bench.voice`` (``make bench-voice``; results into bench/RESULTS.md by hand).

1. Recognition, per recogniser (Vosk, faster-whisper): every Mandarin fixture utterance
   (tests/fixtures/speech, 134 of them) through the gateway's own path, 20 ms telephone frames ->
   silero-vad endpointer -> recogniser stream -> numeral normalisation -> Rasa ``/model/parse``:
   character error rate, intent accuracy by voice, and decoding time per utterance.
2. TTS: render time per sentence through the espeak-ng worker, and a cache hit.
3. Whole stack (Rasa, action server, voice gateway; AudioSocket telephone stand-ins that send no
   frames while quiet, as Asterisk's Local channels do): at one call, end of speech -> first audio
   of the answer, barge-in delay, greeting; then N simultaneous calls whose callers speak about
   20 % of the time, end of speech -> first answer audio p50/p95 per N, per recogniser.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.run import pct, write_results
from tests.sandbox import free_port, make_settings, start_stack, voice_settings
from tests.voice.phone_client import PhoneClient
from tests.voice.speech import transcripts, utterance
from voice.asr import Final, open_recogniser
from voice.clock import LoopClock
from voice.listening import Heard, Listener
from voice.settings import VoiceSettings
from voice.tts import Speaker, choose_voice
from voice.vad import ENDPOINT_S, Endpointer, SileroModel

SENTENCES = ["您好，菏泽政务热线。", "请说受理编号，是回执上的14位数字。", "工单幺零零零，零零零幺：正在处理。",
             "好的，正在为您转人工。", "请给这次服务打个分。"]
SPEECH_LOAD = 0.2  # share of the time each caller speaks in the capacity runs


def cer(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance, reference length) over characters, punctuation and spaces ignored."""
    keep = lambda s: [c for c in s if c.isalnum()]  # noqa: E731
    r, h = keep(ref), keep(hyp)
    prev = list(range(len(h) + 1))
    for i, rc in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hc in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc))
        prev = cur
    return prev[-1], len(r)


async def hear(listener_parts: tuple[Endpointer, Any], pcm: bytes) -> tuple[Final | None, float]:
    """One utterance through the endpointer and the recogniser, as a call's Listener runs them."""
    endpointer, stream = listener_parts
    heard: list[Heard] = []
    listener = Listener(endpointer, stream, LoopClock(), ENDPOINT_S, lambda e: heard.append(e) if isinstance(e, Heard) else None)
    task = asyncio.create_task(listener.run())
    for i in range(0, len(pcm), 320):
        listener.audio(pcm[i:i + 320])
    for _ in range(50):  # the caller goes quiet: 1 s of silence frames
        listener.audio(bytes(320))
    t0 = time.perf_counter()
    while not heard and time.perf_counter() - t0 < 60:
        await asyncio.sleep(0.005)
    task.cancel()
    return (heard[0].final if heard else None), time.perf_counter() - t0


def recognition(engine: str, vs: VoiceSettings, rasa_url: str, token: str) -> dict[str, Any]:
    rec = open_recogniser(engine, vs.model_dir(), vs.voice_asr_workers, vs.voice_whisper_beam)
    vad = SileroModel()
    rows = transcripts()

    async def run() -> dict[str, Any]:
        errors = chars = right = 0
        times: list[float] = []
        misses: list[str] = []
        async with httpx.AsyncClient(timeout=30) as http:
            for row in rows:
                final, dt = await hear((Endpointer(vad.detector(8000), 8000), rec.stream(8000)), utterance(row["id"]))
                text = final.text if final else ""
                times.append(dt * 1000)
                e, n = cer(row["text"], text)
                errors, chars = errors + e, chars + n
                parsed = (await http.post(f"{rasa_url}/model/parse", params={"token": token},
                                          json={"text": text or "嗯"})).json()
                intent = parsed["intent"]["name"]
                if intent == row["intent"]:
                    right += 1
                elif len(misses) < 15:
                    misses.append(f"{row['id']}: {row['text']} -> {text} ({intent})")
        return {"utterances": len(rows), "cer": round(errors / chars, 3), "intent_accuracy": round(right / len(rows), 3),
                "decode_after_end_p50_ms": round(statistics.median(times), 1),
                "decode_after_end_p95_ms": round(pct(times, 0.95), 1), "some_misses": misses}

    try:
        return asyncio.run(run())
    finally:
        rec.close()


def tts(voice: str, rate: int, tmp: Path) -> dict[str, float]:
    async def run() -> dict[str, float]:
        speaker = Speaker(voice, tmp / "tts-bench")
        await speaker.render("预热。", rate)
        renders, hits = [], []
        for _ in range(3):
            for s in SENTENCES:
                speaker._memory.clear()
                for f in speaker.cache_dir.glob("*.pcm"):
                    f.unlink()
                t0 = time.perf_counter()
                await speaker.render(s, rate)
                renders.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await speaker.render(s, rate)
                hits.append((time.perf_counter() - t0) * 1000)
        speaker.close()
        return {"render_p50_ms": round(statistics.median(renders), 1), "render_p95_ms": round(pct(renders, 0.95), 1),
                "cache_hit_p50_ms": round(statistics.median(hits), 4)}

    return asyncio.run(run())


SPOKEN = ["human_003", "progress_009", "bill_001", "guide_001", "feedback_001", "ticket_001", "greet_001"]


async def caller(host: str, port: int, seconds: float, rng: random.Random, first_only: bool = False) -> dict[str, list[float]]:
    """A caller on a silent line: listens to the greeting, then speaks (about SPEECH_LOAD of the
    time), each time waiting for the answer to start; hangs up after ``seconds``."""
    phone = PhoneClient(host, port, silent_line=True)
    out: dict[str, list[float]] = {"greeting_ms": [], "speech_to_audio_ms": [], "barge_in_ms": [], "frame_gap_ms": []}
    t0 = time.monotonic()
    await phone.connect()
    first = await phone.wait_audio_after(t0, timeout=30)
    out["greeting_ms"].append((first - t0) * 1000)
    await asyncio.sleep(1.0 + rng.random())
    end_at = t0 + seconds
    while time.monotonic() < end_at and not phone.closed.is_set():
        pcm = utterance(rng.choice(SPOKEN))
        onset = time.monotonic()
        phone.speak(pcm)
        end = onset + len(pcm) / 16000
        try:
            reply = await phone.wait_audio_after(end + 0.02, timeout=20)
        except TimeoutError:
            break
        out["speech_to_audio_ms"].append((reply - end) * 1000)
        prompt = [t for t, _ in phone.got.frames if onset <= t <= end]
        if prompt:  # the caller spoke over a prompt: when did it stop?
            gaps = [a for a, b in zip(prompt, prompt[1:]) if b - a > 0.1]
            out["barge_in_ms"].append(((gaps[0] if gaps else prompt[-1]) - onset) * 1000)
        if first_only:
            break
        # Listen a while (the answer plays or is interrupted by the next utterance), so that the
        # caller speaks about SPEECH_LOAD of the time.
        await asyncio.sleep(max(0.5, len(pcm) / 16000 * (1 / SPEECH_LOAD - 1) - 2 + rng.random() * 2))
    times = phone.got.times
    out["frame_gap_ms"].append(max((b - a for a, b in zip(times, times[1:])), default=0) * 1000)
    await phone.drop()
    return out


async def capacity(host: str, port: int, n: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(n)
    rows = await asyncio.gather(*(caller(host, port, seconds, random.Random(rng.random())) for _ in range(n)))
    lat = [x for r in rows for x in r["speech_to_audio_ms"]]
    gaps = [x for r in rows for x in r["frame_gap_ms"]]
    return {"calls": n, "answers": len(lat), "speech_to_audio_p50_ms": round(pct(lat, 0.5), 1) if lat else None,
            "speech_to_audio_p95_ms": round(pct(lat, 0.95), 1) if lat else None,
            "worst_frame_gap_ms": round(max(gaps), 1) if gaps else None}


def stack_runs(engine: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    vs = voice_settings(tmp / engine, voice_asr_engine=engine, voice_max_calls=64, voice_endpoint_s=args.endpoint)
    api_port = free_port()
    settings = make_settings(rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
                             public_base_url=f"http://127.0.0.1:{api_port}",
                             heze_db_url=f"sqlite:///{tmp / engine / 'heze.db'}", tracker_db=str(tmp / engine / "tracker.db"))
    (tmp / engine).mkdir(exist_ok=True)
    stack, engine_db = start_stack(settings, tmp / engine, vs)
    host, port = vs.voice_audiosocket_host, vs.voice_audiosocket_port
    out: dict[str, Any] = {}
    try:
        rasa = f"http://{settings.rasa_host}:{settings.rasa_port}"
        if not args.skip_recognition:
            out["recognition"] = recognition(engine, vs, rasa, settings.rasa_api_token.get_secret_value())
            print(engine, out["recognition"], flush=True)
        single: dict[str, list[float]] = {"greeting_ms": [], "speech_to_audio_ms": [], "barge_in_ms": [],
                                          "frame_gap_ms": []}
        for i in range(args.single):
            one = asyncio.run(caller(host, port, 30, random.Random(i), first_only=True))
            for k, v in one.items():
                single[k].extend(v)
        out["one_call"] = {f"{k}_{q}": round(pct(v, p), 1) for k, v in single.items() if v
                           for q, p in (("p50", 0.5), ("p95", 0.95))}
        print(engine, out["one_call"], flush=True)
        rows: list[dict[str, Any]] = []
        for n in args.calls:
            runs = [asyncio.run(capacity(host, port, n, args.seconds)) for _ in range(args.runs)]
            row: dict[str, Any] = {"calls": n, "answers": sum(r["answers"] for r in runs),
                   "speech_to_audio_p50_ms": statistics.median(r["speech_to_audio_p50_ms"] or 1e9 for r in runs),
                   "speech_to_audio_p95_ms": statistics.median(r["speech_to_audio_p95_ms"] or 1e9 for r in runs),
                   "worst_frame_gap_ms": statistics.median(r["worst_frame_gap_ms"] or 0 for r in runs)}
            rows.append(row)
            print(engine, row, flush=True)
            if row["speech_to_audio_p95_ms"] > 3000:
                break
        out["capacity"] = rows
        out["max_calls_p95_within_1500ms"] = max((r["calls"] for r in rows if r["speech_to_audio_p95_ms"] <= 1500),
                                                 default=0)
    finally:
        stack.stop()
        engine_db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", nargs="+", default=["vosk", "whisper"])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 4, 8, 12, 16, 20, 24])
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--single", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--endpoint", type=float, default=ENDPOINT_S, help="VOICE_ENDPOINT_S for the stack")
    parser.add_argument("--skip-recognition", action="store_true")
    parser.add_argument("--out", default="bench/voice-last-run.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heze-bench-voice-"))
    vs = voice_settings(tmp)
    voice = choose_voice(vs.voice_tts_voice)
    results: dict[str, Any] = {"voice": voice, "endpoint_s": args.endpoint, "tts": tts(voice, vs.voice_tts_rate, tmp)}
    for engine in args.engines:
        results[engine] = stack_runs(engine, tmp, args)
    write_results(results, args)


if __name__ == "__main__":
    main()
