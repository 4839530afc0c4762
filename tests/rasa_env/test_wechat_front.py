"""The WeChat front (channels/front.py) against a local upstream that answers as the WeChat channel
does: in time, late with a passive reply, late with ``success``, not at all, or by dropping the
connection. The whole path through the real Rasa is in tests/e2e/test_wechat.py."""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import aiohttp
import pytest
import yarl
from aiohttp import web

from channels.front import ARRIVED, CLAIM, FRONT, Front

TOKEN = "front-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Upstream:
    """Stands in for Rasa's WeChat channel: each POST to the webhook is answered by ``behave``."""

    def __init__(self) -> None:
        self.seen: List[Dict[str, Any]] = []
        self.undelivered: List[Tuple[str, Dict[str, Any], Optional[str]]] = []
        self.behave: Callable[[web.Request, int], Awaitable[web.StreamResponse]] = self.in_time

    async def in_time(self, request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(text="<xml>reply</xml>", content_type="application/xml", headers={CLAIM: "acct/o1/msg:1"})

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"method": request.method, "path_qs": request.rel_url.path_qs, "body": await request.read(),
                          "headers": dict(request.headers), "at": time.time()})
        return await self.behave(request, len(self.seen))

    async def undelivered_route(self, request: web.Request) -> web.StreamResponse:
        self.undelivered.append((request.match_info["channel"], await request.json(), request.headers.get(FRONT)))
        return web.json_response({"sent": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/webhooks/{channel}/webhook", self.webhook)
        app.router.add_route("*", "/webhooks/{channel}/", self.webhook)
        app.router.add_route("*", "/webhooks/rest/webhook", self.webhook)
        app.router.add_route("*", "/model/parse", self.webhook)
        app.router.add_route("*", "/conversations/{id}/tracker", self.webhook)
        app.router.add_post("/webhooks/{channel}/undelivered", self.undelivered_route)
        return app


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


CUT_S = 1.0


async def post_text(url: str, body: bytes) -> str:
    """What WeChat's server reads back for one delivery."""
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body) as resp:
            return await resp.text()


def with_front(test: Callable[[Front, Upstream, str], Awaitable[None]], cut_s: float = CUT_S,
               upstream_up: bool = True) -> None:
    async def run() -> None:
        upstream, up_port, front_port = Upstream(), free_port(), free_port()
        front = Front(f"http://127.0.0.1:{up_port}", TOKEN, cut_s=cut_s, redeliveries=2, redeliver_s=0.1)
        runners = [await serve(upstream.app(), up_port)] if upstream_up else []
        front_runner = await serve(front.app(), front_port)
        try:
            await test(front, upstream, f"http://127.0.0.1:{front_port}")
        finally:
            await front_runner.cleanup()  # waits for what is owed after a cut
            for runner in runners:
                await runner.cleanup()
    asyncio.run(run())


def test_an_answer_in_time_goes_back_as_it_came_with_the_arrival_passed_on() -> None:
    async def test(front: Front, upstream: Upstream, url: str) -> None:
        async with aiohttp.ClientSession() as http:
            sent = time.time()
            async with http.post(f"{url}/webhooks/wechat/webhook?signature=s&nonce=n", data=b"<xml>in</xml>",
                                 headers={"Content-Type": "text/xml"}) as resp:
                assert resp.status == 200 and await resp.text() == "<xml>reply</xml>"
                assert resp.headers["Content-Type"].startswith("application/xml")
                assert CLAIM not in resp.headers  # the claim is for the front only
        seen = upstream.seen[0]
        assert seen["path_qs"] == "/webhooks/wechat/webhook?signature=s&nonce=n" and seen["body"] == b"<xml>in</xml>"
        assert seen["headers"][FRONT] == TOKEN and seen["headers"]["Content-Type"] == "text/xml"
        assert sent <= float(seen["headers"][ARRIVED]) <= seen["at"]
        assert upstream.undelivered == [] and front.counts["relayed"] == 1
    with_front(test)


def test_a_late_passive_reply_is_cut_and_resent_as_a_customer_service_message() -> None:
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(CUT_S + 1.5)
        return web.Response(text="<xml>late reply</xml>", content_type="application/xml",
                            headers={CLAIM: "acct/o1/msg:7"})

    async def test(front: Front, upstream: Upstream, url: str) -> None:
        upstream.behave = slow
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.post(f"{url}/webhooks/wechat/webhook", data=b"<xml/>") as resp:
                assert await resp.text() == "success" and resp.status == 200
            assert CUT_S - 0.05 <= time.monotonic() - started < CUT_S + 1.0  # the cut, not the upstream's answer
        await front.settle()
        assert upstream.undelivered == [("wechat", {"claim": "acct/o1/msg:7"}, TOKEN)]
        assert front.counts["cut"] == 1 and front.counts["resent"] == 1 and front.counts["lost"] == 0
    with_front(test)


def test_a_late_success_asks_for_nothing_more() -> None:
    async def slow_success(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(CUT_S + 1.0)
        return web.Response(text="success")  # the channel sends its reply itself

    async def test(front: Front, upstream: Upstream, url: str) -> None:
        upstream.behave = slow_success
        assert await post_text(f"{url}/webhooks/miniprogram/webhook", b"{}") == "success"
        await front.settle()
        assert upstream.undelivered == [] and front.counts["cut"] == 1 and front.counts["resent"] == 0
    with_front(test)


def test_a_connection_broken_after_the_cut_is_delivered_again_as_wechat_would() -> None:
    async def drop_then_answer(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            await asyncio.sleep(CUT_S + 1.0)
            assert request.transport is not None
            request.transport.close()  # the replica died mid-turn
            await asyncio.sleep(0.1)
            return web.Response(text="never read")
        return web.Response(text="<xml>answer</xml>", content_type="application/xml", headers={CLAIM: "acct/o2/msg:9"})

    async def test(front: Front, upstream: Upstream, url: str) -> None:
        upstream.behave = drop_then_answer
        assert await post_text(f"{url}/webhooks/wechat/webhook?nonce=x", b"<xml>m</xml>") == "success"
        await front.settle()
        assert len(upstream.seen) == 2 and upstream.seen[1]["body"] == b"<xml>m</xml>"
        assert upstream.seen[1]["path_qs"] == "/webhooks/wechat/webhook?nonce=x"
        assert float(upstream.seen[1]["headers"][ARRIVED]) > float(upstream.seen[0]["headers"][ARRIVED])
        assert upstream.undelivered == [("wechat", {"claim": "acct/o2/msg:9"}, TOKEN)]
    with_front(test)


def test_rasa_unreachable_gets_502_so_that_wechat_retries() -> None:
    async def test(front: Front, upstream: Upstream, url: str) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/webhooks/wechat/webhook", data=b"<xml/>") as resp:
                assert resp.status == 502
        assert front.counts["unreachable"] == 1 and front.counts["cut"] == 0
    with_front(test, upstream_up=False)


def test_url_verification_passes_through_and_other_paths_are_not_relayed() -> None:
    async def verify(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(CUT_S + 0.3)  # longer than the cut: a GET is not a message and is never cut
        return web.Response(text=request.query.get("echostr", ""))

    async def test(front: Front, upstream: Upstream, url: str) -> None:
        upstream.behave = verify
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/webhooks/wechat/webhook?echostr=e42&signature=s") as resp:
                assert await resp.text() == "e42"
            # Rasa's API, the rest channel and the channel's /undelivered are not reachable through the
            # front, however the path is written.
            for path in ("/webhooks/rest/webhook", "/conversations/x/tracker", "/model/parse",
                         "/webhooks/wechat/undelivered", "/webhooks/wechat/../rest/webhook",
                         "/webhooks/wechat/%2e%2e/rest/webhook", "/webhooks/wechat/..%2f..%2fmodel%2fparse",
                         "/webhooks/wechat/%2E%2E/%2E%2E/conversations/x/tracker", "/webhooks/wechat/webhook/../x"):
                async with http.post(yarl.URL(f"{url}{path}", encoded=True), json={"message": "hi"}) as resp:
                    assert resp.status in (404, 405), path
            async with http.post(f"{url}/webhooks/wechat/webhook", data=b"x" * ((1 << 20) + 1), headers={"Connection": "close"}) as resp:
                assert resp.status == 413  # refused here, never relayed
        assert [(s["method"], s["path_qs"]) for s in upstream.seen] == [
            ("GET", "/webhooks/wechat/webhook?echostr=e42&signature=s")]
    with_front(test)


def test_an_error_after_the_cut_is_delivered_again_and_a_refusal_is_counted_lost() -> None:
    async def error_then_answer(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(CUT_S + 0.5)
        if n == 1:
            return web.Response(status=503, text="no server available")  # the balancer: the replica died
        if n == 2:
            return web.Response(text="<xml>answer</xml>", content_type="application/xml", headers={CLAIM: "acct/o3/msg:4"})
        return web.Response(status=403, text="nonce replayed")

    async def test(front: Front, upstream: Upstream, url: str) -> None:
        upstream.behave = error_then_answer
        assert await post_text(f"{url}/webhooks/wechat/webhook", b"<xml>m</xml>") == "success"
        await front.settle()
        assert len(upstream.seen) == 2 and upstream.undelivered == [("wechat", {"claim": "acct/o3/msg:4"}, TOKEN)]
        assert await post_text(f"{url}/webhooks/wechat/webhook", b"<xml>other</xml>") == "success"
        await front.settle()
        assert len(upstream.seen) == 3 and len(upstream.undelivered) == 1
        assert front.counts["lost"] == 1 and front.counts["resent"] == 1 and front.counts["cut"] == 2
    with_front(test)


def test_the_front_will_not_start_without_its_secret() -> None:
    with pytest.raises(ValueError, match="WECHAT_FRONT_TOKEN"):
        Front("http://127.0.0.1:1", "")
