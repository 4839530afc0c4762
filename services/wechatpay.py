"""WeChat Pay API v3 as a payment provider: a thin client of our own, and the provider on top.

Why not the PyPI SDK ``wechatpayv3`` (2.0.4 read for this): its gateway is a constant
(``https://api.mch.weixin.qq.com``, no constructor argument), so it cannot be pointed at a local
server without patching a private attribute; its callback check has no timestamp window and no
replay check and answers every failure with ``None`` or a bare ``Exception``, so a forged, a stale
and an undecryptable notification cannot be told apart or answered with their own codes; with a
logger it writes whole callback bodies and headers (openids) at debug level; one instance serves
one appid, and we pay to two (official account, mini-program); and it brings ``requests`` for what
``httpx`` already does here. The protocol we need is six calls and three primitives
(services/wechatpay_protocol.py, with known-answer tests), so we keep it in about 300 lines.

Endpoints (pay.weixin.qq.com/doc/v3/merchant): ``POST /v3/pay/transactions/jsapi`` and ``/native``
(下单), ``GET /v3/pay/transactions/out-trade-no/{no}?mchid=`` (查询订单), ``POST
/v3/pay/transactions/out-trade-no/{no}/close`` (关闭订单, 204), ``POST /v3/refund/domestic/refunds``
(申请退款), ``GET /v3/refund/domestic/refunds/{out_refund_no}`` (查询单笔退款), ``GET
/v3/bill/tradebill`` (申请交易账单, then a signed GET of its ``download_url``; SHA1 checked).
Only the platform public key mode (``PUB_KEY_ID_...``) is supported; platform certificates are
being retired by WeChat Pay for new merchants.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from services.billing import OrderView, PaymentMismatch, RefundView
from services.payments import Checkout, InvalidNotification, Notification, ProviderError, RefundNotification
from services.wechatpay_protocol import (
    SERIAL_HEADER,
    VerificationError,
    authorization,
    decrypt_resource,
    jsapi_params,
    new_nonce,
    verify_signed,
)
from textnorm.masking import pseudonym

log = logging.getLogger(__name__)
CHINA = dt.timezone(dt.timedelta(hours=8))
JSAPI_CHANNELS = frozenset({"wechat", "miniprogram"})  # the citizen has an openid there
# refund_status / REFUND.* event -> our refund state (申请退款, 退款结果通知)
REFUND_STATES = {"SUCCESS": "succeeded", "CLOSED": "closed", "ABNORMAL": "abnormal"}
DESCRIPTION = "菏泽政务缴费"


class WeChatPayError(ProviderError):
    """WeChat Pay answered an API call with an error (``code`` as it sent it, e.g. ORDERPAID)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"WeChat Pay answered {status} {code}")
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Merchant:
    mchid: str
    cert_serial: str
    private_key: rsa.RSAPrivateKey
    apiv3_key: bytes
    platform_key_id: str
    platform_key: rsa.RSAPublicKey
    appids: Mapping[str, str]  # channel -> appid; "wechat" also pays Native orders
    notify_url: str
    api_base: str = "https://api.mch.weixin.qq.com"


class WeChatPayClient:
    """Signed calls to the v3 API; every 2xx answer's signature is verified before it is read."""

    def __init__(self, merchant: Merchant, http: httpx.Client, clock: Callable[[], float] = time.time) -> None:
        self.merchant = merchant
        self._http = http
        self._clock = clock

    def _authorization(self, method: str, target: str, body: bytes) -> str:
        m = self.merchant
        return authorization(mchid=m.mchid, serial_no=m.cert_serial, key=m.private_key, method=method, path=target,
                             body=body, timestamp=int(self._clock()), nonce=new_nonce())

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              query: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        m = self.merchant
        target = path + ("?" + urlencode(query) if query else "")
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() if body is not None else b""
        headers = {"Authorization": self._authorization(method, target, raw),
                   "Accept": "application/json", "Content-Type": "application/json",
                   SERIAL_HEADER: m.platform_key_id, "User-Agent": "heze-assistant"}
        try:
            resp = self._http.request(method, m.api_base.rstrip("/") + target, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            raise WeChatPayError(0, "NETWORK") from exc
        if resp.status_code >= 300:
            try:
                code = str(resp.json().get("code", "UNKNOWN"))
            except ValueError:
                code = "UNKNOWN"
            raise WeChatPayError(resp.status_code, code)
        try:
            verify_signed({m.platform_key_id: m.platform_key}, resp.headers, resp.content, self._clock())
        except VerificationError as exc:
            raise WeChatPayError(resp.status_code, "RESPONSE_NOT_VERIFIED: " + exc.reason) from exc
        return resp.json() if resp.content else None

    def _order(self, kind: str, appid: str, out_trade_no: str, total: int, expires: dt.datetime,
               openid: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "appid": appid, "mchid": self.merchant.mchid, "description": DESCRIPTION,
            "out_trade_no": out_trade_no, "time_expire": expires.astimezone(CHINA).isoformat(timespec="seconds"),
            "notify_url": self.merchant.notify_url, "amount": {"total": total, "currency": "CNY"}}
        if openid is not None:
            body["payer"] = {"openid": openid}
        return self._call("POST", f"/v3/pay/transactions/{kind}", body) or {}

    def jsapi(self, appid: str, out_trade_no: str, total: int, expires: dt.datetime, openid: str) -> str:
        """A JSAPI order (official account / mini-program); its ``prepay_id`` (valid 2 h; asking
        again with the same parameters gives the same one)."""
        return str(self._order("jsapi", appid, out_trade_no, total, expires, openid)["prepay_id"])

    def native(self, appid: str, out_trade_no: str, total: int, expires: dt.datetime) -> str:
        """A Native order: the ``code_url`` a citizen scans with WeChat."""
        return str(self._order("native", appid, out_trade_no, total, expires, None)["code_url"])

    def query(self, out_trade_no: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no)}",
                              query={"mchid": self.merchant.mchid})
        except WeChatPayError as exc:
            if exc.code == "ORDER_NOT_EXIST":
                return None
            raise

    def close(self, out_trade_no: str) -> None:
        self._call("POST", f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no)}/close",
                   {"mchid": self.merchant.mchid})

    def refund(self, out_trade_no: str, out_refund_no: str, refund: int, total: int, reason: str) -> dict[str, Any]:
        return self._call("POST", "/v3/refund/domestic/refunds", {
            "out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "reason": reason,
            "notify_url": self.merchant.notify_url,
            "amount": {"refund": refund, "total": total, "currency": "CNY"}}) or {}

    def query_refund(self, out_refund_no: str) -> dict[str, Any]:
        return self._call("GET", f"/v3/refund/domestic/refunds/{quote(out_refund_no)}") or {}

    def trade_bill(self, bill_date: dt.date, bill_type: str = "ALL") -> bytes:
        """The day's trade bill (CSV, as WeChat Pay writes it), its SHA1 checked."""
        into = io.BytesIO()
        self.download_trade_bill(bill_date, into, bill_type)
        return into.getvalue()

    def download_trade_bill(self, bill_date: dt.date, into: BinaryIO, bill_type: str = "ALL") -> None:
        """Stream the day's trade bill into ``into``, hashing as it comes; WeChatPayError
        ``BILL_HASH_MISMATCH`` when its SHA1 is not the one 申请交易账单 announced (``into`` then
        holds a file to throw away)."""
        info = self._call("GET", "/v3/bill/tradebill",
                          query={"bill_date": bill_date.isoformat(), "bill_type": bill_type}) or {}
        url = urlsplit(str(info["download_url"]))
        headers = {"Authorization": self._authorization("GET", url.path + ("?" + url.query if url.query else ""), b"")}
        digest = hashlib.sha1()  # noqa: S324 - the hash WeChat Pay announces (hash_type SHA1)
        try:
            with self._http.stream("GET", str(info["download_url"]), headers=headers) as resp:  # the file is not signed
                if resp.status_code != 200:
                    raise WeChatPayError(resp.status_code, "BILL_DOWNLOAD_FAILED")
                for chunk in resp.iter_bytes(64 * 1024):
                    digest.update(chunk)
                    into.write(chunk)
        except httpx.HTTPError as exc:
            raise WeChatPayError(0, "NETWORK") from exc
        if digest.hexdigest() != str(info.get("hash_value", "")).lower():
            raise WeChatPayError(200, "BILL_HASH_MISMATCH")


class WeChatPayProvider:
    """WeChat Pay behind PaymentProvider: JSAPI where the citizen has an openid (official account,
    mini-program), Native (a QR code) for the web and for SMS links sent to phone callers."""

    name = "wechatpay"

    def __init__(self, client: WeChatPayClient, public_base_url: str, claim: Callable[[int, str], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._m = client.merchant
        self._base = public_base_url.rstrip("/")
        self._claim = claim
        self._clock = clock

    def checkout_url(self, order_no: str) -> str:
        return f"{self._base}/pay/{order_no}"

    def payee(self, channel: str) -> str | None:
        return self._m.appids.get(channel if channel in JSAPI_CHANNELS else "wechat")

    @staticmethod
    def payer(order: OrderView) -> tuple[str, str] | None:
        """(channel whose appid takes the payment, openid) for an in-WeChat (JSAPI) payment, or None for
        Native (a QR code). The web chat opened from the official account's menu runs in WeChat's browser
        as the account's openid (``web:oa:<appid>:<openid>``), so it pays by JSAPI too; inside the
        mini-program's web-view only the mini-program itself can take a payment: a QR code there."""
        if order.channel in JSAPI_CHANNELS:
            return order.channel, order.sender_id
        if order.channel == "webchat" and order.sender_id.startswith("web:oa:"):
            return "wechat", order.sender_id.split(":", 3)[3]
        return None

    def checkout(self, order: OrderView) -> Checkout:
        jsapi = self.payer(order)
        appid = self.payee(jsapi[0] if jsapi else order.channel)
        expires = order.expires_at or dt.datetime.fromtimestamp(self._clock() + 1800, dt.timezone.utc)
        if appid is None:
            raise WeChatPayError(0, "NO_APPID_FOR_CHANNEL")
        if jsapi is not None:
            prepay_id = self._client.jsapi(appid, order.order_no, order.amount_fen, expires, jsapi[1])
            params = jsapi_params(appid=appid, prepay_id=prepay_id, key=self._m.private_key,
                                  timestamp=int(self._clock()), nonce=new_nonce())
            return Checkout("jsapi", params)
        return Checkout("native", {"code_url": self._client.native(appid, order.order_no, order.amount_fen, expires)})

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification | RefundNotification:
        """支付通知 / 退款结果通知: signature and window, replay, decrypt, then the merchant checks."""
        try:
            signed = verify_signed({self._m.platform_key_id: self._m.platform_key}, headers, body, self._clock())
            if not self._claim(signed.timestamp, signed.nonce):
                raise VerificationError("replayed notification (timestamp and nonce seen before)")
            envelope = json.loads(body)
            plain = json.loads(decrypt_resource(self._m.apiv3_key, envelope["resource"]))
            event = str(envelope.get("event_type", ""))
        except VerificationError as exc:
            raise InvalidNotification(exc.reason) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidNotification("malformed notification") from exc
        if event == "TRANSACTION.SUCCESS":
            return self._payment(plain)
        if event.startswith("REFUND."):
            return self._refund_result(plain)
        raise InvalidNotification("unsupported event type")

    def _payment(self, t: Mapping[str, Any]) -> Notification:
        """A transaction (from a notification or a query) that says SUCCESS, checked against us."""
        try:
            if t["mchid"] != self._m.mchid:
                raise PaymentMismatch("notification for another merchant (mchid)")
            if t["appid"] not in self._m.appids.values():
                raise PaymentMismatch("notification for another appid")
            if t["trade_state"] != "SUCCESS":
                raise InvalidNotification("transaction is not successful")
            amount = t["amount"]
            if amount.get("currency", "CNY") != "CNY":
                raise PaymentMismatch("currency is not CNY")
            note = Notification(str(t["out_trade_no"]), int(amount["total"]), str(t["transaction_id"]), str(t["appid"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidNotification("malformed transaction") from exc
        payer = (t.get("payer") or {}).get("openid", "")
        log.info("wechatpay: order %s paid by %s", note.order_no, pseudonym(str(payer)))
        return note

    def _refund_result(self, r: Mapping[str, Any]) -> RefundNotification:
        try:
            if r["mchid"] != self._m.mchid:
                raise PaymentMismatch("refund notification for another merchant (mchid)")
            status = REFUND_STATES.get(str(r["refund_status"]))
            if status is None:
                raise InvalidNotification("refund is not final")
            return RefundNotification(str(r["out_refund_no"]), str(r["out_trade_no"]), int(r["amount"]["refund"]),
                                      status, str(r["refund_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidNotification("malformed refund notification") from exc

    def query(self, order: OrderView) -> Notification | None:
        t = self._client.query(order.order_no)
        return self._payment({"mchid": self._m.mchid, **t}) if t and t.get("trade_state") == "SUCCESS" else None

    def close(self, order: OrderView) -> Notification | None:
        paid = self.query(order)
        if paid is not None:
            return paid
        try:
            self._client.close(order.order_no)
        except WeChatPayError as exc:
            if exc.code != "ORDER_NOT_EXIST":  # never ordered (the page was not opened): nothing to close
                paid = self.query(order)  # ORDERPAID between the query and the close
                if paid is None:
                    raise
        return paid

    def refund(self, refund: RefundView) -> RefundNotification | None:
        r = self._client.refund(refund.order_no, refund.refund_no, refund.amount_fen, refund.order_amount_fen, "退费")
        status = REFUND_STATES.get(str(r.get("status", "")))
        if status is None:  # PROCESSING: REFUND.SUCCESS (or ABNORMAL) is notified later
            return None
        return RefundNotification(refund.refund_no, refund.order_no, refund.amount_fen, status, str(r["refund_id"]))


    def download_bill(self, day: dt.date, into: BinaryIO) -> bool:
        """The day's ALL trade bill into ``into`` (services/reconcile.py); False when WeChat Pay
        has none (NO_STATEMENT_EXIST: no payment or refund that day)."""
        try:
            self._client.download_trade_bill(day, into)
        except WeChatPayError as exc:
            if exc.code == "NO_STATEMENT_EXIST":
                return False
            raise
        return True


def build(settings: Any, claim: Callable[[int, str], bool], http: httpx.Client | None = None) -> WeChatPayProvider:
    """The provider from ``services.settings.Settings`` (validated there: every field present)."""
    from services.wechatpay_protocol import load_private_key, load_public_key

    appids = {"wechat": settings.wechat_appid}
    if settings.miniprogram_appid:
        appids["miniprogram"] = settings.miniprogram_appid
    merchant = Merchant(
        mchid=settings.wechatpay_mchid, cert_serial=settings.wechatpay_cert_serial,
        private_key=load_private_key(settings.resolve(settings.wechatpay_private_key_path)),
        apiv3_key=settings.wechatpay_apiv3_key.get_secret_value().encode(),
        platform_key_id=settings.wechatpay_public_key_id,
        platform_key=load_public_key(settings.resolve(settings.wechatpay_public_key_path)),
        appids=appids, notify_url=settings.payment_public_notify_url, api_base=settings.wechatpay_api_base)
    client = WeChatPayClient(merchant, http or httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0)))
    return WeChatPayProvider(client, settings.public_base_url, claim)
