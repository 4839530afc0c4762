"""Progress notices (issue 19: "when a department updates a progress step, the citizen who opted in is
told on the channel they used"): a subscription about one application, a notice queued for each step a
department adds (services/updates.py), delivered by the reminder scheduler as an SMS or a WeChat
subscribe message, and the subscriptions ended once the application is finished."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from services.campaigns import CampaignRefused, Campaigns
from services.container import Services
from services.models import Application, ApplicationStep, SmsOutbox
from services.reminders import Reminders, WeChatSubscribeSender, Window
from services.subscriptions import Reminder, SqlSubscriptions, Subscription
from services.updates import tell_citizen
from tests.fakes.clock import WallClock
from tests.fakes.wechat_api import FakeWeChat, serve
from tests.sandbox import free_port

APP = "20261101000001"  # seeded: 审核中 at 材料审核
CALLER = "13800000055"
OPENID = "oNotice000000000000000000001"
NOON = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
WORDING = "这件办件办完以前，有了新进展，要不要用短信发到138****0055告诉您？办结后就不再发。"


@pytest.fixture
def clock() -> WallClock:
    return WallClock(NOON.astimezone(dt.timezone.utc))


@pytest.fixture
def wechat() -> Iterator[tuple[FakeWeChat, str]]:
    fake = FakeWeChat(appid="wx" + "0d" * 8, secret="oa-secret")
    with serve(fake, free_port()) as url:
        yield fake, url


def subscriptions(services: Services, clock: WallClock) -> SqlSubscriptions:
    return SqlSubscriptions(services.sessions, services.sms.index, wechat_accounts=frozenset({"oa"}), now=clock,
                            progress_notices=True)


def add_step(services: Services, step: str, result: str, status: str | None = None) -> None:
    """What the open API does for a department (services/open_api.py), then tells the citizens."""
    with services.sessions() as s:
        app = s.scalars(select(Application).where(Application.number == APP)).one()
        s.add(ApplicationStep(application_id=app.id, step=step, result=result, at=dt.datetime.now(dt.timezone.utc)))
        app.current_step = step
        if status:
            app.status = status
        s.commit()


def test_a_subscription_about_one_application(seeded: Services, clock: WallClock) -> None:
    subs = subscriptions(seeded, clock)
    assert subs.subscribe(sender_id="call-1", channel="phone", topic="application_progress", caller=CALLER,
                          wording=WORDING)[0] == "unknown_topic"  # which application?
    assert subs.subscribe(sender_id="call-1", channel="phone", topic="medical_insurance", caller=CALLER,
                          wording=WORDING, subject=APP)[0] == "unknown_topic"  # a yearly topic is about no one thing
    outcome, view = subs.subscribe(sender_id="call-1", channel="phone", topic="application_progress", caller=CALLER,
                                   wording=WORDING, subject=APP, by_call=True)
    assert outcome == "subscribed" and view is not None and view.name == f"办件{APP}进度通知" and not view.by_call
    again, _ = subs.subscribe(sender_id="call-2", channel="phone", topic="application_progress", caller=CALLER,
                              wording=WORDING, subject=APP)  # the same caller on another call
    assert again == "already"
    other, _ = subs.subscribe(sender_id="call-2", channel="phone", topic="application_progress", caller=CALLER,
                              wording=WORDING, subject="20261102000003")
    assert other == "subscribed" and [v.subject for v in subs.active("call-9", CALLER)] == [APP, "20261102000003"]
    with pytest.raises(CampaignRefused):  # no campaign is written for one citizen's application
        Campaigns(seeded.sessions, now=clock).create(topic="application_progress", channel="sms", text="您好。",
                                                     deadline=None, created_by="admin")


def test_each_step_a_department_adds_is_told_once_on_the_citizens_channel_until_finished(
        seeded: Services, clock: WallClock, wechat: tuple[FakeWeChat, str]) -> None:
    fake, url = wechat
    subs = subscriptions(seeded, clock)
    subs.subscribe(sender_id="call-1", channel="phone", topic="application_progress", caller=CALLER, wording=WORDING,
                   subject=APP)
    subs.subscribe(sender_id=OPENID, channel="wechat", topic="application_progress", caller=None, wording="微信",
                   subject=APP)
    subs.subscribe(sender_id="call-3", channel="phone", topic="medical_insurance", caller="13800000056",
                   wording="医保")  # another topic: told nothing here
    reminders = Reminders(seeded.sessions, seeded.sms, WeChatSubscribeSender(
        {"oa": (url, fake.appid, fake.secret, "TPL-reminder")}, "https://heze.test"),
        medical=Window.parse("09-01/09-02"), pension=Window.parse("06-01/06-02"), now=clock)

    loop = asyncio.new_event_loop()  # the sender's HTTP client lives in one loop, as in the services API
    add_step(seeded, "现场核查", "通过")
    assert tell_citizen(seeded, "application", APP, clock()) == "2 notice(s) queued"
    assert tell_citizen(seeded, "application", APP, clock()) == "0 notice(s) queued"  # told twice: one notice
    counts = loop.run_until_complete(reminders.deliver())
    assert counts["sent"] == 2, counts
    with seeded.sessions() as s:
        sms = s.scalars(select(SmsOutbox).where(SmsOutbox.kind == "progress_update")).one()
    assert sms.phone == CALLER and json.loads(sms.params or "{}") == {"number": APP, "progress": "现场核查，通过"}
    [notice] = fake.subscribe_sent
    assert notice["touser"] == OPENID and notice["data"]["thing1"]["value"] == f"办件{APP}进度通知"
    assert notice["data"]["thing3"]["value"] == "现场核查，通过" and notice["data"]["time2"]["value"] == "12月7日"

    add_step(seeded, "发证", "已领取", status="已办结")  # the last news: the subscriptions end with it
    clock.advance(hours=1)
    assert tell_citizen(seeded, "application", APP, clock()) == "2 notice(s) queued"
    # The caller says "取消提醒" before the last notice went: it is withdrawn, and the notice never goes.
    assert [v.subject for v in subs.active("call-7", CALLER)] == [] and subs.cancel("call-7", phone=CALLER) == 1
    second = loop.run_until_complete(reminders.deliver())
    loop.close()
    assert (second["sent"], second["skipped"]) == (1, 1), second
    with seeded.sessions() as s:
        assert sorted(sub.status for sub in s.scalars(select(Subscription).where(Subscription.subject == APP))) == [
            "cancelled", "ended"]
        assert s.scalars(select(SmsOutbox).where(SmsOutbox.kind == "progress_update")).all()[-1].id == sms.id
        assert s.scalars(select(Subscription.status).where(Subscription.topic == "medical_insurance")).one() == "active"
    assert fake.subscribe_sent[-1]["data"]["thing3"]["value"] == "发证，已领取"
    add_step(seeded, "归档", "完成")
    assert tell_citizen(seeded, "application", APP, clock()) == "nobody subscribed"
    assert tell_citizen(seeded, "application", "99999999999999", clock()) == "no such application"
    with seeded.sessions() as s:
        assert len(s.scalars(select(Reminder)).all()) == 4
