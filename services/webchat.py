"""The web chat page (``/chat``) for the mini-program's web-view and the official account's menu.

Who the citizen is comes from WeChat, checked here on the server, never from the browser:

- official account: ``/chat`` opened in WeChat sends the browser to WeChat's web authorisation
  (snsapi_base: no prompt), which returns to ``/chat/oauth`` with a code; the code is exchanged with
  ``sns/oauth2/access_token`` for the openid;
- mini-program: the mini-program calls ``wx.login`` and posts the code to ``POST /chat/session``
  from its own code; the code is exchanged with ``sns/jscode2session``; the answer is an entry ticket
  (one use, one minute, signed with a key of its own) that goes on the web-view's URL as
  ``/chat/enter?ticket=...``, which turns it into a session in the cookie;
- elsewhere (a browser outside WeChat, or WeChat not configured), a guest session when
  ``WEBCHAT_GUESTS`` allows it. A guest can chat but never act for a family member.

The session is a token signed with ``WEBCHAT_SESSION_KEY`` (textnorm/webtoken.py) in an HttpOnly
cookie. The page's calls (``/chat/api/...``) carry a custom header, which a cross-site form cannot
send, and are relayed server-side: messages and history to the Rasa ``webchat`` channel with the token
(the channel checks it again), recordings to the voice gateway's ``POST /asr`` and answers to its
``POST /tts`` with the gateway's secret, which never reaches the browser. Family proxy (子女代办):
``/chat/api/family`` asks for, lists and ends the grants of services/proxy.py.

Everything the page needs is served from here (services/static/chat/): no CDN, no fonts from
elsewhere; it works on the city's own network."""
from __future__ import annotations

import base64
import datetime as dt
import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.container import Services
from services.proxy import RELATIONS
from services.settings import Settings
from textnorm.ids import is_valid_mobile
from textnorm.masking import mask
from textnorm.numerals import digits_only
from textnorm.webtoken import WebSession, issue, verify

CHINA = dt.timezone(dt.timedelta(hours=8))

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static" / "chat"
COOKIE = "heze_chat"
STATE_COOKIE = "heze_chat_state"
ELDER_COOKIE = "heze_elder"
HEADER = "x-heze-chat"  # every API call carries it: a cross-site form or image cannot
MAX_AUDIO = 1024 * 1024  # a held-to-talk recording of up to about a minute of Opus
MAX_MESSAGE = 500
MAX_TTS = 600
RATE_WINDOW_S, RATE_MAX = 60.0, 30  # messages per session per minute
GUESTS_PER_MINUTE = 120  # new guest sessions a process makes a minute (each costs Rasa a greeting)
SPEECH_AT_ONCE = 2  # recordings and read-alouds a process sends the gateway at once
ENTRY_TTL_S = 60  # the mini-program's entry ticket: once, within a minute
MAX_ID = 2 ** 31
SIGNED_OUT = "登录过期了，请点“重新进入”。"
PROXY_ENDED = "为家人代办已经结束或过期了。要继续，请重新申请。"

# The page carries its style and script inline (one round trip fewer on a slow mobile network: about 2 s
# on Chrome's "Slow 3G"); the policy admits exactly those two by their hashes, and nothing from elsewhere.
CSP = ("default-src 'self'; script-src {script}; style-src 'self' {style}; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'")
# What a family member is told for each outcome of a proxy request (services/proxy.py).
REQUEST_TOLD = {
    "sent": "验证码已用短信发到家人尾号{last4}的手机。请家人用那部手机拨打{hotline}，说“同意代办”，再按键输入验证码。",
    "opted_out": "这个号码退订了短信，发不了验证码。请家人拨打政务热线办理。",
    "rate_limited": "刚刚给这个号码发过短信，请过一会儿再试。",
    "failed": "短信暂时发不出去，请稍后再试。",
    "invalid_phone": "请填写家人的 11 位手机号。",
    "too_many": "今天申请的次数太多了，请明天再试。",
    "already_active": "您已经可以为这位家人办事了。",
}


class Relay:
    """The page server's outgoing calls: WeChat's code exchange, the Rasa channel, the voice gateway."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One client per upstream, so slow speech work never takes the connections messages need.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0), limits=httpx.Limits(max_connections=100))
        self.voice = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0), limits=httpx.Limits(max_connections=8))
        self.wechat = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=3.0), limits=httpx.Limits(max_connections=16))
        self.speaking = asyncio.Semaphore(SPEECH_AT_ONCE)
        self.rasa = f"http://{settings.rasa_host}:{settings.rasa_port}/webhooks/webchat"

    async def aclose(self) -> None:
        for client in (self.http, self.voice, self.wechat):
            await client.aclose()

    async def openid(self, source: str, code: str) -> str | None:
        """The openid WeChat gives for a code (``oa``: web OAuth; ``mp``: the mini-program's wx.login)."""
        s = self.settings
        if source == "oa":
            url, params = f"{s.wechat_api_base}/sns/oauth2/access_token", {
                "appid": s.wechat_appid, "secret": s.wechat_secret.get_secret_value(), "code": code,
                "grant_type": "authorization_code"}
        else:
            url, params = f"{s.miniprogram_api_base}/sns/jscode2session", {
                "appid": s.miniprogram_appid, "secret": s.miniprogram_secret.get_secret_value(), "js_code": code,
                "grant_type": "authorization_code"}
        try:
            resp = await self.wechat.get(url, params=params)
            body = resp.json()
        except (httpx.HTTPError, ValueError):
            log.warning("web chat: WeChat's %s code exchange failed", source)
            return None
        openid = body.get("openid") if isinstance(body, dict) else None
        if not isinstance(openid, str) or not openid:
            log.warning("web chat: WeChat refused a %s code (errcode %s)", source,
                        body.get("errcode") if isinstance(body, dict) else "?")
            return None
        return openid

    async def rasa_call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Response:
        try:
            resp = await self.http.request(method, f"{self.rasa}{path}", json=body,
                                           headers={"Authorization": f"Bearer {token}"})
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout) or method == "GET":
                return _error(502, "助手暂时连不上，您说的话没有发出去，请稍后再发一次。")
            # Rasa has the message and is still working on it: sending it again would do it twice.
            return _error(504, "助手回答得慢，请稍等一会儿，不用重发。", "slow")
        except httpx.HTTPError:
            return _error(502, "助手暂时连不上，您说的话没有发出去，请稍后再发一次。")
        if resp.status_code == 401:
            return _error(401, SIGNED_OUT, "signed_out")
        if resp.status_code >= 400:
            return _error(502, "助手暂时有点问题，您说的话没有发出去，请稍后再发一次。")
        return JSONResponse(resp.json())

    async def gateway(self, path: str, **kwargs: Any) -> httpx.Response | None:
        """The voice gateway, a few calls at a time per process (its speech worker is shared with the line)."""
        token = self.settings.voice_gateway_token.get_secret_value()
        async with self.speaking:
            try:
                return await self.voice.post(f"{self.settings.voice_gateway_url}{path}",
                                             headers={"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})},
                                             **kwargs)
            except httpx.HTTPError:
                return None


def _error(status: int, told: str, code: str = "") -> JSONResponse:
    """What the page shows the citizen (``error``), and for the page's script a ``code`` where it must act."""
    return JSONResponse({"error": told, **({"code": code} if code else {})}, status_code=status)


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object; {} for anything else (the callers then say what is missing)."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in ("chat.css", "chat.js"):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()[:10]


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class RateLimit:
    """At most ``most`` events per key in any ``window_s`` (per process; a sliding window)."""

    def __init__(self, most: int = RATE_MAX, window_s: float = RATE_WINDOW_S) -> None:
        self.most, self.window_s = most, window_s
        self.seen: dict[str, deque[float]] = {}
        self._swept = 0.0

    def allow(self, who: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        times = self.seen.setdefault(who, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.most:
            return False
        times.append(now)
        if now - self._swept > self.window_s:  # forget idle keys, at most once a window
            self._swept = now
            for key in [k for k, v in self.seen.items() if not v or v[-1] <= now - self.window_s]:
                del self.seen[key]
        return True


def webchat_router(settings: Settings, services: Services, relay: Relay) -> APIRouter:
    router = APIRouter()
    key = settings.webchat_key_text.encode()
    ttl = settings.webchat_session_hours * 3600
    secure = settings.public_base_url.startswith("https://")
    version = _asset_version()
    css, js = ((STATIC / name).read_text(encoding="utf-8") for name in ("chat.css", "chat.js"))
    template = (STATIC / "chat.html").read_text(encoding="utf-8").replace("{{css}}", css).replace("{{js}}", js)
    csp = CSP.format(script=_csp_hash(js), style=_csp_hash(css))
    limits = RateLimit()
    guests = RateLimit(GUESTS_PER_MINUTE)
    entry_key = hmac.new(key, b"mini-program entry ticket", hashlib.sha256).hexdigest().encode()  # not a session key
    entered: dict[str, float] = {}  # tickets used (per process), until they would have expired anyway
    assets = {name: (STATIC / name).read_bytes() for name in ("chat.css", "chat.js")}
    oa_ready = bool(settings.wechat_appid and settings.wechat_secret.get_secret_value())
    mp_ready = bool(settings.miniprogram_appid and settings.miniprogram_secret.get_secret_value())

    def session_of(request: Request) -> WebSession | None:
        return verify(key, request.cookies.get(COOKIE, ""))

    def with_session(resp: Response, token: str) -> Response:
        resp.set_cookie(COOKIE, token, max_age=ttl, httponly=True, samesite="lax", secure=secure, path="/chat")
        return resp

    def api_session(request: Request) -> WebSession | JSONResponse:
        if request.headers.get(HEADER) != "1":
            return _error(403, "请从对话页面操作。")
        who = session_of(request)
        return who if who is not None else _error(401, SIGNED_OUT, "signed_out")

    def page(token: str, who: WebSession, initial: list[dict[str, Any]], elder: bool) -> Response:
        data = json.dumps({"messages": initial, "verified": who.verified}, ensure_ascii=False)
        html = (template.replace("{{elder}}", " elder" if elder else "")
                .replace("{{pressed}}", "true" if elder else "false")
                .replace("{{initial}}", data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")))
        resp = HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store",
                                           "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"})
        return with_session(resp, token)  # renewed on every visit

    def notice(title: str, text: str, status: int) -> HTMLResponse:
        return HTMLResponse(f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" '
                            f'content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
                            f'<link rel="stylesheet" href="/chat/static/chat.css?v={version}"></head><body class="notice">'
                            f'<main><h1>{escape(title)}</h1><p>{escape(text)}</p></main></body></html>',
                            status_code=status, headers={"Content-Security-Policy": csp})

    async def opening(token: str) -> list[dict[str, Any]]:
        """The conversation so far, or the greeting for a new one: in the page itself, so the first
        message shows without another round trip (a slow mobile network pays for each)."""
        got = await relay.rasa_call("GET", "/history", token)
        said = json.loads(bytes(got.body)).get("messages") if got.status_code == 200 else None
        if said:
            return list(said)
        greeted = await relay.rasa_call("POST", "/webhook", token, {"message": "/greet"})
        if greeted.status_code != 200:
            return []  # the page says it is offline and offers to try again
        return [{"from": "bot", **m} for m in json.loads(bytes(greeted.body)).get("messages", [])]

    @router.get("/chat", response_class=HTMLResponse)
    async def chat(request: Request) -> Response:
        elder = request.cookies.get(ELDER_COOKIE) == "1"
        who = session_of(request)
        token = request.cookies.get(COOKIE, "")
        if who is not None and who.expires - time.time() < ttl / 2:  # a citizen who keeps coming stays signed in
            token = issue(key, who.subject, who.source, ttl)
        if who is None:
            agent = request.headers.get("user-agent", "").lower()
            if "miniprogram" in agent:  # the mini-program's web-view: its own login, never the account's OAuth
                return notice("请重新打开", "请关掉这个页面，在小程序里重新点“在线咨询”。", 401)
            if oa_ready and "micromessenger" in agent:
                state = secrets.token_urlsafe(16)
                query = urlencode({"appid": settings.wechat_appid,
                                   "redirect_uri": f"{settings.public_base_url.rstrip('/')}/chat/oauth",
                                   "response_type": "code", "scope": "snsapi_base", "state": state}, quote_via=quote)
                resp = RedirectResponse(f"{settings.wechat_oauth_base}/connect/oauth2/authorize?{query}#wechat_redirect",
                                        status_code=302)
                resp.set_cookie(STATE_COOKIE, state, max_age=600, httponly=True, samesite="lax", secure=secure,
                                path="/chat")
                return resp
            if not settings.webchat_guests:
                return notice("请在微信中打开", "请在微信里打开“菏泽政务”公众号或小程序，再点“在线咨询”。", 403)
            if not guests.allow("guests"):
                return notice("请稍后再打开", "现在打开的人太多，请过一会儿再试。", 503)
            token = issue(key, "guest:" + secrets.token_urlsafe(16), "guest", ttl)
            who = verify(key, token)
            assert who is not None
        return page(token, who, await opening(token), elder)

    @router.get("/chat/oauth")
    async def oauth_return(request: Request, code: str = "", state: str = "") -> Response:
        expected = request.cookies.get(STATE_COOKIE, "")
        if not (oa_ready and code and state and expected and secrets.compare_digest(state, expected)):
            return notice("登录没有完成", "请回到公众号，再点一次“在线咨询”。", 400)
        openid = await relay.openid("oa", code)
        if openid is None:
            return notice("登录没有完成", "微信暂时没有确认您的身份，请稍后再点一次“在线咨询”。", 502)
        token = issue(key, f"oa:{settings.wechat_appid}:{openid}", "oa", ttl)
        resp = with_session(RedirectResponse("/chat", status_code=303), token)
        resp.delete_cookie(STATE_COOKIE, path="/chat")
        return resp

    @router.post("/chat/session")
    async def mini_session(request: Request) -> JSONResponse:
        """The mini-program's server-side call: ``{"code": wx.login's code}`` -> ``{"token", "expires_in"}``."""
        if not mp_ready:
            return _error(503, "mini-program not configured")
        body = await _json_object(request)
        code = body.get("code")
        if not (isinstance(code, str) and 0 < len(code) <= 128):
            return _error(400, "code must be the code wx.login returned")
        openid = await relay.openid("mp", code)
        if openid is None:
            return _error(403, "WeChat did not accept the code")
        ticket = issue(entry_key, f"mp:{settings.miniprogram_appid}:{openid}", "mp", ENTRY_TTL_S)
        return JSONResponse({"ticket": ticket, "expires_in": ENTRY_TTL_S})

    @router.get("/chat/enter")
    async def enter(request: Request, ticket: str = "") -> Response:
        """The web-view's first address, ``/chat/enter?ticket=...``: a ticket that works once, for a
        minute, becomes a session of its own in the cookie (the URL, which logs keep, holds nothing that
        lasts). A browser already signed in as another WeChat user keeps its session."""
        now = time.time()
        for used in [t for t, until in entered.items() if until < now]:
            del entered[used]
        who = verify(entry_key, ticket)
        if who is None or ticket in entered:
            return notice("登录过期了", "请关掉这个页面，在小程序里重新打开“在线咨询”。", 401)
        entered[ticket] = who.expires
        current = session_of(request)
        if current is not None and current.verified and current.subject != who.subject:
            return notice("已经登录", "这个页面已经用另一个微信身份登录了。请关掉页面，在小程序里重新打开。", 409)
        return with_session(RedirectResponse("/chat", status_code=303), issue(key, who.subject, who.source, ttl))

    @router.get("/chat/static/{name}")
    async def asset(name: str) -> Response:
        kinds = {"chat.css": "text/css; charset=utf-8", "chat.js": "text/javascript; charset=utf-8"}
        if name not in kinds:
            return Response(status_code=404)
        return Response(assets[name], media_type=kinds[name],
                        headers={"Cache-Control": "public, max-age=604800, immutable"})

    @router.post("/chat/api/message")
    async def message(request: Request) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        body = await _json_object(request)
        text = body.get("message")
        if not (isinstance(text, str) and text.strip()):
            return _error(400, "请输入要说的话。")
        if len(text) > MAX_MESSAGE:
            return _error(413, f"一次最多说 {MAX_MESSAGE} 个字，请分几次发。")
        metadata: dict[str, Any] = {}
        shown, acting_for = body.get("shown"), body.get("acting_for")
        if isinstance(shown, str) and shown.strip():
            metadata["shown"] = shown.strip()[:40]
        if acting_for is not None:
            if not isinstance(acting_for, int) or isinstance(acting_for, bool) or not 0 < acting_for < MAX_ID:
                return _error(400, "acting_for must be a grant number")
            grant = await run_in_threadpool(services.proxies.check, acting_for, who.sender_id) if who.verified else None
            if grant is None:
                return _error(403, PROXY_ENDED, "proxy_ended")
            metadata["acting_for"] = acting_for
        if not limits.allow(who.subject):
            return _error(429, "您发得太快了，请歇一会儿再发。")
        return await relay.rasa_call("POST", "/webhook", request.cookies[COOKIE],
                                     {"message": text.strip(), "metadata": metadata})

    @router.get("/chat/api/history")
    async def history(request: Request) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        return await relay.rasa_call("GET", "/history", request.cookies[COOKIE])

    @router.post("/chat/api/asr")
    async def asr(request: Request) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        audio = bytearray()
        async for chunk in request.stream():
            audio += chunk
            if len(audio) > MAX_AUDIO:
                return _error(413, "这段话太长了，请分几次说，每次一分钟以内。")
        if len(audio) < 200:
            return _error(400, "没录到声音，请按住话筒按钮说话，说完再松开。")
        if not limits.allow(who.subject):
            return _error(429, "您发得太快了，请歇一会儿再发。")
        got = await relay.gateway("/asr", content=bytes(audio),
                                  headers={"Content-Type": request.headers.get("content-type", "application/octet-stream")})
        if got is None or got.status_code >= 500:
            return _error(503, "语音识别暂时用不了，请打字，或者稍后再说。")
        if got.status_code != 200:
            return _error(400, "这段录音听不出来，请再说一遍。")
        return JSONResponse({"text": str(got.json().get("text") or "")})

    @router.post("/chat/api/tts")
    async def tts(request: Request) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        body = await _json_object(request)
        text = body.get("text")
        if not (isinstance(text, str) and text.strip()) or len(text) > MAX_TTS:
            return _error(400, f"朗读的文字要在 1 到 {MAX_TTS} 个字之间。")
        got = await relay.gateway("/tts", json={"text": text, "slow": body.get("slow") is True})
        if got is None or got.status_code != 200:
            return _error(503, "朗读暂时用不了。")
        return Response(got.content, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    def grant_json(g: Any) -> dict[str, Any]:
        ends = g.expires_at.astimezone(CHINA) if g.expires_at else None
        return {"id": g.id, "relation": g.relation, "elder": mask(g.elder_phone), "status": g.status,
                "expires_on": f"{ends.year}年{ends.month}月{ends.day}日" if ends else None}

    @router.get("/chat/api/family")
    async def family(request: Request) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        if not who.verified:
            return JSONResponse({"verified": False, "grants": []})
        grants = await run_in_threadpool(services.proxies.of_family, who.sender_id)
        return JSONResponse({"verified": True, "grants": [grant_json(g) for g in grants]})

    @router.post("/chat/api/family")
    async def ask_family(request: Request) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        if not who.verified:
            return _error(403, "为家人代办要在微信里打开本页面。")
        body = await _json_object(request)
        phone = digits_only(str(body.get("phone") or ""))
        relation = body.get("relation")
        if relation not in RELATIONS:
            return _error(400, "请选择家人是您的什么人。")
        if not is_valid_mobile(phone):
            return _error(400, REQUEST_TOLD["invalid_phone"])
        outcome, grant = await run_in_threadpool(services.proxies.request, who.sender_id, phone, str(relation))
        status = 200 if outcome in ("sent", "already_active") else 400 if outcome == "invalid_phone" else 429 \
            if outcome in ("rate_limited", "too_many") else 409 if outcome == "opted_out" else 503
        told = REQUEST_TOLD[outcome].format(last4=phone[-4:], hotline=settings.hotline_number)
        return JSONResponse({"outcome": outcome, "told": told,
                             "grant": grant_json(grant) if grant else None}, status_code=status)

    @router.post("/chat/api/family/{grant_id}/end")
    async def end_family(request: Request, grant_id: int) -> Response:
        who = api_session(request)
        if isinstance(who, JSONResponse):
            return who
        if not (who.verified and 0 < grant_id < MAX_ID and await run_in_threadpool(services.proxies.end_by_family, who.sender_id, grant_id)):
            return _error(404, "没有这项代办，或者已经结束了。")
        return JSONResponse({"ended": grant_id})

    return router
