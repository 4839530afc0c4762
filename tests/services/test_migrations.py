from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from services.container import Services
from services.models import Base
from services.migrate import upgrade


def test_migrations_build_exactly_the_models(services: Services) -> None:
    with services.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_twice_is_harmless(services: Services) -> None:
    upgrade(services.engine)
    assert "payment_orders" in inspect(services.engine).get_table_names()


def test_the_audit_log_is_append_only_in_the_database(services: Services) -> None:
    import datetime as dt

    import pytest
    from sqlalchemy import delete, text, update
    from sqlalchemy.exc import DBAPIError

    from services.models import AuditEntry
    with services.sessions() as s:
        s.add(AuditEntry(at=dt.datetime.now(dt.timezone.utc), username="rev", action="reviewed", conversation="c1"))
        s.commit()
    changes = [update(AuditEntry).values(username="someone else"), delete(AuditEntry)]
    if services.engine.dialect.name == "postgresql":
        changes.append(text("TRUNCATE audit_log"))
    for change in changes:
        with services.sessions() as s, pytest.raises(DBAPIError, match="append-only"):
            s.execute(change)
            s.commit()
    with services.sessions() as s:
        assert [(e.username, e.action) for e in s.scalars(select(AuditEntry))] == [("rev", "reviewed")]
        s.add(AuditEntry(at=dt.datetime.now(dt.timezone.utc), username="rev", action="note", conversation="c1"))
        s.commit()  # appending still works
