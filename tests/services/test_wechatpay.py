"""WeChat Pay API v3 end to end against a local v3 server (tests/fakes/wechatpay.py): the services
API runs on a real port, the fake delivers signed, encrypted notifications to it over HTTP, and the
real signing, verification and decryption code runs on both sides."""
from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.billing import InvalidTransition
from services.payments import request_refund, sweep
from tests.sandbox import make_settings
from tests.services.paying import MINI, OA, OPENID, Pay, wechatpay_settings
from tests.fakes.wechatpay import new_key

def test_a_wechat_citizen_pays_a_bill(pay: Pay) -> None:
    order_no = pay.order()
    params = pay.jsapi(order_no)
    assert params["appId"] == OA and params["signType"] == "RSA" and params["package"].startswith("prepay_id=wx")
    assert pay.fake.check_jsapi(params)  # WeChat's client accepts the merchant's paySign
    sent = pay.fake.orders[order_no]
    assert sent["payer"] == {"openid": OPENID} and sent["amount"] == {"total": 5630, "currency": "CNY"}
    assert sent["_expire"].endswith("+08:00")
    assert pay.jsapi(order_no)["package"] == params["package"]  # the page again: the same prepay
    answer = pay.fake.pay(order_no)
    assert answer is not None and answer.status_code == 200
    assert pay.status(order_no) == "paid"
    assert pay.services.billing.outstanding("water", "1000000001") == []
    assert "已经缴清" in pay.http.get(f"{pay.api}/pay/{order_no}").text
    # WeChat Pay sends it again (freshly signed): nothing changes, and it is acknowledged.
    again = pay.fake.deliver(order_no, *pay.fake.notification("TRANSACTION.SUCCESS", pay.fake.transaction(order_no)))
    assert again.status_code == 200 and pay.status(order_no) == "paid"
    assert pay.fake.rejected == []  # every request the client made was signed right


def test_the_mini_program_gets_its_own_appid(pay: Pay) -> None:
    order_no = pay.order(channel="miniprogram")
    got = pay.http.get(f"{pay.api}/pay/{order_no}/checkout").json()
    assert got["kind"] == "jsapi" and got["params"]["appId"] == MINI and pay.fake.check_jsapi(got["params"])
    assert pay.fake.pay(order_no).status_code == 200  # type: ignore[union-attr]
    assert pay.status(order_no) == "paid"


def test_the_web_chat_pays_in_wechats_browser_and_the_mini_programs_web_view_by_qr(pay: Pay) -> None:
    """The web chat from the official account's menu is WeChat's browser with the account's openid: JSAPI.
    Inside the mini-program's web-view only the mini-program can take a payment: a QR code there."""
    order_no = pay.order(channel="webchat", sender=f"web:oa:{OA}:{OPENID}")
    got = pay.http.get(f"{pay.api}/pay/{order_no}/checkout").json()
    assert got["kind"] == "jsapi" and got["params"]["appId"] == OA and pay.fake.check_jsapi(got["params"])
    assert pay.fake.orders[order_no]["payer"] == {"openid": OPENID}
    mini = pay.order(channel="webchat", sender=f"web:mp:{MINI}:{OPENID}", account="1000000002")
    assert "<svg" in pay.http.get(f"{pay.api}/pay/{mini}").text and pay.fake.orders[mini]["trade_type"] == "NATIVE"


def test_a_phone_caller_pays_through_native(pay: Pay) -> None:
    order_no = pay.order(channel="phone", sender="call-0001")
    page = pay.http.get(f"{pay.api}/pay/{order_no}")
    assert page.status_code == 200 and "<svg" in page.text and "扫一扫" in page.text
    sent = pay.fake.orders[order_no]
    assert sent["trade_type"] == "NATIVE" and sent["appid"] == OA and "payer" not in sent or not sent["payer"]
    assert pay.fake.pay(order_no, openid="oScanner").status_code == 200  # type: ignore[union-attr]
    assert pay.status(order_no) == "paid"


def test_full_and_partial_refunds_with_their_notifications(pay: Pay) -> None:
    order_no = pay.order()
    pay.jsapi(order_no)
    pay.fake.pay(order_no)
    billing, provider = pay.services.billing, pay.services.payments
    first = request_refund(provider, billing, order_no, 1000, "多缴退费")
    assert first.status == "pending"  # PROCESSING: the notification settles it
    assert pay.fake.finish_refund(first.refund_no).status_code == 200
    assert billing.refund(first.refund_no).status == "succeeded"  # type: ignore[union-attr]
    assert pay.status(order_no) == "paid"  # part refunded
    with pytest.raises(InvalidTransition):
        request_refund(provider, billing, order_no, 4631, "too much")
    pay.fake.refund_status = "SUCCESS"  # the rest is refunded at once
    rest = request_refund(provider, billing, order_no, 4630, "退费")
    assert rest.status == "succeeded" and pay.status(order_no) == "refunded"
    # The notification of the refund that was already final changes nothing.
    assert pay.fake.finish_refund(rest.refund_no).status_code == 200
    assert pay.status(order_no) == "refunded"


def test_an_order_whose_notification_never_came_is_queried(pay: Pay) -> None:
    order_no = pay.order()
    pay.jsapi(order_no)
    pay.fake.notify = False
    pay.fake.pay(order_no)
    now = dt.datetime.now(dt.timezone.utc)
    assert sweep(pay.services.payments, pay.services.billing, now, dt.timedelta(minutes=5)) == \
        {"paid": 0, "expired": 0, "failed": 0}  # too young to query
    later = now + dt.timedelta(minutes=6)
    assert sweep(pay.services.payments, pay.services.billing, later, dt.timedelta(minutes=5))["paid"] == 1
    assert pay.status(order_no) == "paid"


def test_an_unpaid_order_is_closed_at_expiry(pay: Pay) -> None:
    opened, never_opened = pay.order(), pay.order(account="1000000002")
    pay.jsapi(opened)
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=31)
    counts = sweep(pay.services.payments, pay.services.billing, after, dt.timedelta(minutes=5))
    assert counts == {"paid": 0, "expired": 2, "failed": 0}
    assert pay.fake.orders[opened]["trade_state"] == "CLOSED" and never_opened not in pay.fake.orders
    assert pay.status(opened) == pay.status(never_opened) == "expired"
    assert pay.http.get(f"{pay.api}/pay/{opened}").status_code == 410
    # The bill can be paid again, with a new order.
    assert pay.order() != opened


def test_an_order_paid_just_before_its_close_is_paid(pay: Pay) -> None:
    order_no = pay.order()
    pay.jsapi(order_no)
    pay.fake.notify = False
    pay.fake.pay(order_no)
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=31)
    assert sweep(pay.services.payments, pay.services.billing, after, dt.timedelta(minutes=5))["paid"] == 1
    assert pay.status(order_no) == "paid"


REFUSED = {
    "forged signature": (400, "bad signature", lambda f, r: f.notification("TRANSACTION.SUCCESS", r, key=new_key())),
    "stale timestamp": (400, "timestamp outside", lambda f, r: f.notification("TRANSACTION.SUCCESS", r,
                                                         timestamp=int(dt.datetime.now().timestamp()) - 301)),
    "undecryptable resource": (400, "resource does not decrypt", lambda f, r: f.notification("TRANSACTION.SUCCESS", r, apiv3_key=b"k" * 32)),
    "wrong amount": (409, "amount does not match", lambda f, r: f.notification("TRANSACTION.SUCCESS", dict(r, amount={**r["amount"], "total": 1}))),
    "wrong mchid": (409, "notification for another merchant", lambda f, r: f.notification("TRANSACTION.SUCCESS", dict(r, mchid="1900000999"))),
    "wrong appid": (409, "paid to another appid than the order", lambda f, r: f.notification("TRANSACTION.SUCCESS", dict(r, appid=MINI))),
    "foreign appid": (409, "notification for another appid", lambda f, r: f.notification("TRANSACTION.SUCCESS", dict(r, appid="wxsomeoneelse0001"))),
    "wrong currency": (409, "currency is not CNY", lambda f, r: f.notification("TRANSACTION.SUCCESS", dict(r, amount={**r["amount"], "currency": "USD"}))),
    "unknown order": (409, "unknown order", lambda f, r: f.notification("TRANSACTION.SUCCESS", dict(r, out_trade_no="20261203" + "9" * 10))),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_notifications_change_nothing(pay: Pay, case: str, caplog: pytest.LogCaptureFixture) -> None:
    order_no = pay.order()
    pay.jsapi(order_no)
    pay.fake.notify = False
    pay.fake.pay(order_no)
    status, reason, make = REFUSED[case]
    with caplog.at_level(logging.INFO):
        answer = pay.fake.deliver(order_no, *make(pay.fake, pay.fake.transaction(order_no)))
    assert answer.status_code == status and answer.json()["code"] == "FAIL"
    assert order_no not in answer.text and OPENID not in answer.text
    assert pay.status(order_no) == "pending"
    assert f"payment notification refused ({status}): {reason}" in caplog.text and OPENID not in caplog.text


def test_a_replayed_notification_is_refused(pay: Pay, caplog: pytest.LogCaptureFixture) -> None:
    order_no = pay.order()
    pay.jsapi(order_no)
    pay.fake.notify = False
    pay.fake.pay(order_no)
    body, headers = pay.fake.notification("TRANSACTION.SUCCESS", pay.fake.transaction(order_no))
    with caplog.at_level(logging.INFO):
        assert pay.fake.deliver(order_no, body, headers).status_code == 200
        replay = pay.fake.deliver(order_no, body, headers)
    assert replay.status_code == 400 and "replayed" in caplog.text and OPENID not in caplog.text
    assert pay.status(order_no) == "paid"


def test_a_forged_server_answer_is_not_believed(pay: Pay) -> None:
    order_no = pay.order()
    pay.fake.answer_key = new_key()  # someone between us and WeChat Pay answers
    page = pay.http.get(f"{pay.api}/pay/{order_no}")
    assert page.status_code == 502 and "稍后再试" in page.text and "prepay_id" not in page.text


def test_the_trade_bill_is_downloaded_and_its_hash_checked(pay: Pay) -> None:
    client = pay.services.payments._client  # type: ignore[attr-defined]  # noqa: SLF001
    pay.fake.bills["2026-12-02"] = "交易时间,公众账号ID,商户号\n`2026-12-02 10:00:00,`wx,`1900000109\n".encode()
    assert client.trade_bill(dt.date(2026, 12, 2)).startswith("交易时间".encode())
    assert any(c.startswith("GET /v3/billdownload/file") for c in pay.fake.calls)


def test_settings_require_every_merchant_field(tmp_path: Path) -> None:
    assert wechatpay_settings(tmp_path).payment_provider == "wechatpay"
    for missing in ("wechatpay_mchid", "wechatpay_cert_serial", "wechatpay_public_key_id", "wechat_appid"):
        with pytest.raises(ValidationError, match=missing.upper()):
            wechatpay_settings(tmp_path, **{missing: ""})
    with pytest.raises(ValidationError, match="APIV3"):
        wechatpay_settings(tmp_path, wechatpay_apiv3_key=SecretStr("short"))
    with pytest.raises(ValidationError, match="no such file"):
        wechatpay_settings(tmp_path, wechatpay_private_key_path=str(tmp_path / "absent.pem"))
    with pytest.raises(ValidationError, match="https"):
        wechatpay_settings(tmp_path, heze_env="production", public_base_url="https://heze.example.test",
                           wechatpay_api_base="http://127.0.0.1:1")
    # The embedded default needs none of it.
    assert make_settings().payment_provider == "sandbox"


def test_a_phone_caller_gets_the_link_by_sms_and_pays_through_native(pay: Pay) -> None:
    """The whole way for a caller on a landline-less mobile: the bill action (as the action server
    runs it) sends the link by SMS, the link opens a Native QR page, WeChat Pay notifies, the bill
    is paid."""
    from sqlalchemy import select

    from actions.bills import ActionPayBill
    from services.models import SmsOutbox
    from tests.actions.helpers import run, texts, tracker

    (bill,) = pay.services.billing.outstanding("water", "1000000001")
    said, _ = run(ActionPayBill(pay.services), tracker(
        slots={"bill_type": "water", "bill_account": "1000000001", "bill_id": str(bill.id), "bill_confirm": True},
        metadata={"channel": "phone", "caller": "13800000021"}))
    assert "发到您的手机" in texts(said)
    with pay.services.sessions() as s:
        (sms,) = [m for m in s.scalars(select(SmsOutbox)) if m.phone == "13800000021"]
    link = re.search(r"https?://\S+/pay/[0-9A-Za-z]+", sms.text)
    assert link is not None and link.group(0).startswith(pay.api), sms.text
    page = pay.http.get(link.group(0))
    assert page.status_code == 200 and "<svg" in page.text and "扫一扫" in page.text
    order_no = link.group(0).rsplit("/", 1)[-1]
    assert pay.fake.orders[order_no]["trade_type"] == "NATIVE"
    assert pay.fake.pay(order_no, openid="oScanner").status_code == 200  # type: ignore[union-attr]
    assert pay.status(order_no) == "paid"
    assert pay.services.billing.outstanding("water", "1000000001") == []
