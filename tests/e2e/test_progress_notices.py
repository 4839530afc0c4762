"""Progress notices through the running stack: a citizen on the official account checks an application
that is not finished, rates the answer, is offered its progress notices and says "要"; the department
adds a step through the open API, and the reminder scheduler brings the news to the local WeChat as a
subscribe message; "取消提醒" stops the rest."""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from services.api_keys import ApiKeys
from services.models import Application
from services.subscriptions import Subscription, SubscriptionConsent
from tests.e2e.conftest import Running
from tests.e2e.people import Citizen

pytestmark = pytest.mark.e2e
APP = "20261102000003"  # seeded: 社会保障卡申领, 待补正, 人力资源和社会保障局


def notices_to(running: Running, openid: str) -> list[dict[str, Any]]:
    return [m for m in running.wechat.subscribe_sent if m["touser"] == openid]


def test_a_citizen_told_of_the_next_step_of_their_application_on_wechat(running: Running) -> None:
    citizen = Citizen(running)
    answer = citizen.say(f"查一下办件{APP}")
    assert "待补正" in answer and "打个分" in answer, answer
    offer = citizen.say("5")
    assert offer.startswith("谢谢。") and "这件事有新进展就用微信服务通知发给您" in offer and "取消提醒" in offer, offer
    assert "办完就不再发" in citizen.say("1")  # the offer's first choice: 要
    with running.services.sessions() as s:
        sub = s.scalars(select(Subscription).where(Subscription.sender_id == citizen.openid)).one()
        consent = s.scalars(select(SubscriptionConsent).where(SubscriptionConsent.subscription_id == sub.id)).one()
    assert (sub.topic, sub.subject) == ("application_progress", APP) and "微信服务通知" in consent.wording

    _, key = ApiKeys(running.services.sessions).create(department="人力资源和社会保障局", name="e2e notices",
                                                       scopes=("applications:write",), rate_per_minute=60)
    added = running.http.post(f"http://127.0.0.1:{running.settings.services_api_port}/api/v1/applications/{APP}/steps",
                              json={"step": "补正材料", "result": "已补齐"},
                              headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
    assert added.status_code == 201, added.text
    deadline = time.monotonic() + 60  # the scheduler looks every 2 s in this stack
    while not notices_to(running, citizen.openid) and time.monotonic() < deadline:
        time.sleep(0.5)
    [notice] = notices_to(running, citizen.openid)
    assert notice["data"]["thing1"]["value"] == f"办件{APP}进度通知"
    assert notice["data"]["thing3"]["value"] == "补正材料，已补齐"

    assert "取消" in citizen.say("取消提醒")
    with running.services.sessions() as s:
        assert s.scalars(select(Subscription.status).where(Subscription.id == sub.id)).one() == "cancelled"
        assert s.scalars(select(Application.current_step).where(Application.number == APP)).one() == "补正材料"
