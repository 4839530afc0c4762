"""Subscriptions with consent, and the reminders the scheduler queues and delivers: once per occasion,
never outside quiet hours or over the per-citizen limit, by SMS (the outbox) or WeChat's subscribe
message (the local WeChat), with every attempt's result kept and an acted-on reminder skipped."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from services.calls import CallOriginator
from services.campaigns import Campaigns
from services.container import Services
from services.models import Bill, PaymentOrder, SmsOutbox
from services.reminders import Reminders, WeChatSubscribeSender, Window, occasions
from services.subscriptions import Reminder, SqlSubscriptions
from tests.fakes.clock import WallClock
from tests.fakes.wechat_api import FakeWeChat, serve
from tests.sandbox import free_port

CHINA = dt.timezone(dt.timedelta(hours=8))
AUTUMN_MORNING = dt.datetime(2026, 9, 2, 10, 0, tzinfo=CHINA)  # the medical-insurance window is open
OPENID = "oCitizen0000000000000000001"
CALLER = "13800000077"
WORDING = "每年9月1日城乡居民医保开始缴费时提醒您一次，用短信发到138****0077。说“取消提醒”随时停止。"


@pytest.fixture
def clock() -> WallClock:
    return WallClock(AUTUMN_MORNING.astimezone(dt.timezone.utc))


@pytest.fixture
def subscriptions(services: Services, clock: WallClock) -> SqlSubscriptions:
    return SqlSubscriptions(services.sessions, services.sms.index, wechat_accounts=frozenset({"oa"}), now=clock)


@pytest.fixture
def wechat() -> Iterator[tuple[FakeWeChat, str]]:
    fake = FakeWeChat(appid="wx" + "0c" * 8, secret="oa-secret")
    with serve(fake, free_port()) as url:
        yield fake, url


def scheduler(services: Services, clock: WallClock, wechat: tuple[FakeWeChat, str] | None = None) -> Reminders:
    sender = None
    if wechat:
        fake, url = wechat
        sender = WeChatSubscribeSender({"oa": (url, fake.appid, fake.secret, "TPL-reminder")}, "https://heze.test")
    return Reminders(services.sessions, services.sms, sender,
                     medical=Window.parse("09-01/12-31"), pension=Window.parse("06-01/12-31"), now=clock)


def statuses(services: Services) -> list[tuple[str, str | None]]:
    with services.sessions() as s:
        return [(r.status, r.result) for r in s.scalars(select(Reminder).order_by(Reminder.id))]


def test_windows_and_occasions() -> None:
    medical, pension = Window.parse("09-01/12-31"), Window.parse("06-01/12-31")
    assert [o.due_key for o in occasions(dt.date(2026, 9, 1), medical, pension)] == [
        "medical_insurance:2027", "pension_certification:2026"]
    assert occasions(dt.date(2026, 3, 1), medical, pension) == []
    for bad in ("", "09-01", "13-01/12-31", "12-31/09-01", "09-31/12-31", "a/b"):
        with pytest.raises(ValueError):
            Window.parse(bad)


def test_subscribing_records_the_consent_and_cancelling_its_withdrawal(subscriptions: SqlSubscriptions) -> None:
    assert subscriptions.reach("phone", "call-1", CALLER) == "用短信发到138****0077"
    assert subscriptions.reach("phone", "call-1", None) is None  # withheld number
    assert subscriptions.reach("webchat", "web:guest:abcdefghijklmnop", None) is None  # a guest
    assert subscriptions.reach("webchat", f"web:oa:wx0123456789abcdef:{OPENID}", None) == "用微信服务通知发给您"
    assert subscriptions.reach("miniprogram", OPENID, None) is None  # no template for the mini-program
    outcome, view = subscriptions.subscribe(sender_id="call-1", channel="phone", topic="medical_insurance",
                                            caller=CALLER, wording=WORDING)
    assert outcome == "subscribed" and view is not None and view.phone == CALLER
    assert subscriptions.subscribe(sender_id="call-1", channel="phone", topic="medical_insurance", caller=CALLER,
                                   wording=WORDING)[0] == "already"
    assert subscriptions.subscribe(sender_id="x", channel="phone", topic="lottery", caller=CALLER,
                                   wording="")[0] == "unknown_topic"
    assert subscriptions.subscribe(sender_id="x", channel="rest", topic="medical_insurance", caller=None,
                                   wording="")[0] == "unreachable"
    assert [v.topic for v in subscriptions.active("call-1")] == ["medical_insurance"]
    assert subscriptions.cancel("call-1") == 1 and subscriptions.active("call-1") == []
    assert subscriptions.cancel("call-1") == 0
    assert [(t, a, w) for t, a, w, _ in subscriptions.consents("call-1")] == [
        ("medical_insurance", "given", WORDING), ("medical_insurance", "withdrawn", "本人取消")]


def test_the_consent_record_cannot_be_changed(services: Services, subscriptions: SqlSubscriptions) -> None:
    subscriptions.subscribe(sender_id="call-2", channel="phone", topic="medical_insurance", caller=CALLER,
                            wording=WORDING)
    for statement in ("UPDATE subscription_consents SET wording = 'x'", "DELETE FROM subscription_consents"):
        with services.sessions() as s, pytest.raises(DBAPIError):
            s.execute(text(statement))
            s.commit()


def test_due_reminders_are_queued_once_per_occasion(services: Services, subscriptions: SqlSubscriptions,
                                                    clock: WallClock) -> None:
    subscriptions.subscribe(sender_id="call-3", channel="phone", topic="medical_insurance", caller=CALLER,
                            wording=WORDING)
    subscriptions.subscribe(sender_id="call-4", channel="phone", topic="medical_insurance", caller="13800000078",
                            wording=WORDING)
    subscriptions.cancel("call-4")
    reminders = scheduler(services, clock)
    assert reminders.evaluate() == {"medical_insurance": 1, "pension_certification": 0}
    assert reminders.evaluate() == {"medical_insurance": 0, "pension_certification": 0}  # not twice
    clock.now = dt.datetime(2027, 3, 1, 2, 0, tzinfo=dt.timezone.utc)
    assert reminders.evaluate() == {}  # no window open


def test_an_sms_reminder_goes_to_the_outbox_by_day_not_at_night(services: Services, subscriptions: SqlSubscriptions,
                                                                clock: WallClock) -> None:
    subscriptions.subscribe(sender_id="call-5", channel="phone", topic="medical_insurance", caller=CALLER,
                            wording=WORDING)
    clock.now = dt.datetime(2026, 9, 2, 22, 30, tzinfo=CHINA).astimezone(dt.timezone.utc)  # quiet hours
    reminders = scheduler(services, clock)
    reminders.evaluate()
    assert asyncio.run(reminders.deliver())["later"] == 1
    with services.sessions() as s:
        later = s.scalar(select(Reminder.next_attempt_at))
    assert later is not None and later.replace(tzinfo=later.tzinfo or dt.timezone.utc) == \
        dt.datetime(2026, 9, 3, 8, 0, tzinfo=CHINA)  # (SQLite gives the UTC time without its zone)
    clock.now = dt.datetime(2026, 9, 3, 8, 5, tzinfo=CHINA).astimezone(dt.timezone.utc)
    assert asyncio.run(reminders.deliver())["sent"] == 1
    with services.sessions() as s:
        sms = s.scalars(select(SmsOutbox).where(SmsOutbox.kind == "reminder")).one()
    assert sms.phone == CALLER and "居民医保缴费提醒" in sms.text and "2027年度" in sms.text
    assert json.loads(sms.params or "{}")["deadline"] == "12月31日"
    assert statuses(services) == [("sent", "sms sent")]


def test_wechat_subscribe_messages_and_a_refusal(services: Services, subscriptions: SqlSubscriptions, clock: WallClock,
                                                 wechat: tuple[FakeWeChat, str]) -> None:
    fake, _ = wechat
    fake.accepted = {OPENID}
    subscriptions.subscribe(sender_id=f"web:oa:wx0123456789abcdef:{OPENID}", channel="webchat",
                            topic="pension_certification", caller=None, wording="每年养老金领取资格认证开始时提醒您一次")
    subscriptions.subscribe(sender_id="web:oa:wx0123456789abcdef:oOther00000000000000000001", channel="webchat",
                            topic="pension_certification", caller=None, wording="每年养老金领取资格认证开始时提醒您一次")
    reminders = scheduler(services, clock, wechat)
    assert reminders.evaluate()["pension_certification"] == 2
    counts = asyncio.run(reminders.deliver())
    assert counts["sent"] == 1 and counts["refused"] == 1
    [message] = fake.subscribe_sent
    assert message["touser"] == OPENID and message["template_id"] == "TPL-reminder"
    assert message["data"]["thing1"]["value"] == "养老金资格认证提醒" and message["data"]["time2"]["value"] == "12月31日"
    assert sorted(statuses(services)) == [("refused", "errcode 43101"), ("sent", "msgid 1001")]


def test_an_unreachable_wechat_is_retried_then_given_up(services: Services, subscriptions: SqlSubscriptions,
                                                        clock: WallClock) -> None:
    subscriptions.subscribe(sender_id=f"web:oa:wx0123456789abcdef:{OPENID}", channel="webchat",
                            topic="medical_insurance", caller=None, wording=WORDING)
    sender = WeChatSubscribeSender({"oa": (f"http://127.0.0.1:{free_port()}", "wx1", "s", "T")}, "https://heze.test")
    reminders = Reminders(services.sessions, services.sms, sender, medical=Window.parse("09-01/12-31"),
                          pension=Window.parse("06-01/06-02"), now=clock)
    reminders.evaluate()
    for _ in range(3):
        asyncio.run(reminders.deliver())
        clock.advance(hours=7)
        clock.now = clock.now if 8 <= clock.now.astimezone(CHINA).hour < 21 else \
            clock.now.astimezone(CHINA).replace(hour=9).astimezone(dt.timezone.utc) + dt.timedelta(days=1)
    [(status, result)] = statuses(services)
    assert status == "failed" and result is not None and "unreachable" in result


def test_at_most_the_daily_limit(services: Services, subscriptions: SqlSubscriptions, clock: WallClock) -> None:
    for topic in ("pension_certification", "medical_insurance"):
        subscriptions.subscribe(sender_id="call-6", channel="phone", topic=topic, caller=CALLER, wording="x")
    reminders = scheduler(services, clock)
    reminders.per_day = 1
    reminders.evaluate()
    counts = asyncio.run(reminders.deliver())
    assert counts["sent"] == 1 and counts["later"] == 1  # the other one tomorrow morning


def test_a_reminder_already_acted_on_is_not_sent(services: Services, subscriptions: SqlSubscriptions,
                                                 clock: WallClock) -> None:
    subscriptions.subscribe(sender_id="call-7", channel="phone", topic="medical_insurance", caller=CALLER, wording="x")
    reminders = scheduler(services, clock)
    reminders.evaluate()
    # The citizen paid next year's medical insurance through us before the reminder went out.
    with services.sessions() as s:
        bill = Bill(bill_type="medical_insurance", account="371702194601011234", holder_name="测试", district="牡丹区",
                    period="2027", amount_fen=40000, due_date=dt.date(2026, 12, 31), status="paid")
        s.add(bill)
        s.flush()
        s.add(PaymentOrder(order_no="R" + "1" * 20, bill_id=bill.id, amount_fen=40000, status="paid", provider="sandbox",
                           channel="phone", sender_id="call-7"))
        s.commit()
    assert asyncio.run(reminders.deliver())["skipped"] == 1
    assert statuses(services) == [("skipped", "已经办了")]


def test_a_department_update_is_texted_to_the_number_the_filer_left(seeded: Services) -> None:
    from services.updates import tell_citizen

    named = seeded.tickets.create(category="complaint", content="路灯不亮", location="牡丹区", contact_phone="13800000079",
                                  channel="wechat", sender_id="oFiler")
    anonymous = seeded.tickets.create(category="complaint", content="路灯不亮", location="牡丹区", contact_phone=None,
                                      channel="wechat", sender_id="oFiler")
    assert tell_citizen(seeded, "ticket", named.number) == "sms sent"
    assert tell_citizen(seeded, "ticket", anonymous.number) == "anonymous: nobody to tell"
    assert tell_citizen(seeded, "ticket", "99999999") == "no such ticket"
    assert tell_citizen(seeded, "application", "20261101000001") == "nobody subscribed"
    with seeded.sessions() as s:
        sms = s.scalars(select(SmsOutbox).where(SmsOutbox.kind == "ticket_update")).one()
    assert sms.phone == "13800000079" and named.number in sms.text and "已受理" in sms.text


# -- the phone line: the same caller on every call, and reminder calls --------------------------------


def test_a_caller_is_found_by_the_number_on_the_next_call(services: Services, clock: WallClock) -> None:
    subs = SqlSubscriptions(services.sessions, services.sms.index, now=clock)
    subs.subscribe(sender_id="call-a", channel="phone", topic="medical_insurance", caller=CALLER, wording=WORDING)
    assert subs.subscribe(sender_id="call-b", channel="phone", topic="medical_insurance", caller=CALLER,
                          wording=WORDING)[0] == "already"
    assert [v.topic for v in subs.active("call-b", CALLER)] == ["medical_insurance"]
    assert subs.active("call-b") == [] and subs.active("call-c", "13800000099") == []
    assert subs.cancel("call-c", phone="13800000099") == 0  # another number cancels nothing
    assert subs.cancel("call-b", "medical_insurance", phone=CALLER) == 1
    assert subs.active("call-a") == []


def test_a_call_is_offered_only_when_calls_are_set_up_and_reaches_a_landline(services: Services,
                                                                              clock: WallClock) -> None:
    texts_only = SqlSubscriptions(services.sessions, services.sms.index, now=clock)
    calls = SqlSubscriptions(services.sessions, services.sms.index, now=clock, calls=True)
    landline = "05302345678"
    assert texts_only.reach("phone", "c", CALLER, by_call=True) == "用短信发到138****0077"
    assert texts_only.reach("phone", "c", landline, by_call=True) is None
    assert calls.reach("phone", "c", CALLER, by_call=True) == "打电话到138****0077告诉您"
    assert calls.reach("phone", "c", landline) is None  # no SMS to a landline ...
    assert calls.reach("phone", "c", landline, by_call=True) is not None  # ... but a call
    outcome, view = texts_only.subscribe(sender_id="c", channel="phone", topic="medical_insurance", caller=CALLER,
                                         wording=WORDING, by_call=True)
    assert outcome == "subscribed" and view is not None and not view.by_call  # calls are off: an SMS


def call_scheduler(services: Services, clock: WallClock, spool: Path) -> tuple[SqlSubscriptions, Reminders]:
    subs = SqlSubscriptions(services.sessions, services.sms.index, now=clock, calls=True)
    reminders = Reminders(services.sessions, services.sms, None, medical=Window.parse("09-01/12-31"),
                          pension=Window.parse("06-01/12-31"), now=clock,
                          calls=CallOriginator(spool, "Local/{number}@test-callee", "12345"))
    return subs, reminders


def test_a_reminder_call_is_a_call_file_and_counts_when_picked_up(services: Services, clock: WallClock,
                                                                  tmp_path: Path) -> None:
    spool = tmp_path / "outgoing"
    spool.mkdir()
    subs, reminders = call_scheduler(services, clock, spool)
    subs.subscribe(sender_id="call-5", channel="phone", topic="medical_insurance", caller=CALLER, wording=WORDING,
                   by_call=True)
    reminders.evaluate()
    assert asyncio.run(reminders.deliver())["calling"] == 1
    [call_file] = list(spool.iterdir())
    body = call_file.read_text()
    with services.sessions() as s:
        reminder_id = s.scalars(select(Reminder.id)).one()
    assert f"Channel: Local/{CALLER}@test-callee\n" in body and "Context: heze-reminder\n" in body
    assert f"Setvar: HEZE_REMINDER={reminder_id}\n" in body and f"Setvar: HEZE_CALLED={CALLER}\n" in body
    assert "MaxRetries: 0\n" in body
    assert not list((spool.parent / "heze-staging").iterdir())  # written beside, renamed in whole
    assert statuses(services)[0][0] == "calling"
    assert subs.answered(reminder_id, "13800000099") is None  # not the number called
    assert subs.answered(reminder_id + 1, CALLER) is None
    text, topic = subs.answered(reminder_id, CALLER) or ("", None)
    assert "城乡居民医保开始缴费了" in text and topic is not None and topic.name == "居民医保缴费提醒"
    assert statuses(services) == [("sent", "call answered")]
    clock.advance(hours=1)
    assert asyncio.run(reminders.deliver())["calling"] == 0 and len(list(spool.iterdir())) == 1  # no second call


def test_a_call_nobody_picks_up_is_tried_again_then_failed(services: Services, clock: WallClock,
                                                           tmp_path: Path) -> None:
    spool = tmp_path / "outgoing"
    spool.mkdir()
    subs, reminders = call_scheduler(services, clock, spool)
    subs.subscribe(sender_id="call-6", channel="phone", topic="medical_insurance", caller="05302345678",
                   wording=WORDING, by_call=True)  # a landline: calls only
    reminders.evaluate()
    placed = []
    for _ in range(3):
        placed.append(asyncio.run(reminders.deliver())["calling"])
        clock.advance(minutes=16)  # not picked up within the quarter hour: called again after a pause
        asyncio.run(reminders.deliver())
        clock.advance(hours=2)  # past the pause before the next call
    assert placed == [1, 1, 1]
    assert statuses(services) == [("failed", "无人接听")]


def test_an_unwritable_spool_is_retried_not_lost(services: Services, clock: WallClock, tmp_path: Path) -> None:
    subs, reminders = call_scheduler(services, clock, tmp_path / "missing" / "outgoing")
    (tmp_path / "missing").write_text("a file where the spool's parent should be")
    subs.subscribe(sender_id="call-7", channel="phone", topic="medical_insurance", caller=CALLER, wording=WORDING,
                   by_call=True)
    reminders.evaluate()
    assert asyncio.run(reminders.deliver())["retry"] == 1
    assert statuses(services)[0][0] == "queued" and "call not placed" in (statuses(services)[0][1] or "")


def test_a_campaign_is_delivered_in_its_own_words_and_a_cancelled_one_not(services: Services,
                                                                         clock: WallClock) -> None:
    subs = SqlSubscriptions(services.sessions, services.sms.index, now=clock)
    subs.subscribe(sender_id="call-8", channel="phone", topic="pension_certification", caller=CALLER,
                   wording=WORDING)
    subs.subscribe(sender_id="call-9", channel="phone", topic="pension_certification", caller="13800000079",
                   wording=WORDING)
    campaigns = Campaigns(services.sessions, now=clock)
    kept = campaigns.create(topic="pension_certification", channel="sms", text="村委会周五上午可以帮您刷脸认证",
                            deadline=dt.date(2026, 10, 31), created_by="supervisor")
    dropped = campaigns.create(topic="pension_certification", channel="sms", text="周六也能办",
                               deadline=dt.date(2026, 10, 31), created_by="supervisor")
    assert campaigns.schedule(kept) == 2 and campaigns.schedule(dropped) == 2
    campaigns.cancel(dropped)
    counts = asyncio.run(scheduler(services, clock).deliver())
    assert counts["sent"] == 2
    with services.sessions() as s:
        sms = [r.text for r in s.scalars(select(SmsOutbox).order_by(SmsOutbox.id))]
    assert len(sms) == 2 and all("村委会周五上午可以帮您刷脸认证" in t and "10月31日" in t for t in sms)


@pytest.mark.parametrize("quiet, hours_quiet", [
    ((21, 8), [0, 1, 2, 3, 4, 5, 6, 7, 21, 22, 23]), ((12, 14), [12, 13]), ((8, 8), []),  # the same hour twice: none
])
def test_quiet_hours(services: Services, quiet: tuple[int, int], hours_quiet: list[int]) -> None:
    reminders = Reminders(services.sessions, services.sms, None, medical=Window.parse("09-01/12-31"),
                          pension=Window.parse("06-01/12-31"), quiet=quiet)
    found = [h for h in range(24) if reminders._quiet(dt.datetime(2026, 9, 2, h, 30, tzinfo=CHINA))]
    assert found == hours_quiet


def test_a_number_that_replied_td_is_withdrawn_on_the_record(services: Services, subscriptions: SqlSubscriptions,
                                                             clock: WallClock) -> None:
    subscriptions.subscribe(sender_id="call-10", channel="phone", topic="medical_insurance", caller=CALLER,
                            wording=WORDING)
    services.sms.opt_out(CALLER, "reply")
    reminders = scheduler(services, clock)
    reminders.evaluate()
    assert asyncio.run(reminders.deliver())["refused"] == 1
    assert subscriptions.active("call-10") == []
    assert [(a, w) for _, a, w, _ in subscriptions.consents("call-10")] == [("given", WORDING), ("withdrawn", "短信回复退订")]


def test_a_window_opening_is_delivered_batch_after_batch(services: Services, subscriptions: SqlSubscriptions,
                                                         clock: WallClock) -> None:
    for i in range(250):
        subscriptions.subscribe(sender_id=f"call-b{i}", channel="phone", topic="medical_insurance",
                                caller=f"139{i:08d}", wording=WORDING)
    reminders = scheduler(services, clock)
    reminders.evaluate()
    assert asyncio.run(reminders.deliver_for(60, batch=100))["sent"] == 250
    assert not any(asyncio.run(reminders.deliver_for(60, batch=100)).values())  # nothing left: one empty round


def test_no_more_reminder_calls_at_once_than_the_line_takes(services: Services, clock: WallClock,
                                                            tmp_path: Path) -> None:
    spool = tmp_path / "outgoing"
    spool.mkdir()
    subs, reminders = call_scheduler(services, clock, spool)
    reminders.max_calls = 4
    for i in range(6):
        subs.subscribe(sender_id=f"call-m{i}", channel="phone", topic="medical_insurance", caller=f"1370000000{i}",
                       wording=WORDING, by_call=True)
    reminders.evaluate()
    counts = asyncio.run(reminders.deliver())
    assert (counts["calling"], counts["later"]) == (4, 2) and len(list(spool.iterdir())) == 4
    with services.sessions() as s:
        first = s.scalars(select(Reminder.id).where(Reminder.status == "calling").order_by(Reminder.id)).first()
    assert first is not None and subs.answered(first, "13700000000") is not None  # one picked up: a line is free
    clock.advance(minutes=1)
    assert asyncio.run(reminders.deliver())["calling"] == 1 and len(list(spool.iterdir())) == 5


def test_delivery_keeps_the_database_off_the_event_loop(services: Services, subscriptions: SqlSubscriptions,
                                                        clock: WallClock, wechat: tuple[FakeWeChat, str],
                                                        tmp_path: Path) -> None:
    """The scheduler runs in the services API's event loop: a window's opening (thousands due) must not
    hold the citizens' requests while its queries run. Every statement of a delivery of each kind
    (SMS, WeChat, a call) runs on another thread than the loop's."""
    fake, _ = wechat
    fake.accepted = {OPENID}
    subscriptions.subscribe(sender_id="call-9", channel="phone", topic="medical_insurance", caller=CALLER,
                            wording=WORDING)
    subscriptions.subscribe(sender_id=f"web:oa:wx0123456789abcdef:{OPENID}", channel="webchat",
                            topic="pension_certification", caller=None, wording="每年养老金领取资格认证开始时提醒您一次")
    calls = SqlSubscriptions(services.sessions, services.sms.index, now=clock, calls=True)
    calls.subscribe(sender_id="call-10", channel="phone", topic="medical_insurance", caller="05302345679",
                    wording=WORDING, by_call=True)
    reminders = scheduler(services, clock, wechat)
    spool = tmp_path / "outgoing"
    spool.mkdir()
    reminders.calls = CallOriginator(spool, "Local/{number}@test-callee", "12345")
    reminders.evaluate()
    threads: list[int] = []

    def statement(*_: object) -> None:
        threads.append(threading.get_ident())

    engine = services.engine
    event.listen(engine, "before_cursor_execute", statement)
    try:
        async def deliver() -> tuple[int, dict[str, int]]:
            return threading.get_ident(), await reminders.deliver()
        loop_thread, counts = asyncio.run(deliver())
    finally:
        event.remove(engine, "before_cursor_execute", statement)
    assert counts["sent"] == 2 and counts["calling"] == 1, counts
    assert threads and loop_thread not in threads
