"""The WeChat front: a small process between WeChat's servers and Rasa that keeps the 5-second rule.

WeChat waits 5 s for the answer to a message, then retries. Inside Rasa the WeChat channel counts a
4 s deadline, but a channel can keep a deadline only while its event loop is free: with 150 turns
of NLU and policies on Rasa's loop, a request waits seconds before its handler starts, and a timer
that is due fires late (``bench/RESULTS.md``, 150 simultaneous senders). This process does nothing
but relay, so its loop is always free:

- ``/webhooks/wechat/...`` and ``/webhooks/miniprogram/...`` are passed to Rasa unchanged, with the
  time the request arrived here (``X-Heze-Arrived``, Unix seconds) and the shared secret
  (``X-Heze-Front``). The channel counts its deadline from that arrival, not from its handler.
- Only the two webhooks (``/webhooks/<channel>/webhook``, GET and POST) and the channels' own health
  (``GET /webhooks/<channel>/``) are relayed, to paths written here, never to a path taken from the
  request: Rasa's API, the ``rest`` channel and ``/undelivered`` stay out of reach.
- Rasa's answer is passed back if it comes within ``cut_s`` (4.5 s) of the arrival. Otherwise WeChat
  gets ``success`` at 4.5 s, and the message's answer must reach the citizen another way: a passive
  reply or a transfer names its message (``X-Heze-Claim``), and when it comes after the cut this
  process asks the channel to send it as a customer-service message (``POST
  /webhooks/<channel>/undelivered``; for a transfer, a request to send the message again, which then
  reaches the agent). An answer that was already ``success`` went out as a customer-service message
  from the channel itself.
- When Rasa cannot be reached, WeChat gets 502 (and retries, as it would without this process);
  when the connection breaks, or Rasa (or the balancer before it) answers 5xx, after WeChat was told
  ``success``, this process delivers the request again, as WeChat would have, up to ``redeliveries``
  times 5 s apart. The channel knows a message it took (one turn, one answer) and answers a
  redelivery from what it stored. Any other answer after the cut is logged and counted as ``lost``.
- ``GET /health`` counts what it did, ``late``: answers to WeChat that left this process more than
  ``LATE_S`` after the cut by its own clock, and ``loop_lag_max_ms``: how late its loop ran at worst
  (a request is timed from when the loop reads it; a host that starves this process of CPU delays both).

Nothing here reads a message: no decryption, no openid, no text in the logs. Runs in the Rasa
environment (aiohttp): ``python -m channels.front``, started by ``python -m stack``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Set

import aiohttp
import yarl
from aiohttp import web

from channels.wechat_pace import LoopLag

logger = logging.getLogger(__name__)

ARRIVED = "X-Heze-Arrived"
FRONT = "X-Heze-Front"
CLAIM = "X-Heze-Claim"
CHANNELS = ("wechat", "miniprogram")
MAX_BODY = 1 << 20  # WeChat's messages are a few KB; the channel refuses large fields itself (413)
TURN_TIMEOUT_S = 120.0  # a Rasa answer later than this is not waited for (the channel sends it itself)
REDELIVER_S = 5.0  # WeChat's own retry interval
LATE_S = 0.25  # an answer to WeChat later than cut_s + this, by this process's clock, is counted late


@dataclass(frozen=True)
class Upstream:
    """One answer from Rasa: status, body, content type and the claim of a passive reply."""
    status: int
    body: bytes
    content_type: str
    claim: Optional[str]


class Front:
    def __init__(self, upstream: str, token: str, cut_s: float = 4.5, redeliveries: int = 3,
                 redeliver_s: float = REDELIVER_S) -> None:
        if not token:
            raise ValueError("the WeChat front needs WECHAT_FRONT_TOKEN (the channel trusts its clock only with it)")
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.cut_s = cut_s
        self.redeliveries = redeliveries
        self.redeliver_s = redeliver_s
        self.counts: Dict[str, int] = {"relayed": 0, "cut": 0, "resent": 0, "unreachable": 0, "lost": 0, "late": 0}
        self.slowest_s = 0.0  # the longest a message's answer took here, arrival to response
        self.lag = LoopLag(interval_s=0.02)  # how late this loop runs (CPU starved): arrivals are read that late
        self._session: Optional[aiohttp.ClientSession] = None
        self._tasks: Set["asyncio.Task[Any]"] = set()  # answers still owed after a cut

    # -- app ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/health", self.health)
        app.router.add_route("GET", "/webhooks/{channel}/webhook", self.relay)
        app.router.add_route("POST", "/webhooks/{channel}/webhook", self.relay)
        app.router.add_route("GET", "/webhooks/{channel}/", self.relay)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TURN_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=512), auto_decompress=False)
        self.lag.start()

    async def _close(self, _: web.Application) -> None:
        self.lag.stop()
        await self.settle()
        if self._session is not None:
            await self._session.close()

    async def settle(self) -> None:
        """Wait for the answers still owed after a cut (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.counts, "slowest_ms": round(self.slowest_s * 1000),
                                  "loop_lag_max_ms": round(self.lag.worst * 1000)})

    # -- relaying -----------------------------------------------------------------------------
    async def relay(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        channel = request.match_info["channel"]
        if channel not in CHANNELS:
            return web.Response(status=404, text="not found")
        body = await request.read()
        webhook = request.path.endswith("/webhook")
        path = f"/webhooks/{channel}/webhook" if webhook else f"/webhooks/{channel}/"
        query = request.rel_url.raw_query_string
        path += f"?{query}" if query else ""
        headers = {ARRIVED: f"{arrived:.6f}", FRONT: self.token}
        if "Content-Type" in request.headers:
            headers["Content-Type"] = request.headers["Content-Type"]
        task = asyncio.ensure_future(self._forward(request.method, path, body, headers))
        is_message = request.method == "POST" and webhook
        if is_message:
            await asyncio.wait({task}, timeout=max(0.0, self.cut_s - (time.time() - arrived)))
            took = time.time() - arrived
            self.slowest_s = max(self.slowest_s, took)
            if took > self.cut_s + LATE_S:
                self.counts["late"] += 1
        else:
            await asyncio.wait({task})
        if task.done():
            try:
                answer = task.result()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.counts["unreachable"] += 1
                logger.warning("Rasa not reachable for a %s request: %s", channel, type(exc).__name__)
                return web.Response(status=502, text="upstream unavailable")
            self.counts["relayed"] += 1
            return web.Response(status=answer.status, body=answer.body, content_type=None,
                                headers={"Content-Type": answer.content_type} if answer.content_type else None)
        # Past the cut: WeChat hears success now; the answer follows as a customer-service message.
        self.counts["cut"] += 1
        self._spawn(self._after_cut(channel, task, request.method, path, body, headers))
        return web.Response(text="success")

    async def _forward(self, method: str, path: str, body: bytes, headers: Dict[str, str]) -> Upstream:
        assert self._session is not None
        url = yarl.URL(self.upstream + path, encoded=True)  # the query as WeChat signed it, not re-encoded
        async with self._session.request(method, url, data=body, headers=headers, allow_redirects=False) as resp:
            content = await resp.read()
            return Upstream(resp.status, content, resp.headers.get("Content-Type", ""), resp.headers.get(CLAIM))

    async def _after_cut(self, channel: str, task: "asyncio.Future[Upstream]", method: str, path: str, body: bytes,
                         headers: Dict[str, str]) -> None:
        """Wait for the answer WeChat was not given and see that it reaches the citizen."""
        answer: Optional[Upstream] = None
        for attempt in range(self.redeliveries + 1):
            try:
                answer = await task
                failure = f"HTTP {answer.status}" if answer.status >= 500 else None  # a replica died behind the balancer
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failure = type(exc).__name__
            if failure is None:
                break
            if attempt == self.redeliveries:
                self.counts["lost"] += 1
                logger.error("a %s message cut at the deadline was not answered by Rasa after %d deliveries: %s",
                             channel, attempt + 1, failure)
                return
            await asyncio.sleep(self.redeliver_s)
            headers = {**headers, ARRIVED: f"{time.time():.6f}"}
            task = asyncio.ensure_future(self._forward(method, path, body, headers))
        assert answer is not None
        if answer.status != 200:
            self.counts["lost"] += 1
            logger.error("Rasa answered a %s message cut at the deadline with HTTP %s: nothing more can be sent",
                         channel, answer.status)
        elif answer.claim:
            await self._resend(channel, answer.claim)

    async def _resend(self, channel: str, claim: str) -> None:
        """Ask the channel to send the passive reply WeChat did not take as a customer-service message."""
        assert self._session is not None
        for attempt in range(3):
            try:
                async with self._session.post(f"{self.upstream}/webhooks/{channel}/undelivered", json={"claim": claim},
                                              headers={FRONT: self.token}) as resp:
                    if resp.status == 200:
                        self.counts["resent"] += 1
                        return
                    if resp.status == 404:  # nothing to send: sent already (by another front or worker)
                        logger.info("the %s channel had no reply to resend", channel)
                        return
                    if resp.status < 500:  # refused (wrong secret, bad request): trying again will not help
                        logger.error("the %s channel refused to resend a reply: HTTP %s", channel, resp.status)
                        self.counts["lost"] += 1
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                logger.warning("asking the %s channel to resend a reply failed: %s", channel, type(exc).__name__)
            await asyncio.sleep(1.0 + attempt)
        self.counts["lost"] += 1
        logger.error("a %s reply cut at the deadline could not be resent", channel)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    front = Front(
        upstream=os.environ.get("WECHAT_FRONT_UPSTREAM") or
        f"http://{os.environ.get('RASA_HOST', '127.0.0.1')}:{os.environ.get('RASA_PORT', '5005')}",
        token=os.environ.get("WECHAT_FRONT_TOKEN", ""),
        cut_s=float(os.environ.get("WECHAT_FRONT_CUT_S") or 4.5),
    )
    web.run_app(front.app(), host=os.environ.get("WECHAT_FRONT_HOST", "127.0.0.1"),
                port=int(os.environ.get("WECHAT_FRONT_PORT") or 5006), access_log=None, print=None)


if __name__ == "__main__":
    main()
