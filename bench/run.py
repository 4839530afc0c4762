"""Benchmarks through the real stack: ``make bench`` (results go to bench/RESULTS.md by hand).

1. NLU parse latency (``POST /model/parse``), p50/p99.
2. Turns through the ``rest`` channel, side by side in one run with a baseline (the same Rasa
   server answering a greeting, no custom action): saturated turns/s with 1, 20 and 50
   closed-loop conversations running the real flows; then 50 conversations that each pause 1 s
   between messages, as people do: p95 latency and failed turns. Paced twice: all 50 starting at
   once (they stay in step, a burst of 50 every second or so) and starting spread over the first
   second (each in its own phase).
Each measurement is repeated ``--runs`` times and the median reported.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from services.settings import Settings
from stack.processes import Stack
from tests.sandbox import (add_production_args, drop_broker, drop_database, free_port, make_settings, production_database,
                           production_env, start_stack)

PARSE_TEXTS = ["你好", "俺想查一下办件进度", "二〇二六幺幺〇幺〇〇〇〇〇幺", "交水费", "路灯坏了好几天了",
               "转人工", "再说一遍", "幺三八 零零零零 零零零幺", "谢谢", "查工单"]
# Real flows: each list is one conversation, repeated.
FLOWS = [
    ["查进度", "20261101000001", "5分"],
    ["查工单", "10000001", "4"],
    ["交电费", "2000000001", "先不交"],
    ["你好", "你是机器人吗", "再见"],
]
BASELINE = [["你好"]]
APOLOGY = "系统暂时有点问题"  # channels/rest.py: the reply to a turn whose action failed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def parse_latency(url: str, token: str, n: int) -> dict[str, float]:
    times = []
    async with httpx.AsyncClient(timeout=30) as client:
        for text in itertools.islice(itertools.cycle(PARSE_TEXTS), n):
            t0 = time.perf_counter()
            r = await client.post(f"{url}/model/parse", params={"token": token}, json={"text": text})
            r.raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": statistics.median(times), "p99_ms": pct(times, 0.99)}


async def conversations(url: str, flows: list[list[str]], users: int, seconds: float, pause: float,
                        tag: str, stagger: bool = False) -> dict[str, float]:
    """``users`` conversations in a closed loop for ``seconds``; returns turns/s, p95 and failures."""
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=users + 5)

    async def user(i: int, client: httpx.AsyncClient) -> None:
        nonlocal failed
        flow = flows[i % len(flows)]
        n = 0
        if pause and stagger:  # people do not all press send in the same millisecond
            await asyncio.sleep(pause * i / users)
        while time.perf_counter() < deadline:
            for text in flow:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/webhooks/rest/webhook",
                                          json={"sender": f"{tag}-{i}-{n}", "message": text})
                    if r.status_code != 200 or not r.json() or any(APOLOGY in (m.get("text") or "") for m in r.json()):
                        failed += 1  # no reply, or the apology a turn gets when an action failed
                except httpx.HTTPError:
                    failed += 1
                latencies.append((time.perf_counter() - t0) * 1000)
                if pause:
                    await asyncio.sleep(pause)
            n += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(user(i, client) for i in range(users)))
    elapsed = time.perf_counter() - started
    return {"turns_per_s": len(latencies) / elapsed, "p50_ms": statistics.median(latencies),
            "p95_ms": pct(latencies, 0.95), "failed": failed, "turns": len(latencies)}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def main_async(args: argparse.Namespace, url: str, token: str) -> dict[str, object]:
    results: dict[str, object] = {}
    await parse_latency(url, token, 20)  # warm-up
    if "parse" in args.parts:
        results["parse"] = median_of([await parse_latency(url, token, args.parse_n) for _ in range(args.runs)])
    for users in (1, 20, 50) if "saturated" in args.parts else ():
        for name, flows in (("baseline", BASELINE), ("flows", FLOWS)):
            runs = [await conversations(url, flows, users, args.seconds, 0, f"{name}{users}r{r}")
                    for r in range(args.runs)]
            results[f"saturated_{users}_{name}"] = median_of(runs)
    # Paced: all 50 starting at once (they stay in step: bursts of 50), and starting spread over the
    # first second (each conversation in its own phase, as people are).
    for start, stagger in (("", False), ("staggered_", True)) if "paced" in args.parts else ():
        for name, flows in (("baseline", BASELINE), ("flows", FLOWS)):
            runs = [await conversations(url, flows, 50, args.seconds * 2, 1.0, f"paced-{start}{name}-r{r}", stagger)
                    for r in range(args.runs)]
            results[f"paced_50_{start}{name}"] = median_of(runs)
    return results


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import os
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


@contextmanager
def bench_stack(args: argparse.Namespace, prefix: str) -> Iterator[tuple[Path, Settings, Stack]]:
    """The whole stack on free ports, embedded or (``--production``) on PostgreSQL and Redis; stopped
    and its database dropped on leaving."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    api_port = free_port()
    db_url = production_database(args.pg) if args.production else f"sqlite:///{tmp / 'heze.db'}"
    settings = make_settings(rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
                             public_base_url=f"http://127.0.0.1:{api_port}", heze_db_url=db_url,
                             tracker_db=str(tmp / "tracker.db"),
                             rasa_endpoints="deploy/endpoints.yml" if args.production else "bot/endpoints.yml")
    extra = production_env(db_url, args.redis, args.workers) if args.production else {}
    stack, engine = start_stack(settings, tmp, extra_env=extra)
    try:
        yield tmp, settings, stack
    finally:
        stack.stop()
        engine.dispose()
        if args.production:
            drop_database(args.pg, db_url)
            drop_broker(extra)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--parse-n", type=int, default=300)
    parser.add_argument("--parts", nargs="+", default=["parse", "saturated", "paced"],
                        choices=["parse", "saturated", "paced"])
    parser.add_argument("--out", default="bench/last-run.json")
    add_production_args(parser)
    args = parser.parse_args()
    with bench_stack(args, "heze-bench-") as (_, settings, _stack):
        url_ = f"http://127.0.0.1:{settings.rasa_port}"
        results = asyncio.run(main_async(args, url_, settings.rasa_api_token.get_secret_value()))
    write_results(results, args)


def write_results(results: dict[str, object], args: argparse.Namespace) -> None:
    """Name the machine and the settings, write ``args.out`` and print the same JSON."""
    results["machine"] = machine()
    results["settings"] = vars(args)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
