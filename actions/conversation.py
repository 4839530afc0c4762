"""Conversation control: hand-off, repeat, slow down, two-stage fallback, cancel, rating."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import (CHOICES_QUESTION, HUMAN_OFFERS, OFFERS, ServiceAction, asked_last, said_last, channel_of,
                            hand_off, reset_flow)
from actions.subscriptions import DECLINED, NOTICE_OFFER, NOTICE_SLOTS, offer_notices, take_notices, wants_notices
from knowledge.answer import answer
from textnorm.numerals import normalize_numbers

# Longest phrases first: "很不满意" must not be read as "满意".
_RATING_WORDS: tuple[tuple[str, int], ...] = (
    ("非常不满意", 1), ("很不满意", 1), ("太差", 1), ("很差", 1), ("差评", 1),
    ("不太满意", 2), ("不满意", 2),
    ("非常满意", 5), ("很满意", 5), ("特别满意", 5), ("满分", 5), ("五星", 5),
    ("一般", 3), ("还行", 3), ("凑合", 3), ("马马虎虎", 3),
    ("满意", 4), ("不错", 4), ("好评", 4), ("挺好", 4), ("很好", 5),
)
_CHINESE_SCORE = {"一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}


RATED = "谢谢。"  # before an offer: short, so that the offer fits one part on the phone


def parse_rating(text: str, entity: str | None = None) -> int | None:
    """A 1-5 score from a rating entity, a digit, a Chinese numeral or words like "很满意"."""
    for candidate in (entity, normalize_numbers(text)):
        if candidate:
            m = re.search(r"(?<!\d)([1-5])(?!\d)", candidate)
            if m:
                return int(m.group(1))
    m = re.search(r"([一幺二两三四五])\s*分", text)
    if m:
        return _CHINESE_SCORE[m.group(1)]
    for word, score in _RATING_WORDS:
        if word in text:
            return score
    return None


def last_bot_turn(tracker: Tracker) -> list[dict[str, Any]]:
    """The bot messages sent in answer to the user message before the latest one."""
    events = tracker.events
    user_idx = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if len(user_idx) < 1:
        return []
    end = user_idx[-1]
    start = user_idx[-2] if len(user_idx) > 1 else -1
    return [e for e in events[start + 1:end] if e.get("event") == "bot"]


class ActionHandoff(ServiceAction):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        offered = any(
            e.get("event") == "action" and e.get("name") == "action_offer_human" for e in tracker.events[-6:]
        )
        handoff_id = hand_off(self.services, dispatcher, tracker, "fallback" if offered else "requested")
        return reset_flow() + [SlotSet("handoff_id", str(handoff_id))]


class ActionRepeat(Action):
    def name(self) -> str:
        return "action_repeat"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        turn = last_bot_turn(tracker)
        if tracker.active_loop:
            # The form asks its question again right after this action: repeat what came before it.
            turn = turn[:-1]
        elif not turn:
            dispatcher.utter_message(response="utter_menu")
            return []
        for event in turn:
            data = event.get("data") or {}
            dispatcher.utter_message(
                text=event.get("text"), buttons=data.get("buttons") or [], json_message=data.get("custom")
            )
        return []


class ActionSlowDown(Action):
    def name(self) -> str:
        return "action_slow_down"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_slow_down")
        if channel_of(tracker) == "phone":
            dispatcher.utter_message(json_message={"speech": {"rate": "slow"}})
        if not tracker.active_loop:
            # Outside a form, say the last answer again, slowly. A form asks again by itself.
            await ActionRepeat().run(dispatcher, tracker, domain)
        return [SlotSet("slow_speech", True)]


class ActionFallback(ServiceAction):
    """What the NLU could not place goes to the service guides first; when they hold nothing that
    fits, the two-stage fallback: ask to rephrase once, the second time in a row offer a human."""

    def name(self) -> str:
        return "action_fallback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        kb = self.services.knowledge
        text = (tracker.latest_message or {}).get("text") or ""
        if tracker.get_slot("offered_request") == "progress_notice" and said_last(tracker, NOTICE_OFFER):
            wants = wants_notices(text)  # "要" to "要不要……告诉您？"
            if wants is True:
                return take_notices(self.services, dispatcher, tracker)
            if wants is False:
                dispatcher.utter_message(text=DECLINED)
                return [SlotSet(name, None) for name in NOTICE_SLOTS]
        if kb is not None and text.strip():
            reply = answer(kb, text, context_slug=tracker.get_slot("guide_topic"))
            if reply.kind != "none":
                return [FollowupAction("action_answer_guide")]
        misses = 0
        for event in reversed(tracker.events):
            if event.get("event") != "user":
                continue
            if (event.get("parse_data") or {}).get("intent", {}).get("name") != "nlu_fallback":
                break
            misses += 1
        if misses >= 2:
            return [FollowupAction("action_offer_human")]
        dispatcher.utter_message(response="utter_ask_rephrase")
        return []


class ActionOutOfScope(ServiceAction):
    """Outside a form, what the NLU calls out of scope may still be a service question it did not
    recognise ("那要多少钱" after a guide answer): a confident guide answer wins, else the usual reply."""

    def name(self) -> str:
        return "action_out_of_scope"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        kb = self.services.knowledge
        text = (tracker.latest_message or {}).get("text") or ""
        if kb is not None and answer(kb, text, context_slug=tracker.get_slot("guide_topic")).kind == "answer":
            return [FollowupAction("action_answer_guide")]
        dispatcher.utter_message(response="utter_out_of_scope")
        return []


class ActionOfferHuman(Action):
    def name(self) -> str:
        return "action_offer_human"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_offer_human")
        return []


class ActionCancelFlow(Action):
    def name(self) -> str:
        return "action_cancel_flow"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_cancelled")
        return reset_flow()


class ActionStoreRating(ServiceAction):
    """A score, but only as the answer to the rating question just asked: a bare "2" after any
    other question (a menu, a yes/no, a number) is not a rating."""

    def name(self) -> str:
        return "action_store_rating"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        flow = tracker.get_slot("awaiting_rating")
        if tracker.get_slot("guide_choices") and said_last(tracker, CHOICES_QUESTION):
            return [FollowupAction("action_answer_guide")]  # "2" picks one of the guides just offered
        if not flow or not asked_last(tracker, domain, "utter_ask_rating"):
            dispatcher.utter_message(response="utter_ask_rephrase")
            return [SlotSet("awaiting_rating", None), SlotSet("rating", None)]
        text = (tracker.latest_message or {}).get("text") or ""
        score = parse_rating(text, next(tracker.get_latest_entity_values("rating"), None))
        if score is None:
            dispatcher.utter_message(text="请说1到5分，5分最满意。")
            return []
        self.services.ratings.record(sender_id=tracker.sender_id, channel=channel_of(tracker), flow=flow, score=score)
        done = [SlotSet("awaiting_rating", None), SlotSet("rating", None)]
        if flow == "progress" and tracker.get_slot("notice_subject"):  # an unfinished application: its news?
            dispatcher.utter_message(text=RATED)
            return done + offer_notices(self.services, dispatcher, tracker)
        dispatcher.utter_message(response="utter_thanks_for_rating")
        return done


class ActionAcceptOffer(ServiceAction):
    """"好" outside a form: starts the request the last answer offered ("还要交费吗？") or the hand-off it
    offered ("给您转人工吧？"), takes the progress notices it offered, else the menu."""

    def name(self) -> str:
        return "action_accept_offer"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        offered = tracker.get_slot("offered_request")
        if offered == "progress_notice" and said_last(tracker, NOTICE_OFFER):
            return take_notices(self.services, dispatcher, tracker)
        if offered in OFFERS and said_last(tracker, OFFERS[offered][0]):
            return [SlotSet("offered_request", None), FollowupAction(OFFERS[offered][1])]
        if any(asked_last(tracker, domain, response) for response in HUMAN_OFFERS):
            return [SlotSet("offered_request", None), FollowupAction("action_handoff")]
        dispatcher.utter_message(response="utter_menu")
        return [SlotSet("offered_request", None)]
