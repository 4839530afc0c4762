"""WeChat Pay API v3 signatures and notification decryption: pure functions, the clock passed in.

Constants and message layouts come from the WeChat Pay APIv3 developer documents
(pay.weixin.qq.com/doc/v3/merchant): "签名生成" (a request's signature is RSA-SHA256, PKCS#1 v1.5,
with the merchant API certificate's private key over ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``,
sent as ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",signature="..",
timestamp="..",serial_no=".."``); "签名验证" (responses and notifications are signed by the platform
over ``TIMESTAMP\\nNONCE\\nBODY\\n``, headers ``Wechatpay-Signature``, ``-Timestamp``, ``-Nonce``,
``-Serial``; the serial names a platform public key ``PUB_KEY_ID_...`` or a platform certificate);
"回调通知解密" (``resource`` is AEAD_AES_256_GCM under the 32-byte APIv3 key, with the resource's
``nonce`` and ``associated_data``; the ciphertext is base64 of ciphertext + 16-byte tag);
"JSAPI调起支付" / "小程序调起支付" (``paySign`` over ``appId\\ntimeStamp\\nnonceStr\\npackage\\n``).

Verification order, as everywhere in this codebase: headers present, timestamp inside the window,
signature (constant time inside the RSA verify), and only then the caller decrypts and parses.
"""
from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEME = "WECHATPAY2-SHA256-RSA2048"
MAX_SKEW_SECONDS = 300  # 签名验证: reject responses and notifications more than 5 minutes off
AEAD = "AEAD_AES_256_GCM"
SIGNATURE_HEADER = "Wechatpay-Signature"
TIMESTAMP_HEADER = "Wechatpay-Timestamp"
NONCE_HEADER = "Wechatpay-Nonce"
SERIAL_HEADER = "Wechatpay-Serial"
SIGNATURE_TYPE_HEADER = "Wechatpay-Signature-Type"


class VerificationError(Exception):
    """A response or notification is not authentic; ``reason`` is a fixed phrase, safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Signed:
    """What a verified message was signed with: the replay check keys on (timestamp, nonce)."""

    serial: str
    timestamp: int
    nonce: str


def load_private_key(path: str | Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant key must be an RSA private key (apiclient_key.pem)")
    return key


def load_public_key(path: str | Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the platform key must be an RSA public key (pub_key.pem)")
    return key


def new_nonce() -> str:
    return secrets.token_hex(16).upper()


def rsa_sign(key: rsa.RSAPrivateKey, message: str) -> str:
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: str, signature_b64: str) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def request_message(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> str:
    """The string a request's signature covers; ``path`` includes the query string."""
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{body.decode()}\n"


def authorization(*, mchid: str, serial_no: str, key: rsa.RSAPrivateKey, method: str, path: str,
                  body: bytes, timestamp: int, nonce: str) -> str:
    signature = rsa_sign(key, request_message(method, path, timestamp, nonce, body))
    return (f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{serial_no}"')


def parse_authorization(header: str) -> dict[str, str]:
    """The fields of an ``Authorization`` header (``{}`` when it is not this scheme)."""
    scheme, _, rest = header.partition(" ")
    if scheme != SCHEME:
        return {}
    return dict(re.findall(r'(\w+)="([^"]*)"', rest))


def verify_signed(public_keys: Mapping[str, rsa.RSAPublicKey], headers: Mapping[str, str], body: bytes,
                  now: float) -> Signed:
    """Check a response's or notification's signature headers; raise VerificationError."""
    lower = {k.lower(): v for k, v in headers.items()}
    signature = lower.get(SIGNATURE_HEADER.lower(), "")
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    nonce = lower.get(NONCE_HEADER.lower(), "")
    serial = lower.get(SERIAL_HEADER.lower(), "")
    if not (signature and timestamp and nonce and serial):
        raise VerificationError("signature headers missing")
    if lower.get(SIGNATURE_TYPE_HEADER.lower(), SCHEME) != SCHEME:
        raise VerificationError("unsupported signature type")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise VerificationError("timestamp outside the allowed window")
    key = public_keys.get(serial)
    if key is None:
        raise VerificationError("unknown platform key serial")
    if not rsa_verify(key, f"{timestamp}\n{nonce}\n{body.decode('utf-8', 'replace')}\n", signature):
        raise VerificationError("bad signature")
    return Signed(serial, int(timestamp), nonce)


def decrypt_resource(apiv3_key: bytes, resource: Mapping[str, Any]) -> bytes:
    """The plaintext of a notification's ``resource``; raise VerificationError if it does not open."""
    if resource.get("algorithm") != AEAD:
        raise VerificationError("unsupported resource algorithm")
    try:
        nonce = str(resource["nonce"]).encode()
        associated = str(resource.get("associated_data") or "").encode()
        data = base64.b64decode(str(resource["ciphertext"]), validate=True)
        return AESGCM(apiv3_key).decrypt(nonce, data, associated)
    except (KeyError, ValueError, InvalidTag) as exc:
        raise VerificationError("resource does not decrypt") from exc


def jsapi_params(*, appid: str, prepay_id: str, key: rsa.RSAPrivateKey, timestamp: int, nonce: str) -> dict[str, str]:
    """The parameters of ``WeixinJSBridge.invoke('getBrandWCPayRequest')`` / ``wx.requestPayment``."""
    package = f"prepay_id={prepay_id}"
    return {"appId": appid, "timeStamp": str(timestamp), "nonceStr": nonce, "package": package,
            "signType": "RSA", "paySign": rsa_sign(key, f"{appid}\n{timestamp}\n{nonce}\n{package}\n")}
