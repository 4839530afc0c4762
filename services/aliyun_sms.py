"""Alibaba Cloud SMS (短信服务, dysmsapi 2017-05-25) as an SMS gateway: a thin client of our own.

Why not the PyPI SDK ``alibabacloud-dysmsapi20170525`` (4.6.0 read for this): it can be pointed at
a local server (``Config(endpoint=..., protocol="http")``), but for two calls and one signature it
brings nineteen packages into the action server (APScheduler, aiohttp, websocket-client, requests,
a credentials chain that also reads ``~/.alibabacloud`` and instance metadata), and its answers
need the same code-by-code reading as ours. The signature is ``ACS3-HMAC-SHA256`` (the current
one; the RPC ``Signature`` v1 with HMAC-SHA1 is the legacy scheme), checked by a known-answer
test against the SDK's own signer.

Calls (help.aliyun.com/zh/sms/developer-reference): ``SendSms`` (PhoneNumbers, SignName,
TemplateCode, TemplateParam as JSON, OutId: our row id) answers ``{"Code": "OK", "BizId": ...,
"RequestId": ...}``; business refusals come as 200 with another ``Code`` (``isv.*``), malformed or
unsigned calls as 4xx with ``Code``. ``QuerySendDetails`` (PhoneNumber, BizId, SendDate yyyymmdd)
gives each message's ``SendStatus`` (1 waiting for the receipt, 2 failed, 3 delivered) and
``ErrCode`` (DELIVERED or the carrier's code). Receipts and replies can also be pushed to us
(消息回执 HTTP 批量推送: SmsReport, SmsUp) as JSON arrays; such pushes carry no signature, so the
services API takes them only on a path holding ``ALIYUN_SMS_PUSH_TOKEN`` and applies a receipt
only to the message with that BizId sent to that number. Answers are not signed either: TLS is
their only guarantee, so production requires an https:// base.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from services.sms import CHINA, Receipt, SmsGatewayError, SmsMessage

ALGORITHM = "ACS3-HMAC-SHA256"
VERSION = "2017-05-25"
# Codes worth another try later (错误码: help.aliyun.com/zh/sms/developer-reference/api-error-codes):
# the gateway's own per-number flow control, throttling, its outages, an account out of credit.
TEMPORARY = frozenset({
    "isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable",
    "InternalError", "isp.SYSTEM_ERROR", "isv.OUT_OF_SERVICE", "isv.AMOUNT_NOT_ENOUGH",
})
SEND_STATUS_DELIVERED, SEND_STATUS_FAILED = 3, 2


def _enc(text: str) -> str:
    """RFC 3986 percent-encoding, as ACS3 canonical strings use it."""
    return quote(text, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params.items()))


def sign(method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str], body: bytes,
         key_id: str, secret: str) -> str:
    """The ``Authorization`` header over every header given (lowercase names; host and x-acs-*)."""
    names = sorted(h.lower() for h in headers)
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    canonical = "\n".join([method, path or "/", canonical_query(params),
                           "".join(f"{n}:{lowered[n]}\n" for n in names), ";".join(names),
                           hashlib.sha256(body).hexdigest()])
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Credential={key_id},SignedHeaders={';'.join(names)},Signature={signature}"


@dataclass(frozen=True)
class Account:
    access_key_id: str
    access_key_secret: str
    sign_name: str
    templates: Mapping[str, str]  # our kind -> the approved template code (SMS_...)
    api_base: str = "https://dysmsapi.aliyuncs.com"


class AliyunSmsGateway:
    """SendSms and QuerySendDetails, signed; every failure becomes an SmsGatewayError."""

    name = "aliyun"

    def __init__(self, account: Account, http: httpx.Client,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 nonce: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.account = account
        self._http = http
        self._now = now
        self._nonce = nonce

    def call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One RPC call, its parameters as a form body (so no number is ever in a URL, where
        access logs and httpx's own log line would keep it); the answer's JSON when Code is OK."""
        base = self.account.api_base.rstrip("/")
        body = canonical_query(params).encode()
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "host": urlsplit(base).netloc,
            "x-acs-action": action,
            "x-acs-version": VERSION,
            "x-acs-date": self._now().astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-acs-signature-nonce": self._nonce(),
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        }
        headers["Authorization"] = sign("POST", "/", {}, headers, body, self.account.access_key_id,
                                        self.account.access_key_secret)
        try:
            resp = self._http.post(f"{base}/", content=body, headers={**headers, "accept": "application/json"})
        except httpx.TimeoutException:
            raise SmsGatewayError("timeout", temporary=True) from None
        except httpx.TransportError as exc:
            raise SmsGatewayError(f"transport_{type(exc).__name__}", temporary=True) from None
        try:
            answer = resp.json()
            code = str(answer.get("Code") or "") if isinstance(answer, dict) else ""
        except ValueError:
            answer, code = {}, ""
        if resp.status_code >= 500 or (resp.status_code != 200 and not code):
            raise SmsGatewayError(code or f"http_{resp.status_code}", temporary=resp.status_code >= 500 or code in TEMPORARY)
        if code != "OK":
            raise SmsGatewayError(code or "no_code", temporary=code in TEMPORARY)
        return answer

    def submit(self, phone: str, message: SmsMessage, out_id: str) -> str | None:
        template = self.account.templates.get(message.kind)
        if not template:
            raise SmsGatewayError(f"no_template_{message.kind}", temporary=False)
        answer = self.call("SendSms", {
            "PhoneNumbers": phone, "SignName": self.account.sign_name, "TemplateCode": template,
            "TemplateParam": json.dumps(dict(message.params), ensure_ascii=False, separators=(",", ":")),
            "OutId": out_id,
        })
        biz_id = answer.get("BizId")
        if not isinstance(biz_id, str) or not biz_id:
            raise SmsGatewayError("no_biz_id", temporary=False)
        return biz_id

    def receipt(self, phone: str, biz_id: str, sent_at: dt.datetime) -> Receipt | None:
        answer = self.call("QuerySendDetails", {
            "PhoneNumber": phone, "BizId": biz_id, "SendDate": sent_at.astimezone(CHINA).strftime("%Y%m%d"),
            "PageSize": "10", "CurrentPage": "1",
        })
        details = (answer.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
        for detail in details if isinstance(details, list) else []:
            status = detail.get("SendStatus")
            if status in (SEND_STATUS_DELIVERED, SEND_STATUS_FAILED):
                return Receipt(status == SEND_STATUS_DELIVERED, str(detail.get("ErrCode") or ""),
                               china_time(detail.get("ReceiveDate")))
        return None


def china_time(text: object) -> dt.datetime | None:
    """"2026-12-04 10:00:03" (Beijing time, as the API writes it) in UTC."""
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA).astimezone(dt.timezone.utc)
    except ValueError:
        return None


def pushed_reports(body: Any) -> list[tuple[str, str, Receipt]]:
    """A SmsReport push: (biz_id, phone, receipt) for each well-formed entry."""
    return [(str(r["biz_id"]), str(r["phone_number"]),
             Receipt(r.get("success") is True, str(r.get("err_code") or ""), china_time(r.get("report_time"))))
            for r in body if isinstance(r, dict) and r.get("biz_id") and r.get("phone_number")] \
        if isinstance(body, list) else []


def pushed_replies(body: Any) -> list[tuple[str, str]]:
    """A SmsUp push: (phone, content) for each well-formed entry."""
    return [(str(r["phone_number"]), str(r["content"])) for r in body
            if isinstance(r, dict) and r.get("phone_number") and isinstance(r.get("content"), str)] \
        if isinstance(body, list) else []


def parse_templates(setting: str) -> dict[str, str]:
    """``SMS_TEMPLATES``: ``kind:SMS_123,kind:SMS_456``."""
    pairs = (p.strip().partition(":") for p in setting.split(",") if p.strip())
    return {kind.strip(): code.strip() for kind, _, code in pairs}


def build(settings: Any, http: httpx.Client | None = None) -> AliyunSmsGateway:
    """The gateway from ``services.settings.Settings`` (validated there)."""
    account = Account(settings.aliyun_sms_access_key_id, settings.aliyun_sms_access_key_secret.get_secret_value(),
                      settings.sms_sign_name, parse_templates(settings.sms_templates), settings.aliyun_sms_api_base)
    return AliyunSmsGateway(account, http or httpx.Client(timeout=httpx.Timeout(settings.sms_timeout_s, connect=3.0)))
