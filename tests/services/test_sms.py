"""SmsSender's rules with a scripted gateway: templates, limits, opt-outs, retries and receipts."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select, text

from services.container import Services
from services.models import SmsOptOut, SmsOutbox, SmsQuota
from services.sms import (
    TEMPLATES,
    Limits,
    NumberIndex,
    OutboxGateway,
    Receipt,
    SmsGatewayError,
    SmsMessage,
    SmsSender,
)
from tests.sandbox import TEST_DATA_KEYS
from tests.fakes.clock import WallClock

PHONE = "13800000021"
T0 = dt.datetime(2026, 12, 4, 2, 0, tzinfo=dt.timezone.utc)  # 10:00 in Heze
RECEIPT = SmsMessage("ticket_receipt", {"ticket": "12345678", "due": "12月20日"})


@dataclass
class Scripted:
    """A gateway that answers from a script: an id, or an error (code, temporary)."""

    name: str = "scripted"
    answers: list[object] = field(default_factory=list)
    taken: list[tuple[str, str, str]] = field(default_factory=list)
    receipts: dict[str, Receipt] = field(default_factory=dict)

    def submit(self, phone: str, message: SmsMessage, out_id: str) -> str | None:
        answer = self.answers.pop(0) if self.answers else f"biz-{len(self.taken)}"
        if isinstance(answer, SmsGatewayError):
            raise answer
        self.taken.append((phone, message.kind, out_id))
        return str(answer)

    def receipt(self, phone: str, biz_id: str, sent_at: dt.datetime) -> Receipt | None:
        return self.receipts.get(biz_id)




@pytest.fixture
def clock() -> WallClock:
    return WallClock(T0)


@pytest.fixture
def gateway() -> Scripted:
    return Scripted()


@pytest.fixture
def sender(services: Services, gateway: Scripted, clock: WallClock) -> Iterator[SmsSender]:
    yield SmsSender(services.sessions, gateway, NumberIndex(b"k" * 32), sign_name="菏泽政务",
                    base_url="https://zw.example.gov.cn/", limits=Limits(dt.timedelta(minutes=1), 3), now=clock)


def rows(services: Services) -> list[SmsOutbox]:
    with services.sessions() as s:
        return list(s.scalars(select(SmsOutbox).order_by(SmsOutbox.id)))


def test_each_kind_renders_its_registered_wording() -> None:
    pay = SmsMessage("payment_link", {"order": "2026120400001", "amount": "56.30"})
    assert pay.render("菏泽政务", "https://zw.example.gov.cn/") == \
        "【菏泽政务】您的缴费订单2026120400001，金额56.30元。点此缴费：https://zw.example.gov.cn/pay/2026120400001"
    guide = SmsMessage("guide_link", {"title": "普通护照申请", "section": "收费标准", "slug": "passport"})
    assert guide.render("菏泽政务", "https://h") == "【菏泽政务】普通护照申请（收费标准）办事指南：https://h/guide/passport"
    progress = SmsMessage("progress_update", {"number": "20261101000001", "progress": "现场核查，通过"})
    assert progress.render("菏泽政务", "https://h") == ("【菏泽政务】您的办件20261101000001有新进展：现场核查，通过。"
                                                       "查看详情请拨打热线或在微信里说“查办件进度”。回复TD退订短信。")
    assert set(TEMPLATES) == {"payment_link", "ticket_receipt", "guide_link", "proxy_code", "proxy_granted",
                              "ticket_update", "reminder", "progress_update"}


def test_a_message_is_a_template_and_its_parameters_not_free_text() -> None:
    with pytest.raises(ValueError, match="no SMS template"):
        SmsMessage("free_text", {"text": "hello"})
    with pytest.raises(ValueError, match="takes ticket, due"):
        SmsMessage("ticket_receipt", {"ticket": "1"})
    long = SmsMessage("guide_link", {"title": "长" * 50, "section": "概述", "slug": "x"})
    assert len(long.params["title"]) == 35  # the carriers' limit for one variable


def test_numbers_are_looked_up_by_a_keyed_hash() -> None:
    index = NumberIndex(b"k" * 32)
    assert index(PHONE) == index("+86 138-0000-0021") != NumberIndex(b"j" * 32)(PHONE)
    assert PHONE not in index(PHONE) and len(index(PHONE)) == 64
    derived = NumberIndex.from_settings("", TEST_DATA_KEYS)
    assert derived(PHONE) == NumberIndex.from_settings("", TEST_DATA_KEYS)(PHONE) != index(PHONE)
    with pytest.raises(ValueError, match="SMS_NUMBER_KEY"):
        NumberIndex.from_settings("", "")


def test_a_sent_message_is_recorded_sealed_with_its_gateway_id(services: Services, sender: SmsSender,
                                                             gateway: Scripted) -> None:
    assert sender.send(PHONE, RECEIPT) == "sent"
    (row,) = rows(services)
    assert (row.status, row.biz_id, row.kind, row.attempts, row.provider) == ("sent", "biz-0", "ticket_receipt", 1, "scripted")
    assert json.loads(row.params or "") == {"ticket": "12345678", "due": "12月20日"}
    assert gateway.taken == [(PHONE, "ticket_receipt", str(row.id))]
    with services.engine.connect() as conn:  # at rest: no number, no text, no parameter in clear
        raw = conn.execute(text("SELECT phone, text, params, phone_hash FROM sms_outbox")).one()
    assert not any(PHONE in v or "12345678" in v for v in raw)


def test_the_outbox_keeps_the_message_as_its_only_copy(services: Services, clock: WallClock) -> None:
    outbox = SmsSender(services.sessions, OutboxGateway(), NumberIndex(b"k" * 32), sign_name="菏泽政务",
                       base_url="http://127.0.0.1:8030", now=clock)
    assert outbox.send(PHONE, RECEIPT) == "sent"
    (row,) = rows(services)
    assert (row.status, row.biz_id, row.provider) == ("outbox", None, "outbox")


def test_one_a_minute_and_a_few_a_day_per_number(services: Services, sender: SmsSender, clock: WallClock) -> None:
    assert sender.send(PHONE, RECEIPT) == "sent"
    assert sender.send(PHONE, RECEIPT) == "rate_limited"
    assert sender.send("13800000022", RECEIPT) == "sent"  # another number has its own
    for _ in range(2):
        clock.now += dt.timedelta(seconds=61)
        assert sender.send(PHONE, RECEIPT) == "sent"
    clock.now += dt.timedelta(minutes=5)
    assert sender.send(PHONE, RECEIPT) == "rate_limited"  # 3 a day in this fixture
    clock.now = T0 + dt.timedelta(hours=14, minutes=1)  # past midnight in China
    assert sender.send(PHONE, RECEIPT) == "sent"
    assert len(rows(services)) == 5  # a refused message is not stored
    with services.sessions() as s:
        assert all(PHONE not in q.phone_hash for q in s.scalars(select(SmsQuota)))


def test_a_held_message_waits_for_the_limit_and_is_then_sent(services: Services, sender: SmsSender,
                                                             gateway: Scripted, clock: WallClock) -> None:
    assert sender.send(PHONE, RECEIPT) == "sent"
    assert sender.send(PHONE, RECEIPT, hold=True) == "queued"  # over the one-a-minute limit: kept
    held = rows(services)[-1]
    assert (held.status, held.error_code, held.attempts) == ("retry", "held", 0)
    clock.now += dt.timedelta(seconds=30)
    sender.sweep()
    assert rows(services)[-1].status == "retry" and len(gateway.taken) == 1  # not yet
    clock.now += dt.timedelta(seconds=31)
    sender.sweep()
    assert rows(services)[-1].status == "sent" and len(gateway.taken) == 2
    clock.now += dt.timedelta(seconds=61)
    assert sender.send(PHONE, RECEIPT) == "sent"
    assert sender.send(PHONE, RECEIPT, hold=True) == "queued"  # the fourth today: 3 a day in this fixture
    clock.now += dt.timedelta(minutes=61)
    assert sender.sweep()["expired"] == 1 and rows(services)[-1].error_code == "expired"  # said, not lost


def test_the_limit_holds_across_senders_sharing_the_database(services: Services, gateway: Scripted,
                                                             clock: WallClock) -> None:
    def another() -> SmsSender:
        return SmsSender(services.sessions, gateway, NumberIndex(b"k" * 32), sign_name="s", base_url="b", now=clock)

    assert [another().send(PHONE, RECEIPT) for _ in range(3)] == ["sent", "rate_limited", "rate_limited"]


def test_an_opted_out_number_gets_nothing(services: Services, sender: SmsSender, gateway: Scripted) -> None:
    assert sender.reply(PHONE, " TD ") is True
    assert sender.reply(PHONE, "退订") is False  # already out
    assert sender.reply("13800000022", "谢谢") is False  # not an opt-out word
    assert sender.send(PHONE, RECEIPT) == "opted_out"
    assert gateway.taken == [] and rows(services) == []
    with services.sessions() as s:
        (out,) = s.scalars(select(SmsOptOut)).all()
    assert out.source == "reply" and PHONE not in out.phone_hash
    assert sender.opt_in(PHONE) and sender.send(PHONE, RECEIPT) == "sent"


def test_temporary_failures_are_kept_and_retried(services: Services, sender: SmsSender, gateway: Scripted,
                                                 clock: WallClock) -> None:
    gateway.answers = [SmsGatewayError("timeout", True), SmsGatewayError("isv.BUSINESS_LIMIT_CONTROL", True)]
    assert sender.send(PHONE, RECEIPT) == "queued"
    (row,) = rows(services)
    assert (row.status, row.error_code, row.attempts) == ("retry", "timeout", 1)
    assert sender.sweep() == {"sent": 0, "queued": 0, "failed": 0, "expired": 0, "delivered": 0, "undelivered": 0}
    clock.now += dt.timedelta(minutes=3)
    assert sender.sweep()["queued"] == 1
    clock.now += dt.timedelta(minutes=3)
    assert sender.sweep()["sent"] == 1
    (row,) = rows(services)
    assert (row.status, row.error_code, row.attempts, row.biz_id) == ("sent", None, 3, "biz-0")


def test_a_message_retried_for_too_long_is_given_up(services: Services, sender: SmsSender, gateway: Scripted,
                                                    clock: WallClock) -> None:
    gateway.answers = [SmsGatewayError("http_503", True)]
    sender.send(PHONE, RECEIPT)
    with services.sessions() as s:  # made two hours ago
        s.execute(SmsOutbox.__table__.update().values(created_at=T0 - dt.timedelta(hours=2)))
        s.commit()
    clock.now += dt.timedelta(minutes=3)
    assert sender.sweep()["expired"] == 1
    assert [(r.status, r.error_code) for r in rows(services)] == [("failed", "expired")]


def test_permanent_failures_keep_the_code_and_are_not_retried(services: Services, sender: SmsSender,
                                                              gateway: Scripted, clock: WallClock) -> None:
    gateway.answers = [SmsGatewayError("isv.MOBILE_NUMBER_ILLEGAL", False)]
    assert sender.send(PHONE, RECEIPT) == "failed"
    clock.now += dt.timedelta(hours=1)
    sender.sweep()
    assert [(r.status, r.error_code, r.attempts) for r in rows(services)] == [("failed", "isv.MOBILE_NUMBER_ILLEGAL", 1)]
    assert sender.send("12345", RECEIPT) == "failed"  # not a mobile number: not even stored


def test_an_opt_out_stops_messages_waiting_for_a_retry(services: Services, sender: SmsSender, gateway: Scripted,
                                                       clock: WallClock) -> None:
    gateway.answers = [SmsGatewayError("timeout", True)]
    sender.send(PHONE, RECEIPT)
    assert sender.opt_out(PHONE)
    clock.now += dt.timedelta(minutes=3)
    sender.sweep()
    assert gateway.taken == [] and [(r.status, r.error_code) for r in rows(services)] == [("failed", "opted_out")]


def test_receipts_are_read_and_recorded(services: Services, sender: SmsSender, gateway: Scripted,
                                        clock: WallClock) -> None:
    sender.send(PHONE, RECEIPT)
    sender.send("13800000022", RECEIPT)
    assert sender.sweep()["delivered"] == 0  # nothing reported yet: still sent
    at = T0 + dt.timedelta(seconds=5)
    gateway.receipts = {"biz-0": Receipt(True, "DELIVERED", at), "biz-1": Receipt(False, "MK:0001", None)}
    counts = sender.sweep()
    assert (counts["delivered"], counts["undelivered"]) == (1, 1)
    got = [(r.status, r.error_code) for r in rows(services)]
    assert got == [("delivered", "DELIVERED"), ("undelivered", "MK:0001")]
    assert sender.sweep()["delivered"] == 0  # a recorded receipt is not read again


def test_a_pushed_receipt_applies_only_to_its_message_and_number(services: Services, sender: SmsSender) -> None:
    sender.send(PHONE, RECEIPT)
    assert not sender.report("biz-0", "13800000022", Receipt(True, "DELIVERED", None))  # another number
    assert not sender.report("biz-9", PHONE, Receipt(True, "DELIVERED", None))  # another message
    assert sender.report("biz-0", PHONE, Receipt(True, "DELIVERED", None))
    assert [r.status for r in rows(services)] == ["delivered"]
