"""Progress notices in conversation: after a citizen checked an application that is not finished and
rated the answer, the assistant offers to tell them of its next steps, in words that are the consent
record; "要" subscribes, "不用了" or anything else does not."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select

from actions.conversation import RATED, ActionAcceptOffer, ActionFallback, ActionStoreRating
from actions.progress import ActionAnswerProgress
from actions.subscriptions import DECLINED, NOTICE_BUTTONS, NOTICE_OFFER, NOTICE_TAKEN
from services.container import Services
from services.subscriptions import SqlSubscriptions, Subscription, SubscriptionConsent
from tests.actions.helpers import RATING_QUESTION, bot_said, run, slot_events, texts, tracker

APP, DONE = "20261101000001", "20261101000002"  # seeded: 审核中; 已办结
LINE = {"metadata": {"channel": "phone", "caller": "13800000001"}, "sender": "call-n1"}


@pytest.fixture
def notices(seeded: Services) -> Services:
    """Services whose progress is kept here (the open API writes the steps) and whose official account
    carries subscribe messages."""
    return dataclasses.replace(seeded, subscriptions=SqlSubscriptions(
        seeded.sessions, seeded.sms.index, wechat_accounts=frozenset({"oa"}), progress_notices=True))


def offered_for(services: Services, number: str, **where: Any) -> Any:
    _, events = run(ActionAnswerProgress(services), tracker(slots={"application_number": number}, **where))
    return slot_events(events).get("notice_subject")


def test_offered_only_for_an_unfinished_application_a_notice_can_reach(notices: Services, seeded: Services) -> None:
    assert offered_for(notices, APP, **LINE) == APP
    assert offered_for(notices, APP, channel="wechat", sender="oNotice1") == APP
    assert offered_for(notices, DONE, **LINE) is None  # finished: no news will come
    assert offered_for(notices, APP, metadata={"channel": "phone"}, sender="call-n2") is None  # number withheld
    assert offered_for(notices, APP, channel="rest", sender="r1") is None  # nowhere to send it
    elsewhere = dataclasses.replace(seeded, subscriptions=SqlSubscriptions(seeded.sessions, seeded.sms.index))
    assert offered_for(elsewhere, APP, **LINE) is None  # the provincial platform keeps the progress: no steps here


def test_the_offer_after_the_rating_then_yes_subscribes_with_its_words(notices: Services) -> None:
    rated = {"awaiting_rating": "progress", "notice_subject": APP}
    msgs, events = run(ActionStoreRating(notices), tracker(text="5", intent="rate", slots=rated,
                                                           extra_events=bot_said(RATING_QUESTION), **LINE))
    assert msgs[0]["text"] == RATED and msgs[1]["buttons"] == NOTICE_BUTTONS
    wording = msgs[1]["text"]
    # On the phone: the number as its last four digits, the question last, in one part of the answer
    assert wording.startswith(NOTICE_OFFER) and "发短信到您尾号零零零幺的手机" in wording and wording.endswith("要不要？")
    assert "取消提醒" in texts(run(ActionStoreRating(notices), tracker(
        text="5", intent="rate", slots=rated, extra_events=bot_said(RATING_QUESTION), channel="wechat",
        sender="oNotice2"))[0])  # in writing, how to stop is in the offer too
    slots = slot_events(events)
    assert slots["offered_request"] == "progress_notice" and slots["reminder_wording"] == wording

    offered = {"offered_request": "progress_notice", "notice_subject": APP, "reminder_wording": wording}
    msgs, events = run(ActionAcceptOffer(notices), tracker(text="要", intent="affirm", slots=offered,
                                                           extra_events=bot_said(RATED, wording), **LINE))
    assert texts(msgs).startswith(NOTICE_TAKEN) and slot_events(events)["notice_subject"] is None
    with notices.sessions() as s:
        sub = s.scalars(select(Subscription)).one()
        consent = s.scalars(select(SubscriptionConsent)).one()
    assert (sub.topic, sub.subject, sub.channel, sub.by_call) == ("application_progress", APP, "phone", False)
    assert consent.wording == wording and consent.action == "given"
    again, _ = run(ActionAcceptOffer(notices), tracker(text="要", intent="affirm", slots=offered,
                                                       extra_events=bot_said(RATED, wording), sender="call-n3",
                                                       metadata=LINE["metadata"]))
    assert "已经订过" in texts(again)  # the same caller on another call


def test_no_offer_after_another_flows_rating_and_no_subscription_without_the_offer(notices: Services) -> None:
    msgs, _ = run(ActionStoreRating(notices), tracker(text="5", intent="rate", slots={
        "awaiting_rating": "ticket", "notice_subject": APP}, extra_events=bot_said(RATING_QUESTION), **LINE))
    assert [m.get("response") for m in msgs] == ["utter_thanks_for_rating"]
    stale = {"offered_request": "progress_notice", "notice_subject": APP, "reminder_wording": NOTICE_OFFER + "…"}
    msgs, _ = run(ActionAcceptOffer(notices), tracker(text="好", intent="affirm", slots=stale,
                                                      extra_events=bot_said("请问还有什么事？"), **LINE))
    assert [m.get("response") for m in msgs] == ["utter_menu"]
    with notices.sessions() as s:
        assert s.scalars(select(Subscription)).all() == []


def test_a_bare_yes_the_classifier_misses_still_answers_the_offer(notices: Services) -> None:
    """"要" alone is no request to the NLU (nlu_fallback); to "要不要……告诉您？" it is the yes."""
    wording = NOTICE_OFFER + "发短信到您尾号零零零幺的手机，办完就停。要不要？"
    offered = {"offered_request": "progress_notice", "notice_subject": APP, "reminder_wording": wording}
    msgs, _ = run(ActionFallback(notices), tracker(text="要。", intent="nlu_fallback", slots=offered,
                                                   extra_events=bot_said(RATED, wording), **LINE))
    assert texts(msgs).startswith(NOTICE_TAKEN)
    msgs, _ = run(ActionFallback(notices), tracker(text="不用不用", intent="nlu_fallback", slots=offered,
                                                   extra_events=bot_said(RATED, wording), sender="call-n4",
                                                   metadata={"channel": "phone", "caller": "13800000004"}))
    assert texts(msgs) == DECLINED
    msgs, _ = run(ActionFallback(notices), tracker(text="要", intent="nlu_fallback", slots=offered,
                                                   extra_events=bot_said("请问还有什么事？"), **LINE))
    assert not texts(msgs).startswith(NOTICE_TAKEN)  # "要" to anything else is no yes to the offer
    with notices.sessions() as s:
        assert len(s.scalars(select(Subscription)).all()) == 1


def test_a_landline_caller_is_not_offered_notices_that_would_be_calls(seeded: Services) -> None:
    """Notices are texts or WeChat messages, never calls: a landline (reachable by a reminder call) is
    not offered them, rather than offered a call and then told their number was withheld."""
    calls = dataclasses.replace(seeded, subscriptions=SqlSubscriptions(seeded.sessions, seeded.sms.index, calls=True,
                                                                        progress_notices=True))
    assert offered_for(calls, APP, metadata={"channel": "phone", "caller": "05302345678"}, sender="call-n5") is None
    assert offered_for(calls, APP, **LINE) == APP


def test_on_the_phone_the_thanks_the_offer_and_its_keys_are_one_part(notices: Services) -> None:
    from voice.replies import read_reply
    from voice.wording import split_turns

    msgs, _ = run(ActionStoreRating(notices), tracker(text="5", intent="rate", extra_events=bot_said(RATING_QUESTION),
                                                      slots={"awaiting_rating": "progress", "notice_subject": APP}, **LINE))
    reply = read_reply({"messages": msgs})
    assert reply is not None and reply.keys == {"1": "/affirm", "2": "/deny"}
    assert len(split_turns(reply.lines, 150)) == 1, reply.lines  # no "接着听" before the question
    assert reply.phrases is not None and "要" in reply.phrases  # the yes/no grammar hears a bare "要"
