"""The ``webchat`` channel: the citizens' web chat page (services/webchat.py) talks to Rasa here.

``POST /webhooks/webchat/webhook`` with ``Authorization: Bearer <session token>`` and
``{"message": text, "metadata": {"shown": button title, "acting_for": grant id}}`` answers
``{"messages": [...]}`` (Rasa's collected bot messages). ``GET /webhooks/webchat/history`` answers the
messages of the conversation's latest session, for a page that was reloaded or came back from a
payment page.

The token is the session the services API signed (textnorm/webtoken.py); the sender id comes from
it and never from the request body, so a browser can only speak in its own conversation. The page
server relays the token it holds in an HttpOnly cookie; this channel checks it again, so the Rasa
server trusts no one else's word for who is speaking. ``acting_for`` is passed on as it is: the
actions check it against the family-proxy grants (services/proxy.py) on every use.

Message text is never logged; a turn that fails gets the short apology of the rest channel.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.shared.core.events import BotUttered, SessionStarted, UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.rest import APOLOGY
from textnorm.webtoken import WebSession, session_key, verify

logger = logging.getLogger(__name__)

MAX_TEXT = 500
MAX_SHOWN = 40
HISTORY = 60  # messages of the latest session a reloaded page shows


class WebChatOutput(CollectingOutputChannel):
    """Collects the bot's messages under the output channel name ``webchat``."""

    @classmethod
    def name(cls) -> str:
        return "webchat"


def _metadata(given: Any) -> dict[str, Any] | None:
    """The metadata a page may send, checked; None when it is not acceptable."""
    if given is None:
        return {}
    if not isinstance(given, dict) or set(given) - {"shown", "acting_for"}:
        return None
    shown, acting_for = given.get("shown"), given.get("acting_for")
    if shown is not None and not (isinstance(shown, str) and 0 < len(shown) <= MAX_SHOWN):
        return None
    if acting_for is not None and not (isinstance(acting_for, int) and not isinstance(acting_for, bool)
                                       and 0 < acting_for < 2 ** 31):
        return None
    return {k: v for k, v in given.items() if v is not None}


def history_of(events: list[Any]) -> list[dict[str, Any]]:
    """What the citizen and the assistant said in the latest session: a button the citizen tapped is
    shown by its title, intents typed as ``/payload`` by nobody are left out."""
    start = max((i for i, e in enumerate(events) if isinstance(e, SessionStarted)), default=0)
    said: list[dict[str, Any]] = []
    for event in events[start:]:
        if isinstance(event, UserUttered):
            shown = (event.metadata or {}).get("shown")
            text = shown if isinstance(shown, str) else (event.text or "")
            if text and not text.startswith("/"):
                said.append({"from": "user", "text": text})
        elif isinstance(event, BotUttered):
            entry: dict[str, Any] = {"from": "bot", "text": event.text or ""}
            buttons = (event.data or {}).get("buttons")
            if buttons:
                entry["buttons"] = buttons
            if entry["text"] or buttons:
                said.append(entry)
    return said[-HISTORY:]


class WebChatInput(InputChannel):
    """Rasa input channel for the web chat page; one sender per signed-in browser identity."""

    @classmethod
    def name(cls) -> str:
        return "webchat"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> "WebChatInput":
        """``session_key`` is WEBCHAT_SESSION_KEY; empty, the key both sides derive from DATA_KEYS (which
        Rasa has: the tracker store seals with it). Neither: the webhook answers 503."""
        try:
            key = session_key(str((credentials or {}).get("session_key") or ""), os.environ.get("DATA_KEYS", ""))
        except ValueError:
            key = ""
        return cls(key)

    def __init__(self, session_key: str) -> None:
        self.key = session_key.encode()

    def session(self, request: Request) -> WebSession | None:
        header = request.headers.get("authorization", "")
        return verify(self.key, header[7:]) if header.lower().startswith("bearer ") else None

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("webchat_webhook", __name__)

        def signed_in(request: Request) -> WebSession | HTTPResponse:
            """The request's session, or the answer to a request without one."""
            if not self.key:
                return response.json({"error": "web chat not configured"}, status=503)
            who = self.session(request)
            return who if who is not None else response.json({"error": "sign in again"}, status=401)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok" if self.key else "not configured"})

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            who = signed_in(request)
            if isinstance(who, HTTPResponse):
                return who
            body = request.json if isinstance(request.json, dict) else None
            text = body.get("message") if body else None
            if not (isinstance(text, str) and text.strip() and len(text) <= MAX_TEXT):
                return response.json({"error": f"message must be 1-{MAX_TEXT} characters"}, status=400)
            metadata = _metadata(body.get("metadata") if body else None)
            if metadata is None:
                return response.json({"error": "metadata may hold only shown (a title) and acting_for (a number)"},
                                     status=400)
            collector = WebChatOutput()
            message = UserMessage(text.strip(), collector, who.sender_id, input_channel=self.name(),
                                  metadata={**metadata, "channel": self.name(), "web_source": who.source})
            try:
                await on_new_message(message)
            except Exception:  # noqa: BLE001 - logged without the citizen's words
                logger.exception("a web chat turn failed (sender %s)", who.sender_id)
            if not collector.messages:
                await collector.send_text_message(who.sender_id, APOLOGY)
            return response.json({"messages": collector.messages})

        @bp.route("/history", methods=["GET"])
        async def history(request: Request) -> HTTPResponse:
            who = signed_in(request)
            if isinstance(who, HTTPResponse):
                return who
            agent = getattr(request.app.ctx, "agent", None)
            if agent is None or agent.tracker_store is None:
                return response.json({"messages": []})
            store = getattr(agent.tracker_store, "_tracker_store", agent.tracker_store)  # inside Rasa's FailSafe wrapper
            latest = getattr(store, "latest_session", None)  # rasa_runtime's store: the latest session, off the loop
            try:
                tracker = await (latest(who.sender_id) if latest else agent.tracker_store.retrieve_full_tracker(who.sender_id))
            except Exception:  # noqa: BLE001 - a page without its history still works
                logger.exception("web chat: could not read the history of %s", who.sender_id)
                return response.json({"error": "history not available"}, status=503)
            return response.json({"messages": history_of(list(tracker.events)) if tracker else []})

        return bp
