"""A whole stack on free ports for tests and benchmarks: migrated and seeded database, every process."""
from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine

from services import sealed
from services.container import build_services
from services.db import make_engine
from services.migrate import upgrade
from services.seed import seed
from services.settings import Settings
from console.settings import ConsoleSettings
from stack.processes import Stack, prepare_tracker_store, specs
from stack.scaleout import Topology, scaleout_specs
from textnorm.sealing import Keyring, new_key
from voice.settings import VoiceSettings

# One keyring for the whole test run: the service database's sealed columns use one keyring per
# process (services/sealed.py), so every stack, console, gateway and services object shares it.
TEST_DATA_KEYS = f"t1:{new_key()}"
sealed.use(Keyring.parse(TEST_DATA_KEYS))  # this process's own (services built in-process)

# CI's machine runs PostgreSQL on 127.0.0.1:5432 with trust auth (.ci/run); override to point elsewhere.
PG_ADMIN_URL = os.environ.get("HEZE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def make_settings(**overrides: object) -> Settings:
    """The settings of a test or benchmark stack: test environment, fresh secrets, the run's keyring."""
    values: dict[str, object] = {
        "heze_env": "test",
        "rasa_api_token": SecretStr("test-token-" + uuid.uuid4().hex),
        "wechat_front_port": free_port(),
        "payment_sandbox_secret": SecretStr("sandbox-" + uuid.uuid4().hex),
        "heze_db_url": "sqlite:///:memory:",
        "data_keys": SecretStr(TEST_DATA_KEYS),  # the stack's processes seal personal data with it
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def voice_settings(tmp: Path, **overrides: Any) -> VoiceSettings:
    """The voice gateway on free ports with its caches under ``tmp`` (not the checkout's .env)."""
    values: dict[str, Any] = {"heze_env": "test", "voice_http_port": free_port(),
                              "voice_audiosocket_port": free_port(), "voice_tts_cache_dir": str(tmp / "tts"),
                              "voice_gateway_token": "gateway-" + secrets.token_hex(12),
                              "data_keys": TEST_DATA_KEYS, **overrides}
    return VoiceSettings(_env_file=None, **values)  # type: ignore[call-arg]


def console_settings(**overrides: Any) -> ConsoleSettings:
    """The console on a free port (not the checkout's .env)."""
    return ConsoleSettings(_env_file=None, **{"heze_env": "test", "console_port": free_port(),  # type: ignore[call-arg]
                                              "data_keys": TEST_DATA_KEYS, **overrides})


def start_stack(settings: Settings, tmp: Path, voice: VoiceSettings | None = None,
                extra_env: dict[str, str] | None = None, fresh_schema: bool = False,
                console: ConsoleSettings | None = None, topology: Topology | None = None) -> tuple[Stack, Engine]:
    """Migrate and seed the service database, then start every process and wait until healthy
    (with a ``topology``: replicas behind HAProxy, stack/scaleout.py)."""
    engine = make_engine(settings.heze_db_url)
    if fresh_schema:
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    seed(build_services(settings, engine).sessions)
    prepare_tracker_store(settings)
    voice, console = voice or voice_settings(tmp), console or console_settings()
    processes = (scaleout_specs(settings, voice, console, topology, tmp / "run") if topology
                 else specs(settings, voice, console))
    for spec in processes:
        spec.env.update(extra_env or {})
    stack = Stack(processes, tmp / "log")
    try:
        stack.start(timeout=300)
    except BaseException:
        engine.dispose()
        raise
    return stack, engine


def production_database(admin_url: str) -> str:
    """A fresh PostgreSQL database for one benchmark run (tracker store and service data)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"heze_bench_{int(time.time())}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, db_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(db_url).database}" WITH (FORCE)'))
    admin.dispose()


def production_env(db_url: str, redis: str, workers: int) -> dict[str, str]:
    """deploy/endpoints.yml's variables: PostgreSQL tracker store, Redis lock store, Rasa workers."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    host, port = redis.split(":")
    return {"TRACKER_DB_HOST": url.host or "", "TRACKER_DB_PORT": str(url.port or 5432),
            "TRACKER_DB_NAME": url.database or "", "TRACKER_DB_USER": url.username or "",
            "TRACKER_DB_PASSWORD": url.password or "", "REDIS_HOST": host, "REDIS_PORT": port,
            "SANIC_WORKERS": str(workers), **broker_env()}


def broker_env(name: str | None = None) -> dict[str, str]:
    """The event broker's variables: this machine's RabbitMQ, with an exchange and a queue of this run's
    own (Rasa's exchange fans out to every queue bound to it: a shared one would fill the queues other
    runs left behind). ``drop_broker`` removes them."""
    name = name or f"heze_test_{secrets.token_hex(4)}"
    return {"RABBITMQ_HOST": os.environ.get("HEZE_TEST_RABBITMQ_HOST", "127.0.0.1"),
            "RABBITMQ_PORT": os.environ.get("HEZE_TEST_RABBITMQ_PORT", "5672"),
            "RABBITMQ_USER": "guest", "RABBITMQ_PASSWORD": "guest",
            "RABBITMQ_QUEUE": name, "RABBITMQ_EXCHANGE": name}


def drop_broker(env: dict[str, str]) -> None:
    """Delete the queues and the exchange ``broker_env`` named (best effort: RabbitMQ may be down)."""
    import asyncio

    import aio_pika

    async def drop() -> None:
        url = f"amqp://guest:guest@{env['RABBITMQ_HOST']}:{env['RABBITMQ_PORT']}/"
        async with await aio_pika.connect(url, timeout=5) as connection:
            channel = await connection.channel()
            for queue in (env["RABBITMQ_QUEUE"], env["RABBITMQ_QUEUE"] + ".unreadable"):
                await channel.queue_delete(queue)
            await channel.exchange_delete(env["RABBITMQ_EXCHANGE"])

    try:
        asyncio.run(drop())
    except Exception:  # noqa: BLE001 - nothing to clean when RabbitMQ is not there
        pass


def add_production_args(parser: Any) -> None:
    """The benchmarks' options for deploy/endpoints.yml (see production_env)."""
    parser.add_argument("--production", action="store_true",
                        help="deploy/endpoints.yml: PostgreSQL tracker store, Redis lock store, --workers Rasa workers")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="127.0.0.1:6379")
