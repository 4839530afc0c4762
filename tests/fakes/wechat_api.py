"""A local stand-in for WeChat's servers, speaking their HTTP protocol: the access-token endpoint
customer-service messages and fetching a voice message's media file; the web authorisation of the
official account (``/connect/oauth2/authorize`` redirects at once, as snsapi_base does inside WeChat,
then ``/sns/oauth2/access_token``) and the mini-program's ``/sns/jscode2session`` for wx.login codes
(each code works once, for five minutes), and subscribe messages (订阅通知), refused with 43101 to a user
who did not accept the template. It also plays WeChat's side of a webhook call: signs, encrypts and
delivers messages to the channel, as WeChat does."""
from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from channels.wechat_protocol import Envelope, signature


@dataclass
class FakeWeChat:
    appid: str
    secret: str
    sent: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0
    # errcodes to answer the next customer-service calls with, in order (then success)
    send_errors: list[int] = field(default_factory=list)
    expired_tokens: set[str] = field(default_factory=set)
    media: dict[str, bytes] = field(default_factory=dict)  # MediaId -> the uploaded voice file
    media_fetches: int = 0
    # Subscribe messages (订阅通知 / 小程序订阅消息) taken; openids that accepted the template (None: all).
    subscribe_sent: list[dict[str, Any]] = field(default_factory=list)
    accepted: set[str] | None = None
    # The WeChat user whose in-app browser opens pages (the authorize page answers for them).
    signed_in: str = ""
    codes: dict[str, tuple[str, float]] = field(default_factory=dict)  # code -> (openid, issued)

    def login_code(self, openid: str) -> str:
        """A code for ``openid``, as the authorize page or wx.login hands one out."""
        code = secrets.token_urlsafe(24)
        self.codes[code] = (openid, time.time())
        return code

    def _redeem(self, appid: str, secret: str, code: str) -> dict[str, Any] | str:
        if appid != self.appid or secret != self.secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        openid, issued = self.codes.pop(code, ("", 0.0))
        if not openid or time.time() - issued > 300:
            return {"errcode": 40029, "errmsg": "invalid code"}
        return openid

    def app(self) -> FastAPI:
        app = FastAPI()

        async def subscribe(request: Request, access_token: str) -> dict[str, Any]:
            if not access_token.startswith("token-") or access_token in self.expired_tokens:
                return {"errcode": 40001, "errmsg": "invalid credential"}
            body = await request.json()
            if not isinstance(body, dict) or not body.get("touser") or not body.get("template_id") \
                    or not isinstance(body.get("data"), dict):
                return {"errcode": 47003, "errmsg": "argument invalid"}
            if self.accepted is not None and body["touser"] not in self.accepted:
                return {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
            self.subscribe_sent.append(body)
            return {"errcode": 0, "errmsg": "ok", "msgid": 1000 + len(self.subscribe_sent)}

        @app.post("/cgi-bin/message/subscribe/bizsend")  # the official account's 订阅通知
        async def bizsend(request: Request, access_token: str = "") -> dict[str, Any]:
            return await subscribe(request, access_token)

        @app.post("/cgi-bin/message/subscribe/send")  # the mini-program's subscribe message
        async def mini_send(request: Request, access_token: str = "") -> dict[str, Any]:
            return await subscribe(request, access_token)

        @app.get("/connect/oauth2/authorize", response_model=None)
        def authorize(appid: str = "", redirect_uri: str = "", response_type: str = "", scope: str = "",
                      state: str = "") -> Response:
            if appid != self.appid or response_type != "code" or scope not in ("snsapi_base", "snsapi_userinfo"):
                return Response("参数错误", status_code=400)
            if not self.signed_in:
                return Response("请在微信客户端打开链接", status_code=403)
            sep = "&" if "?" in redirect_uri else "?"
            return Response(status_code=302, headers={
                "Location": f"{redirect_uri}{sep}code={self.login_code(self.signed_in)}&state={state}"})

        @app.get("/sns/oauth2/access_token")
        def oauth_token(appid: str = "", secret: str = "", code: str = "", grant_type: str = "") -> dict[str, Any]:
            if grant_type != "authorization_code":
                return {"errcode": 40002, "errmsg": "invalid grant_type"}
            got = self._redeem(appid, secret, code)
            if isinstance(got, dict):
                return got
            return {"access_token": "web-" + secrets.token_hex(8), "expires_in": 7200,
                    "refresh_token": "r-" + secrets.token_hex(8), "openid": got, "scope": "snsapi_base"}

        @app.get("/sns/jscode2session")
        def jscode2session(appid: str = "", secret: str = "", js_code: str = "", grant_type: str = "") -> dict[str, Any]:
            if grant_type != "authorization_code":
                return {"errcode": 40002, "errmsg": "invalid grant_type"}
            got = self._redeem(appid, secret, js_code)
            if isinstance(got, dict):
                return got
            return {"openid": got, "session_key": secrets.token_urlsafe(16)}

        @app.get("/cgi-bin/token")
        def token(grant_type: str = "", appid: str = "", secret: str = "") -> dict[str, Any]:
            if grant_type != "client_credential" or appid != self.appid or secret != self.secret:
                return {"errcode": 40013, "errmsg": "invalid appid"}
            self.tokens_issued += 1
            return {"access_token": f"token-{self.tokens_issued}-{secrets.token_hex(4)}", "expires_in": 7200}

        @app.post("/cgi-bin/message/custom/send")
        async def send(request: Request, access_token: str = "") -> dict[str, Any]:
            if not access_token.startswith("token-") or access_token in self.expired_tokens:
                return {"errcode": 40001, "errmsg": "invalid credential"}
            if self.send_errors:
                code = self.send_errors.pop(0)
                if code == 40001:
                    self.expired_tokens.add(access_token)
                return {"errcode": code, "errmsg": "injected"}
            body = await request.json()
            self.sent.append(body)
            return {"errcode": 0, "errmsg": "ok"}

        @app.get("/cgi-bin/media/get", response_model=None)
        def media(access_token: str = "", media_id: str = "") -> Response | dict[str, Any]:
            if not access_token.startswith("token-") or access_token in self.expired_tokens:
                return {"errcode": 40001, "errmsg": "invalid credential"}
            if media_id not in self.media:
                return {"errcode": 40007, "errmsg": "invalid media_id"}
            self.media_fetches += 1
            return Response(self.media[media_id], media_type="audio/amr",
                            headers={"Content-disposition": f'attachment; filename="{media_id}.amr"'})

        return app

    def texts_to(self, openid: str) -> list[str]:
        return [m["text"]["content"] for m in self.sent if m.get("touser") == openid]


@contextmanager
def serve(fake: FakeWeChat, port: int) -> Iterator[str]:
    with serve_app(fake.app(), port) as url:
        yield url


@contextmanager
def serve_app(app: FastAPI, port: int) -> Iterator[str]:
    """Any ASGI app on a real local port, in a thread, for the duration of the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@dataclass
class Account:
    """The official account's secrets, as WeChat knows them, to sign and encrypt deliveries."""
    token: str
    aes_key: str
    appid: str
    openid_prefix: str = "o"

    def text_xml(self, openid: str, text: str, msg_id: int, create_time: int | None = None) -> str:
        return (f"<xml><ToUserName><![CDATA[gh_heze]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
                f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>")

    def event_xml(self, openid: str, event: str, key: str = "", create_time: int | None = None) -> str:
        return (f"<xml><ToUserName><![CDATA[gh_heze]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
                f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
                f"<Event><![CDATA[{event}]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>")

    def sealed(self, inner_xml: str, timestamp: int | None = None, nonce: str | None = None) -> tuple[dict[str, str], bytes]:
        """Query parameters and body of a safe-mode delivery."""
        ts = str(timestamp or int(time.time()))
        nonce = nonce or secrets.token_hex(8)
        envelope = Envelope(self.token, self.aes_key, self.appid)
        wrapped = envelope.encrypt_reply(inner_xml, nonce, ts)  # the same envelope both ways
        from channels.wechat_protocol import parse_xml
        encrypt = parse_xml(wrapped.encode())["Encrypt"]
        body = f"<xml><ToUserName><![CDATA[gh_heze]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        params = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce,
                  "openid": re.search(r"<FromUserName><!\[CDATA\[([^\]]*)\]\]>", inner_xml).group(1)  # type: ignore[union-attr]
                  if "<FromUserName><![CDATA[" in inner_xml else "",
                  "encrypt_type": "aes", "msg_signature": signature(self.token, ts, nonce, encrypt)}
        return params, body.encode()

    def sealed_json(self, fields: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """A mini-program customer-service push in JSON, safe mode."""
        import json

        ts, nonce = str(int(time.time())), secrets.token_hex(8)
        from channels.wechat_protocol import parse_xml
        wrapped = Envelope(self.token, self.aes_key, self.appid).encrypt_reply(json.dumps(fields, ensure_ascii=False),
                                                                              nonce, ts)
        encrypt = parse_xml(wrapped.encode())["Encrypt"]
        params = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce,
                  "encrypt_type": "aes", "msg_signature": signature(self.token, ts, nonce, encrypt)}
        return params, json.dumps({"ToUserName": "gh_mini", "Encrypt": encrypt}).encode()

    def open_reply_raw(self, body: str) -> str:
        """The decrypted response as the channel wrote it."""
        from channels.wechat_protocol import parse_body
        return Envelope(self.token, self.aes_key, self.appid).decrypt(parse_body(body.encode())["Encrypt"])

    def open_reply(self, body: str) -> dict[str, str]:
        """The channel's encrypted response (a passive reply or a transfer), in XML or JSON."""
        from channels.wechat_protocol import parse_body
        outer = parse_body(body.encode())
        return parse_body(Envelope(self.token, self.aes_key, self.appid).decrypt(outer["Encrypt"]).encode())
