"""Family proxy on the phone line (子女代办): the elder consents with the texted code, or ends every proxy.

Only a call from the elder's own mobile counts: the number is the phone channel's caller number
(withheld, a landline or another channel: the elder is told how to do it instead). "同意代办" (or "代办授权") starts
``proxy_consent_form``, which asks for the 6-digit code (keypad digits, or spoken digits the NLU
normaliser turns into digits); the validator checks it with ``SqlProxies.consent``, so a wrong code
is asked again under the shared failure rule (actions/common.py ``FlowValidation``). "解除代办" ends
every pending and active grant of the caller's number at once.
"""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.common import FlowValidation, ServiceAction, caller_number, reset_flow
from services.proxy import mobile
from textnorm.numerals import digits_only

# What the elder hears (short sentences for the phone line).
NOT_ON_PHONE = {
    "consent": "同意家人代办，要请老人用自己的手机拨打热线，说“同意代办”。",
    "revoke": "解除代办，要请老人用自己的手机拨打热线，说“解除代办”。",
}
WITHHELD = "没有识别到您的手机号。请用收到短信的手机直接拨打，不要隐藏号码。"
NO_REQUEST = "没有找到要您确认的代办申请。可能验证码已过期，请让家人重新申请。"
LOCKED = "验证码错的次数太多，这次申请作废了。请让家人重新申请。"
WRONG_CODE = "验证码不对，请再输一遍。"
HOW_TO_END = "不想让家人代办了，随时打电话说“解除代办”。"
# Answers with no digits that only mean "go on" ("代办授权" again, "好", "同意"): the code is asked again.
_GO_ON = ("proxy_consent", "affirm", "thank")
_GO_ON_WORDS = ("同意", "授权")


def on_the_line(tracker: Tracker) -> bool:
    """The message came through the phone channel itself. The caller number is what authorises here, so
    the internal rest channel's claim (``{"channel": "phone"}``, which channel_of accepts for testing
    flows) does not count: only the voice gateway, with the phone channel's token, can name a caller."""
    return tracker.get_latest_input_channel() == "phone"


def elder_line(tracker: Tracker) -> str | None:
    """The caller's mobile number, when the message came by phone from a mobile that was not withheld."""
    if not on_the_line(tracker):
        return None
    return mobile(caller_number(tracker) or "")


def cannot_act(dispatcher: CollectingDispatcher, tracker: Tracker, what: str) -> bool:
    """Tells the citizen why nothing can be done here (not a call, or no caller number); False when
    the elder is on the line."""
    if elder_line(tracker) is not None:
        return False
    dispatcher.utter_message(text=WITHHELD if on_the_line(tracker) else NOT_ON_PHONE[what])
    return True


class ValidateProxyConsentForm(FlowValidation):
    def name(self) -> str:
        return "validate_proxy_consent_form"

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[str]:
        # No elder on the line: nothing to ask; action_proxy_consent says how to do it.
        return domain_slots if elder_line(tracker) else []

    def validate_proxy_code(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        code = re.sub(r"\D", "", digits_only(str(value)))  # an ID card's X is no digit here
        intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
        if not code and (intent in _GO_ON or any(w in str(value) for w in _GO_ON_WORDS)):
            return {"proxy_code": None}
        if not re.fullmatch(r"\d{6}", code):
            said = f"您输了{len(code)}位。" if code else ""
            return self.failed(dispatcher, tracker, "proxy_code", f"{said}验证码是短信里的6位数字。")
        caller = elder_line(tracker)
        if caller is None:
            return self.stop(dispatcher, "proxy_code", None, WITHHELD)
        outcome = self.services.proxies.consent(caller, code)
        if outcome == "granted":
            return {"proxy_code": code, "failed_attempts": 0}
        if outcome == "wrong_code":
            return self.failed(dispatcher, tracker, "proxy_code", WRONG_CODE)
        return self.stop(dispatcher, "proxy_code", None, LOCKED if outcome == "locked" else NO_REQUEST)


class ActionProxyConsent(ServiceAction):
    def name(self) -> str:
        return "action_proxy_consent"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        if tracker.get_slot("flow_stopped") or cannot_act(dispatcher, tracker, "consent"):
            return reset_flow()
        caller = elder_line(tracker) or ""
        grants = self.services.proxies.of_elder(caller) if tracker.get_slot("proxy_code") else []
        if not grants:  # ended between the code and now (another call, the console)
            dispatcher.utter_message(text=NO_REQUEST)
            return reset_flow()
        grant = grants[0]
        days = self.services.proxies.consent_days
        dispatcher.utter_message(text=f"好了，您的{grant.asker}现在可以替您办事了，{days}天内有效。")
        dispatcher.utter_message(text=HOW_TO_END)
        return reset_flow()


class ActionProxyRevoke(ServiceAction):
    def name(self) -> str:
        return "action_proxy_revoke"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        if cannot_act(dispatcher, tracker, "revoke"):
            return reset_flow()
        ended = self.services.proxies.revoke_by_elder(elder_line(tracker) or "")
        if ended == 0:
            dispatcher.utter_message(text="您这个号码现在没有家人代办，不用解除。")
        else:
            count = "" if ended == 1 else f"{ended}个"
            dispatcher.utter_message(text=f"已经解除{count}代办。家人不能再替您办事了。")
        return reset_flow()
