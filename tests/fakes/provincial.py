"""A local stand-in for the provincial platform's progress interface (deploy/provincial-platform.md):
real HTTP on loopback. It checks every request's signature (HMAC-SHA256 over the canonical request,
computed here and not borrowed from the code under test), a 300 s timestamp window and nonce
replay, then answers from its own 办件 records. It can be told to be slow, to fail with a 5xx or
answer a 4xx for the next requests, or to answer garbage; "down" is a port nobody listens on.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.wechat_api import serve_app
from tests.sandbox import free_port

PREFIX = "/gateway"
APP_ID = "hz-assistant-0001"
APP_KEY = "k8s9Qw2Lx7Vb4Np1Zr6Tt3Yh0Mc5Jd8F"  # the appKey the platform issued (test value)

# The seeded sample applications (services/seed.py) as the platform describes them.
APPLICATIONS: dict[str, dict[str, Any]] = {
    "20261101000001": {
        "projid": "20261101000001", "serviceName": "个体工商户营业执照设立登记", "status": "03",
        "statusName": "审查中", "currentNode": "材料审核", "promiseDate": "2026-11-20",
        "deptName": "牡丹区政务服务中心 市场准入窗口", "applyTime": "2026-11-01 09:30:00",
        "nodes": [{"nodeName": "受理", "nodeResult": "已受理", "endTime": "2026-11-02 10:00:00"},
                  {"nodeName": "网上申请", "nodeResult": "已提交", "endTime": "2026-11-01 09:30:00"},
                  {"nodeName": "材料审核", "nodeResult": "审核中", "endTime": ""}]},
    "20261101000002": {
        "projid": "20261101000002", "serviceName": "不动产登记（二手房转移）", "status": "06",
        "statusName": "办结", "currentNode": "", "promiseDate": "2026-10-20",
        "deptName": "菏泽市不动产登记中心", "applyTime": "2026-10-01 08:00:00",
        "nodes": [{"nodeName": "受理", "nodeResult": "已受理", "endTime": "2026-10-01 08:10:00"},
                  {"nodeName": "发证", "nodeResult": "已领取", "endTime": "2026-10-12 15:00:00"}]},
}
APPLICANTS: dict[tuple[str, str], list[str]] = {("13800000001", "1230"): ["20261101000001", "20261101000002"]}


def _answer(status: int, code: str, message: str, data: Any = None) -> Response:
    body = {"code": code, "message": message, "requestId": "fake", "data": data}
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json")


@dataclass
class FakeProvincialPlatform:
    app_id: str = APP_ID
    app_key: bytes = APP_KEY.encode()
    applications: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(APPLICATIONS))
    applicants: dict[tuple[str, str], list[str]] = field(default_factory=lambda: dict(APPLICANTS))
    delay_s: float = 0.0  # every answer waits this long
    failures: list[int] = field(default_factory=list)  # HTTP statuses for the next requests, in order
    garbage: bool = False  # answer 200 with an HTML error page, as a broken gateway does
    calls: list[dict[str, Any]] = field(default_factory=list)  # each signed request: path, headers, body
    rejected: list[str] = field(default_factory=list)  # why requests were refused
    seen_nonces: set[str] = field(default_factory=set)
    clock: Any = time.time

    def reset(self) -> None:
        self.delay_s, self.garbage = 0.0, False
        self.failures.clear()
        self.calls.clear()
        self.rejected.clear()

    def _refusal(self, request: Request, body: bytes) -> str:
        h = request.headers
        names = ("x-gov-app-id", "x-gov-timestamp", "x-gov-nonce", "x-gov-signature-method", "x-gov-signature")
        if any(not h.get(n) for n in names):
            return "missing header"
        if h["x-gov-app-id"] != self.app_id or h["x-gov-signature-method"] != "HMAC-SHA256":
            return "unknown app"
        if abs(self.clock() * 1000 - int(h["x-gov-timestamp"])) > 300_000:
            return "stale timestamp"
        query = "&".join(sorted(f"{k}={v}" for k, v in request.query_params.items()))
        text = "\n".join(["HMAC-SHA256", request.method, request.url.path, query, h["x-gov-app-id"],
                          h["x-gov-timestamp"], h["x-gov-nonce"], hashlib.sha256(body).hexdigest()])
        expected = base64.b64encode(hmac.new(self.app_key, text.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, h["x-gov-signature"]):
            return "bad signature"
        if h["x-gov-nonce"] in self.seen_nonces:
            return "replayed nonce"
        self.seen_nonces.add(h["x-gov-nonce"])
        return ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def check(request: Request, call_next):
            body = await request.body()
            why = self._refusal(request, body)
            if why:
                self.rejected.append(why)
                return _answer(401, "40101", "签名验证失败")
            self.calls.append({"path": request.url.path, "headers": dict(request.headers),
                               "body": json.loads(body or b"{}")})
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.failures:
                status = self.failures.pop(0)
                return _answer(status, str(status * 100), "系统繁忙" if status >= 500 else "请求被拒绝")
            if self.garbage:
                return Response("<html>502 Bad Gateway</html>", status_code=200, media_type="text/html")
            return await call_next(request)

        @app.post(PREFIX + "/api/v1/banjian/progress")
        async def progress(request: Request) -> Response:
            item = self.applications.get(str((await request.json()).get("projid", "")))
            if item is None:
                return _answer(404, "40401", "办件不存在")
            return _answer(200, "0", "成功", item)

        @app.post(PREFIX + "/api/v1/banjian/progress/by-applicant")
        async def by_applicant(request: Request) -> Response:
            b = await request.json()
            numbers = self.applicants.get((str(b.get("mobile", "")), str(b.get("idCardLast4", ""))), [])
            return _answer(200, "0", "成功", {"items": [self.applications[n] for n in numbers],
                                             "total": len(numbers)})

        return app


@contextmanager
def serve(fake: FakeProvincialPlatform) -> Iterator[str]:
    """The fake on a free loopback port; yields the base URL to configure (with its path prefix)."""
    with serve_app(fake.app(), free_port()) as url:
        yield url + PREFIX


def down_url() -> str:
    """A base URL where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}{PREFIX}"
