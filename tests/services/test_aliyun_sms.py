"""Alibaba Cloud SMS against a local server speaking dysmsapi: signing, sending, errors, receipts,
pushed receipts and replies through the services API, and the settings that choose it."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from services.aliyun_sms import AliyunSmsGateway, canonical_query, parse_templates, sign
from services.api import create_app
from services.container import Services, build_services
from services.db import make_engine
from services.migrate import upgrade
from services.models import SmsOutbox
from services.sms import SmsMessage
from tests.sandbox import free_port, make_settings
from tests.fakes.aliyun_sms import FakeAliyunSms
from tests.fakes.wechat_api import serve_app

KEY_ID, SECRET = "LTAI5tFakeKeyId", "fake-secret-0123456789abcdef"
TEMPLATE_CODES = ("payment_link:SMS_470001,ticket_receipt:SMS_470002,guide_link:SMS_470003,proxy_code:SMS_470004,"
                  "proxy_granted:SMS_470005,ticket_update:SMS_470006,reminder:SMS_470007,"
                  "progress_update:SMS_470008")
PHONE = "13800000031"
RECEIPT = SmsMessage("ticket_receipt", {"ticket": "12345678", "due": "12月20日"})


def test_signature_known_answer_from_the_sdk() -> None:
    """The vector computed with alibabacloud-tea-openapi 0.4.6's ``Utils.get_authorization``."""
    params = {"PhoneNumbers": "13800000001", "SignName": "菏泽政务", "TemplateCode": "SMS_000001",
              "TemplateParam": '{"ticket":"12345678","due":"12月20日"}', "OutId": "7"}
    headers = {"host": "dysmsapi.aliyuncs.com", "x-acs-action": "SendSms", "x-acs-version": "2017-05-25",
               "x-acs-date": "2026-12-04T02:00:00Z", "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
               "x-acs-content-sha256": hashlib.sha256(b"").hexdigest()}
    assert sign("POST", "/", params, headers, b"", "testid", "testsecret") == (
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;"
        "x-acs-signature-nonce;x-acs-version,Signature=abf36bb269af4f11f2c9d96012281e5c83a63cf87566d48c7830e4d9e8d0241d")
    assert canonical_query({"b": "a b~*", "a": "菏"}) == "a=%E8%8F%8F&b=a%20b~%2A"


@dataclass
class Sms:
    fake: FakeAliyunSms
    services: Services
    api: str


def aliyun_settings(**overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = dict(sms_provider="aliyun", aliyun_sms_access_key_id=KEY_ID,
                                     aliyun_sms_access_key_secret=SecretStr(SECRET), sms_templates=TEMPLATE_CODES,
                                     aliyun_sms_push_token=SecretStr("push-token-0123456789"), sms_timeout_s=1.0,
                                     sms_sweep_s=0, payment_sweep_s=0)
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
def sms(db_url: str) -> Iterator[Sms]:
    fake = FakeAliyunSms(KEY_ID, SECRET, {"菏泽政务"}, {"SMS_470001": {"order", "amount"},
                                                        "SMS_470002": {"ticket", "due"},
                                                        "SMS_470003": {"title", "section", "slug"}})
    fake_port, api_port = free_port(), free_port()
    settings = aliyun_settings(heze_db_url=db_url, aliyun_sms_api_base=f"http://127.0.0.1:{fake_port}")
    engine = make_engine(db_url)
    upgrade(engine)
    services = build_services(settings, engine)
    with serve_app(fake.app(), fake_port), serve_app(create_app(settings, services), api_port) as api:
        yield Sms(fake, services, api)
    engine.dispose()


def rows(services: Services) -> list[SmsOutbox]:
    with services.sessions() as s:
        return list(s.scalars(select(SmsOutbox).order_by(SmsOutbox.id)))


def test_a_message_goes_out_signed_with_its_template_and_signature(sms: Sms) -> None:
    assert sms.services.sms.send(PHONE, RECEIPT) == "sent"
    (sent,) = sms.fake.sent
    (row,) = rows(sms.services)
    assert (sent.phone, sent.template, sent.params, sent.out_id) == (
        PHONE, "SMS_470002", {"ticket": "12345678", "due": "12月20日"}, str(row.id))
    assert (row.status, row.biz_id, row.provider) == ("sent", sent.biz_id, "aliyun")
    assert row.text == "【菏泽政务】您反映的问题已受理，工单号12345678，12月20日前答复。"
    assert sms.fake.refused == []


def test_every_kind_has_an_approved_template(sms: Sms) -> None:
    pay = SmsMessage("payment_link", {"order": "2026120400001", "amount": "56.30"})
    guide = SmsMessage("guide_link", {"title": "普通护照申请", "section": "收费标准", "slug": "passport"})
    assert sms.services.sms.send(PHONE, pay) == "sent"
    assert sms.services.sms.send("13800000032", guide) == "sent"
    assert [(m.template, m.params) for m in sms.fake.sent] == [
        ("SMS_470001", {"order": "2026120400001", "amount": "56.30"}),
        ("SMS_470003", {"title": "普通护照申请", "section": "收费标准", "slug": "passport"})]


def test_the_fake_refuses_a_wrong_secret_and_a_replayed_nonce(sms: Sms) -> None:
    gateway = sms.services.sms.gateway
    assert isinstance(gateway, AliyunSmsGateway)
    forged = AliyunSmsGateway(dataclass_replace(gateway.account, access_key_secret="wrong"), httpx.Client(timeout=2))
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        forged.submit(PHONE, RECEIPT, "1")
    replaying = AliyunSmsGateway(gateway.account, httpx.Client(timeout=2), nonce=lambda: "same-nonce")
    replaying.submit(PHONE, RECEIPT, "1")
    with pytest.raises(Exception, match="SignatureNonceUsed"):
        replaying.submit(PHONE, RECEIPT, "2")
    stale = AliyunSmsGateway(gateway.account, httpx.Client(timeout=2),
                             now=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    with pytest.raises(Exception, match="InvalidTimeStamp.Expired"):
        stale.submit(PHONE, RECEIPT, "3")
    assert sms.fake.refused == ["SignatureDoesNotMatch", "SignatureNonceUsed", "InvalidTimeStamp.Expired"]


def dataclass_replace(obj, **changes):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_an_illegal_number_fails_for_good_with_the_code_kept(sms: Sms) -> None:
    sms.fake.faults = ["isv.MOBILE_NUMBER_ILLEGAL"]
    assert sms.services.sms.send(PHONE, RECEIPT) == "failed"
    assert [(r.status, r.error_code) for r in rows(sms.services)] == [("failed", "isv.MOBILE_NUMBER_ILLEGAL")]


@pytest.mark.parametrize("fault, code", [("isv.BUSINESS_LIMIT_CONTROL", "isv.BUSINESS_LIMIT_CONTROL"),
                                         ("503", "ServiceUnavailable"), ("500", "ServiceUnavailable"),
                                         ("timeout", "timeout")])
def test_temporary_errors_keep_the_message_for_a_retry(sms: Sms, fault: str, code: str) -> None:
    sms.fake.faults = [fault]
    assert sms.services.sms.send(PHONE, RECEIPT) == "queued"
    assert [(r.status, r.error_code) for r in rows(sms.services)] == [("retry", code)]
    with sms.services.sessions() as s:  # due now
        s.execute(SmsOutbox.__table__.update().values(next_attempt_at=dt.datetime.now(dt.timezone.utc)))
        s.commit()
    assert sms.services.sms.sweep()["sent"] == 1
    (row,) = rows(sms.services)
    assert (row.status, row.attempts, row.biz_id) == ("sent", 2, sms.fake.sent[-1].biz_id)
    assert len(sms.fake.sent) == 1  # delivered once


def test_receipts_are_pulled_with_query_send_details(sms: Sms) -> None:
    sms.services.sms.send(PHONE, RECEIPT)
    sms.services.sms.send("13800000032", RECEIPT)
    assert sms.services.sms.sweep()["delivered"] == 0  # SendStatus 1: waiting
    sms.fake.deliver(sms.fake.sent[0].biz_id)
    sms.fake.deliver(sms.fake.sent[1].biz_id, ok=False)
    counts = sms.services.sms.sweep()
    assert (counts["delivered"], counts["undelivered"]) == (1, 1)
    assert [(r.status, r.error_code) for r in rows(sms.services)] == [("delivered", "DELIVERED"),
                                                                      ("undelivered", "MK:0001")]
    assert all(r.reported_at is not None for r in rows(sms.services))


def test_pushed_receipts_and_opt_out_replies_reach_the_services_api(sms: Sms) -> None:
    sms.services.sms.send(PHONE, RECEIPT)
    base = f"{sms.api}/sms/aliyun/push-token-0123456789"
    assert sms.fake.push_report(f"{sms.api}/sms/aliyun/wrong-token/report", sms.fake.sent[0].biz_id).status_code == 404
    sms.fake.deliver(sms.fake.sent[0].biz_id)
    answer = sms.fake.push_report(f"{base}/report", sms.fake.sent[0].biz_id)
    assert answer.status_code == 200 and answer.json() == {"code": 0, "msg": "成功"}
    assert [r.status for r in rows(sms.services)] == ["delivered"]
    assert sms.fake.push_reply(f"{base}/up", PHONE, "TD").json()["code"] == 0
    assert sms.services.sms.send(PHONE, RECEIPT) == "opted_out"
    assert httpx.post(f"{base}/up", content=b"{not json").status_code == 400
    assert httpx.post(f"{base}/other", json=[]).status_code == 404


def test_settings_choose_and_check_the_gateway() -> None:
    assert make_settings().sms_provider == "outbox"  # the embedded default needs nothing
    assert parse_templates(TEMPLATE_CODES)["guide_link"] == "SMS_470003"
    with pytest.raises(ValidationError, match="ALIYUN_SMS_ACCESS_KEY_ID"):
        aliyun_settings(aliyun_sms_access_key_id="")
    with pytest.raises(ValidationError, match="no approved template code for guide_link"):
        aliyun_settings(sms_templates="payment_link:SMS_1,ticket_receipt:SMS_2")
    prod = aliyun_settings().model_copy(update={"heze_env": "production"})
    with pytest.raises(ValueError, match="ALIYUN_SMS_API_BASE must be https"):
        prod.model_copy(update={"aliyun_sms_api_base": "http://127.0.0.1:1"})._check_aliyun_sms()
    with pytest.raises(ValueError, match="SMS_NUMBER_KEY must be set"):  # production: a number key of its own
        prod._check_aliyun_sms()
    prod.model_copy(update={"sms_number_key": SecretStr("n" * 64)})._check_aliyun_sms()


def test_logs_never_carry_the_number(sms: Sms, caplog: pytest.LogCaptureFixture) -> None:
    sms.fake.faults = ["isv.MOBILE_NUMBER_ILLEGAL"]
    with caplog.at_level("INFO"):
        sms.services.sms.send(PHONE, RECEIPT)
        sms.services.sms.opt_out(PHONE)
    assert caplog.records and PHONE not in caplog.text and "0031" in caplog.text


def test_json_parameters_are_compact_utf8() -> None:
    assert json.dumps({"due": "12月20日"}, ensure_ascii=False, separators=(",", ":")) == '{"due":"12月20日"}'
