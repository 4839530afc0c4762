from sqlalchemy import select

from actions.feedback import ActionAnswerTicket, ActionSubmitFeedback, ValidateFeedbackForm, ValidateTicketForm, described_matter
from services.container import Services
from services.models import FeedbackTicket, SmsOutbox
from tests.actions.helpers import run, slot_events, texts, tracker

FILLED = {"feedback_category": "complaint", "feedback_content": "工厂半夜排污，河里死鱼", "feedback_location": "巨野县某村"}


def test_described_matter() -> None:
    assert described_matter("我要投诉") is None
    assert described_matter("反映个情况") is None
    assert described_matter("路灯坏了好几天了") == "路灯坏了好几天了"


def test_category_takes_the_matter_from_the_first_message(seeded: Services) -> None:
    first = {"event": "user", "text": "小区门口垃圾没人清", "timestamp": 1800000050.0,
             "parse_data": {"intent": {"name": "give_feedback"}, "entities": []}}
    _, events = run(ValidateFeedbackForm(seeded), tracker(
        text="投诉", intent="give_feedback", active_loop="feedback_form", filled={"feedback_category": "投诉"},
        extra_events=[first]))
    slots = slot_events(events)
    assert slots["feedback_category"] == "complaint"
    assert slots["feedback_content"] == "小区门口垃圾没人清"


def test_contact_anonymous_phone_or_retry(seeded: Services) -> None:
    v = ValidateFeedbackForm(seeded)
    _, ev = run(v, tracker(text="匿名", intent="deny", active_loop="feedback_form", filled={"feedback_contact": "匿名"}))
    assert slot_events(ev)["feedback_contact"] == "anonymous"
    _, ev = run(v, tracker(text="幺三八零零零零零零零五", active_loop="feedback_form",
                           filled={"feedback_contact": "幺三八零零零零零零零五"}))
    assert slot_events(ev)["feedback_contact"] == "13800000005"
    msgs, ev = run(v, tracker(text="123", active_loop="feedback_form", filled={"feedback_contact": "123"}))
    assert "11位" in texts(msgs) and slot_events(ev)["feedback_contact"] is None


def test_submit_routes_and_confirms_with_a_short_number(seeded: Services) -> None:
    msgs, events = run(ActionSubmitFeedback(seeded), tracker(slots={**FILLED, "feedback_contact": "13800000005"}))
    with seeded.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.sender_id == "citizen-1")).one()
        sms = s.scalars(select(SmsOutbox)).one()
    assert ticket.department == "生态环境" and len(ticket.number) == 8
    assert f"工单号：{ticket.number}" in texts(msgs) and "生态环境" in texts(msgs)
    assert ticket.number in sms.text and sms.phone == "13800000005"
    assert slot_events(events)["awaiting_rating"] == "feedback"


def test_phone_callers_hear_the_ticket_number_digit_by_digit(seeded: Services) -> None:
    msgs, _ = run(ActionSubmitFeedback(seeded), tracker(slots={**FILLED, "feedback_contact": "anonymous"},
                                                        metadata={"channel": "phone"}))
    with seeded.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.sender_id == "citizen-1")).one()
        assert ticket.contact_phone is None and s.scalars(select(SmsOutbox)).all() == []
    assert ticket.number not in texts(msgs) and "，" in texts(msgs).split("工单号：")[1]


def test_ticket_status(seeded: Services) -> None:
    msgs, _ = run(ValidateTicketForm(seeded), tracker(text="10000009", active_loop="ticket_form",
                                                      filled={"ticket_number": "10000009"}))
    assert "没有查到" in texts(msgs)
    _, ev = run(ValidateTicketForm(seeded), tracker(text="幺〇〇〇〇〇〇幺", active_loop="ticket_form",
                                                    filled={"ticket_number": "幺〇〇〇〇〇〇幺"}))
    assert slot_events(ev)["ticket_number"] == "10000001"
    msgs, _ = run(ActionAnswerTicket(seeded), tracker(slots={"ticket_number": "10000001"}))
    assert "正在处理" in texts(msgs) and "城管" in texts(msgs)


def test_a_second_request_is_offered_instead_of_the_rating(seeded: Services) -> None:
    msgs, events = run(ActionAnswerTicket(seeded), tracker(text="10000001", slots={
        "ticket_number": "10000001", "pending_request": "pay_bill"}))
    assert "还要交费吗？" in texts(msgs) and not any(m.get("response") == "utter_ask_rating" for m in msgs)
    offer = next(m for m in msgs if m.get("text") == "还要交费吗？")
    assert [b["payload"] for b in offer["buttons"]] == ["/pay_bill", "/deny"]
    slots = slot_events(events)
    assert slots["offered_request"] == "pay_bill" and slots["pending_request"] is None
    assert "awaiting_rating" not in slots


def _location(services: Services, said: str):  # type: ignore[no-untyped-def]
    return run(ValidateFeedbackForm(services), tracker(
        active_loop="feedback_form", text=said, filled={"feedback_location": said},
        slots={"feedback_category": "complaint", "feedback_content": "路灯坏了半个月", "requested_slot": "feedback_location"}))


def test_a_phone_number_for_the_place_is_the_contact(seeded: Services) -> None:
    msgs, events = _location(seeded, "我的手机号码是13800000005")
    slots = slot_events(events)
    assert slots["feedback_location"] is None and slots["feedback_contact"] == "13800000005"
    assert "手机号我记下了" in texts(msgs)
    _, events = _location(seeded, "东明县城关镇，电话13800000006")
    slots = slot_events(events)
    assert (slots["feedback_location"], slots["feedback_contact"]) == ("东明县城关镇", "13800000006")
    _, events = _location(seeded, "巨野县城东")
    assert slot_events(events)["feedback_location"] == "巨野县城东" and "feedback_contact" not in slot_events(events)
