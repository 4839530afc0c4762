"""The NLU export keeps citizens' text as text: their brackets never become annotations, and the
classifier's "cannot tell" is never a training label. A test story has the forms' active_loop
steps, stand-ins for masked numbers, and after a corrected message what the rules do for it
(that they pass `rasa test` is tests/e2e/test_story_exports.py)."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from console.conversations import Turn
from console.dialogue import Dialogue
from console.exports import nlu_yaml
from console.exports import test_story as story_yaml
from console.standins import StandIns
from services.models import MessageAnnotation
from services.settings import ROOT
from textnorm.ids import is_valid_id_number
from textnorm.masking import mask
from textnorm.numbers import kind_of


def correction(text: str, intent: str, entities: list[dict[str, str]] | None = None) -> MessageAnnotation:
    return MessageAnnotation(sender_id="s", event_id=1, text=text, intent=intent, flagged=False,
                             entities=json.dumps(entities or [], ensure_ascii=False))


def test_citizens_brackets_stay_text_and_only_known_names_annotate() -> None:
    exported = nlu_yaml([
        correction("我想问[身份证](证件)在哪办", "ask_guide", [{"entity": "service", "value": "身份证"}]),
        correction("{\"a\": 1} 交电费", "pay_bill", [{"entity": "bill type", "value": "电费"}]),
        correction("这个咋弄", "nlu_fallback"),
    ])
    data = yaml.safe_load(exported)
    examples = {item["intent"]: item["examples"] for item in data["nlu"]}
    assert set(examples) == {"ask_guide", "pay_bill"}  # nlu_fallback is not a label
    assert examples["ask_guide"] == "- 我想问［[身份证](service)］（证件）在哪办\n"
    assert examples["pay_bill"] == "- ｛\"a\": 1｝ 交电费\n"  # "bill type" is no entity name: left out
    assert "(证件)" not in exported


AT = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
DIALOGUE = Dialogue.load(ROOT / "bot")


def user(text: str, intent: str, entities: list[dict[str, str]] | None = None,
         corrected: str | None = None) -> Turn:
    note = MessageAnnotation(sender_id="s", event_id=1, intent=corrected, entities="[]", flagged=False) if corrected else None
    return Turn(1, "user", AT, mask(text), intent, 0.9,
                [{"entity": e["entity"], "value": mask(e["value"])} for e in entities or []], annotation=note)


def act(name: str, policy: str = "RulePolicy") -> Turn:
    return Turn(2, "action", AT, name, detail={"policy": policy, "confidence": 1.0})


def steps_of(turns: list[Turn]) -> list[list[dict[str, object]]]:
    exported = yaml.safe_load(story_yaml("c0123", turns, DIALOGUE))
    assert exported["version"] == "3.1"
    return [story["steps"] for story in exported["stories"]]


def test_stand_ins_are_valid_fictional_and_never_the_masked_number() -> None:
    s = StandIns()
    phone, id_number, account = s.number("138****9001"), s.number("3717**********1230"), s.number("100*****01")
    assert kind_of(phone) == "phone_number" and mask(phone) != "138****9001"  # 13800009001 could be the real one
    assert is_valid_id_number(id_number) and id_number[6:14] == "19000101"
    assert kind_of(account) == "account_number" and account != "1000000001" and account[0] == "1"
    assert s.number("138****9001") == phone and s.text("又说138****9001") == f"又说{phone}"
    assert StandIns().text("卡号6222***********0123 电话+86139****5678") == "卡号6200000000000000018 电话+8613800009001"


def test_forms_become_active_loop_steps_and_numbers_stand_ins() -> None:
    [steps] = steps_of([
        act("action_session_start"), user("我要缴费", "pay_bill"), act("bill_form"), act("action_listen"),
        user("户号1000000001", "inform", [{"entity": "account_number", "value": "1000000001"}]), act("bill_form"),
        user("确认", "affirm"), act("bill_form"), act("action_pay_bill"),
    ])
    assert steps == [
        {"user": "我要缴费", "intent": "pay_bill"}, {"action": "bill_form"}, {"active_loop": "bill_form"},
        {"user": "户号[1000000002](account_number)", "intent": "inform"}, {"action": "bill_form"},
        {"user": "确认", "intent": "affirm"}, {"action": "bill_form"}, {"active_loop": None},
        {"action": "action_pay_bill"},
    ]


def test_spoken_numbers_are_written_as_digits_where_an_entity_needs_them() -> None:
    [steps] = steps_of([user("二〇二六幺幺〇幺〇〇〇〇〇幺", "inform", [{"entity": "application_number", "value": "20261101000001"}]),
                        act("progress_form"), act("action_answer_progress")])
    assert steps == [{"user": "[20261101000001](application_number)", "intent": "inform"}, {"action": "progress_form"},
                     {"active_loop": "progress_form"}, {"active_loop": None}, {"action": "action_answer_progress"}]


def test_a_corrected_message_ends_the_story_with_what_the_rules_do() -> None:
    outside = steps_of([user("俺家那个啥弄不成了", "nlu_fallback", corrected="give_feedback"), act("action_fallback"),
                        user("路灯不亮了", "give_feedback"), act("feedback_form")])
    assert outside == [[{"user": "俺家那个啥弄不成了", "intent": "give_feedback"}, {"action": "feedback_form"},
                        {"active_loop": "feedback_form"}]]
    inside = steps_of([user("交电费", "pay_bill"), act("bill_form"), user("算了不交了", "deny", corrected="cancel"),
                       act("bill_form")])
    assert inside[0][-4:] == [{"user": "算了不交了", "intent": "cancel"}, {"action": "action_deactivate_loop"},
                              {"active_loop": None}, {"action": "action_cancel_flow"}]
    answer = steps_of([user("交电费", "pay_bill"), act("bill_form"), user("2000000001", "out_of_scope", corrected="inform"),
                       act("utter_out_of_scope"), act("bill_form")])
    assert answer[0][-2:] == [{"user": "2000000002", "intent": "inform"}, {"action": "bill_form"}]  # the form takes it


def test_followup_actions_end_the_story_and_sessions_are_stories() -> None:
    stories = steps_of([user("阿巴阿巴", "nlu_fallback"), act("action_fallback"), act("action_answer_guide", "followup_action"),
                        user("好", "affirm"), act("action_guide_offer_accepted"),
                        act("action_session_start"), user("你好", "greet"), act("utter_greet")])
    assert stories == [[{"user": "阿巴阿巴", "intent": "nlu_fallback"}, {"action": "action_fallback"}],
                       [{"user": "你好", "intent": "greet"}, {"action": "utter_greet"}]]


def test_a_conversation_with_more_numbers_than_stand_ins_is_refused_not_looped() -> None:
    from console.standins import SERIES, StandIns, TooManyNumbers

    stand_ins = StandIns()
    given = {stand_ins.number(f"139****{n:04d}") for n in range(SERIES)}
    assert len(given) == SERIES
    with pytest.raises(TooManyNumbers):
        for n in range(SERIES, 2 * SERIES):
            stand_ins.number(f"139****{n:04d}")
