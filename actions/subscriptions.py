"""Reminder subscriptions in conversation (个性化政策推送): subscribe with consent, list, cancel.

"提醒我交医保" starts ``subscription_form``: the topic (asked with buttons when none was named), then
the consent question, which says what is sent and when (the topic's ``describe``), how (the service's
``reach``: an SMS to the caller's mobile, a WeChat service notice) and that "取消提醒" stops it.
``action_ask_reminder_consent`` asks it and keeps its exact words in ``reminder_wording``;
``action_subscribe`` records the subscription with those words as the consent (services/subscriptions.py),
and only after a yes to them. A citizen no reminder can reach (a web guest, a call with the number
withheld) is told why when the form starts, and asked nothing.

The subscriber is the sender of the conversation, also when a family member acts for an elder on the
web chat: reminders go to the one who agreed to them.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import REQUESTED_SLOT

from actions.bills import previous_value
from actions.common import FlowValidation, ServiceAction, acting_for, caller_number, channel_of, metadata, reset_flow
from services.container import Services
from services.applications import ApplicationView
from services.subscriptions import FINISHED_STATUSES, TOPICS, YEARLY_TOPICS, SubscriptionView, wechat_target
from textnorm.keywords import first_match
from textnorm.numerals import spell_digits

CHINA = dt.timezone(dt.timedelta(hours=8))

# Words for each topic, looked for in free text (the reminder_topic lookup misses 养老金 alone: the
# NLU maps it to the bill type). Certification first: "养老金认证" is no payment.
_TOPIC_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pension_certification", ("认证", "年审", "刷脸", "养老金")),
    ("medical_insurance", ("医保", "医疗", "新农合")),
)
_NO_WORDS = ("不同意", "不要", "不订", "不用", "不中", "不行", "算了", "别订")
_MASKED_MOBILE = re.compile(r"1\d{2}\*{4}(\d{4})")

CHOOSE = "能订的提醒有两种：居民医保缴费提醒，养老金资格认证提醒。"
ASK_YES_NO = "订的话请说“同意”，不订请说“不要”。"
CONSENT_BUTTONS = [{"title": "同意", "payload": "/affirm"}, {"title": "不订", "payload": "/deny"}]
BY_CALL_PAYLOAD = '/affirm{"reminder_means": "call"}'
# A caller on a mobile may choose a call instead of the SMS (when reminder calls are set up).
CONSENT_OR_CALL_BUTTONS = [CONSENT_BUTTONS[0], {"title": "打电话提醒", "payload": BY_CALL_PAYLOAD}, CONSENT_BUTTONS[1]]
OR_CALL = "想让我们打电话告诉您，就选打电话提醒。"
CALL_CHOSEN = "（选了打电话提醒）"
# A reminder call (services/calls.py): what the keys do, as the line's callers know them.
CALL_KEYS = "现在办理请按1，转人工请按0。"
NO_CALL_KNOWN = "这边没查到给您打电话的记录。您有什么事，直接说就行。"
HOW_TO_STOP = "不想要了，随时说“取消提醒”。"
HOW_TO_SUBSCRIBE = "想订的话，可以说“提醒我交医保”，或者“养老金认证到期提醒我”。"
DECLINED = "好的，不订了。"
# Why nothing can be subscribed here, by where the citizen is (short sentences for the phone line).
WITHHELD = "没有识别到您的手机号，发不了短信提醒。请用自己的手机直接拨打，不要隐藏号码。"
GUEST = "在浏览器里订不了提醒。请在微信里打开这个页面再订。"
NO_CHANNEL = "这里暂时发不了提醒。请打政务热线订，会用短信提醒您。"


def topic_from(value: Any) -> str | None:
    """A topic key from a slot value: a key already (entity synonyms, buttons) or words in free text."""
    text = str(value or "")
    return text if text in YEARLY_TOPICS else first_match(text, _TOPIC_WORDS)


def topic_named(tracker: Tracker) -> str | None:
    """The topic the latest message names, if any."""
    for value in tracker.get_latest_entity_values("reminder_topic"):
        if value in YEARLY_TOPICS:
            return str(value)
    return topic_from((tracker.latest_message or {}).get("text"))


def reach_of(services: Services, tracker: Tracker, by_call: bool = False, calls: bool = True) -> str | None:
    """How a reminder would reach the citizen of this conversation, in words; None when it cannot.
    On the phone line: an SMS to a mobile, else (a landline) a call when reminder calls are set up
    and ``calls`` allows them (progress notices are never calls)."""
    channel = channel_of(tracker)
    caller = caller_number(tracker) if channel == "phone" else None
    subscriptions = services.subscriptions
    return (subscriptions.reach(channel, tracker.sender_id, caller, by_call)
            or (subscriptions.reach(channel, tracker.sender_id, caller, by_call=True) if calls else None))


def only_by_call(services: Services, tracker: Tracker) -> bool:
    """A caller no SMS reaches (a landline) who can be called: their reminders are calls."""
    channel = channel_of(tracker)
    caller = caller_number(tracker) if channel == "phone" else None
    subscriptions = services.subscriptions
    return channel == "phone" and subscriptions.reach(channel, tracker.sender_id, caller) is None \
        and subscriptions.reach(channel, tracker.sender_id, caller, by_call=True) is not None


def may_choose_call(services: Services, tracker: Tracker) -> bool:
    """A caller on a mobile, with reminder calls set up: they may choose a call over the SMS."""
    return channel_of(tracker) == "phone" and services.subscriptions.calls and not only_by_call(services, tracker)


def chose_call(tracker: Tracker) -> bool:
    """The answer to the consent question asked for a call (key 2, or "打电话" in words)."""
    if tracker.get_slot("reminder_means") == "call":
        return True
    text = str((tracker.latest_message or {}).get("text") or "")
    return "电话" in text and "短信" not in text


def unreachable(tracker: Tracker) -> str:
    """Why a reminder cannot reach this citizen, and what to do instead."""
    channel = channel_of(tracker)
    if channel == "phone":
        return WITHHELD
    if channel == "webchat" and wechat_target(channel, tracker.sender_id) is None:
        return GUEST
    return NO_CHANNEL


def consent_question(describe: str, reach: str, phone: bool, or_call: bool = False) -> str:
    """What is sent and when, how, and how to stop it: the words a yes agrees to.

    On the phone line a masked number ("138****0001") cannot be said; it is said as its last four
    digits. ``or_call``: the caller may choose a call instead of the SMS."""
    describe = describe.rstrip("。，")
    if phone:
        reach = _MASKED_MOBILE.sub(lambda m: f"您尾号{spell_digits(m.group(1))}的手机", reach)
        reach = re.sub(r"打电话到\d*\*+(\d{2,4})", lambda m: f"打电话到您尾号{spell_digits(m.group(1))}的电话", reach)
        return f"{describe}。{reach}。{OR_CALL if or_call else ''}{HOW_TO_STOP}同意吗？"
    return f"{describe}，{reach}。说“取消提醒”随时停止。同意吗？"


def said_yes_or_no(text: str) -> bool | None:
    """A yes or no in words the classifier did not place ("同意", "不要了"); None for anything else."""
    if any(w in text for w in _NO_WORDS):
        return False
    return True if "同意" in text else None


def line_caller(tracker: Tracker) -> str | None:
    """On the phone line, the caller's number: the same citizen on every call."""
    return caller_number(tracker) if channel_of(tracker) == "phone" else None


def since(view: SubscriptionView) -> str:
    at = view.created_at if view.created_at.tzinfo else view.created_at.replace(tzinfo=dt.timezone.utc)
    day = at.astimezone(CHINA)
    return f"{day.year}年{day.month}月{day.day}日"


class ValidateSubscriptionForm(FlowValidation):
    def name(self) -> str:
        return "validate_subscription_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        if tracker.get_slot(REQUESTED_SLOT) is None and not tracker.get_slot("flow_stopped") \
                and reach_of(self.services, tracker) is None:
            # The form starts, and no reminder could reach this citizen: say why, ask nothing.
            dispatcher.utter_message(text=unreachable(tracker))
            return [SlotSet("flow_stopped", True), SlotSet(REQUESTED_SLOT, None)]
        return await super().run(dispatcher, tracker, domain)

    async def extract_reminder_topic(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        # The request itself may name the topic in words the lookup has not ("养老金到期了提醒我").
        intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
        if tracker.get_slot("reminder_topic") is None and tracker.get_slot(REQUESTED_SLOT) is None \
                and intent == "subscribe_reminder":
            topic = topic_from((tracker.latest_message or {}).get("text"))
            if topic is not None:
                return {"reminder_topic": topic}
        return {}

    def validate_reminder_topic(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        topic = topic_from(value)
        if topic is None:
            intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
            if intent == "subscribe_reminder":  # the request again ("到时候提醒我"): the question again
                return {"reminder_topic": None}
            return self.failed(dispatcher, tracker, "reminder_topic", CHOOSE)
        result: dict[str, Any] = {"reminder_topic": topic, "failed_attempts": 0}
        before = previous_value(tracker, "reminder_topic")
        if before and before != topic:
            # "不对，是养老金认证" at the consent question: a yes must be to the new topic's words.
            result.update(reminder_consent=None, reminder_wording=None)
        return result

    def validate_reminder_consent(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        named = next((v for v in tracker.get_latest_entity_values("reminder_topic") if v in YEARLY_TOPICS), None)
        if named is not None and named != previous_value(tracker, "reminder_topic"):
            return {"reminder_consent": None}  # another topic: asked again with its own words
        if not tracker.get_slot("reminder_wording"):
            return {"reminder_consent": None}  # nothing was asked to agree to
        answer = value if isinstance(value, bool) else said_yes_or_no(str(value))
        if answer is None and may_choose_call(self.services, tracker) and chose_call(tracker):
            answer = True  # "打电话告诉我": a yes, by call
        if answer is None:
            return self.failed(dispatcher, tracker, "reminder_consent", ASK_YES_NO)
        by_call = answer is True and may_choose_call(self.services, tracker) and chose_call(tracker)
        return {"reminder_consent": answer, "reminder_means": "call" if by_call else None, "failed_attempts": 0}


class ActionAskReminderConsent(ServiceAction):
    """The consent question, and its exact words kept for the consent record."""

    def name(self) -> str:
        return "action_ask_reminder_consent"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        named = tracker.get_slot("reminder_topic")
        topic = TOPICS[named] if named in YEARLY_TOPICS else None
        reach = reach_of(self.services, tracker)
        if topic is None or reach is None:  # the validator stops the form first; nothing to agree to
            return [SlotSet("reminder_wording", None)]
        or_call = may_choose_call(self.services, tracker)
        wording = consent_question(topic.describe, reach, channel_of(tracker) == "phone", or_call)
        dispatcher.utter_message(text=wording, buttons=CONSENT_OR_CALL_BUTTONS if or_call else CONSENT_BUTTONS)
        return [SlotSet("reminder_wording", wording)]


class ActionSubscribe(ServiceAction):
    def name(self) -> str:
        return "action_subscribe"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        if tracker.get_slot("flow_stopped"):
            return reset_flow()
        wording = tracker.get_slot("reminder_wording")
        if tracker.get_slot("reminder_consent") is not True or not wording:
            dispatcher.utter_message(text=DECLINED)
            return reset_flow()
        channel = channel_of(tracker)
        by_call = only_by_call(self.services, tracker) or tracker.get_slot("reminder_means") == "call"
        outcome, view = self.services.subscriptions.subscribe(
            sender_id=tracker.sender_id, channel=channel, topic=str(tracker.get_slot("reminder_topic")),
            caller=caller_number(tracker) if channel == "phone" else None, by_call=by_call,
            wording=str(wording) + (CALL_CHOSEN if by_call and not only_by_call(self.services, tracker) else ""))
        name = view.name if view is not None else ""
        if outcome == "subscribed":
            dispatcher.utter_message(text=f"好了，已为您订上{name}。{HOW_TO_STOP}")
        elif outcome == "already":
            dispatcher.utter_message(text=f"您已经订过{name}了，不用再订。")
        elif outcome == "unreachable":
            dispatcher.utter_message(text=unreachable(tracker))
        else:
            dispatcher.utter_message(text=CHOOSE)
        return reset_flow()


class ActionListReminders(ServiceAction):
    def name(self) -> str:
        return "action_list_reminders"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        views = self.services.subscriptions.active(tracker.sender_id, line_caller(tracker))
        if not views:
            dispatcher.utter_message(text=f"您现在没有订提醒。{HOW_TO_SUBSCRIBE}")
            return reset_flow()
        lines = "".join(f"{v.name}，{since(v)}订的{'，打电话提醒' if v.by_call else ''}。" for v in views)
        dispatcher.utter_message(text=f"您订了{len(views)}个提醒。{lines}{HOW_TO_STOP}")
        return reset_flow()


class ActionCancelReminders(ServiceAction):
    """Cancels the topic the citizen named, else every reminder of theirs; each withdrawal is recorded."""

    def name(self) -> str:
        return "action_cancel_reminders"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        subscriptions = self.services.subscriptions
        caller = line_caller(tracker)
        topic = topic_named(tracker)
        if topic is not None:
            if subscriptions.cancel(tracker.sender_id, topic, phone=caller):
                dispatcher.utter_message(text=f"已取消{TOPICS[topic].name}，以后不会再发了。")
            else:
                dispatcher.utter_message(text=f"您没有订{TOPICS[topic].name}，不用取消。")
            return reset_flow()
        if next(tracker.get_latest_entity_values("bill_type"), None):
            # "不要再提醒我交水费了": no such reminder; cancelling all of them would be a surprise.
            dispatcher.utter_message(text=f"没有这种提醒，什么也没取消。{CHOOSE}")
            return reset_flow()
        views = subscriptions.active(tracker.sender_id, caller)
        cancelled = subscriptions.cancel(tracker.sender_id, phone=caller)
        if cancelled == 0:
            dispatcher.utter_message(text="您现在没有订提醒，不用取消。")
        elif cancelled == 1 and len(views) == 1:
            dispatcher.utter_message(text=f"已取消{views[0].name}，以后不会再发了。")
        else:
            dispatcher.utter_message(text=f"已取消您的{cancelled}个提醒，以后不会再发了。")
        return reset_flow()


class ActionReminderCall(ServiceAction):
    """A reminder call was picked up (services/calls.py): the dialplan's first turn is ``/reminder_call``
    with the reminder's id in the metadata. Says the reminder, offers 按1办理 / 按0转人工, and marks it
    delivered; a call that names no reminder being called to this number is greeted as any call."""

    def name(self) -> str:
        return "action_reminder_call"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        reminder = metadata(tracker).get("reminder")
        found = None
        if channel_of(tracker) == "phone" and isinstance(reminder, str) and reminder.isdigit() and len(reminder) < 10:
            found = self.services.subscriptions.answered(int(reminder), caller_number(tracker))
        if found is None:  # asked in words ("你们给我打电话干啥"), or a reminder that is not this caller's
            dispatcher.utter_message(text=NO_CALL_KNOWN)
            return reset_flow()
        text, topic = found
        text = text.rstrip("。.！!，, ") + "。"  # a campaign's words may end without a stop
        dispatcher.utter_message(text=f"您好，这里是菏泽政务服务热线，{topic.name}。{text}{CALL_KEYS}",
                                 buttons=[{"title": "现在办理", "payload": topic.act},
                                          {"title": "转人工", "payload": "/request_human"}],
                                 json_message={"keys": {"1": topic.act, "0": "/request_human"}})
        return reset_flow()


# -- progress notices: offered after a citizen checked an unfinished application ------------------
# The offer is the consent question: what is sent (the application's news), how (by SMS or WeChat,
# never a call) and how it stops, the question last, so that on the phone a yes comes after all of it;
# "要" to it records the subscription with those words (action_accept_offer, or action_fallback for a
# bare "要"). On the phone a masked number is said as its last four digits, as in the yearly consent.
NOTICE_OFFER = "这件事有新进展就"
NOTICE_BUTTONS = [{"title": "要", "payload": "/affirm"}, {"title": "不用了", "payload": "/deny"}]
NOTICE_TAKEN = "好的，这件事有新进展就告诉您，办完就不再发。"
# What the offer leaves in the conversation: cleared once it is answered.
NOTICE_SLOTS = ("notice_subject", "offered_request", "reminder_wording")


def notice_subject(services: Services, tracker: Tracker, found: ApplicationView) -> str | None:
    """The application whose progress notices to offer once the citizen has rated the answer: one not
    finished, progress kept here (the open API's steps), a citizen a notice can reach who has not
    asked for them yet, acting for themselves; else None."""
    subscriptions = services.subscriptions
    if not subscriptions.progress_notices or found.status in FINISHED_STATUSES or reach_of(services, tracker, calls=False) is None:
        return None
    if acting_for(services, tracker) is not None:  # under a family grant: the elder's news is not the proxy's feed
        return None
    if any(v.topic == "application_progress" and v.subject == found.number
           for v in subscriptions.active(tracker.sender_id, line_caller(tracker))):
        return None
    return found.number


def notice_offer(reach: str, phone: bool) -> str:
    """The offer, which is the consent wording. On the phone it fits one part of an answer (15 s with
    the thanks and the keys): how to stop is said with the confirmation (NOTICE_TAKEN, HOW_TO_STOP)."""
    if phone:
        how = _MASKED_MOBILE.sub(lambda m: f"您尾号{spell_digits(m.group(1))}的手机", reach.replace("用短信发到", "发短信到"))
        return f"{NOTICE_OFFER}{how}，办完就停。要不要？"
    how = reach if reach.endswith("您") else f"{reach}告诉您"
    return f"{NOTICE_OFFER}{how}，办完就不再发，说“取消提醒”就停。要不要？"


def offer_notices(services: Services, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
    """The offer, its words kept for the consent record; nothing when the citizen cannot be reached now."""
    reach = reach_of(services, tracker, calls=False)
    if reach is None or not tracker.get_slot("notice_subject"):
        return [SlotSet("notice_subject", None)]
    wording = notice_offer(reach, channel_of(tracker) == "phone")
    dispatcher.utter_message(text=wording, buttons=NOTICE_BUTTONS)
    return [SlotSet("offered_request", "progress_notice"), SlotSet("reminder_wording", wording)]


def wants_notices(text: str) -> bool | None:
    """A bare "要" to the offer (the classifier reads it as nothing: it is no request), or a no in
    words it missed; None for anything else."""
    if any(w in text for w in _NO_WORDS):
        return False
    return True if re.sub(r"[\s，。！？,.!?嗯啊呀吧的]", "", text) in ("要", "需要", "要要") else None


def take_notices(services: Services, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
    """"要" to the offer: the subscription, with the offer's words as the consent."""
    channel = channel_of(tracker)
    done: list[EventType] = [SlotSet(name, None) for name in NOTICE_SLOTS]
    if not tracker.get_slot("notice_subject") or not tracker.get_slot("reminder_wording"):
        dispatcher.utter_message(response="utter_menu")  # nothing was offered that a yes could take
        return done
    outcome, _ = services.subscriptions.subscribe(
        sender_id=tracker.sender_id, channel=channel, topic="application_progress",
        caller=caller_number(tracker) if channel == "phone" else None,
        wording=str(tracker.get_slot("reminder_wording") or ""), subject=str(tracker.get_slot("notice_subject")))
    if outcome == "subscribed":
        dispatcher.utter_message(text=f"{NOTICE_TAKEN}{HOW_TO_STOP}")
    elif outcome == "already":
        dispatcher.utter_message(text="这件事的进展通知已经订过了，不用再订。")
    else:
        dispatcher.utter_message(text=unreachable(tracker))
    return done

