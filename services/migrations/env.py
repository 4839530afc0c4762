"""Alembic environment: runs migrations on the connection or URL that migrate.py hands over."""
from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from services import campaigns  # noqa: F401 - its tables (and an index on reminders) too
from services import open_api_models  # noqa: F401 - its tables are on Base.metadata too
from services.db import make_engine
from services.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
