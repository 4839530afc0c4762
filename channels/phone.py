"""The ``phone`` channel: how the voice gateway (voice/) hands a caller's words to Rasa.

``POST /webhooks/phone/webhook`` with ``Authorization: Bearer <token>`` and
``{"sender": call id, "message": text, "metadata": {"caller": ..., "asr_confidence": ...}}``
answers ``{"messages": [...], "expect": "digits" | null}``. ``messages`` are Rasa's collected
bot messages (text, buttons, custom payloads such as ``{"handoff": ...}``); ``expect`` tells the
gateway that the next answer is a number (the form asks for one of ``digit_slots``), so it can
limit the recogniser to digits and take keypad digits as the answer.

The output channel is named ``phone``, so responses with a ``channel: phone`` variant (short
sentences, keys said aloud) are chosen for callers. A turn that fails gets a short apology, as
on the rest channel; the caller's words stay in the tracker. Message text is never logged.
When a call ends the gateway sends ``/restart`` with ``{"call_ended": reason}`` in the metadata:
Rasa's default restart rule ends any active form, and the tracker shows where the call ended.
"""
from __future__ import annotations

import hmac
import logging
from typing import Any, Awaitable, Callable, Iterable

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.rest import APOLOGY

logger = logging.getLogger(__name__)

MAX_TEXT = 1000
MAX_SENDER = 64
DEFAULT_DIGIT_SLOTS = ("application_number", "lookup_phone", "id_last4", "bill_account", "ticket_number", "proxy_code")


class PhoneOutput(CollectingOutputChannel):
    """Collects the bot's messages under the output channel name ``phone``."""

    @classmethod
    def name(cls) -> str:
        return "phone"


class PhoneInput(InputChannel):
    """Rasa input channel for the voice gateway; one sender per call."""

    @classmethod
    def name(cls) -> str:
        return "phone"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> "PhoneInput":
        credentials = credentials or {}
        slots = credentials.get("digit_slots") or DEFAULT_DIGIT_SLOTS
        return cls(str(credentials.get("token") or ""), slots)

    def __init__(self, token: str, digit_slots: Iterable[str] = DEFAULT_DIGIT_SLOTS) -> None:
        self.token = token
        self.digit_slots = frozenset(digit_slots)

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def _expectation(self, request: Request, sender: str) -> str | None:
        agent = getattr(request.app.ctx, "agent", None)
        if agent is None or agent.tracker_store is None:
            return None
        store = getattr(agent.tracker_store, "_tracker_store", agent.tracker_store)  # inside Rasa's FailSafe wrapper
        peek = getattr(store, "peek", None)  # rasa_runtime's store: read the kept tracker, leave it in place
        tracker = (peek(sender) if peek else None) or await agent.tracker_store.retrieve(sender)
        if tracker is None:
            return None
        slot = tracker.get_slot("requested_slot")
        return "digits" if slot in self.digit_slots else None

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("phone_webhook", __name__)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok" if self.token else "not configured"})

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if not self.token:
                return response.json({"error": "phone channel not configured"}, status=503)
            if not self._authorised(request):
                logger.warning("phone webhook: request without a valid token refused")
                return response.json({"error": "unauthorised"}, status=401)
            body = request.json if isinstance(request.json, dict) else None
            sender = body.get("sender") if body else None
            text = body.get("message") if body else None
            metadata = body.get("metadata") if body else None
            if not (isinstance(sender, str) and 0 < len(sender) <= MAX_SENDER):
                return response.json({"error": "sender must be a call id"}, status=400)
            if not (isinstance(text, str) and 0 < len(text) <= MAX_TEXT):
                return response.json({"error": f"message must be 1-{MAX_TEXT} characters"}, status=400)
            if metadata is not None and not isinstance(metadata, dict):
                return response.json({"error": "metadata must be an object"}, status=400)
            collector = PhoneOutput()
            message = UserMessage(text, collector, sender, input_channel=self.name(),
                                  metadata={**(metadata or {}), "channel": self.name()})
            try:
                await on_new_message(message)
            except Exception:  # noqa: BLE001 - logged without the caller's words
                logger.exception("a phone turn failed (call %s)", sender)
            if (metadata or {}).get("call_ended"):  # the gateway closing the conversation: nobody listens
                return response.json({"messages": [], "expect": None})
            if not collector.messages:
                await collector.send_text_message(sender, APOLOGY)
            try:
                expect = await self._expectation(request, sender)
            except Exception:  # noqa: BLE001 - the answer matters more than the hint
                logger.exception("phone webhook: could not read the tracker of call %s", sender)
                expect = None
            return response.json({"messages": collector.messages, "expect": expect})

        return bp
