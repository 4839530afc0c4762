"""WeChat input channels: the city's official account (``wechat``) and its mini-program's
customer-service chat (``miniprogram``), inside the Rasa server.

- Plain, compatible and safe (AES) modes; safe is the production default. Every request is checked
  (bounded fields, timestamp window, signature in constant time, appid) before its content is read;
  XML may not carry a DTD, JSON may not nest, neither may be in another encoding than UTF-8
  (``wechat_protocol``). Refusals get 400/403/413 and a log line with the reason only: no query
  values, no message, openids as a hash (``pseudonym``).
- A nonce seen before is a replay: refused, except a signed, byte-identical resend in safe mode of
  a message already taken, which gets that message's stored answer (WeChat's retry may reuse its
  query string; a reply lost on the way is recovered).
- What happens to a message (claim, deadline, passive reply or customer-service message, hand-off to
  WeChat's human service, retry of failed turns) is ``wechat_delivery``; this module turns requests
  into messages and answers into responses. Once-only claims are per (account, openid, MsgId).
- The reply deadline is 4.0 s after the request arrived. Behind the WeChat front (``channels.front``,
  a process whose loop is never busy with turns) the arrival is the front's clock (``X-Heze-Arrived``,
  trusted with the shared ``front_token``), and the front answers ``success`` itself at 4.5 s; a
  passive reply names its message (``X-Heze-Claim``) so that the front can have one that came too late
  sent as a customer-service message (``POST .../undelivered``). Without the front: the handler's start
  less the event loop's recent lag (``wechat_pace.LoopLag``).
- Message types are a registry (``MESSAGE_TYPES``) with a fallback for unknown ones, as wechatpy does.
- Buttons become numbered choices; a reply of the number sends the button's payload.
- Voice: WeChat's own ``Recognition`` when the account has it; otherwise the AMR file is fetched
  (``media/get``) and transcribed by the voice gateway (``POST /asr``: ffmpeg, then Vosk) inside
  the claimed turn, so WeChat's retries never transcribe twice.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Union

import aiohttp
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.shared.core.events import BotUttered, UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.front import ARRIVED, CLAIM, FRONT
from channels.wechat_api import WeChatApi
from channels.wechat_delivery import Answer, Delivery, Failed, Outcome
from channels.wechat_pace import LoopLag, TurnPace
from channels.wechat_protocol import (
    Envelope, ProtocolError, RequestGuard, open_message, pseudonym, split_text, text_reply, transfer_reply,
)
from channels.wechat_store import citizen_key, message_key, message_token, open_store

logger = logging.getLogger(__name__)

UNSUPPORTED = "目前我能看懂文字和语音消息。请用文字或语音告诉我您要办什么事。"
VOICE_UNCLEAR = "这条语音我没听清。请打字告诉我，或者再说一遍。"
MENU_UNKNOWN = "这个菜单暂时用不了。请直接告诉我您要办什么事。"
TRANSFER_AGAIN = "正在为您转接人工客服。刚才那条消息客服可能没收到，请把您的问题再发一次。"
PASSIVE_LIMIT_BYTES = 2000


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


@dataclass(frozen=True)
class Inbound:
    """A message as the channel acts on it: ``text`` for a Rasa turn, or ``immediate`` texts without
    one, or neither (an event with nothing to say). ``media_id``: a voice message to transcribe in
    the turn. ``citizen``: the citizen's own message, not an event (it goes to a human agent while
    the citizen is with one)."""
    text: Optional[str] = None
    immediate: Optional[List[str]] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    media_id: Optional[str] = None
    citizen: bool = True


Reader = Callable[["WeChatInput", Dict[str, str]], Awaitable[Inbound]]
MESSAGE_TYPES: Dict[str, Reader] = {}


def message_type(kind: str) -> Callable[[Reader], Reader]:
    def register(reader: Reader) -> Reader:
        MESSAGE_TYPES[kind] = reader
        return reader
    return register


@message_type("text")
async def _text(channel: "WeChatInput", msg: Dict[str, str]) -> Inbound:
    text = msg.get("Content", "").strip()
    if not text:
        return Inbound(immediate=[UNSUPPORTED])
    if re.fullmatch(r"[1-9]", text):
        choices = await asyncio.to_thread(channel.store.choices, citizen_key(channel.appid, msg["FromUserName"]))
        if 1 <= int(text) <= len(choices):
            return Inbound(choices[int(text) - 1], metadata={"choice": int(text)})
    return Inbound(text)


@message_type("voice")
async def _voice(channel: "WeChatInput", msg: Dict[str, str]) -> Inbound:
    recognised = msg.get("Recognition", "").strip()
    if recognised:
        return Inbound(recognised, metadata={"voice": True})
    if msg.get("MediaId") and channel.asr_url:  # transcribed inside the claimed turn
        return Inbound(metadata={"voice": True}, media_id=msg["MediaId"])
    return Inbound(immediate=[VOICE_UNCLEAR], metadata={"voice": True})


@message_type("location")
async def _location(channel: "WeChatInput", msg: Dict[str, str]) -> Inbound:
    label = msg.get("Label", "").strip()
    place = {"latitude": msg.get("Location_X"), "longitude": msg.get("Location_Y"), "label": label}
    return Inbound(label or f"位置：纬度{place['latitude']}，经度{place['longitude']}", metadata={"location": place})


@message_type("event")
async def _event(channel: "WeChatInput", msg: Dict[str, str]) -> Inbound:
    event = msg.get("Event", "").lower()
    if event == "subscribe":
        return Inbound("/greet", metadata={"event": "subscribe"}, citizen=False)
    if event == "click":
        payload = channel.menu.get(msg.get("EventKey", ""))
        if payload:
            return Inbound(payload, metadata={"event": "click"}, citizen=False)
        return Inbound(immediate=[MENU_UNKNOWN], citizen=False)
    if event == "kf_close_session":  # the agent closed the session: the citizen is the bot's again
        await asyncio.to_thread(channel.store.hand_back, channel.appid, msg["FromUserName"])
    return Inbound(citizen=False)  # unsubscribe, VIEW, user_enter_tempsession and others: nothing to say


async def _unknown(channel: "WeChatInput", msg: Dict[str, str]) -> Inbound:
    """Images, files, links, mini-program cards and any type WeChat adds later."""
    return Inbound(immediate=[UNSUPPORTED])


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
            asr_token=str(c.get("asr_token") or ""), kf_account=str(c.get("kf_account") or ""),
            human_s=float(c.get("human_s") or 1800), front_token=str(c.get("front_token") or ""),
        )

    def __init__(self, token: str, encoding_aes_key: str, appid: str, secret: str, mode: str = "safe",
                 api_base: str = "https://api.weixin.qq.com", claims: str = "var/wechat.db", deadline_s: float = 4.0,
                 menu: Optional[Dict[str, str]] = None, asr_url: str = "", retry_s: float = 60,
                 asr_token: str = "", kf_account: str = "", human_s: float = 1800, front_token: str = "") -> None:
        self.enabled = bool(token and appid)
        self.front_token = front_token  # the WeChat front's shared secret: its clock is trusted with it
        self.appid = appid
        self.asr_url = asr_url  # the voice gateway's POST /asr, for voice messages WeChat did not transcribe
        self.asr_token = asr_token  # its shared secret (VOICE_GATEWAY_TOKEN)
        self.mode = mode
        self.pace = TurnPace()
        self.lag = LoopLag()
        self.menu = {str(k): str(v) for k, v in (menu or {}).items()}
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
        self.store = open_store(claims, account=appid, channel=self.name())
        self._app: Any = None  # the Sanic app, once the server has started
        self.delivery = Delivery(self.store, appid, self.name(), self._send_all, passive=self.passive_replies,
                                 deadline_s=deadline_s, pace=self.pace, kf_account=kf_account, human_s=human_s,
                                 retry_s=retry_s)

    # -- requests -----------------------------------------------------------------------
    def _open(self, request: Request) -> Tuple[Dict[str, str], bool]:
        args = {k: request.args.get(k, "") for k in ("encrypt_type", "msg_signature", "signature", "timestamp", "nonce")}
        return open_message(args, request.body or b"", self.mode, self.guard, self.envelope)

    async def _read(self, msg: Dict[str, str]) -> Inbound:
        return await MESSAGE_TYPES.get(msg.get("MsgType", ""), _unknown)(self, msg)

    # -- replies ------------------------------------------------------------------------
    def _from_front(self, request: Request) -> bool:
        given = request.headers.get(FRONT, "")
        return bool(self.front_token and given) and hmac.compare_digest(given.encode(), self.front_token.encode())

    def _arrived(self, request: Request) -> float:
        """When the request arrived (``time.monotonic``): the front's clock when it sent the request,
        else the handler's start less the loop's recent lag."""
        if self._from_front(request):
            try:
                waited = time.time() - float(request.headers.get(ARRIVED, ""))
            except ValueError:
                waited = None
            if waited is not None and waited == waited:  # not NaN
                return time.monotonic() - min(max(waited, 0.0), 60.0)
        return time.monotonic() - self.lag.recent()

    def _respond(self, msg: Dict[str, str], answer: Answer, encrypted: bool, request: Request,
                 key: str = "") -> HTTPResponse:
        """The HTTP response for an answer: a passive reply or a transfer to the human service, in
        the request's format (XML, or JSON for a mini-program JSON push) and encryption, or ``success``.
        Behind the front a passive reply names its message (``CLAIM``): if it reaches the front too
        late for WeChat, the front asks for it again as a customer-service message (``undelivered``)."""
        openid, account = msg.get("FromUserName", ""), msg.get("ToUserName", "")
        as_json = (request.body or b"").lstrip()[:1] == b"{"
        if answer.kind == "transfer":
            content = transfer_reply(openid, account, answer.kf_account, as_json=as_json)
        elif answer.kind == "reply" and answer.texts:
            pieces = split_text("\n\n".join(answer.texts), PASSIVE_LIMIT_BYTES)
            if len(pieces) > 1 and answer.first:  # the rest once, not again with every retry or replay
                self.delivery.spawn(self._send_all(openid, pieces[1:]))
            content = text_reply(openid, account, pieces[0])
        else:
            return response.text("success")
        if encrypted and self.envelope is not None:
            nonce, now = request.args.get("nonce", ""), str(int(time.time()))
            content = (self.envelope.encrypt_json_reply(content, nonce, now) if as_json
                       else self.envelope.encrypt_reply(content, nonce, now))
        headers = {CLAIM: key} if key and answer.kind in ("reply", "transfer") and self._from_front(request) else None
        return response.text(content, content_type="application/json" if as_json else "application/xml",
                             headers=headers)

    async def _undelivered(self, key: str) -> bool:
        """What the response to ``key`` carried, as a customer-service message (the front cut it): the
        passive reply (only its first part: the rest of a long reply went out beside it), or for a
        transfer, which cannot be redone, a request to send the message again (the citizen is with the
        human service now, so it reaches the agent). Once per message, whichever worker is asked (a
        mark in the shared store); False when there is nothing to send."""
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != self.appid:
            return False
        claim = await asyncio.to_thread(self.store.peek, key)
        if claim is None or claim.reply is None or not (claim.reply.texts or claim.reply.transfer is not None):
            return False
        if (await asyncio.to_thread(self.store.claim, "resent/" + key)).state != "new":
            return False
        if claim.reply.transfer is not None:
            text = TRANSFER_AGAIN
        else:
            text = split_text("\n\n".join(claim.reply.texts), PASSIVE_LIMIT_BYTES)[0]
        self.delivery.spawn(self.delivery.send_texts(parts[1], [text]))
        return True

    async def _send_all(self, openid: str, texts: List[str]) -> bool:
        for text in texts:
            for piece in split_text(text, PASSIVE_LIMIT_BYTES):
                if not await self.api.send_text(openid, piece):
                    return False
        return True

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

    def _turn(self, on_new_message: Callable[[UserMessage], Awaitable[Any]], openid: str, inbound: Inbound,
              metadata: Dict[str, Any], key: str) -> Callable[[], Awaitable[Union[Outcome, Failed]]]:
        async def turn() -> Union[Outcome, Failed]:
            text, extra = inbound.text, metadata
            if inbound.media_id is not None:
                text = await self._transcribe(inbound.media_id)
                if not text:
                    return Outcome([VOICE_UNCLEAR])
                extra = {**metadata, "transcribed_by": "vosk"}
            assert text is not None
            return await self._run_turn(on_new_message, openid, text, extra, message_token(key))
        return turn

    async def _answered(self, openid: str, message_id: str) -> Optional[Outcome]:
        """What the bot said to the message ``message_id`` when a worker that died had already run
        its turn (the tracker has it), or None: a message taken over is answered once, not run twice."""
        agent = getattr(getattr(self._app, "ctx", None), "agent", None)
        if agent is None or agent.tracker_store is None:
            return None
        async with agent.lock_store.lock(openid):  # a turn of this citizen under way ends first
            tracker = await agent.tracker_store.retrieve_full_tracker(openid)
        events = list(tracker.events) if tracker is not None else []
        start = next((i for i, e in enumerate(events) if isinstance(e, UserUttered) and e.message_id == message_id), None)
        if start is None:
            return None
        said: List[Dict[str, Any]] = []
        for event in events[start + 1:]:
            if isinstance(event, UserUttered):
                break
            if isinstance(event, BotUttered):
                said.append({"text": event.text, **{k: v for k, v in (event.data or {}).items() if v is not None}})
        texts, _ = render(said)
        if not texts:
            return None  # the turn ran but said nothing (it failed): run it again
        return Outcome(texts, any(isinstance(m.get("custom"), dict) and m["custom"].get("handoff") for m in said))

    async def _run_turn(self, on_new_message: Callable[[UserMessage], Awaitable[Any]], openid: str, text: str,
                        metadata: Dict[str, Any], message_id: Optional[str] = None) -> Union[Outcome, Failed]:
        """The bot's answer to one message; ``Failed`` when no reply came out of the turn."""
        collector = CollectingOutputChannel()
        try:
            await on_new_message(UserMessage(text, collector, openid, input_channel=self.name(), metadata=metadata,
                                             message_id=message_id))
        except Exception:  # noqa: BLE001 - logged without the message text
            logger.exception("a %s turn failed (citizen %s)", self.name(), pseudonym(openid))
        texts, payloads = render(collector.messages)
        if texts or payloads:
            # Numbered choices answer only the question that offered them: a reply without choices
            # (the next question) clears the last ones, so "2" to "请说户号" is not "缴费" from a menu.
            try:
                await asyncio.to_thread(self.store.set_choices, citizen_key(self.appid, openid), payloads)
            except Exception:  # noqa: BLE001 - the answer still goes out; only its numbers are not kept
                logger.exception("numbered choices for %s not kept", pseudonym(openid))
        handoff = any(isinstance(m.get("custom"), dict) and m["custom"].get("handoff") for m in collector.messages)
        return Outcome(texts, handoff) if texts else Failed(text, metadata)

    # -- routes -------------------------------------------------------------------------
    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{self.name()}_webhook", __name__)
        if self.enabled:
            async def retry(openid: str, text: str, metadata: Dict[str, Any]) -> Union[Outcome, Failed]:
                message_id = metadata.pop("message_id", None)
                if message_id:
                    answered = await self._answered(openid, message_id)
                    if answered is not None:
                        return answered
                media_id = metadata.pop("media_id", None)
                if not text and media_id:  # a voice message taken over before it was transcribed
                    text = await self._transcribe(media_id) or ""
                    if not text:
                        return Outcome([VOICE_UNCLEAR])
                    metadata = {**metadata, "transcribed_by": "vosk"}
                return await self._run_turn(on_new_message, openid, text, metadata, message_id)
            self.delivery.retry_turn = retry

            async def resume(key: str, openid: str) -> Optional[Outcome]:
                return await self._answered(openid, message_token(key))
            self.delivery.resume = resume

            @bp.listener("after_server_start")
            async def resume_kept_messages(app: Any, *_: Any) -> None:
                self._app = app  # its ctx.agent: the tracker and lock stores (_answered)
                # Messages kept before a restart, and ones a worker held when it died, are answered too.
                self.delivery.start_retrying(forever=True)

        @bp.exception(Exception)
        async def failed(request: Request, exc: Exception) -> HTTPResponse:
            # Sanic's own handler would log the URL, whose query holds the citizen's openid.
            where = exc.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            place = f"{where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where else "?"
            logger.error("%s webhook failed: %s at %s", self.name(), type(exc).__name__, place)
            return response.text("internal error", status=500)

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

        @bp.route("/undelivered", methods=["POST"])
        async def undelivered(request: Request) -> HTTPResponse:
            """The front cut a passive reply (Rasa answered after 4.5 s): send it as a customer-service message."""
            if not self.enabled:
                return response.text("not configured", status=503)
            if not self._from_front(request):
                return response.text("forbidden", status=403)
            try:
                body = request.json
            except Exception:  # noqa: BLE001 - Sanic raises its own error for bad JSON
                body = None
            key = body.get("claim") if isinstance(body, dict) else None
            if not isinstance(key, str) or not 0 < len(key) <= 512:
                return response.text("claim missing", status=400)
            if not await self._undelivered(key):
                return response.json({"sent": False}, status=404)
            return response.json({"sent": True})

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            self.lag.start()
            started = self._arrived(request)
            if not self.enabled:
                return response.text("not configured", status=503)
            try:
                msg, encrypted = self._open(request)
            except ProtocolError as exc:
                logger.warning("%s request refused: %s", self.name(), exc.reason)
                return response.text(exc.reason, status=exc.status)
            openid = msg["FromUserName"]
            key = message_key(self.appid, msg)
            if not self.guard.fresh(request.args.get("nonce", "")):
                # A replay. Only in safe mode does the signature cover the message itself.
                answer = await self.delivery.replayed(key, openid, started) if encrypted else None
                if answer is None:
                    logger.warning("%s request refused: nonce replayed", self.name())
                    return response.text("nonce replayed", status=403)
                return self._respond(msg, answer, encrypted, request, key)
            inbound = await self._read(msg)
            if inbound.text is None and inbound.media_id is None and not inbound.immediate:
                return response.text("success")
            metadata = {"channel": self.name(), "msg_type": msg.get("MsgType", ""), **inbound.metadata}
            turn = (self._turn(on_new_message, openid, inbound, metadata, key)
                    if inbound.text is not None or inbound.media_id is not None else None)
            # Kept with the claim while it is answered (wechat_delivery): if this replica dies, another
            # answers it. A voice message is kept by its media id and transcribed again if need be.
            keep = {"sender": openid, "text": inbound.text or "", "message_id": message_token(key),
                    "metadata": {**metadata, **({"media_id": inbound.media_id} if inbound.media_id else {})}}
            answer = await self.delivery.deliver(key, openid, started, turn=turn, immediate=inbound.immediate,
                                                 transferable=inbound.citizen, keep=keep)
            return self._respond(msg, answer, encrypted, request, key)

        return bp


class MiniProgramInput(WeChatInput):
    """The mini-program's customer-service messages (XML or JSON push): ``/webhooks/miniprogram/webhook``.
    The mini-program takes no passive replies: every answer goes out as a customer-service message;
    the response carries only a transfer to the human service."""

    passive_replies = False

    @classmethod
    def name(cls) -> str:
        return "miniprogram"
