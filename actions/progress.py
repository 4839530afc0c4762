"""Progress check (办件进度): by application number, or by phone number plus ID-card last four."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import (PROXY_ENDED, FlowValidation, ServiceAction, acting_for, ask_rating, audit_proxy, caller_number,
                            grant_changed, reset_flow)
from actions.subscriptions import notice_subject
from services.applications import ApplicationsUnavailable, ApplicationView
from textnorm.ids import is_valid_mobile
from textnorm.numbers import APPLICATION, PHONE, kind_of, named
from textnorm.numerals import digits_only

NO_NUMBER = "none"
_APPLICATION_NUMBER = re.compile(r"20\d{12}")
_NO_WORDS = ("没有", "没编号", "不知道", "忘了", "找不着", "丢了", "不记得")


def unavailable(dispatcher: CollectingDispatcher) -> dict[str, Any]:
    """The platform cannot answer: the apology and the offer of a human (common.HUMAN_OFFERS: a "好"
    takes it); the form ends without asking again."""
    dispatcher.utter_message(response="utter_progress_unavailable")
    return {"failed_attempts": 0, "flow_stopped": True}


def _date(d: Any) -> str:
    return f"{d.month}月{d.day}日"


def describe(app: ApplicationView) -> str:
    parts = [f"您办的“{app.service_name}”：{app.status}。"]
    if app.status != "已办结":
        parts.append(f"现在到了“{app.current_step}”这一步。")
        if app.expected_date:
            parts.append(f"预计{_date(app.expected_date)}办完。")
    parts.append(f"办理单位：{app.office}。")
    return "".join(parts)


def describe_brief(apps: list[ApplicationView]) -> str:
    lines = [f"查到您{len(apps)}件事："]
    for i, app in enumerate(apps, 1):
        line = f"{i}. {app.service_name}：{app.status}"
        if app.status != "已办结" and app.expected_date:
            line += f"，预计{_date(app.expected_date)}办完"
        lines.append(line + "。")
    return "\n".join(lines)


class ValidateProgressForm(FlowValidation):
    def name(self) -> str:
        return "validate_progress_form"

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[str]:
        if tracker.slots.get("application_number") not in (None, NO_NUMBER):
            return ["application_number"]
        if tracker.slots.get("application_number") is None and tracker.slots.get("lookup_phone"):
            return ["lookup_phone", "id_last4"]  # a phone number came first: check by phone
        return domain_slots

    def validate_application_number(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(value)
        number = digits_only(text)
        if not number and (tracker.get_intent_of_latest_message() == "deny" or any(w in text for w in _NO_WORDS)):
            result: dict[str, Any] = {"application_number": NO_NUMBER}
            caller, grant = caller_number(tracker), acting_for(self.services, tracker)
            if grant is not None and not tracker.get_slot("lookup_phone"):
                # 子女代办: the elder's own number, which they proved is theirs when they consented.
                dispatcher.utter_message(text=f"好的，用您{grant.relation}的手机号查。")
                result["lookup_phone"], result["proxy_grant"] = grant.elder_phone, str(grant.id)
            elif caller and is_valid_mobile(caller) and not tracker.get_slot("lookup_phone"):
                dispatcher.utter_message(text="好的，用您来电的手机号查。")
                result["lookup_phone"] = caller
            return result
        kind = kind_of(number)
        if kind == PHONE:  # a phone number where the application number was asked: check by phone
            return {"application_number": NO_NUMBER, "lookup_phone": number, "failed_attempts": 0}
        if not _APPLICATION_NUMBER.fullmatch(number):
            said = named(kind)
            return self.failed(dispatcher, tracker, "application_number", f"{said}受理编号是14位数字，我没听清。")
        try:
            found = self.services.applications.by_number(number)
        except ApplicationsUnavailable:
            return {"application_number": None, **unavailable(dispatcher)}
        if found is None:
            return self.failed(dispatcher, tracker, "application_number", "没有查到这个编号。")
        return {"application_number": number, "failed_attempts": 0}

    def validate_lookup_phone(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        phone = digits_only(str(value))
        if kind_of(phone) == APPLICATION:  # the application number after all: its own slot checks it
            return {"lookup_phone": None}
        if not is_valid_mobile(phone):
            return self.failed(dispatcher, tracker, "lookup_phone", "手机号是11位数字，我没听清。")
        return {"lookup_phone": phone, "failed_attempts": 0}

    def validate_id_last4(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        if grant_changed(self.services, tracker):
            dispatcher.utter_message(text=PROXY_ENDED)
            return {"id_last4": None, "flow_stopped": True}
        last4 = digits_only(str(value))
        if not re.fullmatch(r"\d{3}[\dX]", last4):
            return self.failed(dispatcher, tracker, "id_last4", "请说身份证号最后4位，我没听清。")
        phone = tracker.get_slot("lookup_phone")
        try:
            found = bool(phone) and bool(self.services.applications.by_applicant(phone, last4))
        except ApplicationsUnavailable:
            return {"id_last4": None, **unavailable(dispatcher)}
        if not found:
            return self.failed(dispatcher, tracker, "id_last4", "手机号和身份证后4位对不上，没有查到。")
        return {"id_last4": last4, "failed_attempts": 0}


class ActionAnswerProgress(ServiceAction):
    def name(self) -> str:
        return "action_answer_progress"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        if tracker.get_slot("flow_stopped"):
            return reset_flow()
        if grant_changed(self.services, tracker):
            dispatcher.utter_message(text=PROXY_ENDED)
            return reset_flow()
        number = tracker.get_slot("application_number")
        apps = self.services.applications
        try:
            if number and number != NO_NUMBER:
                app = apps.by_number(number)
                found = [app] if app else []
            else:
                found = apps.by_applicant(tracker.get_slot("lookup_phone") or "", tracker.get_slot("id_last4") or "")
        except ApplicationsUnavailable:
            unavailable(dispatcher)
            return reset_flow()
        if not found:
            dispatcher.utter_message(text="没有查到您的办件。")
            return reset_flow()
        grant = acting_for(self.services, tracker)
        said = describe(found[0]) if len(found) == 1 else describe_brief(found)
        dispatcher.utter_message(text=f"（为您{grant.relation}代查）{said}" if grant else said)
        audit_proxy(self.services, grant, "progress_checked", "、".join(f"{a.number} {a.service_name}" for a in found))
        # Offered once the answer is rated (action_store_rating): notices of this application's progress.
        subject = notice_subject(self.services, tracker, found[0]) if len(found) == 1 else None
        return reset_flow() + ask_rating(dispatcher, "progress", tracker) + [SlotSet("notice_subject", subject)]
