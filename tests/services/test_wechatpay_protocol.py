"""Known-answer tests of the WeChat Pay v3 primitives (services/wechatpay_protocol.py).

The RSA vectors were computed independently with OpenSSL (PKCS#1 v1.5 signatures are deterministic):
``printf '<message>' | openssl dgst -sha256 -sign tests/fixtures/wechatpay/test_merchant_key.pem | base64 -w0``.
The AES-256-GCM vector was opened with the ``wechatpayv3`` 2.0.4 SDK's ``aes_decrypt``. The key in
tests/fixtures/wechatpay is a test key made for these vectors and nothing else.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from services.wechatpay_protocol import (
    VerificationError,
    authorization,
    decrypt_resource,
    jsapi_params,
    load_private_key,
    load_public_key,
    parse_authorization,
    rsa_verify,
    verify_signed,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wechatpay"
KEY = load_private_key(FIXTURES / "test_merchant_key.pem")
PUB = load_public_key(FIXTURES / "test_merchant_pub.pem")
TS = 1764720000

QUERY_SIGNATURE = (
    "gHlP+spWlKYuORMbeSNXePUzGYsRkQtY2bUnWWuLccqeQ735cxA8nvH6tVkJqmYFuxkl3kDWm9II6Uuu8PKv+H7A7t0awlZpFC0bujkMPqSRTaMP"
    "QXONzcp4NQtC+aVD8d7hpMDXoEjYZe8oO1fCV6PPkDnuqDqRsGYNiyVHhlbOpamq7HBjov9IIJ02lmKz6j/0B/PGlEvpuKmKOrz04mnkGv5FpvYz"
    "y4oZ1NVyS3UsNjLOI3ftRrjrNjOJ7tgJarAhV+TciPZ2EjT9LIIv22KS2PMJw3VK57VhH4wXZU4vqqFy6eh4OoAJ8rRgHf54VE39pK5FaCEGT9Ji"
    "bxQFvQ==")
PAY_SIGN = (
    "UlVmNVV4hLMwLh1HjsNsD8KA4y4Kpq0poqianyGtQwJchAWY10HgdovFri0dupDnyTUKX5oTqBYS+IKX0HvoI3rFiSoj+hCaIP4IF9/8TP03mltI"
    "tUUmWAX0ts4OnZrLp3dx3t8oUEjUjeYQk9esZ0TiEyYdq1gHjcUu9iraaQj4OhYjKti0ORVtiaqMeKz2xk58pwdcGqdcc+gqdqgd7lptzVne+AIJ"
    "V/Nh0RG9nn6KmeUGHeTyxiMf3VxtcMd5/0KWq5L3xhqXzkmXRX+6eflAPZQURvK8xdtyKvghHtd3Of3ezcU9naheFtDjofUY0IWzHlmo9RVwL6ID"
    "VMPBJw==")
# timestamp\nnonce\nbody\n = "1764720000\nNONCE123\n{"ok":true}\n", signed by the same key
ANSWER_SIGNATURE = (
    "jqvHAnUX+Gc/secYk4p8UCygslnvvcwN5hUqSROrn6huB5N3+Jki4HqKu0TysVNTwwiQeUJg+PYCazEKWEMl09MQwJugnOULhX4K27rtRmxXBiyL"
    "DOlJaMJQYxq816Kqvu1e4E7bKQCjEmRispc1sO6BUSsP8/YYc5A0JOPboCaJSrRvSAB3qmNCkieBwJK4g6XI7h/xLmwUf169WYerEXlzZMWDjpFQ"
    "MZ9ygWV6OZtZyUJkztNjFb0OrCHdAZGaEObc7tvxwQHAEzAKLp+54FeEXweJcyeXFeqg/wcpMJ4VyqB5ZQGnxF6Zovti81jOial1SY6XrrvF22h+"
    "b8gS3g==")
APIV3 = b"heze-apiv3-key-0123456789abcdefg"
RESOURCE = {"algorithm": "AEAD_AES_256_GCM", "associated_data": "transaction", "nonce": "fJ3xHjQ5tAcD",
            "ciphertext": "hK2PCK4iTK8z3MjmJWIDljyI1/5CUgkzmNVWD2jGER1/avvoZYpjI+V/sVkoUi4trQqroVghfq4eZ2TqEga3kdVg0vW"
                          "EXYofKWADA03N0WHE1oMZKGwfMvKp4yH/ww=="}


def test_request_authorization_known_answer() -> None:
    header = authorization(mchid="1900000109", serial_no="5157F09EFDC096DE", key=KEY, method="GET",
                           path="/v3/pay/transactions/out-trade-no/202612030000000001?mchid=1900000109",
                           body=b"", timestamp=TS, nonce="593BEC0C930BF1AFEB40B4A08C8FB242")
    assert header.startswith('WECHATPAY2-SHA256-RSA2048 mchid="1900000109",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",')
    assert parse_authorization(header) == {"mchid": "1900000109", "nonce_str": "593BEC0C930BF1AFEB40B4A08C8FB242",
                                           "signature": QUERY_SIGNATURE, "timestamp": str(TS), "serial_no": "5157F09EFDC096DE"}
    assert parse_authorization("Bearer x") == {}


def test_jsapi_pay_sign_known_answer() -> None:
    params = jsapi_params(appid="wx0fficialaccount1", prepay_id="wx201410272009395522657a690389285100", key=KEY,
                          timestamp=TS, nonce="5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
    assert params == {"appId": "wx0fficialaccount1", "timeStamp": str(TS), "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                      "package": "prepay_id=wx201410272009395522657a690389285100", "signType": "RSA", "paySign": PAY_SIGN}


def headers(**over: str) -> dict[str, str]:
    h = {"Wechatpay-Timestamp": str(TS), "Wechatpay-Nonce": "NONCE123", "Wechatpay-Signature": ANSWER_SIGNATURE,
         "Wechatpay-Serial": "PUB_KEY_ID_1"}
    h.update(over)
    return h


def test_verify_known_answer_and_window() -> None:
    signed = verify_signed({"PUB_KEY_ID_1": PUB}, headers(), b'{"ok":true}', now=TS + 300)
    assert (signed.timestamp, signed.nonce, signed.serial) == (TS, "NONCE123", "PUB_KEY_ID_1")
    lower = {k.lower(): v for k, v in headers().items()}  # header names are case-insensitive
    assert verify_signed({"PUB_KEY_ID_1": PUB}, lower, b'{"ok":true}', now=TS - 300).nonce == "NONCE123"


@pytest.mark.parametrize(("change", "reason"), [
    ({"body": b'{"ok":false}'}, "bad signature"),
    ({"Wechatpay-Nonce": "NONCE124"}, "bad signature"),
    ({"Wechatpay-Signature": "not base64!"}, "bad signature"),
    ({"now": TS + 301}, "timestamp outside"),
    ({"now": TS - 301}, "timestamp outside"),
    ({"Wechatpay-Serial": "PUB_KEY_ID_2"}, "unknown platform key"),
    ({"Wechatpay-Signature": ""}, "headers missing"),
    ({"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"}, "unsupported signature type"),
])
def test_verify_refuses(change: dict, reason: str) -> None:
    body = change.pop("body", b'{"ok":true}')
    now = change.pop("now", TS)
    with pytest.raises(VerificationError, match=reason):
        verify_signed({"PUB_KEY_ID_1": PUB}, headers(**change), body, now=now)


def test_decrypt_resource_known_answer() -> None:
    assert decrypt_resource(APIV3, RESOURCE) == \
        b'{"out_trade_no":"202612030000000001","amount":{"total":5630,"currency":"CNY"}}'
    for bad in ({"associated_data": "refund"}, {"nonce": "fJ3xHjQ5tAcE"}, {"ciphertext": RESOURCE["ciphertext"][:-8] + "AAAAAAA="},
                {"algorithm": "AES-CBC"}, {"ciphertext": "%%%"}):
        with pytest.raises(VerificationError):
            decrypt_resource(APIV3, {**RESOURCE, **bad})
    with pytest.raises(VerificationError):
        decrypt_resource(b"x" * 32, RESOURCE)


def test_rsa_verify_is_false_for_another_key() -> None:
    from tests.fakes.wechatpay import new_key

    assert not rsa_verify(new_key().public_key(), "x", PAY_SIGN)
