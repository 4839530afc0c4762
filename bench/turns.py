"""Turn cost (issue 13): the project's Rasa against stock Rasa 3.6.21, and cost by conversation length.

One stack (services API, action server, the project's Rasa); beside it a second Rasa process from
the same model and the same action server whose endpoints name stock ``type: SQL`` (so nothing of
``rasa_runtime`` is installed there). In the same run, alternating, median of ``--runs``:

1. ``ratio``: closed-loop flow turns/s through each Rasa at 1 and 10 concurrent conversations, and
   the greeting baseline (a new conversation saying 你好, no custom action) at 10.
2. ``flat``: one conversation at a time, ``--turns`` turns of real flows; the median latency of
   turns 3-7 against the same five messages about 60 turns later (turns 63-67: the flows repeat
   every 12 messages), over ``--conversations`` conversations.

``python -m bench.turns`` (``make bench`` runs it); ``--production`` uses PostgreSQL, Redis and
``--workers`` Rasa workers for both. Writes ``--out`` and prints the same JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.run import APOLOGY, BASELINE, FLOWS, bench_stack, conversations, median_of, write_results
from stack.processes import ProcessSpec, Stack
from tests.sandbox import add_production_args, free_port

# One long conversation: the real flows one after another, as a citizen who keeps asking would.
LONG = [text for flow in FLOWS for text in flow]


def stock_endpoints(project: Path, out: Path, tracker_db: str | None) -> Path:
    """The project's endpoints file with the stock SQL tracker store (and its own SQLite file)."""
    text = project.read_text().replace("type: rasa_runtime.tracker_store.HezeTrackerStore", "type: SQL")
    if tracker_db:
        text = text.replace("db: ${TRACKER_DB}", f"db: {tracker_db}")
    out.write_text(text)
    return out


def stock_rasa(project: ProcessSpec, endpoints: Path, port: int) -> ProcessSpec:
    argv = list(project.argv)
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--endpoints") + 1] = str(endpoints)
    return ProcessSpec("rasa-stock", argv, f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}", dict(project.env))


async def long_conversation(url: str, sender: str, turns: int) -> list[float]:
    """Latency of each turn of one conversation of ``turns`` messages (ms)."""
    latencies = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(turns):
            t0 = time.perf_counter()
            r = await client.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": LONG[i % len(LONG)]})
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200 or not r.json() or any(APOLOGY in (m.get("text") or "") for m in r.json()):
                raise RuntimeError(f"turn {i} of {sender} failed: {r.status_code} {r.text[:200]}")
    return latencies


async def flat(url: str, tag: str, conversations_n: int, turns: int) -> dict[str, float]:
    per_turn: list[list[float]] = [[] for _ in range(turns)]
    for c in range(conversations_n):
        for i, ms in enumerate(await long_conversation(url, f"{tag}-{c}", turns)):
            per_turn[i].append(ms)
    # The same messages early and late (LONG repeats): turns 3-7 against the same five about 60 turns on.
    shift = len(LONG) * max(1, round(57 / len(LONG)))
    early = [ms for i in range(2, 7) for ms in per_turn[i]]
    late = [ms for i in range(2 + shift, 7 + shift) for ms in per_turn[i]]
    return {"turn5_ms": statistics.median(early), "turn60_ms": statistics.median(late),
            "turn60_over_turn5": statistics.median(late) / statistics.median(early), "late_turns_from": 3 + shift}


# Where a Rasa process's CPU goes, by the innermost frame that names a part (py-spy raw stacks).
PARTS = [
    ("action response validation", ("_validate_action_result",)),
    ("action call: the tracker sent (serialising)", ("_action_call_format",)),
    ("action call: HTTP", ("rasa/utils/endpoints.py", "request (rasa_runtime/patches.py", "_shared_session (")),
    ("tracker store: read", ("retrieve (", "_catch_up (", "get_or_create_tracker (")),
    ("tracker store: save", ("save (",)),
    ("policies", ("rasa/core/policies/", "rasa/shared/core/domain.py")),
    ("NLU", ("rasa/nlu/", "nlu/routing.py", "nlu/pinyin_featurizer.py", "parse_message (")),
    ("graph runner (dask, or its replacement)", ("rasa/engine/runner/dask.py", "compute (rasa_runtime/patches.py",
                                                 "run (rasa_runtime/patches.py", "dask/")),
    ("channel and the rest of the turn", ("rasa/core/processor.py", "rasa/core/channels/", "channels/")),
]


def profile_shares(raw: str) -> dict[str, float]:
    """Share of samples per part; a sample counts for the innermost frame that names one."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        part = next((name for frame in reversed(frames) for name, marks in PARTS if any(m in frame for m in marks)),
                    "other (event loop, server, logging)")
        counts[part] = counts.get(part, 0) + int(n)
        total += int(n)
    return {part: round(n / total, 3) for part, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


async def profiled(url: str, pid: int, seconds: float, tag: str, out: Path) -> dict[str, float]:
    """py-spy on ``pid`` while 10 conversations run the flows for ``seconds``."""
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--duration", str(int(seconds)),
        "--rate", "200", "--format", "raw", "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    await conversations(url, FLOWS, 10, seconds, 0, tag)
    await spy.wait()
    return profile_shares(out.read_text()) if out.exists() else {}


async def main_async(args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int]) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, url in urls.items():  # warm both (first parse, first action call)
        await conversations(url, FLOWS, 2, 3, 0, f"warm-{name}")
    if args.profile and "profile" in args.parts:
        for name, url in urls.items():
            results[f"profile_{name}"] = await profiled(url, pids[name], args.profile, f"profile-{name}",
                                                        Path(os.environ.get("HEZE_PROFILE_DIR") or tempfile.mkdtemp()) / f"profile-{name}.txt")
    for kind, flows, users in (("flows", FLOWS, 1), ("flows", FLOWS, 10), ("baseline", BASELINE, 10)):
        if "ratio" not in args.parts:
            break
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
        for r in range(args.runs):
            for name, url in urls.items():
                runs[name].append(await conversations(url, flows, users, args.seconds, 0, f"{name}{kind}{users}r{r}"))
        for name in urls:
            results[f"{kind}_{users}_{name}"] = median_of(runs[name])
        results[f"{kind}_{users}_ratio"] = (results[f"{kind}_{users}_project"]["turns_per_s"]  # type: ignore[index]
                                            / results[f"{kind}_{users}_stock"]["turns_per_s"])  # type: ignore[index]
    for name, url in urls.items():
        if "flat" not in args.parts:
            break
        results[f"flat_{name}"] = median_of([await flat(url, f"long-{name}-r{r}", args.conversations, args.turns)
                                             for r in range(args.runs)])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--conversations", type=int, default=5)
    parser.add_argument("--turns", type=int, default=72)
    parser.add_argument("--parts", nargs="+", default=["profile", "ratio", "flat"], choices=["profile", "ratio", "flat"])
    parser.add_argument("--profile", type=float, default=20, help="seconds of py-spy per Rasa (0: none)")
    parser.add_argument("--out", default="bench/turns-last-run.json")
    add_production_args(parser)
    args = parser.parse_args()
    with bench_stack(args, "heze-bench-turns-") as (tmp, settings, stack):
        project = next(s for s in stack.specs if s.name == "rasa")
        stock_file = stock_endpoints(Path(settings.rasa_endpoints), tmp / "endpoints-stock.yml",
                                     None if args.production else str(tmp / "tracker-stock.db"))
        if not args.production:  # the journal mode of the project's file (stack.processes.prepare_tracker_store)
            with sqlite3.connect(tmp / "tracker-stock.db") as db:
                db.execute("PRAGMA journal_mode=WAL")
        stock = Stack([stock_rasa(project, stock_file, free_port())], tmp / "log")
        try:
            stock.start(timeout=300)
            urls = {"project": project.url, "stock": stock.specs[0].url}
            pids = {"project": stack.procs["rasa"].pid, "stock": stock.procs["rasa-stock"].pid}
            results = asyncio.run(main_async(args, urls, pids))
        finally:
            stock.stop()
    write_results(results, args)


if __name__ == "__main__":
    main()
