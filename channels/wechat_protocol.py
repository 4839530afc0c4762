"""The WeChat server-side message protocol, for the official account and the mini-program:
URL verification, signatures, safe mode's AES envelope (through wechatpy), replay protection and
XML that cannot expand entities.

No Rasa imports: the Rasa channel (Python 3.10) and the tests and fakes (3.11) share this module.
Every check raises ``ProtocolError`` with an HTTP status and a reason fit for a log line; neither
ever holds message content."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import threading
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, Optional

from wechatpy.crypto import PrpCrypto
from wechatpy.exceptions import InvalidAppIdException

MAX_BODY_BYTES = 64 * 1024
TIMESTAMP_WINDOW_S = 300


class ProtocolError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signature(token: str, timestamp: str, nonce: str, encrypt: str = "") -> str:
    """WeChat's SHA-1 over the sorted token, timestamp, nonce (and ciphertext in safe mode)."""
    parts = sorted(p for p in (token, timestamp, nonce, encrypt) if p)
    return hashlib.sha1("".join(parts).encode("utf-8")).hexdigest()


class NonceCache:
    """Nonces seen within the timestamp window; thread-safe, forgets what is older than the window."""

    def __init__(self, window_s: int = TIMESTAMP_WINDOW_S) -> None:
        self._window = window_s
        self._seen: Dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10_000 or (self._seen and min(self._seen.values()) < now - 2 * self._window):
                self._seen = {n: t for n, t in self._seen.items() if t >= now - 2 * self._window}
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


class RequestGuard:
    """Checks a request's timestamp, signature and nonce, in that order: the nonce is only
    remembered for requests that carry a valid signature, so forged requests cannot use up nonces."""

    def __init__(self, token: str, nonces: Optional[NonceCache] = None, window_s: int = TIMESTAMP_WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not token:
            raise ValueError("the WeChat token is empty")
        self._token = token
        self._nonces = nonces or NonceCache(window_s)
        self._window = window_s
        self._clock = clock

    def check(self, signature_value: str, timestamp: str, nonce: str, encrypt: str = "") -> None:
        if not (signature_value and timestamp and nonce):
            raise ProtocolError(400, "missing signature, timestamp or nonce")
        try:
            ts = int(timestamp)
        except ValueError:
            raise ProtocolError(400, "timestamp is not a number") from None
        now = self._clock()
        if abs(now - ts) > self._window:
            raise ProtocolError(403, "timestamp outside the window")
        expected = signature(self._token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), signature_value.lower().encode()):
            raise ProtocolError(403, "bad signature")
        if not self._nonces.first_time(nonce, now):
            raise ProtocolError(403, "nonce replayed")


def parse_xml(body: bytes) -> Dict[str, str]:
    """A WeChat XML message as {tag: text} of the root's children. A DTD (and so any entity,
    internal or external) is refused before parsing; so is anything over 64 KB."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(413, "body over 64 KB")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ProtocolError(400, "XML with a DTD or entity")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise ProtocolError(400, "malformed XML") from None
    if root.tag != "xml":
        raise ProtocolError(400, "XML root is not <xml>")
    return {child.tag: (child.text or "").strip() if len(child) == 0 else "" for child in root}


class Envelope:
    """Safe mode: AES-256-CBC with the account's EncodingAESKey; the plaintext ends with the appid,
    which must be ours."""

    def __init__(self, token: str, encoding_aes_key: str, appid: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("EncodingAESKey is not 43 characters of base64") from None
        if len(encoding_aes_key) != 43 or len(key) != 32:
            raise ValueError("EncodingAESKey must be 43 characters (32 bytes)")
        if not appid:
            raise ValueError("the appid is empty")
        self._crypto = PrpCrypto(key)
        self._token = token
        self._appid = appid

    def decrypt(self, encrypted: str) -> str:
        try:
            return str(self._crypto.decrypt(encrypted, self._appid))
        except InvalidAppIdException:
            raise ProtocolError(403, "message for another appid") from None
        except (binascii.Error, ValueError, UnicodeDecodeError, struct.error, IndexError, TypeError):
            raise ProtocolError(400, "cannot decrypt") from None

    def encrypt_reply(self, xml: str, nonce: str, timestamp: str) -> str:
        """The encrypted passive reply: <xml> with Encrypt, MsgSignature, TimeStamp and Nonce."""
        encrypted = self._crypto.encrypt(xml, self._appid)
        encrypted = encrypted.decode() if isinstance(encrypted, bytes) else str(encrypted)
        sig = signature(self._token, timestamp, nonce, encrypted)
        return (f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature><![CDATA[{sig}]]></MsgSignature>"
                f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>")


def text_reply(to_user: str, from_user: str, content: str, create_time: Optional[int] = None) -> str:
    """A passive text reply. CDATA cannot hold "]]>", so it is split across sections."""
    safe = content.replace("]]>", "]]]]><![CDATA[>")
    return (f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName><FromUserName><![CDATA[{from_user}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{safe}]]></Content></xml>")


def split_text(text: str, limit_bytes: int = 2000) -> list:
    """Text cut into pieces of at most ``limit_bytes`` UTF-8 bytes (WeChat's customer-service
    limit is 2,048 bytes), at a line break or sentence end where one is near."""
    pieces = []
    rest = text
    while len(rest.encode("utf-8")) > limit_bytes:
        cut = 0
        size = 0
        for i, ch in enumerate(rest):
            size += len(ch.encode("utf-8"))
            if size > limit_bytes:
                break
            cut = i + 1
        window = rest[:cut]
        soft = max(window.rfind("\n"), window.rfind("。"), window.rfind("；"))
        if soft > cut // 2:
            cut = soft + 1
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n")
    if rest.strip():
        pieces.append(rest)
    return pieces
