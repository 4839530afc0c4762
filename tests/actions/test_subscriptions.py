"""Reminder subscriptions in conversation: the consent question and its record, refusing, already on,
citizens no reminder can reach, listing and cancelling."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

import pytest
from sqlalchemy import select

from actions.subscriptions import (ASK_YES_NO, BY_CALL_PAYLOAD, CALL_CHOSEN, CALL_KEYS, CHOOSE, DECLINED, GUEST,
                                   NO_CALL_KNOWN, NO_CHANNEL, OR_CALL, WITHHELD, ActionAskReminderConsent,
                                   ActionCancelReminders, ActionListReminders, ActionReminderCall, ActionSubscribe,
                                   ValidateSubscriptionForm, consent_question, said_yes_or_no)
from services.container import Services
from services.subscriptions import TOPICS, YEARLY_TOPICS, Reminder, SqlSubscriptions, Subscription
from tests.actions.helpers import DOMAIN, run, slot_events, texts, tracker

CALLER = "13800000001"
ON_THE_LINE = {"channel": "phone", "caller": CALLER}
OPENID = "o-citizen-0001"
FORM = "subscription_form"


@pytest.fixture
def reachable(services: Services) -> Services:
    """Services whose WeChat accounts (official account and mini-program) can carry reminders."""
    subscriptions = SqlSubscriptions(services.sessions, services.sms.index, wechat_accounts=frozenset({"oa", "mp"}))
    return dataclasses.replace(services, subscriptions=subscriptions)


def where(channel: str) -> dict[str, Any]:
    """Tracker arguments for a citizen on ``channel`` (the phone line through the rest channel's metadata)."""
    if channel == "phone":
        return {"metadata": ON_THE_LINE, "sender": "call-0001"}
    return {"channel": channel, "sender": OPENID}


def started(services: Services, said: str, *, topic: str | None = None, **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The form's validator as the form starts, with the topic the request named (if any)."""
    t = tracker(text=said, intent="subscribe_reminder", active_loop=FORM, slots={"requested_slot": None},
                filled={"reminder_topic": topic} if topic else None, **kw)
    messages, events = run(ValidateSubscriptionForm(services), t)
    return messages, slot_events(events)


def asked(services: Services, topic: str, **kw: Any) -> tuple[str, dict[str, Any]]:
    """The consent question for ``topic``: (its text, the slots it set)."""
    t = tracker(active_loop=FORM, slots={"reminder_topic": topic, "requested_slot": "reminder_consent"}, **kw)
    messages, events = run(ActionAskReminderConsent(services), t)
    [message] = messages
    assert [b["payload"] for b in message["buttons"]] == ["/affirm", "/deny"]
    return message["text"], slot_events(events)


def answered(services: Services, said: str, value: Any, wording: str | None, *, topic: str = "medical_insurance",
             intent: str = "affirm", failed: int = 0, entities: list[dict[str, Any]] | None = None,
             **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The answer to the consent question, through the form's validator."""
    before = [{"event": "slot", "name": "reminder_topic", "value": topic, "timestamp": 1800000050.0}]
    t = tracker(text=said, intent=intent, active_loop=FORM, filled={"reminder_consent": value}, entities=entities,
                slots={"requested_slot": "reminder_consent", "reminder_topic": topic, "reminder_wording": wording,
                       "failed_attempts": failed}, extra_events=before, **kw)
    messages, events = run(ValidateSubscriptionForm(services), t)
    return messages, slot_events(events)


def subscribe(services: Services, topic: str, wording: str | None, consent: Any = True,
              **kw: Any) -> tuple[str, dict[str, Any]]:
    t = tracker(slots={"reminder_topic": topic, "reminder_consent": consent, "reminder_wording": wording}, **kw)
    messages, events = run(ActionSubscribe(services), t)
    return texts(messages), slot_events(events)


def phone_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[。？！])", text) if s]


def test_by_phone_the_question_says_what_when_how_and_the_yes_to_those_words_is_recorded(services: Services) -> None:
    messages, slots = started(services, "提醒我交医保", topic="medical_insurance", **where("phone"))
    assert messages == [] and slots["reminder_topic"] == "medical_insurance"
    question, slots = asked(services, "medical_insurance", **where("phone"))
    assert question.startswith(TOPICS["medical_insurance"].describe)
    assert "短信" in question and "尾号零零零幺" in question and "*" not in question  # said, not shown
    assert "取消提醒" in question and question.endswith("同意吗？")
    assert all(len(s) <= 40 for s in phone_sentences(question))
    assert slots["reminder_wording"] == question
    messages, slots = answered(services, "同意", True, question, **where("phone"))
    assert messages == [] and slots["reminder_consent"] is True
    said, slots = subscribe(services, "medical_insurance", question, **where("phone"))
    assert said == "好了，已为您订上居民医保缴费提醒。不想要了，随时说“取消提醒”。"
    assert all(len(s) <= 40 for s in phone_sentences(said))
    assert slots["reminder_topic"] is None and slots["reminder_wording"] is None  # the flow is reset
    [view] = services.subscriptions.active("call-0001")
    assert view.topic == "medical_insurance" and view.channel == "phone"
    [(topic, action, wording, _)] = services.subscriptions.consents("call-0001")
    assert (topic, action, wording) == ("medical_insurance", "given", question)


def test_in_writing_the_question_shows_the_masked_number() -> None:
    question = consent_question("每年9月1日居民医保开始缴费时提醒您一次", "用短信发到138****0001", phone=False)
    assert question == "每年9月1日居民医保开始缴费时提醒您一次，用短信发到138****0001。说“取消提醒”随时停止。同意吗？"


@pytest.mark.parametrize("channel", ["wechat", "miniprogram"])
def test_on_wechat_the_reminder_comes_as_a_service_notice(reachable: Services, channel: str) -> None:
    question, _ = asked(reachable, "pension_certification", **where(channel))
    assert question.startswith(TOPICS["pension_certification"].describe) and "微信" in question
    said, _ = subscribe(reachable, "pension_certification", question, **where(channel))
    assert said.startswith("好了，已为您订上养老金资格认证提醒。")
    assert reachable.subscriptions.consents(OPENID)[0][2] == question


def test_a_no_subscribes_nothing(reachable: Services) -> None:
    question, _ = asked(reachable, "medical_insurance", **where("wechat"))
    for said, value, intent in (("不订了", False, "deny"), ("不要提醒了", False, "cancel_reminder"),
                                ("俺不同意", "俺不同意", "nlu_fallback")):
        messages, slots = answered(reachable, said, value, question, intent=intent, **where("wechat"))
        assert messages == [] and slots["reminder_consent"] is False
    said, _ = subscribe(reachable, "medical_insurance", question, consent=False, **where("wechat"))
    assert said == DECLINED
    assert reachable.subscriptions.active(OPENID) == [] and reachable.subscriptions.consents(OPENID) == []


def test_an_unclear_answer_is_asked_again_then_a_human_takes_over(reachable: Services) -> None:
    question, _ = asked(reachable, "medical_insurance", **where("wechat"))
    messages, slots = answered(reachable, "啥意思", "啥意思", question, intent="nlu_fallback", **where("wechat"))
    assert texts(messages) == ASK_YES_NO and slots["reminder_consent"] is None and slots["failed_attempts"] == 1
    messages, slots = answered(reachable, "啥意思", "啥意思", question, intent="nlu_fallback", failed=1,
                               **where("wechat"))
    assert slots["flow_stopped"] is True and "转人工" in texts(messages)
    assert said_yes_or_no("同意，订上吧") is True and said_yes_or_no("不同意") is False and said_yes_or_no("好") is None


def test_a_yes_to_no_question_agrees_to_nothing(reachable: Services) -> None:
    _, slots = answered(reachable, "同意", True, None, **where("wechat"))
    assert slots["reminder_consent"] is None
    said, _ = subscribe(reachable, "medical_insurance", None, **where("wechat"))
    assert said == DECLINED and reachable.subscriptions.active(OPENID) == []


def test_another_topic_at_the_consent_question_is_asked_again_with_its_own_words(reachable: Services) -> None:
    question, _ = asked(reachable, "medical_insurance", **where("wechat"))
    entity = [{"entity": "reminder_topic", "value": "pension_certification", "start": 3, "end": 8}]
    before = [{"event": "slot", "name": "reminder_topic", "value": "medical_insurance", "timestamp": 1800000050.0}]
    t = tracker(text="不对，是养老金认证", intent="deny", active_loop=FORM, entities=entity, extra_events=before,
                filled={"reminder_topic": "pension_certification", "reminder_consent": False},
                slots={"requested_slot": "reminder_consent", "reminder_wording": question}, **where("wechat"))
    messages, events = run(ValidateSubscriptionForm(reachable), t)
    slots = slot_events(events)
    assert messages == [] and slots["reminder_topic"] == "pension_certification"
    assert slots["reminder_consent"] is None and slots["reminder_wording"] is None


def test_already_subscribed_is_said(reachable: Services) -> None:
    question, _ = asked(reachable, "medical_insurance", **where("wechat"))
    subscribe(reachable, "medical_insurance", question, **where("wechat"))
    said, _ = subscribe(reachable, "medical_insurance", question, **where("wechat"))
    assert said == "您已经订过居民医保缴费提醒了，不用再订。"
    assert len(reachable.subscriptions.active(OPENID)) == 1


@pytest.mark.parametrize(("kw", "why"), [
    ({"metadata": {"channel": "phone"}, "sender": "call-0002"}, WITHHELD),                  # number withheld
    ({"metadata": {"channel": "phone", "caller": "05306666666"}, "sender": "call-0003"}, WITHHELD),  # a landline
    ({"channel": "webchat", "sender": "web:guest:AbCdEfGhIjKlMnOpQrStUv"}, GUEST),          # a browser outside WeChat
    ({"channel": "rest", "sender": "rest-client"}, NO_CHANNEL),
])
def test_a_citizen_no_reminder_can_reach_is_told_why_and_asked_nothing(reachable: Services, kw: dict[str, Any],
                                                                      why: str) -> None:
    messages, slots = started(reachable, "提醒我交医保", topic="medical_insurance", **kw)
    assert texts(messages) == why and slots["flow_stopped"] is True and slots["requested_slot"] is None
    t = tracker(slots={"flow_stopped": True, "reminder_topic": "medical_insurance"}, **kw)
    said_messages, _ = run(ActionSubscribe(reachable), t)
    assert said_messages == []  # the validator has said it all
    assert reachable.subscriptions.active(kw["sender"]) == []
    assert all(len(s) <= 40 for s in phone_sentences(why))


def test_wechat_without_a_reminder_template_cannot_subscribe(services: Services) -> None:
    messages, slots = started(services, "提醒我交医保", topic="medical_insurance", **where("wechat"))
    assert texts(messages) == NO_CHANNEL and slots["flow_stopped"] is True


def test_the_topic_is_asked_when_none_was_named_and_an_unknown_one_is_asked_again(reachable: Services) -> None:
    messages, slots = started(reachable, "俺要订提醒", **where("wechat"))
    assert messages == [] and "reminder_topic" not in slots  # the form asks utter_ask_reminder_topic
    messages, slots = started(reachable, "养老金到期了提醒我", **where("wechat"))
    assert slots["reminder_topic"] == "pension_certification"  # named in words the lookup lacks
    t = tracker(text="电费", intent="pay_bill", active_loop=FORM, filled={"reminder_topic": "电费"},
                slots={"requested_slot": "reminder_topic"}, **where("wechat"))
    messages, events = run(ValidateSubscriptionForm(reachable), t)
    assert texts(messages) == CHOOSE and slot_events(events)["reminder_topic"] is None
    t = tracker(text="交医保那个", intent="nlu_fallback", active_loop=FORM, filled={"reminder_topic": "交医保那个"},
                slots={"requested_slot": "reminder_topic"}, **where("wechat"))
    messages, events = run(ValidateSubscriptionForm(reachable), t)
    assert messages == [] and slot_events(events)["reminder_topic"] == "medical_insurance"


def test_the_topic_buttons_name_the_topics() -> None:
    variants = DOMAIN["responses"]["utter_ask_reminder_topic"]
    for variant in variants:
        keys = [re.search(r'"reminder_topic": "(\w+)"', b["payload"]).group(1) for b in variant["buttons"]]  # type: ignore[union-attr]
        assert keys == list(YEARLY_TOPICS)  # the per-subject ones are offered where their subject is answered
    phone = next(v for v in variants if v.get("channel") == "phone")
    assert len(phone["text"]) <= 40


def test_listing_names_the_topics_and_since_when(reachable: Services) -> None:
    said, _ = run(ActionListReminders(reachable), tracker(text="我订了哪些提醒", intent="list_reminders",
                                                           **where("wechat")))
    assert texts(said).startswith("您现在没有订提醒。") and "提醒我交医保" in texts(said)
    for topic in ("medical_insurance", "pension_certification"):
        question, _ = asked(reachable, topic, **where("wechat"))
        subscribe(reachable, topic, question, **where("wechat"))
    said, _ = run(ActionListReminders(reachable), tracker(text="我订了哪些提醒", intent="list_reminders",
                                                           **where("wechat")))
    text = texts(said)
    assert text.startswith("您订了2个提醒。居民医保缴费提醒，") and "养老金资格认证提醒，" in text
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日订的", text) and text.endswith("说“取消提醒”。")


def test_cancelling_one_topic_all_or_nothing(reachable: Services) -> None:
    for topic in ("medical_insurance", "pension_certification"):
        question, _ = asked(reachable, topic, **where("wechat"))
        subscribe(reachable, topic, question, **where("wechat"))
    entity = [{"entity": "reminder_topic", "value": "medical_insurance", "start": 6, "end": 8}]
    t = tracker(text="不要再提醒我交医保了", intent="cancel_reminder", entities=entity, **where("wechat"))
    said, events = run(ActionCancelReminders(reachable), t)
    assert texts(said) == "已取消居民医保缴费提醒，以后不会再发了。"
    assert [v.topic for v in reachable.subscriptions.active(OPENID)] == ["pension_certification"]
    said, _ = run(ActionCancelReminders(reachable), t)
    assert texts(said) == "您没有订居民医保缴费提醒，不用取消。"
    water = [{"entity": "bill_type", "value": "water", "start": 6, "end": 8}]
    said, _ = run(ActionCancelReminders(reachable), tracker(text="不要再提醒我交水费了", intent="cancel_reminder",
                                                             entities=water, **where("wechat")))
    assert texts(said).startswith("没有这种提醒，什么也没取消。")
    assert len(reachable.subscriptions.active(OPENID)) == 1
    cancel_all = tracker(text="取消提醒", intent="cancel_reminder", **where("wechat"))
    said, _ = run(ActionCancelReminders(reachable), cancel_all)
    assert texts(said) == "已取消养老金资格认证提醒，以后不会再发了。"
    said, _ = run(ActionCancelReminders(reachable), cancel_all)
    assert texts(said) == "您现在没有订提醒，不用取消。"
    trail = [(topic, action) for topic, action, _, _ in reachable.subscriptions.consents(OPENID)]
    assert trail == [("medical_insurance", "given"), ("pension_certification", "given"),
                     ("medical_insurance", "withdrawn"), ("pension_certification", "withdrawn")]


def test_cancelling_all_says_how_many(reachable: Services) -> None:
    for topic in ("medical_insurance", "pension_certification"):
        question, _ = asked(reachable, topic, **where("wechat"))
        subscribe(reachable, topic, question, **where("wechat"))
    said, _ = run(ActionCancelReminders(reachable), tracker(text="提醒都取消了吧", intent="cancel_reminder",
                                                             **where("wechat")))
    assert texts(said) == "已取消您的2个提醒，以后不会再发了。"
    assert reachable.subscriptions.active(OPENID) == []


# -- reminder calls (services/calls.py) --------------------------------------------------------------


@pytest.fixture
def calling(services: Services) -> Services:
    """Services with reminder calls set up (REMINDER_CALL_SPOOL)."""
    subscriptions = SqlSubscriptions(services.sessions, services.sms.index, calls=True)
    return dataclasses.replace(services, subscriptions=subscriptions)


def test_a_caller_may_choose_a_call_over_the_sms(calling: Services) -> None:
    t = tracker(active_loop=FORM, slots={"reminder_topic": "medical_insurance", "requested_slot": "reminder_consent"},
                **where("phone"))
    [message], events = run(ActionAskReminderConsent(calling), t)
    question = message["text"]
    assert [b["payload"] for b in message["buttons"]] == ["/affirm", BY_CALL_PAYLOAD, "/deny"]
    assert OR_CALL in question and "短信" in question
    # key 2 sends the payload whose entity fills reminder_means: a yes, by call
    messages, slots = answered(calling, BY_CALL_PAYLOAD, True, question, **where("phone"))
    assert messages == [] and slots["reminder_consent"] is True
    t = tracker(text="打电话告诉俺", intent="nlu_fallback", active_loop=FORM,
                filled={"reminder_consent": "打电话告诉俺"},
                slots={"requested_slot": "reminder_consent", "reminder_topic": "medical_insurance",
                       "reminder_wording": question}, **where("phone"))
    messages, events = run(ValidateSubscriptionForm(calling), t)
    slots = slot_events(events)
    assert slots["reminder_consent"] is True and slots["reminder_means"] == "call"  # said in words
    t = tracker(slots={"reminder_topic": "medical_insurance", "reminder_consent": True, "reminder_wording": question,
                       "reminder_means": "call"}, **where("phone"))
    run(ActionSubscribe(calling), t)
    [view] = calling.subscriptions.active("another-call", CALLER)
    assert view.by_call
    assert calling.subscriptions.consents("call-0001")[0][2] == question + CALL_CHOSEN


def test_without_calls_set_up_no_call_is_offered(services: Services) -> None:
    question, _ = asked(services, "medical_insurance", **where("phone"))  # asked() checks: yes and no only
    assert OR_CALL not in question


def test_a_landline_caller_is_offered_a_call(calling: Services) -> None:
    landline = {"metadata": {"channel": "phone", "caller": "05302345678"}, "sender": "call-0002"}
    messages, slots = started(calling, "提醒我交医保", topic="medical_insurance", **landline)
    assert messages == []  # reachable: by call
    question, _ = asked(calling, "medical_insurance", **landline)
    assert "打电话到您尾号七八的电话" in question and "短信" not in question and OR_CALL not in question
    subscribe(calling, "medical_insurance", question, **landline)
    [view] = calling.subscriptions.active("call-0002", "05302345678")
    assert view.by_call


def test_without_calls_a_landline_caller_is_told_why(services: Services) -> None:
    landline = {"metadata": {"channel": "phone", "caller": "05302345678"}, "sender": "call-0003"}
    messages, slots = started(services, "提醒我交医保", topic="medical_insurance", **landline)
    assert texts(messages) == WITHHELD and slots["flow_stopped"] is True


def test_a_campaigns_words_get_their_stop_before_the_keys(calling: Services) -> None:
    reminder_id = reminder_called(calling, CALLER, text="村里便民服务站可以帮您交医保")
    t = tracker(text="/reminder_call", intent="reminder_call", sender="call-9",
                metadata={"channel": "phone", "caller": CALLER, "reminder": str(reminder_id)})
    [message], _ = run(ActionReminderCall(calling), t)
    assert "村里便民服务站可以帮您交医保。现在办理请按1" in message["text"]


def reminder_called(services: Services, to: str,
                    text: str = "2027年度城乡居民医保开始缴费了，请在12月31日前缴清。说“交医保”就能办。") -> int:
    """A reminder being called to ``to`` (as the scheduler leaves it): its id."""
    services.subscriptions.subscribe(sender_id="call-x", channel="phone", topic="medical_insurance", caller=to,
                                     wording="w", by_call=True)
    with services.sessions() as s:
        sub_id = s.scalars(select(Subscription.id)).one()
        reminder = Reminder(subscription_id=sub_id, due_key="medical_insurance:2027", status="calling", attempts=1,
                            text=text, next_attempt_at=dt.datetime.now(dt.timezone.utc))
        s.add(reminder)
        s.commit()
        return reminder.id


def test_a_reminder_call_says_the_reminder_and_what_the_keys_do(calling: Services) -> None:
    reminder_id = reminder_called(calling, CALLER)
    t = tracker(text="/reminder_call", intent="reminder_call", sender="call-9",
                metadata={"channel": "phone", "caller": CALLER, "reminder": str(reminder_id)})
    [message], _ = run(ActionReminderCall(calling), t)
    assert message["text"].startswith("您好，这里是菏泽政务服务热线，居民医保缴费提醒。2027年度城乡居民医保开始缴费了")
    assert message["text"].endswith(CALL_KEYS)
    assert message["custom"]["keys"] == {"1": TOPICS["medical_insurance"].act, "0": "/request_human"}
    assert all(len(s) <= 40 for s in phone_sentences(message["text"]))
    with calling.sessions() as s:
        assert s.get(Reminder, reminder_id).status == "sent"  # type: ignore[union-attr]


@pytest.mark.parametrize("meta", [
    {"channel": "phone", "caller": "13800000099"},  # another number
    {"channel": "phone", "caller": CALLER, "reminder": "99999"},  # no such reminder
    {"channel": "phone", "caller": CALLER, "reminder": "1; DROP"},  # not an id
    {"channel": "wechat", "caller": CALLER},  # not the phone line
    {"channel": "phone", "caller": CALLER},  # asked in words: "你们给我打电话干啥"
])
def test_a_call_that_names_no_reminder_of_this_caller_says_so(calling: Services, meta: dict[str, Any]) -> None:
    reminder_id = reminder_called(calling, CALLER)
    meta = {"reminder": str(reminder_id), **meta}
    if meta.get("caller") == CALLER and meta["channel"] == "phone" and meta["reminder"] == str(reminder_id):
        meta.pop("reminder")
    t = tracker(text="你们给我打电话干啥", intent="reminder_call", sender="call-9", metadata=meta)
    messages, _ = run(ActionReminderCall(calling), t)
    assert texts(messages) == NO_CALL_KNOWN
    with calling.sessions() as s:
        assert s.get(Reminder, reminder_id).status == "calling"  # type: ignore[union-attr]


def test_on_the_next_call_the_caller_lists_and_cancels_by_the_number(services: Services) -> None:
    services.subscriptions.subscribe(sender_id="call-first", channel="phone", topic="medical_insurance",
                                     caller=CALLER, wording="w")
    messages, _ = run(ActionListReminders(services), tracker(text="我订了啥提醒", intent="list_reminders",
                                                             **where("phone")))
    assert "居民医保缴费提醒" in texts(messages)
    messages, _ = run(ActionCancelReminders(services), tracker(text="取消提醒", intent="cancel_reminder",
                                                               **where("phone")))
    assert texts(messages) == "已取消居民医保缴费提醒，以后不会再发了。"
    assert services.subscriptions.active("call-first") == []
