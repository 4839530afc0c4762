from actions.progress import NO_NUMBER, ActionAnswerProgress, ValidateProgressForm
from services.container import Services
from tests.actions.helpers import run, slot_events, texts, tracker


def validate(services: Services, **kw):  # type: ignore[no-untyped-def]
    return run(ValidateProgressForm(services), tracker(active_loop="progress_form", **kw))


def test_a_known_number_is_accepted_and_only_it_is_required(seeded: Services) -> None:
    msgs, events = validate(seeded, text="二〇二六幺幺〇幺〇〇〇〇〇幺", filled={"application_number": "二〇二六幺幺〇幺〇〇〇〇〇幺"},
                            slots={"requested_slot": "application_number"})
    slots = slot_events(events)
    assert slots["application_number"] == "20261101000001"
    assert slots["requested_slot"] is None  # nothing else to ask
    assert msgs == []


def test_an_unknown_number_asks_again_then_hands_off(seeded: Services) -> None:
    msgs, events = validate(seeded, text="20990101000001", filled={"application_number": "20990101000001"})
    assert "没有查到这个编号" in texts(msgs)
    assert slot_events(events)["application_number"] is None
    assert slot_events(events)["failed_attempts"] == 1

    msgs, events = validate(seeded, text="20990101000002", filled={"application_number": "20990101000002"},
                            slots={"failed_attempts": 1})
    slots = slot_events(events)
    assert "转人工" in texts(msgs)
    assert slots["flow_stopped"] is True and slots["handoff_id"]
    assert slots["requested_slot"] is None  # the form ends


def test_a_malformed_number_is_explained(seeded: Services) -> None:
    msgs, _ = validate(seeded, text="12345", filled={"application_number": "12345"})
    assert "14位数字" in texts(msgs)


def test_no_number_switches_to_phone_and_id(seeded: Services) -> None:
    _, events = validate(seeded, text="没有", intent="deny", filled={"application_number": "没有"})
    slots = slot_events(events)
    assert slots["application_number"] == NO_NUMBER
    assert "requested_slot" not in slots  # all three slots required: Rasa asks for the next one


def test_phone_callers_are_looked_up_by_their_caller_id(seeded: Services) -> None:
    msgs, events = validate(seeded, text="没有", intent="deny", filled={"application_number": "没有"},
                            channel="rest", metadata={"channel": "phone", "caller": "13800000001"})
    slots = slot_events(events)
    assert slots["lookup_phone"] == "13800000001"
    assert "requested_slot" not in slots
    assert "来电" in texts(msgs)


def test_wrong_last_four_digits_are_refused(seeded: Services) -> None:
    msgs, events = validate(seeded, text="9999", filled={"id_last4": "9999"},
                            slots={"application_number": NO_NUMBER, "lookup_phone": "13800000001"})
    assert "对不上" in texts(msgs)
    assert slot_events(events)["id_last4"] is None


def test_answer_by_number_gives_status_step_date_and_office(seeded: Services) -> None:
    msgs, events = run(ActionAnswerProgress(seeded), tracker(slots={"application_number": "20261101000001"}))
    text = texts(msgs)
    assert "审核中" in text and "材料审核" in text and "预计" in text and "牡丹区政务服务中心" in text
    assert any(m.get("response") == "utter_ask_rating" for m in msgs)
    assert slot_events(events)["awaiting_rating"] == "progress"
    assert slot_events(events)["application_number"] is None  # flow slots are reset


def test_answer_by_applicant_lists_several_briefly(seeded: Services) -> None:
    msgs, _ = run(ActionAnswerProgress(seeded), tracker(
        slots={"application_number": NO_NUMBER, "lookup_phone": "13800000001", "id_last4": "1230"}))
    text = texts(msgs)
    assert "查到您2件事" in text and "1. 个体工商户营业执照设立登记" in text and "2. 不动产登记" in text


def test_a_stopped_flow_answers_nothing(seeded: Services) -> None:
    msgs, events = run(ActionAnswerProgress(seeded), tracker(slots={"flow_stopped": True}))
    assert msgs == [] and slot_events(events)["flow_stopped"] is None


def test_a_new_flow_lets_an_unanswered_rating_question_lapse(seeded: Services) -> None:
    _, events = validate(seeded, text="20261101000001", filled={"application_number": "20261101000001"},
                         slots={"awaiting_rating": "bill"})
    assert slot_events(events)["awaiting_rating"] is None
