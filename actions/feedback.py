"""Feedback (意见反馈): complaints, reports, suggestions and requests for help become tickets
routed to a department; ``check_ticket`` reports a ticket's status."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.common import (FlowValidation, ServiceAction, acting_for, ask_rating, audit_proxy, caller_number, channel_of,
                            reset_flow)
from actions.sms import NOT_SENT, send_sms
from services.sms import SmsMessage
from services.tickets import CATEGORIES
from textnorm.ids import is_valid_mobile
from textnorm.keywords import first_match
from textnorm.numbers import PHONE, find_numbers, only_number
from textnorm.numerals import digits_only, normalize_numbers, spell_digits

ANONYMOUS = "anonymous"
_CATEGORY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("report", ("举报",)),
    ("suggestion", ("建议", "意见")),
    ("help", ("求助", "帮忙", "救")),
    ("complaint", ("投诉", "反映", "不满")),
)
# Words that only say "I want to give feedback"; what is left after removing them is the matter.
_TRIGGER = re.compile(r"我要|我想|俺要|俺想|想|要|投诉|举报|建议|意见|求助|反映|问题|情况|一个事|个事|留言|提|一下|点|[\s，。！？,.!?]")
_ANONYMOUS_WORDS = ("匿名", "不留", "不方便", "不要留", "不想留")
_PHONE_WORDS = re.compile(r"[，,]?\s*(我的|俺的)?(联系电话|联系方式|手机号码|电话号码|手机号|手机|电话)(是|：|:)?\s*$")


def category_from_text(text: str) -> str | None:
    return text if text in CATEGORIES else first_match(text, _CATEGORY_WORDS)


def described_matter(text: str) -> str | None:
    """The citizen's first message, when it already says what the matter is."""
    return text.strip() if len(_TRIGGER.sub("", text)) >= 4 else None


def matter_said_before(tracker: Tracker, lookback: int = 3) -> str | None:
    """The matter, when one of the citizen's last messages asking to give feedback already says it."""
    seen = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        seen += 1
        if seen > lookback:
            break
        intent = (event.get("parse_data") or {}).get("intent", {}).get("name")
        if intent == "give_feedback" and event.get("text"):
            matter = described_matter(event["text"])
            if matter:
                return matter
    return None


class ValidateFeedbackForm(FlowValidation):
    def name(self) -> str:
        return "validate_feedback_form"

    def validate_feedback_category(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        category = category_from_text(str(value))
        if category is None:
            return self.failed(dispatcher, tracker, "feedback_category", "请说投诉、举报、建议或者求助。")
        result: dict[str, Any] = {"feedback_category": category, "failed_attempts": 0}
        matter = matter_said_before(tracker)
        if matter and not tracker.get_slot("feedback_content"):
            result["feedback_content"] = matter
        return result

    def validate_feedback_content(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(value).strip()
        if len(text) < 4:
            return self.failed(dispatcher, tracker, "feedback_content", "请多说几句，说清楚是什么事。")
        return {"feedback_content": text[:1000], "failed_attempts": 0}

    def validate_feedback_location(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(value).strip()
        number = only_number(text)
        if number is not None and number.kind == PHONE:
            # A phone number where the place was asked: it is the contact; the place is still to come.
            dispatcher.utter_message(text="手机号我记下了。")
            return {"feedback_location": None, "feedback_contact": number.value}
        if number is not None:
            return self.failed(dispatcher, tracker, "feedback_location", "请说地点，比如哪个县区、哪条路，不用说号码。")
        phone = next((n for n in find_numbers(text) if n.kind == PHONE), None)
        if phone is not None:
            # "东明县城关镇，电话13800000001": the place, and the contact with it.
            norm = normalize_numbers(text)  # find_numbers' positions are in the normalised text
            place = _PHONE_WORDS.sub("", norm[:phone.start] + norm[phone.end:])
            place = place.strip(" ，,。.:：")
            if len(place) >= 2:
                return {"feedback_location": place[:200], "feedback_contact": phone.value, "failed_attempts": 0}
        if len(text) < 2:
            return self.failed(dispatcher, tracker, "feedback_location", "请说清楚地点，比如哪个县区、哪条路。")
        return {"feedback_location": text[:200], "failed_attempts": 0}

    def validate_feedback_contact(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(value)
        intent = tracker.get_intent_of_latest_message()
        phone = digits_only(text)
        if is_valid_mobile(phone):
            return {"feedback_contact": phone, "failed_attempts": 0}
        if intent == "deny" or any(w in text for w in _ANONYMOUS_WORDS):
            return {"feedback_contact": ANONYMOUS, "failed_attempts": 0}
        caller = caller_number(tracker)
        if intent == "affirm" and caller and is_valid_mobile(caller):
            return {"feedback_contact": caller, "failed_attempts": 0}
        return self.failed(dispatcher, tracker, "feedback_contact", "手机号是11位数字。不想留请说“匿名”。")


class ActionSubmitFeedback(ServiceAction):
    def name(self) -> str:
        return "action_submit_feedback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        if tracker.get_slot("flow_stopped"):
            return reset_flow()
        contact = tracker.get_slot("feedback_contact")
        phone = None if contact in (None, ANONYMOUS) else contact
        channel = channel_of(tracker)
        ticket = self.services.tickets.create(
            category=tracker.get_slot("feedback_category") or "complaint",
            content=tracker.get_slot("feedback_content") or "",
            location=tracker.get_slot("feedback_location") or "",
            contact_phone=phone,
            channel=channel,
            sender_id=tracker.sender_id,
        )
        number = spell_digits(ticket.number) if channel == "phone" else ticket.number
        due = f"{ticket.due_date.month}月{ticket.due_date.day}日"
        grant = acting_for(self.services, tracker)
        for_whom = f"（为您{grant.relation}代办）" if grant else ""
        dispatcher.utter_message(text=f"{for_whom}已受理。工单号：{number}。已转给{ticket.department}，{due}前答复您。")
        audit_proxy(self.services, grant, "feedback_filed", f"工单{ticket.number} {ticket.department}")
        if phone:
            sms = await send_sms(self.services, phone, SmsMessage("ticket_receipt", {"ticket": ticket.number, "due": due}))
            if sms in NOT_SENT:
                dispatcher.utter_message(text=f"{NOT_SENT[sms]}请记下工单号。")
        return reset_flow() + ask_rating(dispatcher, "feedback", tracker)


class ValidateTicketForm(FlowValidation):
    def name(self) -> str:
        return "validate_ticket_form"

    def validate_ticket_number(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        number = digits_only(str(value))
        if not re.fullmatch(r"[1-9]\d{7}", number):
            return self.failed(dispatcher, tracker, "ticket_number", "工单号是8位数字，我没听清。")
        if self.services.tickets.by_number(number) is None:
            return self.failed(dispatcher, tracker, "ticket_number", "没有查到这个工单号。")
        return {"ticket_number": number, "failed_attempts": 0}


class ActionAnswerTicket(ServiceAction):
    def name(self) -> str:
        return "action_answer_ticket"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        number = tracker.get_slot("ticket_number")
        ticket = self.services.tickets.by_number(number) if number and not tracker.get_slot("flow_stopped") else None
        if ticket is None:
            return reset_flow()
        text = f"工单{ticket.number}：{ticket.status_name}。承办部门：{ticket.department}。"
        if ticket.status in ("resolved", "closed"):
            text += f"答复：{ticket.reply}" if ticket.reply else ""
        else:
            text += f"{ticket.due_date.month}月{ticket.due_date.day}日前答复。"
        dispatcher.utter_message(text=text)
        return reset_flow() + ask_rating(dispatcher, "ticket", tracker)
