"""Departments' API keys for the open API (services/open_api.py): made, listed, revoked, checked, rate-limited.

A key reads ``hzk_<key id>.<secret>``: 16 hex characters that find the client, then 32 random bytes
(URL-safe base64). Only the secret's SHA-256 is kept: a random 256-bit secret needs no slow hash."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import sessionmaker

from services.open_api_models import ApiClient

# What a key may do; a key holds one or more.
SCOPES: dict[str, str] = {
    "applications:write": "add progress steps to the applications (办件进度) its department handles",
    "tickets:write": "change the status of and reply to the department's feedback tickets",
    "guides:write": "publish and update the department's service guides",
    "kpis:read": "read aggregate figures (事项办结率, 群众满意度, 工单按期答复率)",
}
KEY_PATTERN = re.compile(r"^hzk_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
MAX_DEPARTMENT = 30
MAX_NAME = 50


@dataclass(frozen=True)
class ApiClientView:
    id: int
    department: str
    name: str
    scopes: frozenset[str]
    active: bool
    rate_per_minute: int
    created_at: dt.datetime


def _view(c: ApiClient) -> ApiClientView:
    created = c.created_at if c.created_at.tzinfo else c.created_at.replace(tzinfo=dt.timezone.utc)  # SQLite: UTC
    return ApiClientView(c.id, c.department, c.name, frozenset(c.scopes.split()), c.active, c.rate_per_minute, created)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """``"tickets:write,kpis:read"`` as a set; ValueError naming an unknown scope."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"unknown scope {', '.join(unknown)}" if unknown else "no scope given")
    return scopes


class ApiKeys:
    """API clients in the service database. ``now`` and ``token`` are seams for the tests."""

    def __init__(self, sessions: sessionmaker, now: Callable[[], dt.datetime] | None = None,
                 token: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self._sessions = sessions
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._token = token

    def create(self, *, department: str, name: str, scopes: Iterable[str], rate_per_minute: int) -> tuple[ApiClientView, str]:
        """A new client and its key; the key is returned here once and never kept."""
        department, name, wanted = department.strip(), name.strip(), frozenset(scopes)
        if not 0 < len(department) <= MAX_DEPARTMENT or not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"department (1-{MAX_DEPARTMENT} characters) and name (1-{MAX_NAME}) are needed")
        if not wanted or not wanted <= set(SCOPES):
            raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
        if not 1 <= rate_per_minute <= 10_000:
            raise ValueError("the rate limit is 1 to 10000 requests a minute")
        key_id, secret = secrets.token_hex(8), self._token(32)
        with self._sessions() as s:
            client = ApiClient(key_id=key_id, secret_hash=_digest(secret), department=department, name=name,
                               scopes=" " + " ".join(sorted(wanted)) + " ", active=True,
                               rate_per_minute=rate_per_minute, window_start=0, window_count=0,
                               created_at=self._now())
            s.add(client)
            s.commit()
            return _view(client), f"hzk_{key_id}.{secret}"

    def list(self) -> list[ApiClientView]:
        with self._sessions() as s:
            return [_view(c) for c in s.scalars(select(ApiClient).order_by(ApiClient.id))]

    def revoke(self, client_id: int) -> bool:
        """Switch a key off for good; False when there is no such active key."""
        with self._sessions() as s:
            done = s.execute(update(ApiClient).where(ApiClient.id == client_id, ApiClient.active.is_(True))
                             .values(active=False, revoked_at=self._now())).rowcount
            s.commit()
            return bool(done)

    def authenticate(self, key: str) -> ApiClientView | None:
        """The active client whose key this is, else None (unknown, malformed or revoked alike)."""
        m = KEY_PATTERN.match(key)
        if not m:
            return None
        with self._sessions() as s:
            client = s.scalar(select(ApiClient).where(ApiClient.key_id == m.group(1)))
            if client is None or not hmac.compare_digest(client.secret_hash, _digest(m.group(2))):
                return None
            return _view(client) if client.active else None

    def take(self, client: ApiClientView, now: dt.datetime) -> int:
        """Count one request against the client's minute (a fixed window, shared by every process
        through the database); 0 when allowed, else the seconds until the next minute."""
        minute = int(now.timestamp() // 60)
        with self._sessions() as s:
            taken = s.execute(
                update(ApiClient)
                .where(ApiClient.id == client.id,
                       or_(ApiClient.window_start != minute, ApiClient.window_count < ApiClient.rate_per_minute))
                .values(window_count=case((ApiClient.window_start == minute, ApiClient.window_count + 1), else_=1),
                        window_start=minute)
            ).rowcount
            s.commit()
        return 0 if taken else max(1, math.ceil((minute + 1) * 60 - now.timestamp()))
