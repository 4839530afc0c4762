"""The WeChat server-side message protocol, for the official account and the mini-program:
URL verification, signatures, safe mode's AES envelope (through wechatpy), replay protection,
XML that cannot expand entities and JSON of bounded depth.

Everything here fails closed: a field out of its bounds, a body in another encoding, a DTD, JSON
nested deeper than WeChat ever sends, is a ``ProtocolError`` (4xx), never another exception.

No Rasa imports: the Rasa channel (Python 3.10) and the tests and fakes (3.11) share this module.
Every check raises ``ProtocolError`` with an HTTP status and a reason fit for a log line; neither
ever holds message content."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from wechatpy.crypto import PrpCrypto
from wechatpy.exceptions import InvalidAppIdException

from textnorm.masking import pseudonym  # noqa: F401 - what the channels log instead of an openid

MAX_BODY_BYTES = 64 * 1024
TIMESTAMP_WINDOW_S = 300
MAX_JSON_DEPTH = 4  # WeChat's JSON pushes are flat objects
# Query values as WeChat sends them: a unix timestamp, a nonce of digits/letters, a SHA-1 in hex.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_SHA1 = re.compile(r"[0-9A-Fa-f]{40}")
# Fields of a message: an openid or account id, a message id, a time, a type.
_FIELDS = {"FromUserName": re.compile(r"[0-9A-Za-z_-]{1,64}"), "ToUserName": re.compile(r"[0-9A-Za-z_@.-]{1,64}"),
           "MsgId": re.compile(r"[0-9]{1,32}"), "CreateTime": re.compile(r"[0-9]{1,12}"),
           "MsgType": re.compile(r"[0-9A-Za-z_]{1,32}")}


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
        """``verify`` and then ``fresh``: a request whose nonce was seen before is refused."""
        self.verify(signature_value, timestamp, nonce, encrypt)
        if not self.fresh(nonce):
            raise ProtocolError(403, "nonce replayed")

    def verify(self, signature_value: str, timestamp: str, nonce: str, encrypt: str = "") -> None:
        """The timestamp is within the window and the signature is WeChat's; the nonce is not looked at."""
        if not (signature_value and timestamp and nonce):
            raise ProtocolError(400, "missing signature, timestamp or nonce")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise ProtocolError(400, "timestamp is not a unix time")
        if not _NONCE.fullmatch(nonce) or not _SHA1.fullmatch(signature_value):
            raise ProtocolError(400, "malformed nonce or signature")
        if abs(self._clock() - int(timestamp)) > self._window:
            raise ProtocolError(403, "timestamp outside the window")
        expected = signature(self._token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), signature_value.lower().encode()):
            raise ProtocolError(403, "bad signature")

    def fresh(self, nonce: str) -> bool:
        """True the first time a (verified) nonce is seen within the window, and remembers it."""
        return self._nonces.first_time(nonce, self._clock())


_DECLARED_ENCODING = re.compile(r"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")


def _utf8(body: bytes) -> str:
    """The body as text. WeChat sends UTF-8 only: a body in another encoding (a UTF-16 or UTF-32
    byte-order mark, bytes that are not UTF-8, or an XML declaration naming another encoding) is
    refused, so the checks below read what the parser will read."""
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or body[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise ProtocolError(400, "body is not UTF-8")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ProtocolError(400, "body is not UTF-8") from None
    if "\x00" in text:
        raise ProtocolError(400, "body is not UTF-8")
    declared = _DECLARED_ENCODING.match(text)
    if declared and declared.group(1).strip().lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ProtocolError(400, "XML declares an encoding other than UTF-8")
    return text


def parse_xml(body: bytes) -> Dict[str, str]:
    """A WeChat XML message as {tag: text} of the root's children. A DTD (and so any entity,
    internal or external) is refused before parsing; so is anything over 64 KB or not UTF-8."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(413, "body over 64 KB")
    text = _utf8(body)
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise ProtocolError(400, "XML with a DTD or entity")
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError:
        raise ProtocolError(400, "malformed XML") from None
    if root.tag != "xml":
        raise ProtocolError(400, "XML root is not <xml>")
    return {child.tag: (child.text or "").strip() if len(child) == 0 else "" for child in root}


def _too_deep(text: str, limit: int) -> bool:
    """Whether JSON text nests objects/arrays deeper than ``limit`` (strings skipped), without parsing
    it. One pass over the text (a regular expression over strings backtracked quadratically on an
    unterminated one: a 64 KB body held the event loop for seconds)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > limit:
                return True
        elif ch in "}]":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON WeChat sends")


def parse_json(body: bytes) -> Dict[str, str]:
    """A mini-program JSON push as {field: text}: an object, at most ``MAX_JSON_DEPTH`` deep, UTF-8.
    Numbers stay the digits they were sent as (a MsgId is an identifier, not a quantity)."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(413, "body over 64 KB")
    text = _utf8(body)
    if _too_deep(text, MAX_JSON_DEPTH):
        raise ProtocolError(400, "JSON nested too deep")
    try:
        data = json.loads(text, parse_int=str, parse_float=str, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ProtocolError(400, "malformed JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(400, "JSON is not an object")
    fields = {str(k): "" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
              for k, v in data.items()}
    try:  # "\ud800" is valid JSON but no text: it could be neither signed nor stored
        "".join(f"{k}{v}" for k, v in fields.items()).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(400, "JSON with a lone surrogate") from None
    return fields


def parse_body(body: bytes) -> Dict[str, str]:
    """A push in either of WeChat's formats: JSON (the mini-program may choose it) or XML."""
    return parse_json(body) if body.lstrip()[:1] == b"{" else parse_xml(body)


def check_message(msg: Dict[str, str]) -> Dict[str, str]:
    """A decrypted message whose identifying fields are what WeChat sends (an openid of letters,
    digits, - and _; numeric ids and times). The rest of the fields are content and are not judged."""
    if not msg.get("FromUserName"):
        raise ProtocolError(400, "no sender")
    for name, pattern in _FIELDS.items():
        value = msg.get(name)
        if value and not pattern.fullmatch(value):
            raise ProtocolError(400, f"malformed {name}")
    return msg


def open_message(args: Mapping[str, str], body: bytes, mode: str, guard: RequestGuard,
                 envelope: Optional["Envelope"]) -> Tuple[Dict[str, str], bool]:
    """A push's message, and whether it came encrypted, with its signature and timestamp checked
    (the nonce is the caller's to judge: a replay may deserve the stored answer). ``args`` is the
    query; ``mode`` the account's (safe, compatible or plain). Raises ProtocolError, nothing else."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(413, "body over 64 KB")
    outer = parse_body(body)
    encrypted = args.get("encrypt_type") == "aes" or ("Encrypt" in outer and mode == "safe")
    if encrypted:
        if envelope is None or not outer.get("Encrypt"):
            raise ProtocolError(400, "encrypted message without ciphertext or key")
        guard.verify(args.get("msg_signature", ""), args.get("timestamp", ""), args.get("nonce", ""),
                     outer["Encrypt"])
        return check_message(parse_body(envelope.decrypt(outer["Encrypt"]).encode("utf-8"))), True
    if mode == "safe":
        raise ProtocolError(400, "plain message in safe mode")
    guard.verify(args.get("signature", ""), args.get("timestamp", ""), args.get("nonce", ""))
    return check_message(outer), False


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
        encrypted, sig = self._seal(xml, nonce, timestamp)
        return (f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature><![CDATA[{sig}]]></MsgSignature>"
                f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>")

    def encrypt_json_reply(self, body: str, nonce: str, timestamp: str) -> str:
        """The same envelope in JSON, for a mini-program that chose JSON pushes."""
        encrypted, sig = self._seal(body, nonce, timestamp)
        return json.dumps({"Encrypt": encrypted, "MsgSignature": sig, "TimeStamp": timestamp, "Nonce": nonce})

    def _seal(self, plain: str, nonce: str, timestamp: str) -> "tuple[str, str]":
        encrypted = self._crypto.encrypt(plain, self._appid)
        encrypted = encrypted.decode() if isinstance(encrypted, bytes) else str(encrypted)
        return encrypted, signature(self._token, timestamp, nonce, encrypted)


def text_reply(to_user: str, from_user: str, content: str, create_time: Optional[int] = None) -> str:
    """A passive text reply. CDATA cannot hold "]]>", so it is split across sections."""
    safe = content.replace("]]>", "]]]]><![CDATA[>")
    return (f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName><FromUserName><![CDATA[{from_user}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{safe}]]></Content></xml>")


def transfer_reply(to_user: str, from_user: str, kf_account: str = "", as_json: bool = False,
                   create_time: Optional[int] = None) -> str:
    """The reply that hands the message (and the citizen) to WeChat's human customer service
    (``transfer_customer_service``), to one agent account when ``kf_account`` is set. The
    mini-program answers a JSON push in JSON, with the sender and recipient swapped as in XML."""
    now = create_time or int(time.time())
    if as_json:
        reply: Dict[str, Any] = {"ToUserName": to_user, "FromUserName": from_user, "CreateTime": now,
                                 "MsgType": "transfer_customer_service"}
        if kf_account:
            reply["TransInfo"] = {"KfAccount": kf_account}
        return json.dumps(reply, ensure_ascii=False)
    agent = f"<TransInfo><KfAccount><![CDATA[{kf_account}]]></KfAccount></TransInfo>" if kf_account else ""
    return (f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName><FromUserName><![CDATA[{from_user}]]></FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[transfer_customer_service]]></MsgType>{agent}</xml>")


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
