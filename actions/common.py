"""What every flow shares: the channel a citizen uses, hand-off, the rating question, slot resets."""
from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import REQUESTED_SLOT, FormValidationAction

from services.container import Services
from services.proxy import GrantView

CHANNELS = frozenset({"rest", "wechat", "miniprogram", "phone", "webchat"})
MAX_FAILED_ATTEMPTS = 2

# Slots one flow fills; all are cleared when a flow ends, is cancelled or handed off.
FLOW_SLOTS: dict[str, Any] = {
    "application_number": None, "lookup_phone": None, "id_last4": None,
    "bill_type": None, "bill_account": None, "bill_confirm": None, "bill_id": None,
    "feedback_category": None, "feedback_content": None, "feedback_location": None, "feedback_contact": None,
    "ticket_number": None, "failed_attempts": 0, "flow_stopped": None, "proxy_code": None, "proxy_grant": None,
    "reminder_topic": None, "reminder_consent": None, "reminder_wording": None, "reminder_means": None,
    # A second request is offered when the first flow completes (ask_rating reads it before this
    # reset lands); a flow that stops, is cancelled or handed off drops it.
    "pending_request": None,
}

# Requests a flow's end can offer when the citizen asked for two things at once, as the question
# that offers them ("还要交费吗？") and the form that serves them.
OFFERS: dict[str, tuple[str, str]] = {
    "check_progress": ("还要查办件进度吗？", "progress_form"),
    "pay_bill": ("还要交费吗？", "bill_form"),
    "give_feedback": ("还要反映问题吗？", "feedback_form"),
    "check_ticket": ("还要查工单吗？", "ticket_form"),
}

# Responses that end by offering a human ("给您转人工吧？") outside any rule: "好" to one of them is a
# hand-off (action_accept_offer). utter_offer_human is not here: a rule answers its "好".
HUMAN_OFFERS = ("utter_progress_unavailable",)
HANDOFF_CHANNELS = ("phone", "wechat", "miniprogram")  # channels that carry the citizen to a person themselves
HANDOFF_TEXT = {
    "requested": "好的，正在为您转人工。请稍等，工作人员会接着帮您。",
    "failed_attempts": "这件事我没能帮您办好，现在为您转人工。请稍等。",
    "fallback": "好的，正在为您转人工。请稍等，工作人员会接着帮您。",
}


def metadata(tracker: Tracker) -> dict[str, Any]:
    md = (tracker.latest_message or {}).get("metadata") or {}
    return md if isinstance(md, dict) else {}


def channel_of(tracker: Tracker) -> str:
    """The channel of the latest message: 'wechat', 'miniprogram', 'phone', 'webchat' or 'rest'.

    Channels tag themselves; a client of the internal ``rest`` channel may name the channel it
    relays for in the message metadata (``{"channel": "phone"}``)."""
    channel = tracker.get_latest_input_channel() or "rest"
    if channel == "rest":
        claimed = metadata(tracker).get("channel")
        if claimed in CHANNELS:
            return str(claimed)
    return channel if channel in CHANNELS else "rest"


def acting_for(services: Services, tracker: Tracker) -> GrantView | None:
    """The family-proxy grant (子女代办) this web chat message acts under, checked again here against
    the grants: active, unexpired and this sender's. None when the citizen acts for themselves (or the
    grant has just ended: then nothing of the elder's is used)."""
    if tracker.get_latest_input_channel() != "webchat":  # the channel itself, never a rest client's claim
        return None
    grant_id = metadata(tracker).get("acting_for")
    if not isinstance(grant_id, int) or isinstance(grant_id, bool):
        return None
    return services.proxies.check(grant_id, tracker.sender_id)


PROXY_ENDED = "为家人代办已经结束，这件事先不办了。要接着办，请重新申请代办。"


def grant_changed(services: Services, tracker: Tracker) -> bool:
    """A flow that took something of an elder's under a grant (the ``proxy_grant`` slot) goes on only
    under that same grant, still active: not after it ended, not under another, not for oneself."""
    taken = tracker.get_slot("proxy_grant")
    if not taken:
        return False
    grant = acting_for(services, tracker)
    return grant is None or str(grant.id) != str(taken)


def audit_proxy(services: Services, grant: GrantView | None, action: str, detail: str = "") -> None:
    """One entry in the grant's trail for something done in the elder's name (shown to staff)."""
    if grant is not None:
        services.proxies.audit(grant.id, "family", action, detail)


def caller_number(tracker: Tracker) -> str | None:
    """The caller's phone number that the phone channel put into the metadata, if any."""
    caller = metadata(tracker).get("caller")
    return str(caller) if caller else None


def reset_flow() -> list[EventType]:
    return [SlotSet(name, value) for name, value in FLOW_SLOTS.items()]


def hand_off(services: Services, dispatcher: CollectingDispatcher, tracker: Tracker, reason: str) -> int:
    """Record a hand-off and tell the citizen. The phone and WeChat channels also get a payload they
    act on (the phone line transfers the call; WeChat hands the citizen to its human customer service)."""
    channel = channel_of(tracker)
    handoff_id = services.handoffs.create(sender_id=tracker.sender_id, channel=channel, reason=reason)
    dispatcher.utter_message(text=HANDOFF_TEXT[reason])
    if channel in HANDOFF_CHANNELS:
        dispatcher.utter_message(json_message={"handoff": {"id": handoff_id, "reason": reason}})
    return handoff_id


def ask_rating(dispatcher: CollectingDispatcher, flow: str, tracker: Tracker) -> list[EventType]:
    """The end of a completed flow: the second request the citizen made in the same message, if
    any ("还要交费吗？"), else the one-question satisfaction rating."""
    pending = tracker.get_slot("pending_request")
    if pending in OFFERS:
        question, _ = OFFERS[pending]
        dispatcher.utter_message(text=question, buttons=[
            {"title": "好", "payload": f"/{pending}"}, {"title": "不用了", "payload": "/deny"}])
        return [SlotSet("pending_request", None), SlotSet("offered_request", pending)]
    dispatcher.utter_message(response="utter_ask_rating")
    return [SlotSet("awaiting_rating", flow), SlotSet("pending_request", None), SlotSet("offered_request", None)]


def bot_turn(tracker: Tracker) -> list[dict[str, Any]]:
    """What the bot said right before the latest user message (its last turn)."""
    said: list[dict[str, Any]] = []
    seen_user = False
    for event in reversed(tracker.events):
        kind = event.get("event")
        if kind == "user":
            if seen_user:
                break
            seen_user = True
        elif kind == "bot" and seen_user:
            said.append(event)
    return list(reversed(said))


CHOICES_QUESTION = "您想问的是哪一项？"  # how numbered guide choices begin (actions/guide.py)


def said_last(tracker: Tracker, *beginnings: str) -> bool:
    """True when a message of the bot's last turn begins with one of ``beginnings``."""
    return any(str(e.get("text") or "").startswith(beginnings) for e in bot_turn(tracker))


def asked_last(tracker: Tracker, domain: dict[str, Any], response: str) -> bool:
    """True when the bot's last turn asked the question of ``response`` (any of its variants):
    an answer such as "2" means something only to the question that was just asked."""
    texts = {v.get("text") for v in (domain.get("responses") or {}).get(response) or [] if v.get("text")}
    return any(e.get("text") in texts for e in bot_turn(tracker))


class ServiceAction(Action):
    """An action with access to the service backends."""

    def __init__(self, services: Services) -> None:
        self.services = services


class FlowValidation(FormValidationAction):
    """Form validation with the shared rules: two failed answers hand the citizen to a human,
    and a validator may stop the form early by setting ``flow_stopped``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def failed(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, slot: str, message: str
    ) -> dict[str, Any]:
        attempts = int(tracker.get_slot("failed_attempts") or 0) + 1
        if attempts >= MAX_FAILED_ATTEMPTS:
            handoff_id = hand_off(self.services, dispatcher, tracker, "failed_attempts")
            return {slot: None, "failed_attempts": 0, "flow_stopped": True, "handoff_id": str(handoff_id)}
        dispatcher.utter_message(text=message)
        return {slot: None, "failed_attempts": attempts}

    @staticmethod
    def stop(dispatcher: CollectingDispatcher, slot: str, value: Any, message: str) -> dict[str, Any]:
        dispatcher.utter_message(text=message)
        return {slot: value, "flow_stopped": True}

    async def next_requested_slot(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> EventType | None:
        if tracker.slots.get("flow_stopped"):
            return SlotSet(REQUESTED_SLOT, None)
        return await super().next_requested_slot(dispatcher, tracker, domain)

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        events = await super().run(dispatcher, tracker, domain)
        if tracker.get_slot("awaiting_rating"):
            # A new flow has begun: the rating question of the last one lapses unanswered.
            events.append(SlotSet("awaiting_rating", None))
        return events
