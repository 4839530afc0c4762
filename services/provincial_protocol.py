"""The provincial platform's progress interface (山东省一体化政务服务平台, 办件进度查询): request
signatures and the answers' shapes, as pure functions. Documented for operators in
deploy/provincial-platform.md.

Signature (our adapter's scheme; the platform issues an ``appId`` and an ``appKey`` per connected
system, the common gateway pattern of provincial data-sharing platforms): each request carries

    X-Gov-App-Id: <appId>
    X-Gov-Timestamp: <Unix time in milliseconds>
    X-Gov-Nonce: <32 lowercase hex digits, new for every request, retries included>
    X-Gov-Signature-Method: HMAC-SHA256
    X-Gov-Signature: base64(HMAC-SHA256(appKey, canonical request))

where the canonical request is these lines joined by ``\\n`` (no trailing newline)::

    HMAC-SHA256
    POST
    /gateway/api/v1/banjian/progress          (the URL's path, as sent)
    a=1&b=2                                   (query sorted by name, RFC 3986 encoded; empty line if none)
    <appId>
    <timestamp>
    <nonce>
    <hex SHA-256 of the body bytes>

The platform refuses a timestamp more than 300 s off and a nonce seen in the last 10 minutes. If the
platform's onboarding documents (接口规范) lay the string out differently, ``canonical_request`` is
the one place to change.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from services.applications import ApplicationView

log = logging.getLogger(__name__)
SIGNATURE_METHOD = "HMAC-SHA256"
APP_ID_HEADER = "X-Gov-App-Id"
TIMESTAMP_HEADER = "X-Gov-Timestamp"
NONCE_HEADER = "X-Gov-Nonce"
METHOD_HEADER = "X-Gov-Signature-Method"
SIGNATURE_HEADER = "X-Gov-Signature"
REQUEST_ID_HEADER = "X-Request-Id"

PROGRESS_PATH = "/api/v1/banjian/progress"  # one application by its number (申报号)
BY_APPLICANT_PATH = "/api/v1/banjian/progress/by-applicant"  # by mobile + ID-card last four

SUCCESS = "0"
NOT_FOUND = "40401"  # 办件不存在: with HTTP 404 the only 4xx that is an answer
CHINA = dt.timezone(dt.timedelta(hours=8))

# The platform's 办件状态 codes -> the status the assistant says. Unknown codes are said as 办理中.
STATUS: dict[str, str] = {
    "01": "待受理",    # 已申报, 待受理
    "02": "已受理",
    "03": "审核中",    # 审查
    "04": "待补正",    # 补齐补正
    "05": "审批中",    # 审批, 决定
    "06": "已办结",
    "07": "不予受理",
    "08": "已退件",
    "09": "特别程序中",  # 公示, 听证, 现场勘查: time not counted toward the promise date
}
FINISHED = "06"
UNKNOWN_STATUS = "办理中"


class ProtocolError(ValueError):
    """An answer that does not have the documented shape; the message is safe to log."""


class Refused(Exception):
    """The platform answered with an error code (HTTP 4xx, or 2xx with a code other than "0")."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"HTTP {status} code {code}")
        self.status = status
        self.code = code


def new_nonce() -> str:
    return secrets.token_hex(16)


def canonical_request(method: str, path: str, query: Mapping[str, str], app_id: str, timestamp_ms: int,
                      nonce: str, body: bytes) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query.items())
    return "\n".join([SIGNATURE_METHOD, method.upper(), path, "&".join(f"{k}={v}" for k, v in pairs),
                      app_id, str(timestamp_ms), nonce, hashlib.sha256(body).hexdigest()])


def signature(app_key: bytes, canonical: str) -> str:
    return base64.b64encode(hmac.new(app_key, canonical.encode(), hashlib.sha256).digest()).decode()


def signed_headers(app_id: str, app_key: bytes, method: str, path: str, body: bytes, timestamp_ms: int,
                   nonce: str, query: Mapping[str, str] | None = None) -> dict[str, str]:
    canonical = canonical_request(method, path, query or {}, app_id, timestamp_ms, nonce, body)
    return {APP_ID_HEADER: app_id, TIMESTAMP_HEADER: str(timestamp_ms), NONCE_HEADER: nonce,
            METHOD_HEADER: SIGNATURE_METHOD, SIGNATURE_HEADER: signature(app_key, canonical)}


def request_body(fields: Mapping[str, str]) -> bytes:
    """The JSON body as sent and signed (compact, UTF-8)."""
    return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":")).encode()


def read_answer(status: int, content: bytes) -> Any:
    """The ``data`` of an answer (None for 办件不存在). Raises ``Refused`` for an error code and
    ``ProtocolError`` for a body that is not the envelope ``{"code", "message", "data"}``."""
    try:
        envelope = json.loads(content)
    except ValueError as exc:
        raise ProtocolError(f"HTTP {status}: body is not JSON") from exc
    if not isinstance(envelope, dict) or "code" not in envelope:
        raise ProtocolError(f"HTTP {status}: no code in the answer")
    code = str(envelope["code"])
    if status == 404 and code == NOT_FOUND:
        return None
    if status >= 300 or code != SUCCESS:
        raise Refused(status, code)
    return envelope.get("data")


def _text(item: Mapping[str, Any], key: str, required: bool = True) -> str:
    value = item.get(key)
    if value is None or value == "":
        if required:
            raise ProtocolError(f"missing {key}")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is not text")
    return value.strip()


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value[:10]) if value else None
    except ValueError as exc:
        raise ProtocolError("a date is not yyyy-MM-dd") from exc


def _time(value: str) -> dt.datetime:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time, as the platform writes times (an offset is honoured)."""
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ProtocolError("a time is not yyyy-MM-dd HH:mm:ss") from exc
    return at if at.tzinfo else at.replace(tzinfo=CHINA)


def application(item: Any) -> ApplicationView:
    """One 办件 of the platform as the assistant's view of it; steps without an end time (the one
    under way) are left out of the history, which is ordered by time."""
    if not isinstance(item, dict):
        raise ProtocolError("an application is not an object")
    code = _text(item, "status")
    status = STATUS.get(code, UNKNOWN_STATUS)
    if code not in STATUS:
        log.warning("provincial platform: unknown status code %r, said as %s", code[:8], UNKNOWN_STATUS)
    nodes = item.get("nodes") or []
    if not isinstance(nodes, list):
        raise ProtocolError("nodes is not a list")
    steps = []
    for node in nodes:
        if not isinstance(node, dict):
            raise ProtocolError("a node is not an object")
        ended = _text(node, "endTime", required=False)
        if ended:
            steps.append((_text(node, "nodeName"), _text(node, "nodeResult", required=False), _time(ended)))
    steps.sort(key=lambda s: s[2])
    current = _text(item, "currentNode", required=False) or (steps[-1][0] if steps else status)
    return ApplicationView(
        number=_text(item, "projid"),
        service_name=_text(item, "serviceName"),
        status=status,
        current_step=status if code == FINISHED else current,
        expected_date=None if code == FINISHED else _date(_text(item, "promiseDate", required=False)),
        office=_text(item, "deptName"),
        submitted_at=_time(_text(item, "applyTime")),
        steps=tuple(steps),
    )


def applications(data: Any) -> list[ApplicationView]:
    """The answer to a lookup by applicant: ``{"items": [...]}``, newest application first."""
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("items", []), list):
        raise ProtocolError("by-applicant data is not {items: [...]}")
    found = [application(item) for item in data.get("items", [])]
    return sorted(found, key=lambda a: a.submitted_at, reverse=True)
