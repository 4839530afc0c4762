"""Reminders end to end (issue 19): citizens subscribe on WeChat and on the phone line, the stack's
scheduler sends the reminders that fall due (every 2 s here, every day in the window, no quiet hours:
tests/e2e/conftest.py) to the local WeChat API, the SMS outbox and, for a caller who asked to be
called, through a real Asterisk to a test callee who picks up and presses 0 for a person; an opt-out
stops them; staff schedule a campaign in the console and read its figures there; and a department's
API key updates a ticket and the citizen who left a number is texted."""
from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.api_keys import ApiKeys
from services.models import FeedbackTicket, PhoneCall, PhoneTurn, SmsOutbox
from services.subscriptions import Reminder, Subscription
from tests.e2e.conftest import Running
from tests.e2e.people import Citizen, call, console_sign_in, replies
from tests.pbx import Pbx, available
from tests.voice.phone_client import PhoneClient
from tests.voice.speech import utterance

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(available() is not None, reason=available() or "")]


@pytest.fixture(scope="module")
def pbx(running: Running) -> Iterator[Pbx]:
    """The PBX whose outgoing spool is the stack's REMINDER_CALL_SPOOL (a shared volume in production)."""
    v = running.voice
    box = Pbx(v.voice_audiosocket_host, v.voice_http_port, v.voice_audiosocket_port,
              v.voice_gateway_token.get_secret_value(), outgoing=running.settings.resolve(
                  running.settings.reminder_call_spool))
    yield box
    box.stop()


def until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def reminders_of(running: Running, **where: str) -> list[tuple[str, str | None, str]]:
    """(status, result, due key) of the reminders of the subscriptions matching ``where``."""
    with running.services.sessions() as s:
        subs = [sub.id for sub in s.scalars(select(Subscription))
                if all(getattr(sub, k) == v for k, v in where.items())]
        return [(r.status, r.result, r.due_key) for r in
                s.scalars(select(Reminder).where(Reminder.subscription_id.in_(subs)).order_by(Reminder.id))]


def texts_to(running: Running, phone: str, kind: str) -> list[str]:
    with running.services.sessions() as s:
        return [text for number, text in s.execute(select(SmsOutbox.phone, SmsOutbox.text)
                                                    .where(SmsOutbox.kind == kind).order_by(SmsOutbox.id))
                if number == phone]


def subscribe_by_phone(running: Running, caller: str, key: str) -> None:
    """A caller says "提醒我交医保" (Whisper hears 提醒我教育保: the topic is asked, key 1), then at the
    consent question keys ``key``: 1 同意 (an SMS), 2 打电话提醒."""
    async def steps(phone: PhoneClient) -> None:
        phone.speak(utterance("reminder_001"))  # 提醒我交医保
        said = await replies(running, phone.call_id, 2)
        if "哪个提醒" in said[1]:
            await phone.wait_quiet(0.6)
            phone.press("1")  # 交医保
            said = await replies(running, phone.call_id, 3)
        assert "打电话提醒按2" in said[-1] and "同意吗" in said[-1], said
        await phone.wait_quiet(0.6)
        phone.press(key)
        said = await replies(running, phone.call_id, len(said) + 1)
        assert "已为您订上居民医保缴费提醒" in said[-1], said

    call(running, caller, steps)


def test_reminders_reach_wechat_sms_and_a_call_and_an_opt_out_stops_them(running: Running, pbx: Pbx) -> None:
    fake = running.wechat
    # On WeChat: subscribe in conversation; the reminder comes as a subscribe message.
    citizen = Citizen(running)
    question = citizen.say("提醒我交医保")
    assert "微信服务通知" in question and "同意吗" in question, question
    assert "已为您订上居民医保缴费提醒" in citizen.say("同意")
    sent = until("the WeChat subscribe message", lambda: [m for m in fake.subscribe_sent
                                                            if m["touser"] == citizen.openid])
    assert sent[0]["template_id"] == "TPL-reminder" and sent[0]["data"]["thing1"]["value"] == "居民医保缴费提醒"
    assert until("recorded as sent", lambda: reminders_of(running, sender_id=citizen.openid))[0][0] == "sent"

    # On the phone line: one caller wants an SMS, another (an elderly one) a call.
    texted, called = "139" + str(uuid.uuid4().int)[:8], "137" + str(uuid.uuid4().int)[:8]
    subscribe_by_phone(running, texted, "1")
    sms = until("the reminder SMS", lambda: texts_to(running, texted, "reminder"))
    assert "居民医保" in sms[0] and "退订" in sms[0], sms
    pbx.callee("wait:16^dtmf:0^wait:25")  # picks up, listens to the reminder, presses 0 for a person
    subscribe_by_phone(running, called, "2")
    until("the reminder call answered", lambda: reminders_of(running, phone_hash=running.services.sms.index(called))
          and reminders_of(running, phone_hash=running.services.sms.index(called))[0][:2] == ("sent", "call answered"),
          timeout=90)
    with running.services.sessions() as s:
        reminder_call = s.scalars(select(PhoneCall).where(PhoneCall.transport == "audiosocket")
                                  .order_by(PhoneCall.id.desc())).first()
        assert reminder_call is not None and reminder_call.caller == called
        call_pk = reminder_call.id

    def first_reply() -> str:
        with running.services.sessions() as s:
            turn = s.scalars(select(PhoneTurn).where(PhoneTurn.call_pk == call_pk).order_by(PhoneTurn.seq)).first()
            return (turn.reply or "") if turn is not None else ""

    said = until("the reminder said", first_reply)
    assert "城乡居民医保开始缴费了" in said and said.endswith("现在办理请按1，转人工请按0。"), said
    try:
        until("the callee reached a person", lambda: "HEZE-HUMAN" in pbx.log() and f"HEZE-CALLEE {called}" in pbx.log())
    except AssertionError:
        raise AssertionError("\n".join(line for line in pbx.log().splitlines() if "HEZE" in line or "human" in line)[-3000:])

    # An opt-out: the WeChat citizen cancels and gets nothing more. Staff send a campaign by call: it
    # reaches only the caller who chose calls (the one who chose texts is never called).
    assert "已取消居民医保缴费提醒" in citizen.say("取消提醒")
    deadline = (datetime.date.today() + datetime.timedelta(days=20)).isoformat()
    with httpx.Client(base_url=running.console_url, timeout=30) as staff:
        csrf = console_sign_in(running, staff)
        made = staff.post("/campaigns", data={"csrf_token": csrf, "topic": "medical_insurance", "channel": "call",
                                              "text": "村里便民服务站可以帮您交医保", "deadline": deadline,
                                              "send_at": ""}, follow_redirects=False)
        assert made.status_code == 303, made.text
        page = made.headers["location"]
        scheduled = staff.post(f"{page}/schedule", data={"csrf_token": csrf, "send_at": ""}, follow_redirects=False)
        assert scheduled.status_code == 303, scheduled.text
        until("the campaign's call answered", lambda: any(
            key.startswith("campaign:") and status == "sent"
            for status, _, key in reminders_of(running, phone_hash=running.services.sms.index(called))), timeout=90)
        figures = re.search(r'id="figures".*?<tbody><tr>((?:<td>\d+</td>\s*)+)</tr>', staff.get(page).text, re.S)
    assert figures is not None
    recipients, sent, *_ = (int(n) for n in re.findall(r"<td>(\d+)</td>", figures.group(1)))
    assert (recipients, sent) == (1, 1)
    assert not any("便民服务站" in t for t in texts_to(running, texted, "reminder"))
    time.sleep(5)  # two more rounds of the scheduler: nothing more for the one who opted out
    assert len([m for m in fake.subscribe_sent if m["touser"] == citizen.openid]) == 1


def test_a_departments_update_of_a_ticket_is_texted_to_the_citizen(running: Running) -> None:
    citizen = Citizen(running)
    mobile = "136" + str(uuid.uuid4().int)[:8]
    assert "1. 投诉" in citizen.say("路灯坏了一个多月了没人修")
    assert "哪里" in citizen.say("1")  # 投诉
    asked = citizen.say("巨野县城东大街")
    assert "手机" in asked, asked
    answer = citizen.say(mobile)
    number = re.search(r"工单号：(\d{8})", answer)
    assert number, answer
    with running.services.sessions() as s:
        department = s.scalars(select(FeedbackTicket.department).where(FeedbackTicket.number == number.group(1))).one()
    _, key = ApiKeys(running.services.sessions).create(department=department, name="e2e", scopes=("tickets:write",),
                                                       rate_per_minute=60)
    patched = running.http.patch(f"http://127.0.0.1:{running.settings.services_api_port}/api/v1/tickets/"
                                 f"{number.group(1)}", json={"status": "resolved", "reply": "路灯已经修好了。"},
                                 headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
    assert patched.status_code == 200, patched.text
    assert json.loads(patched.text)["status"] == "resolved"
    # The ticket's receipt was texted a moment ago: the update waits out the one-a-minute limit.
    told = until("the citizen texted", lambda: texts_to(running, mobile, "ticket_update"), timeout=100)
    assert number.group(1) in told[0] and "已办结" in told[0], told
