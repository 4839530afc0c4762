import pytest
from sqlalchemy import select

from actions.conversation import (
    ActionFallback,
    ActionHandoff,
    ActionRepeat,
    ActionSlowDown,
    ActionStoreRating,
    parse_rating,
)
from services.container import Services
from services.models import Handoff, Rating
from tests.actions.helpers import run, slot_events, texts, tracker


@pytest.mark.parametrize(("said", "score"), [
    ("5", 5), ("给4分", 4), ("五分", 5), ("两分", 2), ("很不满意", 1), ("不满意", 2), ("一般般", 3),
    ("满意", 4), ("非常满意", 5), ("嗯", None), ("12345", None)])
def test_parse_rating(said: str, score: int | None) -> None:
    assert parse_rating(said) == score


def test_rating_is_stored_for_the_flow_just_finished(seeded: Services) -> None:
    msgs, events = run(ActionStoreRating(seeded), tracker(text="很满意", intent="rate", channel="rest",
                                                          slots={"awaiting_rating": "bill"}))
    assert slot_events(events)["awaiting_rating"] is None
    assert any(m.get("response") == "utter_thanks_for_rating" for m in msgs)
    with seeded.sessions() as s:
        (r,) = s.scalars(select(Rating)).all()
    assert (r.flow, r.score, r.channel) == ("bill", 5, "rest")


def test_rating_without_a_question_is_not_stored(seeded: Services) -> None:
    run(ActionStoreRating(seeded), tracker(text="5", intent="rate"))
    with seeded.sessions() as s:
        assert s.scalars(select(Rating)).all() == []


def test_handoff_on_the_phone_emits_a_payload(seeded: Services) -> None:
    msgs, events = run(ActionHandoff(seeded), tracker(text="转人工", intent="request_human",
                                                      metadata={"channel": "phone", "caller": "13800000001"}))
    payload = next(m["custom"] for m in msgs if m.get("custom"))
    with seeded.sessions() as s:
        h = s.get(Handoff, payload["handoff"]["id"])
    assert h is not None and h.channel == "phone" and h.reason == "requested"
    assert slot_events(events)["handoff_id"] == str(h.id)


def test_handoff_on_wechat_has_no_payload(seeded: Services) -> None:
    msgs, _ = run(ActionHandoff(seeded), tracker(text="转人工", intent="request_human", channel="wechat"))
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
