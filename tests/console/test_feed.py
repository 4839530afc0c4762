"""console/feed.py against this machine's RabbitMQ: the conversation index follows the event broker,
counts each event once whatever the mix of broker, redelivery and tracker-store backfill, loses nothing
while the console is stopped, and sets aside messages it cannot open."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import Engine, select

from console.conversations import EVENTS, ConversationIndex
from console.feed import EventFeed
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from services.models import ConversationSummary
from tests.console.synthetic import write_conversations
from tests.sandbox import TEST_DATA_KEYS
from textnorm.sealing import BROKER_CONTEXT, Keyring, new_key

HOST = os.environ.get("HEZE_TEST_RABBITMQ_HOST", "127.0.0.1")
PORT = os.environ.get("HEZE_TEST_RABBITMQ_PORT", "5672")
URL = f"amqp://guest:guest@{HOST}:{PORT}/"
KEYRING = Keyring.parse(TEST_DATA_KEYS)


def new_index(tmp: Path, tracker: Engine, name: str) -> ConversationIndex:
    engine = make_engine(f"sqlite:///{tmp / f'{name}.db'}")
    upgrade(engine)
    return ConversationIndex(tracker, make_sessionmaker(engine), b"k" * 32, KEYRING)


def summaries(index: ConversationIndex) -> dict[str, tuple[Any, ...]]:
    with index._sessions() as s:
        return {x.sender_id: (x.channel, x.turns, x.intents, x.entities, x.actions, x.text, x.fallback, x.handoff,
                              x.min_confidence, x.last_event_id)
                for x in s.scalars(select(ConversationSummary))}


def broker_bodies(tracker: Engine, per_turn: int = 0) -> list[bytes]:
    """The tracker-store rows as Rasa's broker publishes them (rasa_runtime/event_broker.py): one event
    a message (stock's ``publish``), or with ``per_turn`` a list of up to that many consecutive events of
    one conversation a message (``publish_all``, a turn's events)."""
    with tracker.connect() as conn:
        rows = conn.execute(select(EVENTS).order_by(EVENTS.c.id)).all()
    events = [{"sender_id": r.sender_id, **json.loads(KEYRING.open(r.data, r.sender_id)), "event_id": r.id}
              for r in rows]
    if not per_turn:
        return [KEYRING.seal(json.dumps(e), BROKER_CONTEXT).encode() for e in events]
    turns: list[list[dict[str, Any]]] = []
    for e in events:
        if turns and turns[-1][0]["sender_id"] == e["sender_id"] and len(turns[-1]) < per_turn:
            turns[-1].append(e)
        else:
            turns.append([e])
    return [KEYRING.seal(json.dumps(turn), BROKER_CONTEXT).encode() for turn in turns]


@pytest.fixture
async def broker() -> AsyncIterator[dict[str, Any]]:
    name = f"heze_test_{secrets.token_hex(4)}"
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT)
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, "")

    async def publish(bodies: list[bytes]) -> None:
        for body in bodies:
            await exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "")

    try:
        yield {"name": name, "publish": publish, "channel": channel}
    finally:
        for q in (name, f"{name}.unreadable"):
            await channel.queue_delete(q)
        await channel.exchange_delete(name)
        await connection.close()


async def until(condition: Any, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def start(feed: EventFeed) -> asyncio.Task[None]:
    return asyncio.create_task(feed.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def tracker(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    write_conversations(engine, 8, keyring=KEYRING)
    return engine


async def test_the_index_follows_the_broker_and_counts_each_event_once(tmp_path: Path, tracker: Engine,
                                                                      broker: dict[str, Any]) -> None:
    expected = new_index(tmp_path, tracker, "expected")
    expected.sync()  # the same events read from the tracker store
    index = new_index(tmp_path, tracker, "fed")
    bodies = broker_bodies(tracker)
    feed = EventFeed(URL, broker["name"], broker["name"], index, asyncio.Lock(), batch=25)
    task = start(feed)
    await until(lambda: feed.connected)
    await broker["publish"](bodies + bodies[: len(bodies) // 2])  # half of them delivered twice
    await until(lambda: feed.counts["received"] == len(bodies) * 3 // 2)
    await stop(task)
    assert feed.counts["applied"] == len(bodies)
    assert summaries(index) == summaries(expected) and len(summaries(index)) == 8
    # The tracker-store backfill reads the same events: nothing is counted again.
    assert index.sync() == len(bodies)
    assert summaries(index) == summaries(expected)


async def test_a_turns_events_in_one_message_count_as_the_same_events(tmp_path: Path, tracker: Engine,
                                                                   broker: dict[str, Any]) -> None:
    expected = new_index(tmp_path, tracker, "expected")
    expected.sync()
    index = new_index(tmp_path, tracker, "fed")
    bodies = broker_bodies(tracker, per_turn=6)
    assert len(bodies) < len(broker_bodies(tracker)) / 3  # messages of several events each
    feed = EventFeed(URL, broker["name"], broker["name"], index, asyncio.Lock(), batch=10)
    task = start(feed)
    await until(lambda: feed.connected)
    await broker["publish"](bodies + bodies[:5])  # five of them delivered twice
    await until(lambda: feed.counts["received"] == len(bodies) + 5)
    await stop(task)
    assert feed.counts["applied"] == len(broker_bodies(tracker)) and feed.counts["unreadable"] == 0
    assert summaries(index) == summaries(expected) and len(summaries(index)) == 8


async def test_events_the_backfill_counted_first_are_not_counted_again(tmp_path: Path, tracker: Engine,
                                                                      broker: dict[str, Any]) -> None:
    expected = new_index(tmp_path, tracker, "expected")
    expected.sync()
    index = new_index(tmp_path, tracker, "fed")
    index.sync()
    feed = EventFeed(URL, broker["name"], broker["name"], index, asyncio.Lock())
    task = start(feed)
    await until(lambda: feed.connected)
    bodies = broker_bodies(tracker)
    await broker["publish"](bodies)
    await until(lambda: feed.counts["received"] == len(bodies))
    await stop(task)
    assert feed.counts["applied"] == 0
    assert summaries(index) == summaries(expected)


async def test_a_console_stopped_mid_stream_loses_nothing(tmp_path: Path, tracker: Engine,
                                                          broker: dict[str, Any]) -> None:
    expected = new_index(tmp_path, tracker, "expected")
    expected.sync()
    bodies = broker_bodies(tracker)
    first = new_index(tmp_path, tracker, "fed")
    feed = EventFeed(URL, broker["name"], broker["name"], first, asyncio.Lock())
    task = start(feed)
    await until(lambda: feed.connected)
    await broker["publish"](bodies[:40])
    await until(lambda: feed.counts["received"] == 40)
    await stop(task)
    await broker["publish"](bodies[40:])  # while the console is down: RabbitMQ keeps them
    again = ConversationIndex(tracker, first._sessions, first.key, KEYRING)  # the restarted console
    feed = EventFeed(URL, broker["name"], broker["name"], again, asyncio.Lock())
    task = start(feed)
    await until(lambda: feed.counts["received"] == len(bodies) - 40)
    await stop(task)
    assert summaries(again) == summaries(expected)


async def test_messages_that_do_not_open_are_set_aside_not_lost(tmp_path: Path, tracker: Engine,
                                                               broker: dict[str, Any]) -> None:
    index = new_index(tmp_path, tracker, "fed")
    good = broker_bodies(tracker)[:5]
    clear = json.dumps({"sender_id": "x", "event": "user", "event_id": 999999, "text": "13800000001"}).encode()
    other_key = Keyring.parse(f"zz:{new_key()}").seal(json.dumps({"sender_id": "y"}), BROKER_CONTEXT).encode()
    wrong_shape = KEYRING.seal(json.dumps(["not", "an", "event"]), BROKER_CONTEXT).encode()
    no_events = KEYRING.seal(json.dumps([]), BROKER_CONTEXT).encode()
    feed = EventFeed(URL, broker["name"], broker["name"], index, asyncio.Lock())
    task = start(feed)
    await until(lambda: feed.connected)
    await broker["publish"]([clear, *good, other_key, wrong_shape, no_events])
    await until(lambda: feed.counts["received"] == 9)
    await stop(task)
    assert feed.counts == {"received": 9, "applied": 5, "unreadable": 4}
    aside = await broker["channel"].declare_queue(f"{broker['name']}.unreadable", durable=True)
    kept = []
    while (message := await aside.get(no_ack=True, fail=False)) is not None:
        kept.append(message.body)
    assert kept == [clear, other_key, wrong_shape, no_events]
    assert "x" not in summaries(index) and "y" not in summaries(index)


async def test_events_a_replica_sends_late_are_counted_all_the_same(tmp_path: Path, tracker: Engine,
                                                                   broker: dict[str, Any]) -> None:
    """RabbitMQ was away: one replica's kept events of a conversation arrive after another replica's
    later ones (each sends its own when the connection is back)."""
    expected = new_index(tmp_path, tracker, "expected")
    expected.sync()
    index = new_index(tmp_path, tracker, "fed")
    bodies = broker_bodies(tracker)
    early, later = bodies[: len(bodies) // 2], bodies[len(bodies) // 2:]
    feed = EventFeed(URL, broker["name"], broker["name"], index, asyncio.Lock(), batch=10)
    task = start(feed)
    await until(lambda: feed.connected)
    await broker["publish"](later + early)
    await until(lambda: feed.counts["received"] == len(bodies))
    await stop(task)
    assert summaries(index) == summaries(expected)
