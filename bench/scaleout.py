"""Scale-out on this machine (`make bench-scaleout`): the topology of stack/scaleout.py with 1, 2 and
3 Rasa replicas behind HAProxy (PostgreSQL, the Redis lock store, the RabbitMQ event broker, one
action server), loaded by locust (bench/locustfile.py: flows over the rest and WeChat channels) in
steps of concurrent citizens. For each replica count and step: turns per second, p50/p95 turn time per
channel, failures, and the CPU seconds the Rasa replicas spent per turn. Writes
bench/scaleout-last-run.json; loopback only, every run bounded in users and time."""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.run import machine
from services.settings import ROOT
from stack.scaleout import Topology
from tests.sandbox import (console_settings, drop_broker, drop_database, free_port, make_settings, production_database,
                           production_env, start_stack, voice_settings)
from tests.fakes.wechat_api import Account, FakeWeChat, serve


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def locust_step(host: str, users: int, seconds: int, out: Path, env: dict[str, str]) -> dict[str, Any]:
    prefix = out / f"u{users}"
    subprocess.run([str(ROOT / ".venv" / "bin" / "locust"), "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
                    "-u", str(users), "-r", str(max(1, users // 2)), "-t", f"{seconds}s", "--host", host,
                    "--csv", str(prefix), "--only-summary", "--stop-timeout", "10"],
                   cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, check=False,
                   capture_output=True, timeout=seconds + 120)
    rows = {r["Name"]: r for r in csv.DictReader(open(f"{prefix}_stats.csv"))}

    def figures(name: str) -> dict[str, float]:
        r = rows.get(name) or {}
        return {"requests": int(r.get("Request Count", 0) or 0), "failures": int(r.get("Failure Count", 0) or 0),
                "p50_ms": float(r.get("50%", 0) or 0), "p95_ms": float(r.get("95%", 0) or 0),
                "rps": round(float(r.get("Requests/s", 0) or 0), 2)}
    return {"rest": figures("rest turn"), "wechat": figures("wechat turn"), "all": figures("Aggregated")}


def run(replicas: int, steps: list[int], seconds: int, pg: str, redis: str, out: Path) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"heze-scaleout-{replicas}-"))
    account = Account(token="benchToken2026", aes_key=base64.b64encode(os.urandom(32)).decode()[:43],
                      appid="wx" + os.urandom(8).hex())
    fake = FakeWeChat(appid=account.appid, secret="bench-" + os.urandom(4).hex())
    db = production_database(pg)
    results: dict[str, Any] = {"replicas": replicas, "steps": {}}
    with serve(fake, free_port()) as wechat_url:
        api_port = free_port()
        settings = make_settings(
            wechat_token=account.token, wechat_encoding_aes_key=account.aes_key, wechat_appid=account.appid,
            wechat_secret=fake.secret, wechat_api_base=wechat_url, wechat_claims=f"redis://{redis}/2",
            rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
            public_base_url=f"http://127.0.0.1:{api_port}", heze_db_url=db,
            rasa_model_dir=str(ROOT / "var" / "models"), rasa_endpoints="deploy/endpoints.yml")
        extra = production_env(db, redis, workers=1)
        stack, engine = start_stack(settings, tmp, voice_settings(tmp), extra, console=console_settings(
            console_tracker_url=db), topology=Topology(rasa=replicas, actions=1, voice=0))
        try:
            rasa_pids = [p.pid for name, p in stack.procs.items() if name.startswith("rasa-")]
            host = f"http://127.0.0.1:{settings.rasa_port}"
            locust_env = {"HEZE_LOCUST_WECHAT": f"{account.token}|{account.aes_key}|{account.appid}"}
            for users in steps:
                before = cpu_seconds(rasa_pids)
                step = locust_step(host, users, seconds, tmp, locust_env)
                turns = step["all"]["requests"]
                step["rasa_cpu_s_per_turn"] = round((cpu_seconds(rasa_pids) - before) / max(1, turns), 4)
                results["steps"][users] = step
                print(json.dumps({"replicas": replicas, "users": users, **step}, ensure_ascii=False), flush=True)
        finally:
            stack.stop()
            engine.dispose()
            drop_database(pg, db)
            drop_broker(extra)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--out", default="bench/scaleout-last-run.json")
    args = parser.parse_args()
    runs = [run(n, args.steps, args.seconds, args.pg, args.redis, Path(args.out).parent) for n in args.replicas]
    Path(args.out).write_text(json.dumps({"machine": machine(), "settings": vars(args), "runs": runs},
                                         ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
