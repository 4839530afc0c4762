"""A services API paid through WeChat Pay API v3, against the local v3 server (tests/fakes/wechatpay.py):
the merchant's settings and keys, and ``Pay``, what the payment tests drive. The ``pay`` fixture
(tests/services/conftest.py) starts one per test."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from services.api import create_app
from services.container import Services, build_services
from services.db import make_engine
from services.migrate import upgrade
from services.seed import seed
from services.settings import Settings
from tests.fakes.wechat_api import serve_app
from tests.fakes.wechatpay import FakeWeChatPay, new_key, write_private, write_public
from tests.sandbox import free_port, make_settings

MCHID = "1900000109"
OA, MINI = "wx0fficialaccount1", "wxm1n1program0001"
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3 = "heze-apiv3-key-0123456789abcdefg"[:32]
OPENID = "oHeze_citizen_0001_openid_x"

MERCHANT_KEY = new_key()  # one per test run: RSA generation is the slow part
PLATFORM_KEY = new_key()


@dataclass
class Pay:
    services: Services
    fake: FakeWeChatPay
    api: str  # the services API's base URL
    http: httpx.Client

    def order(self, channel: str = "wechat", sender: str = OPENID, account: str = "1000000001") -> str:
        (bill,) = self.services.billing.outstanding("water", account)
        return self.services.billing.create_order(bill.id, channel=channel, sender_id=sender,
                                                  provider="wechatpay").order_no

    def jsapi(self, order_no: str) -> dict[str, str]:
        page = self.http.get(f"{self.api}/pay/{order_no}")
        assert page.status_code == 200 and "getBrandWCPayRequest" in page.text
        return json.loads(re.search(r"var p=(\{.*?\});", page.text).group(1))  # type: ignore[union-attr]

    def status(self, order_no: str) -> str:
        order = self.services.billing.order(order_no)
        assert order is not None
        return order.status


def wechatpay_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        payment_provider="wechatpay", wechatpay_mchid=MCHID, wechatpay_cert_serial=SERIAL,
        wechatpay_private_key_path=str(write_private(MERCHANT_KEY, tmp / "apiclient_key.pem")),
        wechatpay_apiv3_key=SecretStr(APIV3),
        wechatpay_public_key_path=str(write_public(PLATFORM_KEY.public_key(), tmp / "pub_key.pem")),
        wechatpay_public_key_id="PUB_KEY_ID_0110000000000000000000000000000001",
        wechat_appid=OA, miniprogram_appid=MINI, payment_sweep_s=0)
    values.update(overrides)
    return make_settings(**values)


@contextmanager
def paying(db_url: str, tmp_path: Path) -> Iterator[Pay]:
    fake = FakeWeChatPay(MCHID, {OA, MINI}, MERCHANT_KEY.public_key(), SERIAL, APIV3.encode(), PLATFORM_KEY)
    fake_port, api_port = free_port(), free_port()
    fake.base_url = f"http://127.0.0.1:{fake_port}"
    settings = wechatpay_settings(tmp_path, heze_db_url=db_url, wechatpay_api_base=fake.base_url,
                                  public_base_url=f"http://127.0.0.1:{api_port}")
    engine = make_engine(db_url)
    upgrade(engine)
    services = build_services(settings, engine)
    assert seed(services.sessions)
    try:
        with serve_app(fake.app(), fake_port), serve_app(create_app(settings, services), api_port) as api, \
                httpx.Client(timeout=10) as http:
            yield Pay(services, fake, api, http)
    finally:
        engine.dispose()
