"""Web chat sessions: who a browser is, signed by the services API and checked by the Rasa channel.

The services API learns a citizen's identity from WeChat (the official account's web OAuth, or the
mini-program's ``wx.login`` code exchanged server-side with ``code2Session``), or makes a guest, and
hands the browser a token: ``w1.<payload>.<mac>``, the payload a compact JSON object
``{"sub": subject, "src": source, "exp": unix time}`` and the MAC HMAC-SHA256 over ``w1.<payload>``
with ``WEBCHAT_SESSION_KEY``, both base64url without padding. The channel (channels/webchat.py)
checks the MAC and the expiry on every message and takes the sender id from the subject, so a
browser cannot speak as someone else. Pure Python: imported by both environments.

Subjects: ``oa:<appid>:<openid>`` (official account), ``mp:<appid>:<openid>`` (mini-program),
``guest:<random>``. Only the WeChat ones are identities that can hold a family proxy."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass

PREFIX = "w1"
SOURCES = ("oa", "mp", "guest")
MAX_TOKEN = 600
# openids are 28 characters of [A-Za-z0-9_-]; appids wx + 16 hex; a guest id is 22 base64url characters.
_SUBJECT = re.compile(r"^(?:(?:oa|mp):wx[0-9a-f]{16}:[A-Za-z0-9_-]{6,64}|guest:[A-Za-z0-9_-]{16,32})$")


@dataclass(frozen=True)
class WebSession:
    subject: str
    source: str
    expires: int

    @property
    def sender_id(self) -> str:
        """The Rasa sender id of this browser's conversation (at most 100 characters)."""
        return "web:" + self.subject

    @property
    def verified(self) -> bool:
        """An identity WeChat vouched for (not a guest): the only kind that may act for a family member."""
        return self.source in ("oa", "mp")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> str:
    return _b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())


def valid_subject(subject: str, source: str) -> bool:
    return source in SOURCES and bool(_SUBJECT.match(subject)) and subject.split(":", 1)[0] == source


def issue(key: bytes, subject: str, source: str, ttl_s: int, now: float | None = None) -> str:
    """A token for ``subject``, valid ``ttl_s`` seconds."""
    if not key:
        raise ValueError("no web chat session key")
    if not valid_subject(subject, source):
        raise ValueError(f"not a web chat subject: {source}")
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"sub": subject, "src": source, "exp": expires}, separators=(",", ":")).encode())
    signed = f"{PREFIX}.{payload}"
    return f"{signed}.{_mac(key, signed)}"


def verify(key: bytes, token: str, now: float | None = None) -> WebSession | None:
    """The session a token stands for, or None (malformed, wrong MAC, expired, unknown subject)."""
    if not key or not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 2:
        return None
    prefix, payload, mac = token.split(".")
    if prefix != PREFIX or not hmac.compare_digest(mac.encode(), _mac(key, f"{prefix}.{payload}").encode()):
        return None
    try:
        fields = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(fields, dict):
        return None
    subject, source, expires = fields.get("sub"), fields.get("src"), fields.get("exp")
    if not (isinstance(subject, str) and isinstance(source, str) and isinstance(expires, int)):
        return None
    if expires <= (time.time() if now is None else now) or not valid_subject(subject, source):
        return None
    return WebSession(subject, source, expires)


def session_key(secret: str, data_keys: str) -> str:
    """The key text: ``WEBCHAT_SESSION_KEY`` if set, else one derived from the first of ``DATA_KEYS``
    (the embedded default; rotating DATA_KEYS then ends every web session: citizens sign in again)."""
    if secret:
        return secret
    first = next((p for p in (x.strip() for x in data_keys.split(",")) if p), "")
    if not first:
        raise ValueError("the web chat needs WEBCHAT_SESSION_KEY or DATA_KEYS to sign sessions")
    return hmac.new(first.partition(":")[2].strip().encode(), b"heze webchat session key v1", hashlib.sha256).hexdigest()
