"""WeChat channel benchmark: ``python -m bench.wechat`` (results go to bench/RESULTS.md by hand).

The real stack (Rasa with the WeChat channel in safe mode, action server, services API) and a local
WeChat API. 50 citizens send at once, each a conversation (greeting, ticket lookup, rating) with a
1 s pause between messages, signed and encrypted as WeChat does. Measured per delivery: latency,
whether the reply was passive or ``success`` (then a customer-service message), passive replies later
than 4.5 s, and that every ``success`` is followed by its customer-service message. WeChat's deliveries go
through the WeChat front (``channels/front.py``), as in production; ``--direct`` posts to Rasa's channel
itself. The same conversations through the ``rest`` channel give the comparison; the channel's
own work (decrypt, parse, claim, render, encrypt) is also timed in the Rasa venv, without Rasa.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import base64
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.run import pct, write_results
from services.settings import ROOT
from tests.sandbox import (add_production_args, drop_broker, drop_database, free_port, make_settings, production_database,
                           production_env, start_stack)
from tests.fakes.wechat_api import Account, FakeWeChat, serve

CONVERSATION = ["你好", "查工单", "10000001", "5"]
MSG_IDS = itertools.count(int(time.time() * 1000) * 1000)  # unique across runs: a repeated MsgId is a retry

OWN_WORK = """
import json, sys, time, uuid
from channels.wechat import render
from channels.wechat_protocol import Envelope, check_message, parse_body, text_reply
from channels.wechat_store import Reply, SqliteClaims, message_key
token, key, appid, db = sys.argv[1:5]
env = Envelope(token, key, appid)
claims = SqliteClaims(db)
inner = ("<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1</CreateTime>"
         "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[查工单]]></Content><MsgId>{}</MsgId></xml>")
sealed = [parse_body(env.encrypt_reply(inner.format(i), "n", "1").encode())["Encrypt"] for i in range(2000)]
bot = [{"text": "请说工单号，就是8位数字。", "buttons": [{"title": "转人工", "payload": "/request_human"}]}]
times = []
for enc in sealed:
    t = time.perf_counter()
    msg = check_message(parse_body(env.decrypt(enc).encode()))
    key_ = message_key(appid, msg); claims.claim(key_)
    texts, _ = render(bot)
    claims.finish(key_, Reply(texts))
    env.encrypt_reply(text_reply("o1", "gh", "\\n\\n".join(texts)), "n", "1")
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(json.dumps({"p50_ms": times[len(times)//2], "p95_ms": times[int(len(times)*0.95)], "p99_ms": times[int(len(times)*0.99)]}))
"""


async def citizens(send, n: int, rounds: int, pause: float) -> list[tuple[float, str, int]]:  # type: ignore[no-untyped-def]
    results: list[tuple[float, str, int]] = []

    async def one(i: int) -> None:
        sender = f"o{uuid.uuid4().hex[:20]}"
        await asyncio.sleep(i * pause / n)  # spread the start over one pause
        for _ in range(rounds):
            for step, text in enumerate(CONVERSATION):
                started = time.perf_counter()
                kind = await send(sender, text)
                results.append((time.perf_counter() - started, kind, step))
                await asyncio.sleep(pause)

    await asyncio.gather(*(one(i) for i in range(n)))
    return results


class LoopLagProbe:
    """The worst overshoot of a 20 ms sleep on this process's loop while a coroutine runs."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def during(self, work):  # type: ignore[no-untyped-def]
        async def probe() -> None:
            while True:
                asked = time.perf_counter()
                await asyncio.sleep(0.02)
                self.worst = max(self.worst, time.perf_counter() - asked - 0.02)
        task = asyncio.ensure_future(probe())
        try:
            return await work
        finally:
            task.cancel()


def summary(results: list[tuple[float, str, int]], deadline: float) -> dict[str, float]:
    latencies = [r[0] * 1000 for r in results]
    late_by_step = {f"passive_late_step_{s}": sum(1 for t, kind, step in results if kind == "passive" and t > deadline
                                                  and step == s) for s in range(len(CONVERSATION))}
    return {
        "deliveries": len(results), "p50_ms": round(pct(latencies, 0.5), 1), "p95_ms": round(pct(latencies, 0.95), 1),
        "p99_ms": round(pct(latencies, 0.99), 1), "max_ms": round(max(latencies), 1),
        "success_then_customer_service": sum(1 for _, kind, _ in results if kind == "success"),
        "passive_later_than_deadline": sum(1 for t, kind, _ in results if kind == "passive" and t > deadline),
        "failed": sum(1 for _, kind, _ in results if kind == "error"),
        **late_by_step,
    }


async def measure(url: str, wechat_url: str, account: Account, fake: FakeWeChat, users: int, rounds: int,
                  pause: float) -> dict[str, object]:
    """``wechat_url``: where WeChat posts (the front, or Rasa itself with ``--direct``); ``url``: Rasa."""
    limits = httpx.Limits(max_connections=users + 10)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        msg_ids = MSG_IDS

        async def wechat(sender: str, text: str) -> str:
            params, body = account.sealed(account.text_xml(sender, text, next(msg_ids)))
            resp = await client.post(f"{wechat_url}/webhooks/wechat/webhook", params=params, content=body)
            if resp.status_code != 200:
                return "error"
            return "success" if resp.text == "success" else "passive"

        async def rest(sender: str, text: str) -> str:
            resp = await client.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": text})
            return "passive" if resp.status_code == 200 and resp.json() else "error"

        await citizens(wechat, 5, 1, 0.2)  # warm-up
        await asyncio.sleep(2)
        before = len(fake.sent)
        lag = LoopLagProbe()
        over_wechat = summary(await lag.during(citizens(wechat, users, rounds, pause)), 4.5)
        # How late this client's own loop ran: a delivery's latency includes it (WeChat's servers are
        # other machines; here they share the server's two cores).
        over_wechat["client_loop_lag_max_ms"] = round(lag.worst * 1000, 1)
        # Every `success` owes the citizen a customer-service message: wait for them (at most 60 s).
        owed = int(over_wechat["success_then_customer_service"])
        until = time.monotonic() + 60
        while len(fake.sent) - before < owed and time.monotonic() < until:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        over_wechat["customer_service_received"] = len(fake.sent) - before
        over_wechat["unanswered"] = max(0, owed - (len(fake.sent) - before))
        return {"wechat": over_wechat, "rest": summary(await citizens(rest, users, rounds, pause), 4.5)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/wechat-last-run.json")
    parser.add_argument("--direct", action="store_true", help="post to Rasa's channel, not through the WeChat front")
    parser.add_argument("--client-priority", type=int, default=None,
                        help="nice value for this client (WeChat's servers and API) once the stack runs, e.g. -10")
    add_production_args(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heze-bench-wechat-"))
    account = Account(token="benchToken", aes_key=base64.b64encode(os.urandom(32)).decode()[:43],
                      appid="wx" + os.urandom(8).hex())
    fake = FakeWeChat(appid=account.appid, secret="bench-secret")
    own = subprocess.run([str(ROOT / ".venv-rasa" / "bin" / "python"), "-c", OWN_WORK, account.token, account.aes_key,
                          account.appid, str(tmp / "own.db")], cwd=ROOT, capture_output=True, text=True, check=True)
    results: dict[str, object] = {"channel_own_work_per_message": json.loads(own.stdout.strip().splitlines()[-1])}
    with serve(fake, free_port()) as wechat_url:
        api_port = free_port()
        db_url = production_database(args.pg) if args.production else f"sqlite:///{tmp / 'heze.db'}"
        settings = make_settings(
            rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
            public_base_url=f"http://127.0.0.1:{api_port}", heze_db_url=db_url,
            tracker_db=str(tmp / "tracker.db"), wechat_token=account.token,
            wechat_encoding_aes_key=account.aes_key, wechat_appid=account.appid, wechat_secret=fake.secret,
            wechat_api_base=wechat_url, wechat_claims=str(tmp / "wechat.db"),
            rasa_endpoints="deploy/endpoints.yml" if args.production else "bot/endpoints.yml")
        extra = production_env(db_url, args.redis, args.workers) if args.production else {}
        stack, engine = start_stack(settings, tmp, extra_env=extra)
        if args.client_priority is not None:  # the stack's processes keep theirs
            os.setpriority(os.PRIO_PROCESS, 0, args.client_priority)
        try:
            url = f"http://127.0.0.1:{settings.rasa_port}"
            front = f"http://{settings.wechat_front_host}:{settings.wechat_front_port}"
            runs = [asyncio.run(measure(url, url if args.direct else front, account, fake, args.users, args.rounds,
                                        args.pause)) for _ in range(args.runs)]
            results["front"] = None if args.direct else httpx.get(f"{front}/health").json()
        finally:
            stack.stop()
            engine.dispose()
            if args.production:
                drop_database(args.pg, db_url)
            drop_broker(extra)
    for channel in ("wechat", "rest"):
        per_run = [r[channel] for r in runs]  # type: ignore[index]
        results[channel] = {k: statistics.median(run[k] for run in per_run) for k in per_run[0]}
        results[f"{channel}_runs"] = per_run
    results["customer_service_messages_sent"] = len(fake.sent)
    results["through"] = "rasa (direct)" if args.direct else "wechat front"
    write_results(results, args)


if __name__ == "__main__":
    main()
