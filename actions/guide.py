"""Service-guide answers from the knowledge base, shaped for the channel the citizen uses."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import CHOICES_QUESTION, ServiceAction, caller_number, channel_of, said_last
from actions.sms import NOT_SENT, arrives, send_sms
from knowledge.answer import Answer, answer, pick, spoken
from knowledge.index import Hit
from knowledge.text import OVERVIEW, aspect_of
from services.sms import SmsMessage
from textnorm.ids import is_valid_mobile

NUMBERS = "①②③"
UNAVAILABLE = "办事指南暂时查不了。需要为您转人工吗？"
NOTHING_FITS = "这个问题我在办事指南里没有找到答案。需要为您转人工吗？"


def guide_url(base_url: str, slug: str) -> str:
    return f"{base_url.rstrip('/')}/guide/{slug}"


def written_answer(hit: Hit, source: str, department: str, updated: str, url: str) -> str:
    """The full section for WeChat and the web: title, section, text, link and source."""
    return (f"【{hit.title} · {hit.section}】\n{hit.text}\n\n完整指南：{url}\n"
            f"来源：{source}（{department}，{updated}更新）")


def spoken_answer(hit: Hit) -> str:
    """At most three short sentences for the phone, the first naming the topic and section."""
    lines = spoken(hit.text)
    title = re.sub(r"（[^）]*）", "", hit.title)  # brackets are not read aloud well: 低保申请, not 低保（…）申请
    # The overview already says what the guide is; "X的概述" is written Chinese, not spoken.
    named = title if hit.section == OVERVIEW else f"{title}的{hit.section}"
    lines[0] = f"{named}：{lines[0]}" if lines else f"{named}。"
    return "".join(lines)


class ActionAnswerGuide(ServiceAction):
    """Answers ``ask_guide`` (and what the fallback passes on): one section, three numbered
    choices when the match is weak, or an offer of a human when nothing fits. The topic stays in
    ``guide_topic`` so that "在哪办" after "办身份证要带什么" answers about the same thing."""

    def name(self) -> str:
        return "action_answer_guide"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        kb = self.services.knowledge
        if kb is None:
            dispatcher.utter_message(text=UNAVAILABLE)
            return [SlotSet("guide_offer", "human")]
        text = (tracker.latest_message or {}).get("text") or ""
        # Numbered choices answer only the question that offered them.
        offered = said_last(tracker, CHOICES_QUESTION)
        choices: list[str] = [c for c in (tracker.get_slot("guide_choices") or []) if c in kb.topics] if offered else []
        if choices:
            chosen = pick(choices, next(tracker.get_latest_entity_values("guide_choice"), None) or text)
            if chosen:
                section = tracker.get_slot("guide_section") or OVERVIEW
                topic = kb.topics[chosen]
                s = topic.section(section)
                return self._say(dispatcher, tracker, Hit(s.slug, s.title, s.name, 1.0, s.text))
        elif ((tracker.latest_message or {}).get("intent") or {}).get("name") == "choose":
            # "2" with no choices just offered: it answers nothing we asked.
            dispatcher.utter_message(response="utter_ask_rephrase")
            return [SlotSet("guide_choices", None)]
        reply = answer(kb, text, context_slug=tracker.get_slot("guide_topic"))
        # A guide question is no flow: a second request said with it is not kept for a later flow's end.
        return self._reply(dispatcher, tracker, reply, text) + [SlotSet("pending_request", None)]

    def _reply(self, dispatcher: CollectingDispatcher, tracker: Tracker, reply: Answer, text: str) -> list[EventType]:
        if reply.kind == "answer" and reply.hit:
            return self._say(dispatcher, tracker, reply.hit)
        if reply.kind == "choices":
            lines = [f"{n}. {hit.title}" for n, hit in enumerate(reply.choices, start=1)]
            dispatcher.utter_message(
                text=CHOICES_QUESTION + "\n" + "\n".join(lines) + "\n请回复或说出 1、2、3。",
                buttons=[{"title": f"{n}. {hit.title}", "payload": f'/choose{{"guide_choice": "{n}"}}'}
                         for n, hit in enumerate(reply.choices, start=1)],
            )
            return [
                SlotSet("guide_choices", [h.slug for h in reply.choices]),
                SlotSet("guide_section", aspect_of(text) or OVERVIEW),  # no aspect named: the overview
                SlotSet("guide_offer", None),
            ]
        dispatcher.utter_message(text=NOTHING_FITS)
        return [SlotSet("guide_choices", None), SlotSet("guide_offer", "human")]

    def _say(self, dispatcher: CollectingDispatcher, tracker: Tracker, hit: Hit) -> list[EventType]:
        kb = self.services.knowledge
        assert kb is not None
        topic = kb.topics[hit.slug]
        events: list[EventType] = [
            SlotSet("guide_topic", hit.slug), SlotSet("guide_section", hit.section), SlotSet("guide_choices", None),
        ]
        if channel_of(tracker) == "phone":
            dispatcher.utter_message(text=spoken_answer(hit) + "要把完整的办事指南用短信发给您吗？")
            return events + [SlotSet("guide_offer", "sms")]
        url = guide_url(self.services.public_base_url, hit.slug)
        dispatcher.utter_message(text=written_answer(hit, topic.source, topic.department, topic.updated, url))
        return events + [SlotSet("guide_offer", None)]


class ActionGuideOfferAccepted(ServiceAction):
    """"好" after a guide answer: send the SMS the phone answer offered, or hand over to a human."""

    def name(self) -> str:
        return "action_guide_offer_accepted"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        offer = tracker.get_slot("guide_offer")
        kb = self.services.knowledge
        slug = tracker.get_slot("guide_topic")
        if offer == "human":
            return [SlotSet("guide_offer", None), FollowupAction("action_handoff")]
        if offer != "sms" or kb is None or slug not in kb.topics:
            dispatcher.utter_message(response="utter_menu")
            return [SlotSet("guide_offer", None)]
        caller = caller_number(tracker)
        if not caller or not is_valid_mobile(caller):
            dispatcher.utter_message(text="没有拿到您的手机号，短信发不了。需要的话，请说“转人工”。")
            return [SlotSet("guide_offer", None)]
        section = tracker.get_slot("guide_section") or OVERVIEW
        sms = await send_sms(self.services, caller, SmsMessage("guide_link", {
            "title": kb.topics[slug].title, "section": section, "slug": slug}))
        if sms in NOT_SENT:
            dispatcher.utter_message(text=f"{NOT_SENT[sms]}需要的话，请说“转人工”。")
        else:
            dispatcher.utter_message(text=f"好的，完整指南{arrives(sms)}用短信发到您尾号{caller[-4:]}的手机上。还有别的事吗？")
        return [SlotSet("guide_offer", None)]
