"""Tables of the departments' open API (services/open_api.py): API clients, idempotency records, audit.

On the same ``Base`` as services/models.py; migration 0013 creates them. The composition root
(services/container.py) imports this module, so ``Base.metadata`` holds them wherever the services are
built (Alembic's comparison in tests/services/test_migrations.py included)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.models import Base


class ApiClient(Base):
    """A department's system allowed to call the open API. The key is shown once when made; only
    its id and the SHA-256 of its random secret are kept (services/api_keys.py). ``window_start``
    (a UNIX minute) and ``window_count`` are its rate limit, taken by one conditional UPDATE."""

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(30), index=True)
    name: Mapped[str] = mapped_column(String(50))
    scopes: Mapped[str] = mapped_column(String(100))  # " scope scope " (services/api_keys.py SCOPES)
    active: Mapped[bool] = mapped_column(default=True)
    rate_per_minute: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[int] = mapped_column(BigInteger, default=0)
    window_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ApiIdempotency(Base):
    """A write's answer, kept for ``OPEN_API_IDEMPOTENCY_HOURS`` under the client's Idempotency-Key:
    the same key with the same request (hash of method, path and body) gets it again, nothing done
    twice. Only successful answers are kept; they carry no personal data (the public views)."""

    __tablename__ = "api_idempotency"
    __table_args__ = (UniqueConstraint("client_id", "key", name="uq_api_idempotency"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id"))
    key: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)  # the JSON body
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class ApiAudit(Base):
    """One authenticated request: which client, method, path (no query string), status, its
    Idempotency-Key and whether it was a replay; never a request or response body. Append-only in
    the database, as ``audit_log`` (migration 0005)."""

    __tablename__ = "api_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    replayed: Mapped[bool] = mapped_column(default=False)
