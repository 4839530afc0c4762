"""WeChat's server API as the channel uses it: the access token (cached, refreshed before expiry
and when WeChat says it expired) and customer-service messages, with bounded retries.

The base URL is configurable: production talks to https://api.weixin.qq.com, the tests to a local
server that speaks the same protocol."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, TypeVar

import aiohttp

logger = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_EXPIRED = {40001, 40014, 42001}
BUSY = {-1}
REFRESH_MARGIN_S = 300
RETRIES = 3
MAX_MEDIA_BYTES = 2 * 1024 * 1024  # a 60 s voice message is ~100 KB of AMR


class WeChatApiError(Exception):
    def __init__(self, errcode: int, message: str) -> None:
        super().__init__(f"WeChat API error {errcode}: {message}")
        self.errcode = errcode


class WeChatApi:
    def __init__(self, appid: str, secret: str, base_url: str = "https://api.weixin.qq.com",
                 clock: Callable[[], float] = time.time, backoff_s: float = 0.5, timeout_s: float = 10) -> None:
        self._appid = appid
        self._secret = secret
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._backoff = backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token: Optional[str] = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    async def _call(self, method: str, path: str, params: Dict[str, str], body: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, Any]:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            async with session.request(method, self._base + path, params=params, json=body) as resp:
                if resp.status >= 500:
                    raise WeChatApiError(-1, f"HTTP {resp.status}")
                data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise WeChatApiError(-1, "not a JSON object")
        errcode = int(data.get("errcode") or 0)
        if errcode:
            raise WeChatApiError(errcode, str(data.get("errmsg", "")))
        return data

    async def access_token(self, force: bool = False) -> str:
        async with self._token_lock:
            if force or not self._token or self._clock() >= self._token_until:
                data = await self._call("GET", "/cgi-bin/token", {
                    "grant_type": "client_credential", "appid": self._appid, "secret": self._secret})
                self._token = str(data["access_token"])
                self._token_until = self._clock() + int(data.get("expires_in", 7200)) - REFRESH_MARGIN_S
            return self._token

    async def _retrying(self, what: str, attempt: Callable[[str], Awaitable[T]]) -> Optional[T]:
        """``attempt(access_token)`` up to ``RETRIES`` times: a fresh token when WeChat says the old
        one expired, a back-off after network errors and WeChat's system-busy (-1). None when it
        cannot be done: WeChat refused it for good (45015 out of the 48-hour window, quota, a bad
        media id…) or it kept failing."""
        force = False
        for n in range(RETRIES):
            try:
                return await attempt(await self.access_token(force=force))
            except WeChatApiError as exc:
                if exc.errcode in TOKEN_EXPIRED:
                    force = True
                    continue
                if exc.errcode not in BUSY:
                    logger.warning("%s refused: errcode %s", what, exc.errcode)
                    return None
                logger.warning("%s attempt %d failed: %s", what, n + 1, exc)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                logger.warning("%s attempt %d failed: %s", what, n + 1, type(exc).__name__)
            await asyncio.sleep(self._backoff * (2 ** n))
        return None

    async def send_text(self, openid: str, text: str) -> bool:
        """One customer-service text message. True when WeChat took it; False when it cannot be
        sent (outside the 48-hour window, quota spent, or still failing after the retries)."""
        body = {"touser": openid, "msgtype": "text", "text": {"content": text}}

        async def send(token: str) -> bool:
            await self._call("POST", "/cgi-bin/message/custom/send", {"access_token": token}, body)
            return True

        return bool(await self._retrying("customer-service message", send))

    async def media(self, media_id: str) -> Optional[bytes]:
        """A temporary media file (a citizen's voice message) by its MediaId; None when WeChat
        refuses it or it cannot be fetched after the retries."""
        async def fetch(token: str) -> Optional[bytes]:
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                async with session.get(self._base + "/cgi-bin/media/get",
                                       params={"access_token": token, "media_id": media_id}) as resp:
                    if resp.status >= 500:
                        raise WeChatApiError(-1, f"HTTP {resp.status}")
                    data = await resp.content.read(MAX_MEDIA_BYTES + 1)
                    kind = resp.headers.get("Content-Type", "")
            if len(data) > MAX_MEDIA_BYTES:
                logger.warning("voice message over %d bytes not fetched", MAX_MEDIA_BYTES)
                return None
            if "json" in kind or "text/plain" in kind or data[:1] == b"{":
                err = json.loads(data)  # WeChat answers errors as JSON
                raise WeChatApiError(int(err.get("errcode") or -1), str(err.get("errmsg", "")))
            return data

        return await self._retrying("voice message fetch", fetch)
