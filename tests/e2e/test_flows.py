"""Every flow of the foundation, held in Chinese through the rest channel against real processes."""
from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy import select

from services.models import FeedbackTicket, Handoff, PaymentOrder, Rating, SmsOutbox
from tests.e2e.conftest import Running, joined

pytestmark = pytest.mark.e2e


def test_progress_by_application_number_then_rating(running: Running) -> None:
    assert "办件进度" in joined(running.say("p1", "你好"))
    assert "受理编号" in joined(running.say("p1", "俺想查一下办件进度"))
    answer = joined(running.say("p1", "二〇二六幺幺〇幺〇〇〇〇〇幺"))
    assert "审核中" in answer and "材料审核" in answer and "牡丹区政务服务中心" in answer and "打个分" in answer
    assert "谢谢您的评价" in joined(running.say("p1", "5分"))
    with running.services.sessions() as s:
        assert [(r.flow, r.score) for r in s.scalars(select(Rating).where(Rating.sender_id == "p1"))] == [("progress", 5)]


def test_progress_by_phone_and_id_last_four(running: Running) -> None:
    running.say("p2", "查进度")
    assert "手机号" in joined(running.say("p2", "没有编号"))
    assert "后4位" in joined(running.say("p2", "幺三八 零零零零 零零零幺"))
    answer = joined(running.say("p2", "幺二三零"))
    assert "查到您2件事" in answer and "不动产登记" in answer


def test_wrong_last_four_twice_hands_off(running: Running) -> None:
    running.say("p3", "查进度")
    running.say("p3", "没有")
    running.say("p3", "13800000001")
    assert "对不上" in joined(running.say("p3", "9999"))
    assert "转人工" in joined(running.say("p3", "8888"))
    with running.services.sessions() as s:
        assert s.scalars(select(Handoff.reason).where(Handoff.sender_id == "p3")).all() == ["failed_attempts"]
    assert "办件进度" in joined(running.say("p3", "你好"))  # the form is over


def test_bill_payment_through_the_sandbox_provider(running: Running) -> None:
    assert "交什么费" in joined(running.say("b1", "我要缴费"))
    assert "户号" in joined(running.say("b1", "水费"))
    assert "应缴56.30元" in joined(running.say("b1", "幺〇〇〇〇〇〇〇〇幺"))
    answer = joined(running.say("b1", "确认"))
    url = re.search(r"http://\S+/pay/(\d+)", answer)
    assert url, answer
    # Duplicate confirmation through a second run of the flow: same order, no second one.
    running.say("b1", "交水费")
    running.say("b1", "1000000001")
    again = joined(running.say("b1", "确认缴费"))
    assert "不会重复收费" in again and url.group(0) in again
    # The citizen opens the link and pays; the sandbox notifies over HTTP; the order is paid.
    page = running.http.get(url.group(0))
    assert page.status_code == 200 and "56.30" in page.text
    paid = running.http.post(url.group(0) + "/sandbox")
    assert paid.status_code == 200 and "支付成功" in paid.text
    with running.services.sessions() as s:
        order = s.scalars(select(PaymentOrder).where(PaymentOrder.order_no == url.group(1))).one()
        orders = s.scalars(select(PaymentOrder).where(PaymentOrder.bill_id == order.bill_id)).all()
        assert [(o.status, o.order_no) for o in orders] == [("paid", url.group(1))]  # one order for this bill
    running.say("b1", "交水费")
    assert "已经交清" in joined(running.say("b1", "1000000001"))


def test_phone_caller_gets_the_payment_link_by_sms(running: Running) -> None:
    md = {"channel": "phone", "caller": "13800000007"}
    running.say("b2", "交电费", md)
    running.say("b2", "2000000001", md)
    assert "发到您的手机" in joined(running.say("b2", "确认", md))
    with running.services.sessions() as s:
        [sms] = [m for m in s.scalars(select(SmsOutbox)) if m.phone == "13800000007"]  # sealed: not searchable
    assert "/pay/" in sms.text


def test_wrong_id_number_for_insurance(running: Running) -> None:
    assert "参保人的身份证号" in joined(running.say("b3", "交医保"))
    assert "身份证号不对" in joined(running.say("b3", "371702198001011231"))


def test_question_in_the_middle_and_cancel(running: Running) -> None:
    running.say("c1", "交燃气费")
    answer = joined(running.say("c1", "你是机器人吗"))
    assert "机器人" in answer and "户号" in answer  # answered, then the form asks again
    assert "已经取消" in joined(running.say("c1", "不交了"))
    assert "办件进度" in joined(running.say("c1", "你好"))


def test_feedback_ticket_then_its_status(running: Running) -> None:
    running.say("f1", "工厂半夜排污 河里死鱼")
    assert "哪里" in joined(running.say("f1", "举报"))
    running.say("f1", "巨野县城东")
    answer = joined(running.say("f1", "匿名"))
    number = re.search(r"工单号：(\d{8})", answer)
    assert number and "生态环境" in answer, answer
    with running.services.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.number == number.group(1))).one()
    assert ticket.category == "report" and ticket.contact_phone is None
    running.say("f1", "查工单")
    assert "已受理" in joined(running.say("f1", number.group(1)))


def test_handoff_mid_form_and_on_the_phone(running: Running) -> None:
    running.say("h1", "我要投诉")
    assert "转人工" in joined(running.say("h1", "转人工"))
    replies = running.say("h2", "人工服务", {"channel": "phone", "caller": "13800000008"})
    payload = next(r["custom"] for r in replies if r.get("custom"))
    with running.services.sessions() as s:
        assert s.get(Handoff, payload["handoff"]["id"]).channel == "phone"  # type: ignore[union-attr]


def test_two_stage_fallback(running: Running) -> None:
    assert "换个说法" in joined(running.say("x1", "阿巴阿巴"))
    assert "转人工吧" in joined(running.say("x1", "阿巴巴巴"))
    assert "正在为您转人工" in joined(running.say("x1", "好"))


def test_repeat_and_slow_down(running: Running) -> None:
    first = joined(running.say("r1", "你好"))
    assert joined(running.say("r1", "再说一遍")) == first
    assert "慢一点" in joined(running.say("r1", "说慢点"))


def test_conversations_and_metadata_are_in_the_sql_tracker_store(running: Running) -> None:
    running.say("m1", "你好", {"channel": "phone", "caller": "13800000009"})
    token = running.settings.rasa_api_token.get_secret_value()
    assert running.http.get(f"{running.rasa_url}/conversations/m1/tracker").status_code == 401
    tracker = running.http.get(f"{running.rasa_url}/conversations/m1/tracker", params={"token": token}).json()
    user = [e for e in tracker["events"] if e["event"] == "user"]
    assert user[-1]["metadata"]["caller"] == "13800000009"
    with sqlite3.connect(running.settings.tracker_db) as db:
        (count,) = db.execute("select count(*) from events where sender_id = 'm1'").fetchone()
    assert count > 0


def test_a_down_action_server_gets_an_apology_and_the_message_is_kept(running: Running) -> None:
    running.stack.stop(only="action-server")
    try:
        replies = running.say("d1", "转人工")
        assert [r.get("text") for r in replies] == ["不好意思，系统暂时有点问题。请稍后再说一遍。"]
    finally:
        running.stack.start(only="action-server")
    token = running.settings.rasa_api_token.get_secret_value()
    tracker = running.http.get(f"{running.rasa_url}/conversations/d1/tracker", params={"token": token}).json()
    assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == ["转人工"]
    assert "正在为您转人工" in joined(running.say("d1", "转人工"))  # back in service
