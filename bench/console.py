"""Console benchmark: ``python -m bench.console`` (``make bench-console``; results into bench/RESULTS.md).

10,000 conversations (synthetic, written as Rasa 3.6 writes its events table) in a SQLite tracker
store, the console as its own process; measured: the first read of the tracker store into the
conversation index, then list pages (plain, filtered, sorted, deep pages) and detail pages, p50/p95."""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.run import pct, write_results
from console.auth import Accounts
from console.conversations import conversation_ref
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from services.settings import ROOT
from tests.console.synthetic import write_conversations
from tests.sandbox import free_port
from textnorm.sealing import Keyring, new_key

PASSWORD = "mudan console 2026 春"

LIST_QUERIES = [{}, {"channel": "phone"}, {"max_confidence": "0.6", "sort": "min_confidence"}, {"flag": "handoff"},
                {"intent": "pay_bill", "sort": "-turns"}, {"q": "路灯"}, {"reviewed": "no", "page": "40"},
                {"date_from": "2026-01-01", "rating": "low"}]


def timed(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    r = client.get(path, params=params)
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/console-last-run.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heze-bench-console-"))
    heze = f"sqlite:///{tmp / 'heze.db'}"
    engine = make_engine(heze)
    upgrade(engine)
    Accounts(make_sessionmaker(engine)).create_user("bench", PASSWORD, "admin")
    tracker = make_engine(f"sqlite:///{tmp / 'tracker.db'}")
    t0 = time.perf_counter()
    keys = f"b1:{new_key()}"  # rows sealed as the tracker store writes them: the console opens each one
    senders = write_conversations(tracker, args.conversations, keyring=Keyring.parse(keys))
    written_s = time.perf_counter() - t0
    port = free_port()
    key = "bench-pseudonym-key"
    refs = [conversation_ref(key.encode(), sender) for sender in senders]  # the console's links carry these
    env = {**os.environ, "HEZE_DB_URL": heze, "TRACKER_DB": str(tmp / "tracker.db"), "CONSOLE_PORT": str(port),
           "HEZE_ENV": "test", "CONSOLE_PSEUDONYM_KEY": key, "DATA_KEYS": keys}
    proc = subprocess.Popen([sys.executable, "-m", "console", "serve"], cwd=ROOT, env=env,
                            stdout=open(tmp / "console.log", "wb"), stderr=subprocess.STDOUT)
    results: dict[str, object] = {"conversations": args.conversations, "tracker_write_s": round(written_s, 1)}
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/health")
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
            client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
            t0 = time.perf_counter()
            first = client.get("/api/conversations")  # waits for the index to catch up with the tracker store
            while first.json()["total"] < args.conversations:
                time.sleep(0.5)
                first = client.get("/api/conversations")
            results["first_index_s"] = round(time.perf_counter() - t0, 1)
            rnd = random.Random(1)
            runs = []
            for _ in range(args.runs):
                lists = [timed(client, "/conversations", LIST_QUERIES[i % len(LIST_QUERIES)]) for i in range(args.requests)]
                details = [timed(client, f"/conversations/{rnd.choice(refs)}") for _ in range(args.requests)]
                runs.append({"list_p50_ms": round(statistics.median(lists), 1), "list_p95_ms": round(pct(lists, 0.95), 1),
                             "detail_p50_ms": round(statistics.median(details), 1),
                             "detail_p95_ms": round(pct(details, 0.95), 1)})
            results["pages"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            results["runs"] = runs
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        engine.dispose()
        tracker.dispose()
    write_results(results, args)


if __name__ == "__main__":
    main()
