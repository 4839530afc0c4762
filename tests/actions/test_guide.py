from sqlalchemy import select

from actions.conversation import ActionFallback, ActionOutOfScope, ActionStoreRating
from actions.guide import ActionAnswerGuide, ActionGuideOfferAccepted
from services.container import Services
from services.models import SmsOutbox
from tests.actions.helpers import bot_said, run, slot_events, texts, tracker

PHONE = {"channel": "phone", "caller": "13800000001"}


def test_wechat_gets_the_full_section_with_link_and_source(guided: Services) -> None:
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="办身份证要带什么", intent="ask_guide", channel="wechat"))
    text = texts(msgs)
    assert "【居民身份证申领、换领、补领 · 所需材料】" in text and "居民户口簿" in text
    assert "完整指南：http://127.0.0.1:8030/guide/id-card-apply" in text and "来源：《中华人民共和国居民身份证法》" in text
    slots = slot_events(events)
    assert (slots["guide_topic"], slots["guide_section"], slots["guide_offer"]) == ("id-card-apply", "所需材料", None)


def test_phone_gets_three_short_sentences_and_an_sms_offer(guided: Services) -> None:
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="办护照要多少钱", intent="ask_guide", metadata=PHONE))
    (msg,) = msgs
    assert msg["text"].startswith("普通护照申请的收费标准：") and msg["text"].endswith("要把完整的办事指南用短信发给您吗？")
    assert "http" not in msg["text"] and msg["text"].count("。") <= 3
    assert slot_events(events)["guide_offer"] == "sms"


def test_yes_sends_the_guide_by_sms_to_the_caller(guided: Services) -> None:
    slots = {"guide_topic": "passport", "guide_section": "收费标准", "guide_offer": "sms"}
    msgs, events = run(ActionGuideOfferAccepted(guided), tracker(text="好", intent="affirm", metadata=PHONE, slots=slots))
    assert "尾号0001" in texts(msgs) and slot_events(events)["guide_offer"] is None
    with guided.sessions() as s:
        (sms,) = s.scalars(select(SmsOutbox)).all()
    assert sms.phone == "13800000001" and "普通护照申请" in sms.text and "/guide/passport" in sms.text
    # No caller ID: nothing is sent, and the caller is told so.
    msgs, _ = run(ActionGuideOfferAccepted(guided), tracker(text="好", intent="affirm", metadata={"channel": "phone"},
                                                            slots=slots))
    assert "短信发不了" in texts(msgs)


def test_a_follow_up_stays_on_the_topic(guided: Services) -> None:
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="在哪办", intent="ask_guide",
                                                          slots={"guide_topic": "id-card-apply"}))
    assert "【居民身份证申领、换领、补领 · 办理地点】" in texts(msgs) and "以当地政务服务中心公布为准" in texts(msgs)


def test_weak_match_offers_three_numbered_choices_then_takes_the_pick(guided: Services) -> None:
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="补贴", intent="ask_guide"))
    assert "请回复或说出 1、2、3" in texts(msgs) and len(msgs[0]["buttons"]) == 3
    slots = slot_events(events)
    choices = slots["guide_choices"]
    assert len(choices) == 3 and slots["guide_section"] == "概述"  # "补贴" names no aspect
    offered = bot_said(msgs[0]["text"])
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="第二个", intent="choose", slots=slots,
                                                          extra_events=offered))
    assert slot_events(events)["guide_topic"] == choices[1] and "概述" in texts(msgs) and "可以接着问" in texts(msgs)
    # A bare "2" is read as a rating by the NLU: with choices just offered and no rating asked, it picks.
    _, events = run(ActionStoreRating(guided), tracker(text="2", intent="rate", slots=slots, extra_events=offered))
    assert events == [{"event": "followup", "name": "action_answer_guide", "timestamp": None}]


def test_numbered_choices_lapse_when_another_question_follows(guided: Services) -> None:
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="补贴", intent="ask_guide"))
    slots = slot_events(events)
    later = bot_said("请说缴费户号，是10位数字。")  # the citizen went on to pay a bill
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="2", intent="choose", slots=slots, extra_events=later))
    assert "guide_topic" not in slot_events(events) and slot_events(events)["guide_choices"] is None
    assert any(m.get("response") == "utter_ask_rephrase" for m in msgs)
    _, events = run(ActionStoreRating(guided), tracker(text="2", intent="rate", slots=slots, extra_events=later))
    assert not [e for e in events if e.get("event") == "followup"]


def test_nothing_fits_offers_a_human_and_yes_hands_over(guided: Services) -> None:
    msgs, events = run(ActionAnswerGuide(guided), tracker(text="今天天气怎么样", intent="ask_guide"))
    assert "转人工" in texts(msgs) and slot_events(events)["guide_offer"] == "human"
    _, events = run(ActionGuideOfferAccepted(guided), tracker(text="好", intent="affirm", slots={"guide_offer": "human"}))
    assert {"event": "followup", "name": "action_handoff", "timestamp": None} in events


def test_without_a_knowledge_base_the_citizen_is_offered_a_human(seeded: Services) -> None:
    msgs, events = run(ActionAnswerGuide(seeded), tracker(text="办身份证要带什么", intent="ask_guide"))
    assert "暂时查不了" in texts(msgs) and slot_events(events)["guide_offer"] == "human"


def test_nlu_fallback_tries_the_guides_first(guided: Services) -> None:
    _, events = run(ActionFallback(guided), tracker(text="护照多少钱", intent="nlu_fallback"))
    assert events == [{"event": "followup", "name": "action_answer_guide", "timestamp": None}]
    msgs, events = run(ActionFallback(guided), tracker(text="阿巴阿巴", intent="nlu_fallback"))
    assert msgs[0]["response"] == "utter_ask_rephrase" and events == []


def test_out_of_scope_gives_way_to_a_confident_guide_answer(guided: Services) -> None:
    _, events = run(ActionOutOfScope(guided), tracker(text="那要多少钱", intent="out_of_scope",
                                                      slots={"guide_topic": "passport"}))
    assert events == [{"event": "followup", "name": "action_answer_guide", "timestamp": None}]
    msgs, events = run(ActionOutOfScope(guided), tracker(text="猪肉多少钱一斤", intent="out_of_scope"))
    assert msgs[0]["response"] == "utter_out_of_scope" and events == []


def test_a_second_guide_sms_within_the_minute_is_refused_honestly(guided: Services) -> None:
    slots = {"guide_topic": "passport", "guide_section": "收费标准", "guide_offer": "sms"}
    run(ActionGuideOfferAccepted(guided), tracker(text="好", intent="affirm", metadata=PHONE, slots=slots))
    msgs, _ = run(ActionGuideOfferAccepted(guided), tracker(text="好", intent="affirm", metadata=PHONE, slots=slots))
    assert "短信发得太频繁，这次没有发" in texts(msgs) and "尾号" not in texts(msgs)
