"""A console app over a migrated service database and a tracker store with seeded conversations."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from console.app import create_app
from console.auth import Accounts
from console.settings import ConsoleSettings
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from services.seed import seed
from tests.console.synthetic import write_conversations
from tests.sandbox import TEST_DATA_KEYS
from textnorm.sealing import Keyring

PASSWORD = "correct horse battery"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[TestClient]:
    heze = f"sqlite:///{tmp_path / 'heze.db'}"
    engine = make_engine(heze)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    seed(sessions)
    accounts = Accounts(sessions)
    for name, role in (("admin", "admin"), ("lead", "supervisor"), ("rev", "reviewer")):
        accounts.create_user(name, PASSWORD, role)
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    keys = TEST_DATA_KEYS  # sealed as the tracker store writes them: every page opens the rows
    write_conversations(tracker, 12, keyring=Keyring.parse(keys))
    tracker.dispose()
    settings = ConsoleSettings(_env_file=None, heze_db_url=heze, tracker_db=str(tmp_path / "tracker.db"),  # type: ignore[call-arg]
                               wechat_claims=str(tmp_path / "wechat.db"), data_keys=SecretStr(keys))
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client
    engine.dispose()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"})
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/conversations").text)


def ref(console: TestClient, sender: str) -> str:
    """A conversation's pseudonym, as the console's links carry it."""
    from console.conversations import conversation_ref
    return conversation_ref(console.app.state.index.key, sender)  # type: ignore[attr-defined]
