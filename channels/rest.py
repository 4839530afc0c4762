"""The ``rest`` channel, guarded: a citizen never gets silence, and no message text is logged.

Rasa's own rest channel answers ``[]`` when a turn fails (for example when the action server is
down: Rasa logs the error and drops the action's events) and logs the message text on failure,
which can hold phone and ID-card numbers. This subclass keeps Rasa's route and behaviour
(``POST /webhooks/rest/webhook``, input channel ``rest``) and adds a short apology when a turn
produced no reply. The citizen's message is still stored in the tracker, so nothing is lost.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint

logger = logging.getLogger(__name__)

APOLOGY = "不好意思，系统暂时有点问题。请稍后再说一遍。"


class GuardedRestInput(RestInput):
    """Rasa's ``rest`` channel with an apology for turns that produced no reply."""

    @classmethod
    def name(cls) -> str:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[None]]) -> Blueprint:
        async def guarded(message: UserMessage) -> None:
            try:
                await on_new_message(message)
            except Exception:  # noqa: BLE001 - logged without the message text
                logger.exception("a rest turn failed (sender %s)", message.sender_id)
            out = message.output_channel
            if isinstance(out, CollectingOutputChannel) and isinstance(out.messages, list) and not out.messages:
                await out.send_text_message(message.sender_id, APOLOGY)

        blueprint = super().blueprint(guarded)

        @blueprint.listener("after_server_stop")
        async def close_sessions(*_: object) -> None:
            """The action server's keep-alive sessions (rasa_runtime.patches) end with the server."""
            from rasa_runtime import patches

            await patches.close_sessions()

        return blueprint
