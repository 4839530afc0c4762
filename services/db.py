"""Engine and session factory for the service database (SQLite or PostgreSQL)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import sessionmaker

from services.settings import ROOT


def make_engine(url: str) -> Engine:
    """Create an engine; a relative SQLite path is taken from the repository root."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = ROOT / url[len("sqlite:///"):]
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    # hide_parameters: SQL errors in logs never carry citizens' phone or ID numbers.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=True)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases."""
    if not url.startswith("sqlite:///"):
        return None
    raw = url[len("sqlite:///"):]
    return Path(raw) if raw.startswith("/") else ROOT / raw
