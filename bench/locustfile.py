"""Citizens for the scale-out benchmark (bench/scaleout.py runs locust with this file, headless, on
loopback): each one has short conversations over the ``rest`` channel or the official account's
WeChat channel (signed and encrypted as WeChat delivers), one message about every second.

Set by bench/scaleout.py: HEZE_LOCUST_WECHAT ("token|aes_key|appid" of the account under test)."""
from __future__ import annotations

import itertools
import os
import time
import uuid

from locust import HttpUser, between, task

from tests.fakes.wechat_api import Account

FLOW = ("你好", "查工单", "10000001")  # a greeting, then two turns through the action servers
_ids = itertools.count(int(time.time() * 1000) * 1000)


class RestCitizen(HttpUser):
    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.sender = "load-" + uuid.uuid4().hex[:12]

    @task
    def conversation(self) -> None:
        for text in FLOW:
            with self.client.post("/webhooks/rest/webhook", json={"sender": self.sender, "message": text},
                                  name="rest turn", catch_response=True) as r:
                if r.status_code != 200 or not r.json():
                    r.failure(f"no reply ({r.status_code})")
            self.wait()


class WeChatCitizen(HttpUser):
    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        token, aes_key, appid = os.environ["HEZE_LOCUST_WECHAT"].split("|")
        self.account = Account(token=token, aes_key=aes_key, appid=appid)
        self.openid = "oload" + uuid.uuid4().hex[:16]

    @task
    def conversation(self) -> None:
        for text in FLOW:
            inner = self.account.text_xml(self.openid, text, next(_ids), create_time=int(time.time()))
            params, body = self.account.sealed(inner)
            # WeChat waits 5 s; "success" means the reply follows as a customer-service message.
            with self.client.post("/webhooks/wechat/webhook", params=params, data=body, name="wechat turn",
                                  timeout=5, catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")
            self.wait()
