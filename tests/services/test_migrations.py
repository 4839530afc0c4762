from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

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
