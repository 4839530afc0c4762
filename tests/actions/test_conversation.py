import pytest
from sqlalchemy import select

from actions.conversation import (
    ActionAcceptOffer,
    ActionFallback,
    ActionHandoff,
    ActionRepeat,
    ActionSlowDown,
    ActionStoreRating,
    parse_rating,
)
from services.container import Services
from services.models import Handoff, Rating
from tests.actions.helpers import RATING_QUESTION, bot_said, run, slot_events, texts, tracker


@pytest.mark.parametrize(("said", "score"), [
    ("5", 5), ("给4分", 4), ("五分", 5), ("两分", 2), ("很不满意", 1), ("不满意", 2), ("一般般", 3),
    ("满意", 4), ("非常满意", 5), ("嗯", None), ("12345", None)])
def test_parse_rating(said: str, score: int | None) -> None:
    assert parse_rating(said) == score


def test_rating_is_stored_for_the_flow_just_finished(seeded: Services) -> None:
    msgs, events = run(ActionStoreRating(seeded), tracker(text="很满意", intent="rate", channel="rest",
                                                          slots={"awaiting_rating": "bill"},
                                                          extra_events=bot_said("已生成缴费订单。", RATING_QUESTION)))
    assert slot_events(events)["awaiting_rating"] is None
    assert any(m.get("response") == "utter_thanks_for_rating" for m in msgs)
    with seeded.sessions() as s:
        (r,) = s.scalars(select(Rating)).all()
    assert (r.flow, r.score, r.channel) == ("bill", 5, "rest")


def test_rating_without_a_question_is_not_stored(seeded: Services) -> None:
    run(ActionStoreRating(seeded), tracker(text="5", intent="rate"))
    with seeded.sessions() as s:
        assert s.scalars(select(Rating)).all() == []


@pytest.mark.parametrize("question", ["要把完整的办事指南用短信发给您吗？", "请问您要办什么事？", "请说缴费户号，是10位数字。"])
def test_a_bare_number_after_another_question_is_not_a_rating(seeded: Services, question: str) -> None:
    # The rating question was asked two turns ago and lapsed: "2" now answers the newer question.
    msgs, events = run(ActionStoreRating(seeded), tracker(text="2", intent="rate", slots={"awaiting_rating": "progress"},
                                                          extra_events=bot_said(question)))
    assert any(m.get("response") == "utter_ask_rephrase" for m in msgs)
    assert slot_events(events)["awaiting_rating"] is None
    with seeded.sessions() as s:
        assert s.scalars(select(Rating)).all() == []


@pytest.mark.parametrize(("said", "score"), [("5", 5), ("1", 1), ("五分", 5), ("很不满意", 1), ("4", 4)])
def test_the_number_said_for_a_rating_is_the_score(seeded: Services, said: str, score: int) -> None:
    run(ActionStoreRating(seeded), tracker(text=said, intent="rate", slots={"awaiting_rating": "ticket"},
                                           extra_events=bot_said(RATING_QUESTION)))
    with seeded.sessions() as s:
        (r,) = s.scalars(select(Rating)).all()
    assert r.score == score


def test_yes_to_an_offered_second_request_starts_its_form(seeded: Services) -> None:
    _, events = run(ActionAcceptOffer(seeded), tracker(text="好", intent="affirm", slots={"offered_request": "pay_bill"},
                                                 extra_events=bot_said("还要交费吗？")))
    assert {"event": "followup", "name": "bill_form", "timestamp": None} in events
    # The same "好" when the offer was not the last question: the menu, nothing started.
    msgs, events = run(ActionAcceptOffer(seeded), tracker(text="好", intent="affirm", slots={"offered_request": "pay_bill"},
                                                    extra_events=bot_said("请问您要办什么事？")))
    assert not [e for e in events if e.get("event") == "followup"]
    assert any(m.get("response") == "utter_menu" for m in msgs)


def test_handoff_on_the_phone_emits_a_payload(seeded: Services) -> None:
    msgs, events = run(ActionHandoff(seeded), tracker(text="转人工", intent="request_human",
                                                      metadata={"channel": "phone", "caller": "13800000001"}))
    payload = next(m["custom"] for m in msgs if m.get("custom"))
    with seeded.sessions() as s:
        h = s.get(Handoff, payload["handoff"]["id"])
    assert h is not None and h.channel == "phone" and h.reason == "requested"
    assert slot_events(events)["handoff_id"] == str(h.id)


def test_handoff_on_wechat_emits_the_payload_its_channel_transfers_on(seeded: Services) -> None:
    for channel in ("wechat", "miniprogram"):
        msgs, _ = run(ActionHandoff(seeded), tracker(text="转人工", intent="request_human", channel=channel))
        assert "转人工" in texts(msgs)
        assert next(m["custom"] for m in msgs if m.get("custom"))["handoff"]["reason"] == "requested"


def test_handoff_on_the_web_has_no_payload(seeded: Services) -> None:
    msgs, _ = run(ActionHandoff(seeded), tracker(text="转人工", intent="request_human", channel="rest"))
    assert "转人工" in texts(msgs) and not any(m.get("custom") for m in msgs)


def test_repeat_says_the_last_turn_again_with_its_buttons() -> None:
    msgs, _ = run(ActionRepeat(), tracker(text="再说一遍", intent="repeat"))
    assert msgs[0]["text"] == "您好，我是菏泽市民政务助手。" and msgs[0]["buttons"][0]["title"] == "缴费"


def test_repeat_inside_a_form_leaves_the_question_to_the_form() -> None:
    msgs, _ = run(ActionRepeat(), tracker(text="再说一遍", intent="repeat", active_loop="bill_form"))
    assert msgs == []


def test_slow_down_sets_the_slot_and_tells_the_phone() -> None:
    msgs, events = run(ActionSlowDown(), tracker(text="说慢点", intent="slow_down", metadata={"channel": "phone"}))
    assert slot_events(events)["slow_speech"] is True
    assert {"speech": {"rate": "slow"}} in [m.get("custom") for m in msgs]


def test_fallback_asks_to_rephrase_then_offers_a_human(seeded: Services) -> None:
    miss = {"event": "user", "text": "阿巴", "timestamp": 1800000050.0,
            "parse_data": {"intent": {"name": "nlu_fallback"}, "entities": []}}
    msgs, events = run(ActionFallback(seeded), tracker(text="阿巴阿巴", intent="nlu_fallback"))
    assert msgs[0]["response"] == "utter_ask_rephrase" and events == []
    msgs, events = run(ActionFallback(seeded), tracker(text="阿巴阿巴", intent="nlu_fallback", extra_events=[miss]))
    assert msgs == [] and events == [{"event": "followup", "name": "action_offer_human", "timestamp": None}]
