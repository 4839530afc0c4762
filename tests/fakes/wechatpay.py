"""A local stand-in for WeChat Pay's API v3 server, with its own generated keys, speaking the real
protocol: it checks each request's ``Authorization`` signature against the merchant's public key,
signs every answer with its platform key, keeps orders and refunds, and plays the citizen's and
WeChat Pay's side of a payment: pays an order and delivers the signed, AES-256-GCM encrypted
notification to the merchant's notify URL over HTTP.

Its crypto is written here with ``cryptography`` directly, not borrowed from the code under test,
so a message layout both sides got wrong the same way cannot pass unnoticed.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request, Response

CHINA = dt.timezone(dt.timedelta(hours=8))


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_private(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def write_public(key: rsa.RSAPublicKey, path: Path) -> Path:
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _sign(key: rsa.RSAPrivateKey, text: str) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def _now_text() -> str:
    return dt.datetime.now(CHINA).isoformat(timespec="seconds")


# 交易账单 ALL: the detail header, and the summary's (pay.weixin.qq.com/docs/merchant/products/bill-download/format-trade.html)
BILL_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
               "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
               "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def bill_line(when: str, appid: str, mchid: str, transaction_id: str, out_trade_no: str, openid: str, trade_type: str,
              total: int, refund: tuple[str, str, int, str] | None = None) -> str:
    """One detail line as WeChat Pay writes it: a payment (交易状态 SUCCESS), or with ``refund``
    (refund_id, out_refund_no, amount, status) a refund (REFUND); every field after a backtick."""
    fee = f"{total * 6 // 1000 / 100:.5f}"
    if refund is None:
        fields = [when, appid, mchid, "0", "", transaction_id, out_trade_no, openid, trade_type, "SUCCESS", "OTHERS",
                  "CNY", yuan(total), "0.00", "0", "0", "0.00", "0.00", "", "", "菏泽政务缴费", "", fee, "0.60%",
                  yuan(total), "0.00", ""]
    else:
        refund_id, out_refund_no, amount, status = refund
        fields = [when, appid, mchid, "0", "", transaction_id, out_trade_no, openid, trade_type, "REFUND", "OTHERS",
                  "CNY", "0.00", "0.00", refund_id, out_refund_no, yuan(amount), "0.00", "ORIGINAL", status,
                  "菏泽政务缴费", "", "-" + fee, "0.60%", "0.00", yuan(amount), ""]
    return "`" + ",`".join(fields) + "\r\n"


def bill_csv(lines: list[str], *, bom: bool = True) -> bytes:
    """A whole bill: header, ``lines`` (from bill_line), and the summary that adds them up."""
    orders = refunds = 0
    for line in lines:
        fields = line[1:].rstrip("\r\n").split(",`")
        orders += round(float(fields[24]) * 100)
        refunds += round(float(fields[25]) * 100)
    summary = "`" + ",`".join([str(len(lines)), yuan(orders), yuan(refunds), "0.00", "0.00000", yuan(orders),
                               yuan(refunds)])
    text = BILL_HEADER + "\r\n" + "".join(lines) + BILL_SUMMARY + "\r\n" + summary + "\r\n"
    return ("\ufeff" if bom else "").encode() + text.encode()


@dataclass
class FakeWeChatPay:
    mchid: str
    appids: set[str]
    merchant_key: rsa.RSAPublicKey  # the merchant API certificate's public key, as uploaded
    merchant_serial: str
    apiv3_key: bytes
    platform_key: rsa.RSAPrivateKey = field(default_factory=new_key)
    platform_key_id: str = "PUB_KEY_ID_0110000000000000000000000000000001"
    base_url: str = ""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    notify_urls: dict[str, str] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # why requests were refused
    calls: list[str] = field(default_factory=list)  # "METHOD /path" of each accepted request
    notify: bool = True  # deliver notifications (False: they "never come")
    refund_status: str = "PROCESSING"  # what 申请退款 answers with
    answer_key: rsa.RSAPrivateKey | None = None  # sign answers with another key (a forged server)
    bills: dict[str, bytes] = field(default_factory=dict)
    bill_tamper: bool = False  # serve bill files altered in transit (their SHA1 no longer matches)

    # --- the API -----------------------------------------------------------------------------
    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def check_signature(request: Request, call_next):
            body = await request.body()
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            why = self._refusal(request.method, target, body, request.headers.get("authorization", ""))
            if why:
                self.rejected.append(why)
                return self._answer(401, {"code": "SIGN_ERROR", "message": why})
            self.calls.append(f"{request.method} {request.url.path}")
            return await call_next(request)

        @app.post("/v3/pay/transactions/{kind}")
        async def order(kind: str, request: Request) -> Response:
            b = await request.json()
            if kind not in ("jsapi", "native") or b.get("mchid") != self.mchid or b.get("appid") not in self.appids:
                return self._answer(400, {"code": "PARAM_ERROR", "message": "mchid/appid"})
            if b["amount"].get("currency", "CNY") != "CNY" or not b.get("notify_url") or not b.get("time_expire"):
                return self._answer(400, {"code": "PARAM_ERROR", "message": "fields"})
            if kind == "jsapi" and not b.get("payer", {}).get("openid"):
                return self._answer(400, {"code": "PARAM_ERROR", "message": "payer.openid"})
            no = b["out_trade_no"]
            known = self.orders.get(no)
            if known is not None:
                if known["trade_state"] == "SUCCESS":
                    return self._answer(400, {"code": "ORDERPAID", "message": "该订单已支付"})
                if known["trade_state"] == "CLOSED":
                    return self._answer(400, {"code": "ORDER_CLOSED", "message": "订单已关闭"})
                if known["amount"]["total"] != b["amount"]["total"] or known["appid"] != b["appid"]:
                    return self._answer(400, {"code": "INVALID_REQUEST", "message": "参数与首次请求时不一致"})
                return self._answer(200, known["_prepay"])
            prepay = ({"prepay_id": "wx" + secrets.token_hex(14)} if kind == "jsapi"
                      else {"code_url": "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(8)})
            self.orders[no] = {"appid": b["appid"], "mchid": self.mchid, "out_trade_no": no,
                               "trade_type": kind.upper(), "trade_state": "NOTPAY", "trade_state_desc": "订单未支付",
                               "payer": dict(b.get("payer", {})), "amount": {"total": b["amount"]["total"], "currency": "CNY"},
                               "_prepay": prepay, "_expire": b["time_expire"]}
            self.notify_urls[no] = b["notify_url"]
            return self._answer(200, prepay)

        @app.get("/v3/pay/transactions/out-trade-no/{no}")
        def query(no: str, mchid: str = "") -> Response:
            if mchid != self.mchid or no not in self.orders:
                return self._answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
            return self._answer(200, self.transaction(no))

        @app.post("/v3/pay/transactions/out-trade-no/{no}/close")
        async def close(no: str, request: Request) -> Response:
            if (await request.json()).get("mchid") != self.mchid or no not in self.orders:
                return self._answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
            if self.orders[no]["trade_state"] in ("SUCCESS", "REFUND"):
                return self._answer(400, {"code": "ORDERPAID", "message": "订单已支付"})
            self.orders[no].update(trade_state="CLOSED", trade_state_desc="订单已关闭")
            return self._answer(204, None)

        @app.post("/v3/refund/domestic/refunds")
        async def refund(request: Request) -> Response:
            b = await request.json()
            o = self.orders.get(b.get("out_trade_no", ""))
            if o is None or o["trade_state"] not in ("SUCCESS", "REFUND"):
                return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"})
            if b["out_refund_no"] in self.refunds:
                return self._answer(200, self._refund_public(b["out_refund_no"]))
            done = sum(r["amount"]["refund"] for r in self.refunds.values()
                       if r["out_trade_no"] == o["out_trade_no"] and r["status"] != "CLOSED")
            amount = b["amount"]
            if amount["total"] != o["amount"]["total"] or not 0 < amount["refund"] <= amount["total"] - done:
                return self._answer(400, {"code": "INVALID_REQUEST", "message": "退款金额不对"})
            self.refunds[b["out_refund_no"]] = {
                "refund_id": "50" + secrets.token_hex(14), "out_refund_no": b["out_refund_no"],
                "transaction_id": o["transaction_id"], "out_trade_no": o["out_trade_no"], "channel": "ORIGINAL",
                "user_received_account": "支付用户零钱", "create_time": _now_text(), "status": self.refund_status,
                "amount": {"total": amount["total"], "refund": amount["refund"], "payer_total": amount["total"],
                           "payer_refund": amount["refund"], "currency": "CNY"}}
            self.notify_urls[b["out_refund_no"]] = b["notify_url"]
            o.update(trade_state="REFUND", trade_state_desc="转入退款")
            return self._answer(200, self._refund_public(b["out_refund_no"]))

        @app.get("/v3/refund/domestic/refunds/{no}")
        def refund_query(no: str) -> Response:
            if no not in self.refunds:
                return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"})
            return self._answer(200, self._refund_public(no))

        @app.get("/v3/bill/tradebill")
        def trade_bill(bill_date: str, bill_type: str = "ALL") -> Response:
            content = self.bills.get(bill_date)
            if content is None:
                return self._answer(400, {"code": "NO_STATEMENT_EXIST", "message": "账单不存在"})
            token = secrets.token_urlsafe(8)
            self.bills["token:" + token] = content
            return self._answer(200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(content).hexdigest(),
                                      "download_url": f"{self.base_url}/v3/billdownload/file?token={token}"})

        @app.get("/v3/billdownload/file")
        def bill_file(token: str) -> Response:
            content = self.bills.get("token:" + token)
            if content is None:
                return Response(status_code=404)
            return Response(content + b" " if self.bill_tamper else content, media_type="text/plain")

        return app

    def _refusal(self, method: str, target: str, body: bytes, header: str) -> str:
        scheme, _, rest = header.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme != "WECHATPAY2-SHA256-RSA2048" or fields.get("mchid") != self.mchid:
            return "scheme or mchid"
        if fields.get("serial_no") != self.merchant_serial:
            return "merchant certificate serial"
        if not fields.get("timestamp", "").isdigit() or abs(time.time() - int(fields["timestamp"])) > 300:
            return "timestamp"
        message = f"{method}\n{target}\n{fields['timestamp']}\n{fields.get('nonce_str', '')}\n{body.decode()}\n"
        try:
            self.merchant_key.verify(base64.b64decode(fields.get("signature", "")), message.encode(),
                                     padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return "signature"
        return ""

    def signed_headers(self, body: bytes, *, timestamp: int | None = None, nonce: str | None = None,
                       key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or secrets.token_hex(16).upper()
        signature = _sign(key or self.platform_key, f"{ts}\n{nonce}\n{body.decode()}\n")
        return {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": signature,
                "Wechatpay-Serial": self.platform_key_id, "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
                "Request-ID": uuid.uuid4().hex, "Content-Type": "application/json"}

    def _answer(self, status: int, payload: dict[str, Any] | None) -> Response:
        body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
        return Response(body, status_code=status, headers=self.signed_headers(body, key=self.answer_key))

    def transaction(self, no: str) -> dict[str, Any]:
        return {k: v for k, v in self.orders[no].items() if not k.startswith("_")}

    def _refund_public(self, no: str) -> dict[str, Any]:
        return dict(self.refunds[no])

    def bill_for(self, day: str, *, amounts: dict[str, int] | None = None, refund_amounts: dict[str, int] | None = None,
                 omit: frozenset[str] = frozenset(), extra: tuple[str, ...] = ()) -> bytes:
        """The ALL trade bill of ``day`` (YYYY-MM-DD, China time) from this server's own orders paid and
        refunds made that day, with planted differences: ``amounts`` / ``refund_amounts`` replace an
        order's or refund's amount, ``omit`` leaves order or refund numbers out, ``extra`` adds lines
        (bill_line) of orders the merchant never made. Kept for download as ``bills[day]``."""
        amounts, refund_amounts = amounts or {}, refund_amounts or {}
        lines = []
        for no, o in self.orders.items():
            if o.get("success_time", "").startswith(day) and no not in omit:
                lines.append(bill_line(o["success_time"][:19].replace("T", " "), o["appid"], self.mchid,
                                       o["transaction_id"], no, o["payer"].get("openid", ""), o["trade_type"],
                                       amounts.get(no, o["amount"]["total"])))
        for no, r in self.refunds.items():
            if r["create_time"].startswith(day) and no not in omit:
                o = self.orders[r["out_trade_no"]]
                lines.append(bill_line(r["create_time"][:19].replace("T", " "), o["appid"], self.mchid,
                                       r["transaction_id"], r["out_trade_no"], o["payer"].get("openid", ""),
                                       o["trade_type"], 0,
                                       (r["refund_id"], no, refund_amounts.get(no, r["amount"]["refund"]), r["status"])))
        self.bills[day] = bill_csv(lines + list(extra))
        return self.bills[day]

    # --- the citizen's and the platform's side -------------------------------------------------
    def check_jsapi(self, params: dict[str, str]) -> bool:
        """What WeChat's client checks before it shows the payment sheet: the merchant's paySign."""
        message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
        prepays = {o["_prepay"].get("prepay_id") for o in self.orders.values()}
        try:
            self.merchant_key.verify(base64.b64decode(params["paySign"]), message.encode(),
                                     padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return params["signType"] == "RSA" and params["package"].removeprefix("prepay_id=") in prepays

    def pay(self, no: str, openid: str = "") -> httpx.Response | None:
        """The citizen pays (a Native order is paid by whoever scans it: ``openid``)."""
        o = self.orders[no]
        assert o["trade_state"] == "NOTPAY", o["trade_state"]
        o.update(trade_state="SUCCESS", trade_state_desc="支付成功", transaction_id="42" + secrets.token_hex(13),
                 bank_type="OTHERS", attach="", success_time=_now_text())
        if openid:
            o["payer"] = {"openid": openid}
        o["amount"].update(payer_total=o["amount"]["total"], payer_currency="CNY")
        return self.deliver(no, *self.notification("TRANSACTION.SUCCESS", self.transaction(no))) if self.notify else None

    def finish_refund(self, out_refund_no: str, status: str = "SUCCESS") -> httpx.Response:
        r = self.refunds[out_refund_no]
        r["status"] = status
        if status == "SUCCESS":
            r["success_time"] = _now_text()
        return self.deliver(out_refund_no, *self.notification(f"REFUND.{status}", self.refund_resource(out_refund_no)))

    def refund_resource(self, out_refund_no: str) -> dict[str, Any]:
        r = self.refunds[out_refund_no]
        return {"mchid": self.mchid, "out_trade_no": r["out_trade_no"], "transaction_id": r["transaction_id"],
                "out_refund_no": out_refund_no, "refund_id": r["refund_id"], "refund_status": r["status"],
                "success_time": r.get("success_time", ""), "user_received_account": r["user_received_account"],
                "amount": {k: r["amount"][k] for k in ("total", "refund", "payer_total", "payer_refund")}}

    def notification(self, event_type: str, resource: dict[str, Any], *, apiv3_key: bytes | None = None,
                     timestamp: int | None = None, nonce: str | None = None,
                     key: rsa.RSAPrivateKey | None = None) -> tuple[bytes, dict[str, str]]:
        """A notification's body and headers; the keyword arguments forge or age it."""
        original = "refund" if event_type.startswith("REFUND.") else "transaction"
        resource_nonce = secrets.token_urlsafe(9)[:12]
        ciphertext = AESGCM(apiv3_key or self.apiv3_key).encrypt(
            resource_nonce.encode(), json.dumps(resource, ensure_ascii=False).encode(), original.encode())
        envelope = {"id": str(uuid.uuid4()), "create_time": _now_text(), "resource_type": "encrypt-resource",
                    "event_type": event_type, "summary": "支付成功" if original == "transaction" else "退款状态改变",
                    "resource": {"original_type": original, "algorithm": "AEAD_AES_256_GCM",
                                 "ciphertext": base64.b64encode(ciphertext).decode(),
                                 "associated_data": original, "nonce": resource_nonce}}
        body = json.dumps(envelope, ensure_ascii=False).encode()
        return body, self.signed_headers(body, timestamp=timestamp, nonce=nonce, key=key)

    def deliver(self, no: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST a notification to the notify URL given with the order (or refund) ``no``."""
        return httpx.post(self.notify_urls[no], content=body, headers=headers, timeout=10)
