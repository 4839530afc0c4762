"""Text messages from actions: the send runs off the event loop, and the citizen hears what happened."""
from __future__ import annotations

import asyncio

from services.container import Services
from services.sms import Outcome, SmsMessage

# outcome -> what the citizen is told when nothing was sent (short, for the phone line too)
NOT_SENT: dict[str, str] = {
    "opted_out": "您已退订短信，这次不发短信。",
    "rate_limited": "短信发得太频繁，这次没有发。",
    "failed": "短信没有发出去。",
}


async def send_sms(services: Services, phone: str, message: SmsMessage) -> Outcome:
    """``sent`` and ``queued`` (the gateway failed for now; it is tried again) reach the citizen."""
    return await asyncio.to_thread(services.sms.send, phone, message)


def arrives(outcome: Outcome) -> str:
    """How the message arrives, for a sentence about it: now, or a little later."""
    return "稍后" if outcome == "queued" else "已经"
