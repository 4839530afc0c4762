from sqlalchemy import select

from actions.bills import ActionPayBill, ValidateBillForm, bill_type_from_text
from services.container import Services
from services.models import SmsOutbox
from tests.actions.helpers import run, slot_events, texts, tracker


def validate(services: Services, **kw):  # type: ignore[no-untyped-def]
    return run(ValidateBillForm(services), tracker(active_loop="bill_form", **kw))


def test_bill_type_words() -> None:
    assert bill_type_from_text("交天然气费") == "gas"
    assert bill_type_from_text("新农合") == "medical_insurance"
    assert bill_type_from_text("电费") == "electricity"
    assert bill_type_from_text("water") == "water"
    assert bill_type_from_text("话费呢") is None


def test_account_shows_amount_and_period(seeded: Services) -> None:
    msgs, events = validate(seeded, text="幺〇〇〇〇〇〇〇〇幺", filled={"bill_account": "幺〇〇〇〇〇〇〇〇幺"},
                            slots={"bill_type": "water"})
    assert "应缴56.30元" in texts(msgs)
    slots = slot_events(events)
    assert slots["bill_account"] == "1000000001" and slots["bill_id"]


def test_a_wrong_id_number_is_refused(seeded: Services) -> None:
    msgs, events = validate(seeded, text="371702198001011231", filled={"bill_account": "371702198001011231"},
                            slots={"bill_type": "medical_insurance"})
    assert "身份证号不对" in texts(msgs)
    assert slot_events(events)["bill_account"] is None


def test_insurance_by_valid_id_number(seeded: Services) -> None:
    msgs, _ = validate(seeded, text="37172119650315002x", filled={"bill_account": "37172119650315002x"},
                       slots={"bill_type": "medical_insurance"})
    assert "城乡居民医保" in texts(msgs) and "应缴400.00元" in texts(msgs)


def test_unknown_account_and_settled_account(seeded: Services) -> None:
    msgs, _ = validate(seeded, text="1000000099", filled={"bill_account": "1000000099"}, slots={"bill_type": "water"})
    assert "没有查到" in texts(msgs)
    msgs, events = validate(seeded, text="1000000001", filled={"bill_account": "1000000001"},
                            slots={"bill_type": "electricity"})
    assert "没有查到" in texts(msgs)  # account 1000000001 has no electricity bill


def test_declining_ends_the_form_without_an_order(seeded: Services) -> None:
    msgs, events = validate(seeded, intent="deny", filled={"bill_confirm": False},
                            slots={"bill_type": "water", "bill_account": "1000000001", "bill_id": "1"})
    slots = slot_events(events)
    assert slots["flow_stopped"] is True and slots["requested_slot"] is None
    assert "先不交" in texts(msgs)


def _confirmed(services: Services, **kw):  # type: ignore[no-untyped-def]
    (bill,) = services.billing.outstanding("water", "1000000001")
    return tracker(slots={"bill_type": "water", "bill_account": "1000000001", "bill_id": str(bill.id),
                          "bill_confirm": True}, **kw)


def test_wechat_gets_a_payment_link_once(seeded: Services) -> None:
    msgs, events = run(ActionPayBill(seeded), _confirmed(seeded, channel="wechat"))
    assert "已生成缴费订单" in texts(msgs) and "/pay/" in texts(msgs)
    link = texts(msgs).split("：")[-1]
    msgs2, _ = run(ActionPayBill(seeded), _confirmed(seeded, channel="wechat"))
    assert "不会重复收费" in texts(msgs2) and link in texts(msgs2)
    assert slot_events(events)["awaiting_rating"] == "bill"


def test_phone_callers_get_the_link_by_sms(seeded: Services) -> None:
    msgs, _ = run(ActionPayBill(seeded), _confirmed(seeded, metadata={"channel": "phone", "caller": "13800000009"}))
    assert "发到您的手机" in texts(msgs) and "便民服务站" in texts(msgs)
    with seeded.sessions() as s:
        (sms,) = s.scalars(select(SmsOutbox)).all()
    assert sms.phone == "13800000009" and "/pay/" in sms.text and "56.30" in sms.text


def test_phone_callers_without_caller_id_go_to_the_service_station(seeded: Services) -> None:
    msgs, _ = run(ActionPayBill(seeded), _confirmed(seeded, metadata={"channel": "phone"}))
    assert "便民服务站" in texts(msgs) and "/pay/" not in texts(msgs)


def test_an_id_number_for_a_water_account_is_named(seeded: Services) -> None:
    msgs, events = validate(seeded, text="371702198001011230", filled={"bill_account": "371702198001011230"},
                            slots={"bill_type": "water"})
    assert "这是身份证号" in texts(msgs) and "户号" in texts(msgs)
    assert slot_events(events)["bill_account"] is None


def test_a_correction_at_the_confirmation_is_no_refusal(seeded: Services) -> None:
    # "不对，是电费" reads as deny (bill_confirm False) and carries a bill type: not "先不交".
    msgs, events = validate(seeded, intent="deny", text="不对，是电费", filled={"bill_confirm": False},
                            entities=[{"entity": "bill_type", "value": "electricity"}],
                            slots={"bill_type": "water", "bill_account": "1000000001", "bill_id": "1"})
    slots = slot_events(events)
    assert slots["bill_confirm"] is None and "flow_stopped" not in slots and "先不交" not in texts(msgs)


def test_an_opted_out_caller_is_told_no_sms_comes(seeded: Services) -> None:
    seeded.sms.opt_out("13800000009")
    msgs, _ = run(ActionPayBill(seeded), _confirmed(seeded, metadata={"channel": "phone", "caller": "13800000009"}))
    assert "您已退订短信，这次不发短信" in texts(msgs) and "便民服务站" in texts(msgs) and "发到您的手机" not in texts(msgs)
    with seeded.sessions() as s:
        assert s.scalars(select(SmsOutbox)).all() == []
