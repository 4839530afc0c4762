import datetime as dt
import random

import pytest
from sqlalchemy import select

from services.container import Services
from services.models import Handoff, Rating, SmsOutbox
from services.sms import SmsMessage
from services.tickets import FALLBACK_DEPARTMENT, SqlTickets, route


@pytest.mark.parametrize(
    ("content", "department"),
    [
        ("小区门口路灯坏了好几天", "城管"),
        ("工厂半夜排污，河里有死鱼", "生态环境"),
        ("老板拖欠工资不给", "人社"),
        ("超市卖过期食品", "市场监管"),
        ("有人电话诈骗老人", "公安"),
        ("学校乱收费", "教育"),
        ("村里低保评得不公平", "民政"),
        ("红绿灯坏了", "交通"),
        ("楼上装修太吵", "住建"),
        ("说不清是什么事", FALLBACK_DEPARTMENT),
    ],
)
def test_routing(content: str, department: str) -> None:
    assert route(content) == department


def test_ticket_numbers_are_eight_digits_and_unique(services: Services) -> None:
    rng = random.Random(7)
    tickets = SqlTickets(services.sessions, rng=rng, today=lambda: dt.date(2026, 11, 25))
    made = [
        tickets.create(category="complaint", content="路灯坏了", location="牡丹区", contact_phone=None,
                       channel="rest", sender_id="u")
        for _ in range(20)
    ]
    numbers = [t.number for t in made]
    assert all(len(n) == 8 and n.isdigit() and n[0] != "0" for n in numbers)
    assert len(set(numbers)) == 20
    assert made[0].department == "城管" and made[0].due_date == dt.date(2026, 12, 5)
    assert tickets.by_number(numbers[0]).status_name == "已受理，等待分派"  # type: ignore[union-attr]


def test_a_taken_number_is_drawn_again(services: Services) -> None:
    # The same seed twice draws the same first number: the second create must retry.
    first = SqlTickets(services.sessions, rng=random.Random(1)).create(
        category="help", content="老人走丢了", location="曹县", contact_phone="13800000001", channel="phone", sender_id="a")
    second = SqlTickets(services.sessions, rng=random.Random(1)).create(
        category="help", content="老人走丢了", location="曹县", contact_phone=None, channel="phone", sender_id="b")
    assert first.number != second.number
    assert first.department == "公安"


def test_unknown_category_is_refused(services: Services) -> None:
    with pytest.raises(ValueError):
        services.tickets.create(category="spam", content="x", location="y", contact_phone=None,
                                channel="rest", sender_id="u")


def test_handoffs_ratings_and_sms_are_stored(services: Services) -> None:
    hid = services.handoffs.create(sender_id="u", channel="phone", reason="requested")
    services.ratings.record(sender_id="u", channel="wechat", flow="bill", score=5)
    assert services.sms.send("13800000001", SmsMessage("ticket_receipt", {"ticket": "12345678", "due": "12月20日"})) == "sent"
    with pytest.raises(ValueError):
        services.ratings.record(sender_id="u", channel="wechat", flow="bill", score=6)
    with pytest.raises(ValueError):
        services.handoffs.create(sender_id="u", channel="phone", reason="bored")
    with services.sessions() as s:
        assert s.get(Handoff, hid).status == "waiting"  # type: ignore[union-attr]
        assert [r.score for r in s.scalars(select(Rating))] == [5]
        assert [(m.text, m.status) for m in s.scalars(select(SmsOutbox))] == [
            ("【菏泽政务】您反映的问题已受理，工单号12345678，12月20日前答复。", "outbox")]


def test_applications_by_number_and_by_applicant(seeded: Services) -> None:
    app = seeded.applications.by_number("20261101000001")
    assert app is not None and app.status == "审核中" and len(app.steps) == 3
    assert [a.number for a in seeded.applications.by_applicant("13800000001", "1230")] == [
        "20261101000001", "20261101000002"]
    assert seeded.applications.by_applicant("13800000001", "9999") == []
    assert seeded.applications.by_applicant("13800000002", "002x")[0].service_name == "社会保障卡申领"
    assert seeded.applications.by_number("20990101000000") is None
