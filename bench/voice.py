"""Voice gateway benchmark: ``python -m bench.voice`` (``make bench-voice``; results into bench/RESULTS.md by hand).

1. ASR: real-time factor of one Vosk stream, and how many simultaneous calls the decoding pool keeps
   faster than real time (streams fed at telephone pace; a stream keeps up when its backlog at the
   end is under one chunk).
2. TTS: render time per sentence through the espeak-ng worker, and a cache hit.
3. Whole stack (Rasa, action server, voice gateway; AudioSocket telephone stand-ins with espeak-ng
   speech): connect -> first greeting audio; speech onset -> prompt stops (barge-in); end of speech
   -> first audio of the answer; key -> first audio.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.run import pct, write_results
from tests.conftest import make_settings
from tests.sandbox import free_port, start_stack, voice_settings
from tests.voice.phone_client import PhoneClient
from tests.voice.speech import spoken
from voice.asr import Recogniser
from voice.audio import trim_silence
from voice.settings import VoiceSettings
from voice.tts import Speaker

UTTERANCES = ["我要查办件进度", "我想交水费", "反映一个问题", "办身份证要带什么", "转人工"]
SENTENCES = ["您好，这里是菏泽市民政务助手。", "请说受理编号，是回执上的14位数字。", "工单幺零零零，零零零幺：正在处理。",
             "好的，正在为您转人工。", "请给这次服务打个分。"]


def speech_clip(text: str) -> bytes:
    return trim_silence(spoken(text), 8000, 0, 0)


def call_audio(seconds: float) -> bytes:
    """``seconds`` of 8 kHz telephone audio: the utterances with half a second of quiet after each."""
    audio = b"".join(speech_clip(t) + bytes(8000) for t in UTTERANCES)
    return (audio * int(seconds * 16000 / len(audio) + 1))[:int(seconds * 16000)]


def asr_single(rec: Recogniser, seconds: float = 20) -> float:
    """Real-time factor of one stream decoding as fast as it can."""
    audio = call_audio(seconds)

    async def run() -> float:
        stream = rec.stream(8000)
        t0 = time.perf_counter()
        for i in range(0, len(audio), 1600):
            await stream.feed(audio[i:i + 1600])
        await stream.finish()
        return (time.perf_counter() - t0) / seconds

    return asyncio.run(run())


def asr_paced(rec: Recogniser, calls: int, seconds: float = 20) -> dict[str, float]:
    """``calls`` streams fed at telephone pace (100 ms every 100 ms); the worst backlog at the end."""
    audio = call_audio(seconds)

    async def one(offset: float) -> float:
        stream = rec.stream(8000)
        await asyncio.sleep(offset)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, i in enumerate(range(0, len(audio), 1600)):
            # A stream is decoded one chunk at a time (a Vosk recogniser is not thread-safe), as in a call.
            await asyncio.sleep(max(0.0, start + n * 0.1 - loop.time()))
            await stream.feed(audio[i:i + 1600])
        return loop.time() - (start + seconds)  # how far behind the end of the audio it finished

    async def run() -> list[float]:
        return await asyncio.gather(*(one(i * 0.1 / calls) for i in range(calls)))

    lags = asyncio.run(run())
    return {"calls": calls, "worst_lag_s": round(max(lags), 3), "median_lag_s": round(statistics.median(lags), 3)}


def tts(settings: VoiceSettings, tmp: Path) -> dict[str, float]:
    async def run() -> dict[str, float]:
        speaker = Speaker(settings.voice_tts_voice, tmp / "tts-bench")
        await speaker.render("预热。", settings.voice_tts_rate)
        renders, hits, audio = [], [], []
        for _ in range(3):
            for s in SENTENCES:
                speaker._memory.clear()
                for f in speaker.cache_dir.glob("*.pcm"):
                    f.unlink()
                t0 = time.perf_counter()
                pcm = await speaker.render(s, settings.voice_tts_rate)
                renders.append((time.perf_counter() - t0) * 1000)
                audio.append(len(pcm) / 16000)
                t0 = time.perf_counter()
                await speaker.render(s, settings.voice_tts_rate)
                hits.append((time.perf_counter() - t0) * 1000)
        speaker.close()
        return {"render_p50_ms": round(statistics.median(renders), 1), "render_p95_ms": round(pct(renders, 0.95), 1),
                "audio_s_per_sentence": round(statistics.median(audio), 2),
                "cache_hit_p50_ms": round(statistics.median(hits), 4)}

    return asyncio.run(run())


async def one_call(host: str, port: int, text: str) -> dict[str, float]:
    phone = PhoneClient(host, port)
    t0 = time.monotonic()
    await phone.connect()
    first = await phone.wait_audio_after(t0)
    await asyncio.sleep(0.5)
    speech = speech_clip(text)
    onset = time.monotonic()
    phone.speak(speech)
    end = onset + len(speech) / 16000
    reply = await phone.wait_audio_after(end + 0.02, timeout=20)
    prompt = [t for t, _ in phone.got.frames if onset <= t <= end]
    stopped = next((a for a, b in zip(prompt, prompt[1:]) if b - a > 0.1), prompt[-1] if prompt else onset)
    await phone.wait_quiet(0.3, timeout=60)
    pressed = time.monotonic()
    phone.press("0")  # the hand-off: key -> first audio, then the gateway ends the call
    key = await phone.wait_audio_after(pressed, timeout=20)
    await asyncio.wait_for(phone.closed.wait(), 60)
    await phone.close()
    return {"greeting_ms": (first - t0) * 1000, "barge_in_ms": (stopped - onset) * 1000,
            "speech_to_audio_ms": (reply - end) * 1000, "key_to_audio_ms": (key - pressed) * 1000}


async def calls(host: str, port: int, n: int, concurrent: int) -> list[dict[str, float]]:
    sem = asyncio.Semaphore(concurrent)

    async def limited(i: int) -> dict[str, float]:
        async with sem:
            return await one_call(host, port, UTTERANCES[i % len(UTTERANCES)])

    return await asyncio.gather(*(limited(i) for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--concurrent", type=int, default=3)
    parser.add_argument("--max-streams", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/voice-last-run.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heze-bench-voice-"))
    vs = voice_settings(tmp)
    results: dict[str, object] = {"model": str(vs.model_dir())}
    rec = Recogniser(vs.model_dir(), vs.voice_asr_workers)
    results["asr_rtf_single_stream"] = round(statistics.median(asr_single(rec) for _ in range(args.runs)), 3)
    paced = []
    for n in range(2, args.max_streams + 1):
        row = asr_paced(rec, n)  # one 20 s run per count: the lag either stays near zero or grows
        paced.append(row)
        print(row, flush=True)
        if row["worst_lag_s"] > 0.1:
            break
    rec.close()
    results["asr_paced"] = paced
    results["asr_max_calls_real_time"] = max((r["calls"] for r in paced if r["worst_lag_s"] <= 0.1), default=0)
    results["tts"] = tts(vs, tmp)
    api_port = free_port()
    settings = make_settings(rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
                             public_base_url=f"http://127.0.0.1:{api_port}", heze_db_url=f"sqlite:///{tmp / 'heze.db'}",
                             tracker_db=str(tmp / "tracker.db"))
    stack, engine = start_stack(settings, tmp, vs)
    try:
        asyncio.run(calls(vs.voice_audiosocket_host, vs.voice_audiosocket_port, 2, 2))  # warm-up
        per_run = []
        for _ in range(args.runs):
            rows = asyncio.run(calls(vs.voice_audiosocket_host, vs.voice_audiosocket_port, args.calls, args.concurrent))
            per_run.append({f"{k}_{q}": round(pct([r[k] for r in rows], p), 1)
                            for k in rows[0] for q, p in (("p50", 0.5), ("p95", 0.95))})
        results["stack"] = {k: statistics.median(r[k] for r in per_run) for k in per_run[0]}
        results["stack_runs"] = per_run
    finally:
        stack.stop()
        engine.dispose()
    write_results(results, args)


if __name__ == "__main__":
    main()
