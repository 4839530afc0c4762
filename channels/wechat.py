"""WeChat input channels: the city's official account (``wechat``) and its mini-program's
customer-service chat (``miniprogram``), inside the Rasa server.

- Plain, compatible and safe (AES) modes; safe is the production default. Every request is checked
  (timestamp window, signature in constant time, nonce replay, appid) before its XML is parsed, and
  the XML may not carry a DTD. Refusals get 400/403/413 and a log line without the message.
- WeChat waits 5 s and delivers again up to three times. Each message is claimed once
  (``wechat_store``): only the first delivery starts a Rasa turn; a later one waits for that turn's
  reply or answers ``success``.
- A reply ready within ``deadline_s`` (4.0 s after the request arrived: the handler's start less the
  event loop's recent lag, ``wechat_pace.LoopLag``; the goal is no passive reply later than 4.5 s) is sent passively; otherwise WeChat gets ``success`` at
  once and the reply follows as customer-service messages (``wechat_api``). When the turns already
  under way say a new one cannot be answered in time (``wechat_pace``, under a burst), ``success``
  goes out at once instead of after the deadline. The mini-program has no passive replies: always
  ``success``, then customer-service messages.
- Buttons become numbered choices; a reply of the number sends the button's payload.
- Voice: WeChat's own ``Recognition`` when the account has it; otherwise the AMR file is fetched
  (``media/get``) and transcribed by the voice gateway (``POST /asr``: ffmpeg, then Vosk) inside
  the claimed turn, so WeChat's retries never transcribe twice.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import aiohttp
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.wechat_api import WeChatApi
from channels.wechat_pace import LoopLag, TurnPace
from channels.wechat_protocol import (
    MAX_BODY_BYTES, Envelope, ProtocolError, RequestGuard, parse_xml, split_text, text_reply,
)
from channels.wechat_store import Claim, RedisClaims, SqliteClaims, message_key

logger = logging.getLogger(__name__)

APOLOGY = "不好意思，系统暂时有点问题。您的消息已经记下了，好了以后马上回复您。"
UNSUPPORTED = "目前我能看懂文字和语音消息。请用文字或语音告诉我您要办什么事。"
VOICE_UNCLEAR = "这条语音我没听清。请打字告诉我，或者再说一遍。"
MENU_UNKNOWN = "这个菜单暂时用不了。请直接告诉我您要办什么事。"
PASSIVE_LIMIT_BYTES = 2000
POLL_S = 0.1


def render(messages: List[Dict[str, Any]]) -> Tuple[List[str], List[str]]:
    """Bot messages as texts for WeChat, and the payloads of the numbered choices they offer."""
    texts: List[str] = []
    payloads: List[str] = []
    for message in messages:
        text = str(message.get("text") or "").strip()
        buttons = [b for b in message.get("buttons") or [] if isinstance(b, dict) and b.get("payload")]
        if buttons:
            lines = []
            for n, button in enumerate(buttons, start=len(payloads) + 1):
                title = str(button.get("title") or "")
                # A title that begins with its own number ("1. …", or "5分 很满意" as choice 5) stays as it is.
                lines.append(title if re.match(rf"^{n}(?:[.、]|分)", title) else f"{n}. {title}")
                payloads.append(str(button["payload"]))
            if not all(line in text for line in lines):
                text = (text + "\n" if text else "") + "\n".join(lines) + "\n请回复数字选择。"
        if text:
            texts.append(text)
    return texts, payloads


class WeChatInput(InputChannel):
    """The official account's message endpoint: ``/webhooks/wechat/webhook``."""

    passive_replies = True

    @classmethod
    def name(cls) -> str:
        return "wechat"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> "InputChannel":
        c = credentials or {}
        return cls(
            token=str(c.get("token") or ""), encoding_aes_key=str(c.get("encoding_aes_key") or ""),
            appid=str(c.get("appid") or ""), secret=str(c.get("secret") or ""), mode=str(c.get("mode") or "safe"),
            api_base=str(c.get("api_base") or "https://api.weixin.qq.com"), claims=str(c.get("claims") or "var/wechat.db"),
            deadline_s=float(c.get("deadline_s") or 4.0), menu=dict(c.get("menu") or {}),
            asr_url=str(c.get("asr_url") or ""), retry_s=float(c.get("retry_s") or 60),
            asr_token=str(c.get("asr_token") or ""),
        )

    def __init__(self, token: str, encoding_aes_key: str, appid: str, secret: str, mode: str = "safe",
                 api_base: str = "https://api.weixin.qq.com", claims: str = "var/wechat.db", deadline_s: float = 4.0,
                 menu: Optional[Dict[str, str]] = None, asr_url: str = "", retry_s: float = 60,
                 asr_token: str = "") -> None:
        self.enabled = bool(token and appid)
        self.asr_url = asr_url  # the voice gateway's POST /asr, for voice messages WeChat did not transcribe
        self.asr_token = asr_token  # its shared secret (VOICE_GATEWAY_TOKEN)
        self.mode = mode
        self.deadline_s = deadline_s
        self.pace = TurnPace()
        self.lag = LoopLag()
        self.menu = {str(k): str(v) for k, v in (menu or {}).items()}
        self._tasks: set = set()
        self.retry_s = retry_s
        self._retrying = False
        if not self.enabled:
            logger.info("%s channel not configured (no token or appid): its webhook answers 503", self.name())
            return
        if mode not in ("safe", "compatible", "plain"):
            raise ValueError(f"{self.name()} mode must be safe, compatible or plain, not {mode!r}")
        if mode != "plain" and not encoding_aes_key:
            raise ValueError(f"{self.name()} mode {mode} needs the EncodingAESKey")
        self.guard = RequestGuard(token)
        self.envelope = Envelope(token, encoding_aes_key, appid) if encoding_aes_key else None
        self.api = WeChatApi(appid, secret, api_base)
        self.claims = RedisClaims(claims) if claims.startswith(("redis://", "rediss://")) else SqliteClaims(claims)

    # -- requests -----------------------------------------------------------------------
    def _open(self, request: Request) -> Tuple[Dict[str, str], bool]:
        """The message of a request, and whether it came encrypted. Raises ProtocolError."""
        body = request.body or b""
        if len(body) > MAX_BODY_BYTES:
            raise ProtocolError(413, "body over 64 KB")
        args = request.args
        outer = self._parse(body)
        encrypted = args.get("encrypt_type") == "aes" or ("Encrypt" in outer and self.mode == "safe")
        if encrypted:
            if self.envelope is None or not outer.get("Encrypt"):
                raise ProtocolError(400, "encrypted message without ciphertext or key")
            self.guard.check(args.get("msg_signature", ""), args.get("timestamp", ""), args.get("nonce", ""),
                             outer["Encrypt"])
            return self._parse(self.envelope.decrypt(outer["Encrypt"]).encode("utf-8")), True
        if self.mode == "safe":
            raise ProtocolError(400, "plain message in safe mode")
        self.guard.check(args.get("signature", ""), args.get("timestamp", ""), args.get("nonce", ""))
        return outer, False

    @staticmethod
    def _parse(body: bytes) -> Dict[str, str]:
        if body.lstrip()[:1] == b"{":  # the mini-program's JSON push
            try:
                data = json.loads(body)
            except ValueError:
                raise ProtocolError(400, "malformed JSON") from None
            if not isinstance(data, dict):
                raise ProtocolError(400, "JSON is not an object")
            return {str(k): "" if v is None else str(v) for k, v in data.items()}
        return parse_xml(body)

    async def _store(self, method: Callable[..., Any], *args: Any) -> Any:
        """A call to the claims store, off the event loop (SQLite may wait on a lock; Redis on the network)."""
        return await asyncio.to_thread(method, *args)

    async def _text_of(self, msg: Dict[str, str]) -> Tuple[Optional[str], Optional[str], Dict[str, Any]]:
        """(text for Rasa, or None; an immediate reply without a turn, or None; extra metadata)."""
        kind = msg.get("MsgType", "")
        sender = msg.get("FromUserName", "")
        if kind == "text":
            text = msg.get("Content", "").strip()
            choices = await self._store(self.claims.choices, sender) if re.fullmatch(r"\s*[1-9]\s*", text or "") else []
            if choices and 1 <= int(text) <= len(choices):
                return choices[int(text) - 1], None, {"choice": int(text)}
            return (text or None), (None if text else UNSUPPORTED), {}
        if kind == "voice":
            recognised = msg.get("Recognition", "").strip()
            if recognised:
                return recognised, None, {"voice": True}
            if msg.get("MediaId") and self.asr_url:  # transcribed inside the claimed turn
                return None, None, {"voice": True, "media_id": msg["MediaId"]}
            return None, VOICE_UNCLEAR, {"voice": True}
        if kind == "location":
            label = msg.get("Label", "").strip()
            place = {"latitude": msg.get("Location_X"), "longitude": msg.get("Location_Y"), "label": label}
            return (label or f"位置：纬度{place['latitude']}，经度{place['longitude']}"), None, {"location": place}
        if kind == "event":
            event = msg.get("Event", "").lower()
            if event == "subscribe":
                return "/greet", None, {"event": "subscribe"}
            if event == "click":
                payload = self.menu.get(msg.get("EventKey", ""))
                return (payload, None, {"event": "click"}) if payload else (None, MENU_UNKNOWN, {})
            return None, None, {}  # unsubscribe, VIEW and others: nothing to say
        return None, UNSUPPORTED, {}

    # -- replies ------------------------------------------------------------------------
    def _reply(self, msg: Dict[str, str], texts: List[str], encrypted: bool, request: Request) -> HTTPResponse:
        """A passive reply when there is something to say and this channel may, else ``success``."""
        if not texts or not self.passive_replies:
            return response.text("success")
        pieces = split_text("\n\n".join(texts), PASSIVE_LIMIT_BYTES)
        if len(pieces) > 1:
            self._spawn(self._send_all(msg.get("FromUserName", ""), pieces[1:]))
        xml = text_reply(msg.get("FromUserName", ""), msg.get("ToUserName", ""), pieces[0])
        if encrypted and self.envelope is not None:
            xml = self.envelope.encrypt_reply(xml, request.args.get("nonce", ""), str(int(time.time())))
        return response.text(xml, content_type="application/xml")

    async def _send_all(self, openid: str, texts: List[str]) -> None:
        for text in texts:
            for piece in split_text(text, PASSIVE_LIMIT_BYTES):
                if not await self.api.send_text(openid, piece):
                    logger.warning("a reply to %s could not be delivered", openid)
                    return

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(self, media_id: str) -> Optional[str]:
        """A voice message through the voice gateway's Vosk (``POST /asr``; ffmpeg decodes the AMR)."""
        audio = await self.api.media(media_id)
        if not audio:
            return None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                headers = {"Content-Type": "audio/amr", "Authorization": f"Bearer {self.asr_token}"}
                async with session.post(self.asr_url, data=audio, headers=headers) as resp:
                    if resp.status != 200:
                        logger.warning("voice gateway could not transcribe a voice message: HTTP %s", resp.status)
                        return None
                    result = await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            logger.warning("voice gateway not reachable for a voice message: %s", type(exc).__name__)
            return None
        text = str(result.get("text") or "").strip() if isinstance(result, dict) else ""
        return text or None

    async def _turn(self, on_new_message: Callable[[UserMessage], Awaitable[Any]], key: str, sender: str,
                    text: Optional[str], metadata: Dict[str, Any], media_id: Optional[str] = None) -> List[str]:
        if media_id is not None:
            text = await self._transcribe(media_id)
            if not text:
                return [VOICE_UNCLEAR]
            metadata = {**metadata, "transcribed_by": "vosk"}
        assert text is not None
        self.pace.started()
        try:
            texts = await self._run_turn(on_new_message, sender, text, metadata)
        finally:
            self.pace.finished()
        if texts is None:  # the services are down: keep the message, answer it when they are back
            await self._store(self.claims.keep_failed, key,
                              {"sender": sender, "text": text, "metadata": metadata})
            self._start_retrying(on_new_message)
            return [APOLOGY]
        return texts

    async def _run_turn(self, on_new_message: Callable[[UserMessage], Awaitable[Any]], sender: str, text: str,
                        metadata: Dict[str, Any]) -> Optional[List[str]]:
        """The bot's texts for one message; None when the turn failed (no reply came out of it)."""
        collector = CollectingOutputChannel()
        try:
            await on_new_message(UserMessage(text, collector, sender, input_channel=self.name(), metadata=metadata))
        except Exception:  # noqa: BLE001 - logged without the message text
            logger.exception("a %s turn failed (sender %s)", self.name(), sender)
        texts, payloads = render(collector.messages)
        if texts or payloads:
            # Numbered choices answer only the question that offered them: a reply without choices
            # (the next question) clears the last ones, so "2" to "请说户号" is not "缴费" from a menu.
            await self._store(self.claims.set_choices, sender, payloads)
        return texts or None

    def _start_retrying(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        if not self._retrying:
            self._retrying = True
            self._spawn(self._retry_failed(on_new_message))

    async def _retry_failed(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        """Every ``retry_s``: run the kept messages again; an answer goes out as a customer-service
        message (the citizen was told to wait). With several Rasa workers, one claims each round."""
        while True:
            await asyncio.sleep(self.retry_s)
            waiting = await self._store(self.claims.failed)
            if not waiting:
                self._retrying = False
                return
            for key, turn in waiting:
                round_key = f"retry:{key}:{int(time.time() // self.retry_s)}"
                if (await self._store(self.claims.claim, round_key)).state != "new":
                    continue
                texts = await self._run_turn(on_new_message, turn["sender"], turn["text"],
                                             {**turn.get("metadata", {}), "retry_of": key})
                if texts is None:
                    break  # still down: try again next round
                await self._store(self.claims.drop_failed, key)
                await self._send_all(turn["sender"], ["\n\n".join(texts)])

    async def _wait_for_reply(self, key: str, until: float) -> Claim:
        claim = await self._store(self.claims.claim, key)
        while claim.state == "pending" and time.monotonic() < until:
            await asyncio.sleep(POLL_S)
            claim = await self._store(self.claims.claim, key)
        return claim

    # -- routes -------------------------------------------------------------------------
    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{self.name()}_webhook", __name__)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok" if self.enabled else "not configured"})

        @bp.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            if not self.enabled:
                return response.text("not configured", status=503)
            try:
                self.guard.check(request.args.get("signature", ""), request.args.get("timestamp", ""),
                                 request.args.get("nonce", ""))
            except ProtocolError as exc:
                logger.warning("%s URL verification refused: %s", self.name(), exc.reason)
                return response.text(exc.reason, status=exc.status)
            return response.text(request.args.get("echostr", ""))

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            self.lag.start()
            started = time.monotonic() - self.lag.recent()  # about when the request arrived
            if not self.enabled:
                return response.text("not configured", status=503)
            try:
                msg, encrypted = self._open(request)
            except ProtocolError as exc:
                logger.warning("%s request refused: %s", self.name(), exc.reason)
                return response.text(exc.reason, status=exc.status)
            sender = msg.get("FromUserName", "")
            if not sender:
                return response.text("no sender", status=400)
            text, immediate, extra = await self._text_of(msg)
            media_id = extra.pop("media_id", None)
            if text is None and media_id is None:
                return self._reply(msg, [immediate] if immediate else [], encrypted, request)
            key = message_key(msg)
            claim = await self._store(self.claims.claim, key)
            if claim.state != "new":  # a repeated delivery: never a second turn
                claim = await self._wait_for_reply(key, started + self.deadline_s)
                return self._reply(msg, claim.reply or [], encrypted, request)
            metadata = {"channel": self.name(), "msg_type": msg.get("MsgType", ""), **extra}
            # Judged before this turn joins the queue: could its reply still make the deadline?
            late = time.monotonic() - started + self.pace.expected_wait() > self.deadline_s
            turn = asyncio.ensure_future(self._turn(on_new_message, key, sender, text, metadata, media_id))
            if self.passive_replies and not late:
                try:
                    texts = await asyncio.wait_for(asyncio.shield(turn), timeout=max(0.0, started + self.deadline_s
                                                                                    - time.monotonic()))
                    await self._store(self.claims.finish, key, texts)
                    return self._reply(msg, texts, encrypted, request)
                except asyncio.TimeoutError:
                    pass
            # Too slow for a passive reply, or the queue says it would be (or no passive replies here):
            # success now, the reply later.
            await self._store(self.claims.finish, key, [])

            async def deliver_later() -> None:
                await self._send_all(sender, ["\n\n".join(await turn)])  # one message, as a passive reply would be

            self._spawn(deliver_later())
            return response.text("success")

        return bp


class MiniProgramInput(WeChatInput):
    """The mini-program's customer-service messages (XML or JSON push): ``/webhooks/miniprogram/webhook``.
    The mini-program takes no passive replies: every answer goes out as a customer-service message."""

    passive_replies = False

    @classmethod
    def name(cls) -> str:
        return "miniprogram"
