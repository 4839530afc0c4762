"""Family proxy on the phone line: consent by code, revocation, and every way it can go wrong."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
import yaml
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions.proxy import (LOCKED, NO_REQUEST, NOT_ON_PHONE, WITHHELD, WRONG_CODE, ActionProxyConsent,
                           ActionProxyRevoke, ValidateProxyConsentForm)
from services.container import Services
from services.models import SmsOutbox
from services.proxy import MAX_WRONG_CODES, SqlProxies
from services.settings import ROOT
from tests.actions.helpers import DOMAIN, run, slot_events, texts, tracker
from tests.fakes.clock import WallClock

ELDER = "13800000041"
SON = "web:oa:openid-son"
ON_THE_LINE = {"channel": "phone", "caller": ELDER}




@pytest.fixture
def clock() -> WallClock:
    return WallClock(dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.timezone.utc))


@pytest.fixture
def lined(services: Services, clock: WallClock) -> Services:
    """Services whose proxies run on a clock the test moves."""
    proxies = SqlProxies(services.sessions, services.sms, services.sms.index, consent_days=90,
                         code_ttl=dt.timedelta(hours=24), now=clock)
    return dataclasses.replace(services, proxies=proxies)


def requested(services: Services, phone: str = ELDER, relation: str = "母亲") -> str:
    """A family member's request; the code the elder was texted."""
    outcome, _ = services.proxies.request(SON, phone, relation)
    assert outcome == "sent"
    with services.sessions() as s:
        params = s.scalars(select(SmsOutbox.params).where(SmsOutbox.kind == "proxy_code")
                           .order_by(SmsOutbox.id.desc())).first()
    return str(json.loads(params or "{}")["code"])


def keyed(services: Services, said: str, *, intent: str = "inform", metadata: dict[str, Any] | None = None,
          failed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The elder's answer to the code question, through the form's validator."""
    t = tracker(text=said, intent=intent, channel="phone", metadata=ON_THE_LINE if metadata is None else metadata,
                active_loop="proxy_consent_form", filled={"proxy_code": said},
                slots={"requested_slot": "proxy_code", "failed_attempts": failed})
    messages, events = run(ValidateProxyConsentForm(services), t)
    return messages, slot_events(events)


def test_the_code_keyed_in_consents_and_the_elder_hears_who_and_how_long(services: Services) -> None:
    code = requested(services)
    messages, slots = keyed(services, code)
    assert messages == [] and slots["proxy_code"] == code and slots["failed_attempts"] == 0
    assert slots.get("requested_slot") is None  # the form is done
    said, events = run(ActionProxyConsent(services), tracker(text=code, channel="phone", metadata=ON_THE_LINE,
                                                             slots={"proxy_code": code}))
    assert "您的子女现在可以替您办事了，90天内有效" in texts(said) and "解除代办" in texts(said)
    assert all(len(m["text"]) <= 40 for m in said)  # short sentences for the phone line
    assert slot_events(events)["proxy_code"] is None
    [grant] = services.proxies.of_family(SON)
    assert grant.status == "active"


def test_a_code_said_in_words_counts_as_digits(services: Services) -> None:
    code = requested(services)
    spoken = "".join("零幺二三四五六七八九"[int(d)] for d in code)
    _, slots = keyed(services, spoken)
    assert slots["proxy_code"] == code


def test_a_code_of_the_wrong_length_is_explained_then_a_human_takes_over(services: Services) -> None:
    requested(services)
    messages, slots = keyed(services, "12345")
    assert texts(messages) == "您输了5位。验证码是短信里的6位数字。" and slots["proxy_code"] is None
    assert slots["failed_attempts"] == 1
    messages, slots = keyed(services, "我不知道", intent="nlu_fallback")
    assert texts(messages) == "验证码是短信里的6位数字。"
    messages, slots = keyed(services, "1234567", failed=1)
    assert slots["flow_stopped"] is True and "转人工" in texts(messages)
    assert services.proxies.of_family(SON)[0].status == "pending"  # nothing lost: the code still works


def test_saying_the_request_again_or_yes_asks_for_the_code_again(services: Services) -> None:
    requested(services)
    for said, intent in (("代办授权", "proxy_consent"), ("好", "affirm"), ("同意", "nlu_fallback")):
        messages, slots = keyed(services, said, intent=intent)
        assert messages == [] and slots["proxy_code"] is None and slots.get("failed_attempts", 0) == 0


def test_a_wrong_code_is_asked_again_and_five_lock_the_request(services: Services) -> None:
    code = requested(services)
    wrong = "000000" if code != "000000" else "111111"
    messages, slots = keyed(services, wrong)
    assert texts(messages) == WRONG_CODE and slots["failed_attempts"] == 1 and slots["proxy_code"] is None
    for _ in range(MAX_WRONG_CODES - 2):  # more calls, each with its own count toward a human
        keyed(services, wrong)
    messages, slots = keyed(services, wrong)  # the fifth
    assert texts(messages) == LOCKED and slots["flow_stopped"] is True
    messages, slots = keyed(services, code)  # the sixth: even the right one
    assert texts(messages) == LOCKED and slots["proxy_code"] is None
    said, _ = run(ActionProxyConsent(services), tracker(channel="phone", metadata=ON_THE_LINE, slots={"flow_stopped": True}))
    assert said == []  # the validator has said it all


def test_an_expired_code_or_no_request_is_explained(lined: Services, clock: WallClock) -> None:
    messages, slots = keyed(lined, "123456")
    assert texts(messages) == NO_REQUEST and slots["flow_stopped"] is True
    code = requested(lined)
    clock.now += dt.timedelta(hours=25)
    messages, slots = keyed(lined, code)
    assert texts(messages) == NO_REQUEST and slots["proxy_code"] is None
    assert lined.proxies.listing()[0].status == "expired"


def test_no_caller_number_or_another_channel_asks_nothing_and_says_how(services: Services) -> None:
    requested(services)
    form = ValidateProxyConsentForm(services)
    # The last two: a rest client claiming the phone line, and the web chat; neither is the elder's call.
    for channel, metadata, answer in (("phone", {"channel": "phone"}, WITHHELD),
                                      ("phone", {"channel": "phone", "caller": "05306666666"}, WITHHELD),
                                      ("rest", {}, NOT_ON_PHONE["consent"]),
                                      ("rest", {"channel": "phone", "caller": ELDER}, NOT_ON_PHONE["consent"]),
                                      ("webchat", {"caller": ELDER}, NOT_ON_PHONE["consent"])):
        t = tracker(text="代办授权", intent="proxy_consent", channel=channel, metadata=metadata)
        slots = asyncio.run(form.required_slots(["proxy_code"], CollectingDispatcher(), t, DOMAIN))
        assert slots == [], metadata
        said, _ = run(ActionProxyConsent(services), t)
        assert texts(said) == answer
        said, _ = run(ActionProxyRevoke(services), tracker(text="解除代办", intent="proxy_revoke", channel=channel,
                                                           metadata=metadata))
        assert texts(said) == (WITHHELD if answer == WITHHELD else NOT_ON_PHONE["revoke"])
    on_line = tracker(text="代办授权", intent="proxy_consent", channel="phone", metadata=ON_THE_LINE)
    assert asyncio.run(form.required_slots(["proxy_code"], CollectingDispatcher(), on_line, DOMAIN)) == ["proxy_code"]
    assert services.proxies.of_family(SON)[0].status == "pending"  # nothing was ended or consented


def test_the_elder_ends_every_proxy_by_phone(services: Services) -> None:
    said, _ = run(ActionProxyRevoke(services), tracker(text="解除代办", intent="proxy_revoke", channel="phone", metadata=ON_THE_LINE))
    assert texts(said) == "您这个号码现在没有家人代办，不用解除。"
    code = requested(services)
    keyed(services, code)
    said, _ = run(ActionProxyRevoke(services), tracker(text="解除代办", intent="proxy_revoke", channel="phone", metadata=ON_THE_LINE))
    assert texts(said) == "已经解除代办。家人不能再替您办事了。"
    assert services.proxies.of_family(SON) == []
    assert services.proxies.listing("ended")[0].ended_by == "elder"


def test_the_phone_line_listens_for_keys_when_the_code_is_asked() -> None:
    credentials = yaml.safe_load((ROOT / "bot" / "credentials.yml").read_text(encoding="utf-8"))
    assert "proxy_code" in credentials["channels.phone.PhoneInput"]["digit_slots"]
    phone = next(v for v in DOMAIN["responses"]["utter_ask_proxy_code"] if v.get("channel") == "phone")
    assert "按键" in phone["text"] and "井号" in phone["text"] and len(phone["text"]) <= 40
