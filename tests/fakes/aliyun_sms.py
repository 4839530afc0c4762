"""A local stand-in for Alibaba Cloud SMS (dysmsapi 2017-05-25), speaking the real protocol: it
checks each call's ``ACS3-HMAC-SHA256`` signature, date window and nonce, answers ``SendSms`` and
``QuerySendDetails`` as the API does (``Code``, ``Message``, ``BizId``, ``RequestId``; business
refusals as 200 with an ``isv.*`` code, bad signatures as 400), keeps each message and its
delivery state, and pushes SmsReport receipts and SmsUp replies as the HTTP push does.

Its signature check is written here from the API document, not borrowed from the code under test.
Faults for tests: ``faults`` (``"timeout"``, ``"500"``, ``"503"``, or an ``isv.*`` code) are
served one per call, first to last.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

CHINA = dt.timezone(dt.timedelta(hours=8))


@dataclass
class Sent:
    biz_id: str
    phone: str
    template: str
    params: dict[str, str]
    out_id: str
    at: dt.datetime
    status: int = 1  # 1 waiting for the receipt, 2 failed, 3 delivered
    err_code: str = ""


@dataclass
class FakeAliyunSms:
    access_key_id: str
    access_key_secret: str
    sign_names: set[str]
    templates: dict[str, set[str]]  # approved template code -> its variables
    window_s: int = 900
    faults: list[str] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # actions called, signature checked or not
    refused: list[str] = field(default_factory=list)  # why calls were refused
    nonces: set[str] = field(default_factory=set)
    timeout_s: float = 3.0

    def _signature(self, request: Request, query: dict[str, str], body: bytes, signed: list[str]) -> str:
        enc = lambda s: quote(s, safe="~")  # noqa: E731 - RFC 3986
        canonical_query = "&".join(f"{enc(k)}={enc(query[k])}" for k in sorted(query))
        headers = "".join(f"{h}:{request.headers.get(h, '').strip()}\n" for h in signed)
        canonical = (f"{request.method}\n{request.url.path}\n{canonical_query}\n{headers}\n{';'.join(signed)}\n"
                     f"{hashlib.sha256(body).hexdigest()}")
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        return hmac.new(self.access_key_secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()

    def _check(self, request: Request, body: bytes) -> str | None:
        """None when the call is authentic; else the API's error code."""
        auth = re.fullmatch(r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})",
                            request.headers.get("authorization", ""))
        if auth is None:
            return "MissingAuthorization"
        if auth.group(1) != self.access_key_id:
            return "InvalidAccessKeyId.NotFound"
        signed = auth.group(2).split(";")
        if not {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce",
                "x-acs-content-sha256"} <= set(signed) or signed != sorted(signed):
            return "IncompleteSignature"
        if request.headers.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            return "ContentSHA256NotMatched"
        try:
            when = dt.datetime.strptime(request.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        except (KeyError, ValueError):
            return "InvalidTimeStamp.Format"
        if abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) > self.window_s:
            return "InvalidTimeStamp.Expired"
        expected = self._signature(request, dict(request.query_params), body, signed)
        if not hmac.compare_digest(expected, auth.group(3)):
            return "SignatureDoesNotMatch"
        nonce = request.headers["x-acs-signature-nonce"]
        if nonce in self.nonces:
            return "SignatureNonceUsed"
        self.nonces.add(nonce)
        return None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/")
        async def rpc(request: Request) -> JSONResponse:
            body = await request.body()
            action = request.headers.get("x-acs-action", "")
            self.calls.append(action)
            request_id = str(uuid.uuid4()).upper()
            error = self._check(request, body)
            if error is not None:
                self.refused.append(error)
                return JSONResponse({"RequestId": request_id, "HostId": "dysmsapi.aliyuncs.com", "Code": error,
                                     "Message": "Specified signature does not match our calculation."}, status_code=400)
            if self.faults:
                fault = self.faults.pop(0)
                if fault == "timeout":
                    await asyncio.sleep(self.timeout_s)  # the client gives up first; nothing is sent
                elif fault.isdigit():
                    return JSONResponse({"RequestId": request_id, "Code": "ServiceUnavailable",
                                         "Message": "The request has failed due to a temporary failure of the server."},
                                        status_code=int(fault))
                else:
                    return self._answer(request_id, fault)
            query = dict(parse_qsl(body.decode(), keep_blank_values=True))  # the form body (or the query)
            query.update(request.query_params)
            if action == "SendSms" and request.headers.get("x-acs-version") == "2017-05-25":
                return self._send(request_id, query)
            if action == "QuerySendDetails":
                return self._query(request_id, query)
            return JSONResponse({"RequestId": request_id, "Code": "InvalidAction.NotFound",
                                 "Message": "Specified api is not found."}, status_code=404)

        return app

    @staticmethod
    def _answer(request_id: str, code: str, **extra: Any) -> JSONResponse:
        messages = {"OK": "OK", "isv.BUSINESS_LIMIT_CONTROL": "触发小时级流控Permits:5",
                    "isv.MOBILE_NUMBER_ILLEGAL": "非法手机号", "isv.SMS_SIGNATURE_ILLEGAL": "该账号下找不到对应签名",
                    "isv.SMS_TEMPLATE_ILLEGAL": "该账号下找不到对应模板",
                    "isv.TEMPLATE_MISSING_PARAMETERS": "模板变量缺少对应参数值"}
        return JSONResponse({"Code": code, "Message": messages.get(code, code), "RequestId": request_id, **extra})

    def _send(self, request_id: str, query: dict[str, str]) -> JSONResponse:
        phone = query.get("PhoneNumbers", "")
        if not re.fullmatch(r"1[3-9]\d{9}", phone):
            return self._answer(request_id, "isv.MOBILE_NUMBER_ILLEGAL")
        if query.get("SignName") not in self.sign_names:
            return self._answer(request_id, "isv.SMS_SIGNATURE_ILLEGAL")
        variables = self.templates.get(query.get("TemplateCode", ""))
        if variables is None:
            return self._answer(request_id, "isv.SMS_TEMPLATE_ILLEGAL")
        params = json.loads(query.get("TemplateParam") or "{}")
        if set(params) != variables or any(len(str(v)) > 35 for v in params.values()):
            return self._answer(request_id, "isv.TEMPLATE_MISSING_PARAMETERS")
        biz_id = f"{len(self.sent) + 900000}^{uuid.uuid4().int % 10**10}"
        self.sent.append(Sent(biz_id, phone, query["TemplateCode"], params, query.get("OutId", ""),
                              dt.datetime.now(CHINA)))
        return self._answer(request_id, "OK", BizId=biz_id)

    def _query(self, request_id: str, query: dict[str, str]) -> JSONResponse:
        found = [m for m in self.sent if m.phone == query.get("PhoneNumber") and m.biz_id == query.get("BizId")
                 and m.at.strftime("%Y%m%d") == query.get("SendDate")]
        dtos = [{"PhoneNum": m.phone, "SendStatus": m.status, "ErrCode": m.err_code, "TemplateCode": m.template,
                 "Content": "", "SendDate": m.at.strftime("%Y-%m-%d %H:%M:%S"),
                 "ReceiveDate": m.at.strftime("%Y-%m-%d %H:%M:%S") if m.status != 1 else "", "OutId": m.out_id}
                for m in found]
        return self._answer(request_id, "OK", TotalCount=len(dtos), SmsSendDetailDTOs={"SmsSendDetailDTO": dtos})

    def deliver(self, biz_id: str, ok: bool = True) -> Sent:
        """The carrier's report for one message: delivered, or failed with a carrier code."""
        m = next(m for m in self.sent if m.biz_id == biz_id)
        m.status, m.err_code = (3, "DELIVERED") if ok else (2, "MK:0001")
        return m

    def push_report(self, url: str, biz_id: str) -> httpx.Response:
        """SmsReport over HTTP push, the way the console's 回执 setting delivers it."""
        m = next(m for m in self.sent if m.biz_id == biz_id)
        report = {"phone_number": m.phone, "send_time": m.at.strftime("%Y-%m-%d %H:%M:%S"),
                  "report_time": dt.datetime.now(CHINA).strftime("%Y-%m-%d %H:%M:%S"), "success": m.status == 3,
                  "err_code": m.err_code, "err_msg": "用户接收成功" if m.status == 3 else "失败", "sms_size": "1",
                  "biz_id": m.biz_id, "out_id": m.out_id}
        return httpx.post(url, json=[report], timeout=5)

    def push_reply(self, url: str, phone: str, content: str) -> httpx.Response:
        """SmsUp over HTTP push: a citizen's reply to our signature."""
        reply = {"phone_number": phone, "send_time": dt.datetime.now(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                 "content": content, "sign_name": next(iter(self.sign_names)), "dest_code": "1234",
                 "sequence_id": int(time.time() * 1000)}
        return httpx.post(url, json=[reply], timeout=5)
