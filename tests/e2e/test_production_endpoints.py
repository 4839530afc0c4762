"""The production endpoints (deploy/endpoints.yml): PostgreSQL tracker store, Redis lock store, the
RabbitMQ event broker that the console's conversation index follows."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.sandbox import (
    TEST_DATA_KEYS, console_settings, drop_broker, free_port, make_settings, production_env, start_stack
)
from tests.e2e.conftest import joined
from textnorm.sealing import Keyring

pytestmark = pytest.mark.e2e
REDIS_URL = os.environ.get("HEZE_TEST_REDIS", "127.0.0.1:6379")


@pytest.fixture(scope="module")
def pg_stack(rasa_model: Path, pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[type-arg]
    url = make_url(pg_database)
    tmp = tmp_path_factory.mktemp("pgstack")
    api_port = free_port()
    settings = make_settings(
        rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
        public_base_url=f"http://127.0.0.1:{api_port}", heze_db_url=pg_database,
        rasa_model_dir=str(rasa_model.parent), rasa_endpoints="deploy/endpoints.yml",
    )
    host, port = REDIS_URL.split(":")
    extra = production_env(pg_database, REDIS_URL, workers=1)
    console = console_settings(console_tracker_url=pg_database)
    stack, engine = start_stack(settings, tmp, extra_env=extra, fresh_schema=True, console=console)
    try:
        yield {"url": f"http://127.0.0.1:{settings.rasa_port}", "engine": engine, "redis": (host, int(port)),
               "console": f"http://127.0.0.1:{console.console_port}"}
    finally:
        stack.stop()
        engine.dispose()
        drop_broker(extra)


def test_conversation_is_kept_in_postgresql(pg_stack: dict) -> None:  # type: ignore[type-arg]
    r = redis.Redis(host=pg_stack["redis"][0], port=pg_stack["redis"][1])
    locks_before = _lock_commands(r)
    with httpx.Client(timeout=60) as http:
        def say(msg: str) -> str:
            r = http.post(f"{pg_stack['url']}/webhooks/rest/webhook",
                          json={"sender": "pg-1", "message": msg, "metadata": {"channel": "phone", "caller": "13800000001"}})
            r.raise_for_status()
            return joined(r.json())

        say("查工单")
        assert "正在处理" in say("幺〇〇〇〇〇〇幺")
    with pg_stack["engine"].connect() as conn:
        rows = conn.execute(text("select data from events where sender_id = 'pg-1' and type_name = 'user'")).all()
    # Sealed at rest in PostgreSQL too: the number is not there in clear, the keys open each row.
    keyring = Keyring.parse(TEST_DATA_KEYS)
    assert len(rows) == 2 and not any("13800000001" in r[0] for r in rows)
    assert all('"caller": "13800000001"' in keyring.open(r[0], "pg-1") for r in rows)
    # The lock store (rasa_runtime/lock_store.py) took and released the conversation lock on every message.
    assert _lock_commands(r) > locks_before
    # The console's index has the conversation from the event broker, well before its once-a-minute
    # tracker-store backfill would have read it.
    assert httpx.get(f"{pg_stack['console']}/health").json()["event_feed"] == "connected"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with pg_stack["engine"].connect() as conn:
            row = conn.execute(text("select turns, intents from conversation_summaries where sender_id = 'pg-1'")).first()
        if row is not None and row.turns == 2:
            break
        time.sleep(0.2)
    assert row is not None and row.turns == 2 and "check_ticket" in row.intents, row


def _lock_commands(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval", "zrem", "hdel"))
