"""rasa_runtime.event_broker against this machine's RabbitMQ: bodies sealed, every event delivered in
the order written, none lost while RabbitMQ cannot be reached, and Rasa builds it from the endpoints."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any, Dict, List

import aio_pika
import pytest

from rasa.core.brokers.broker import EventBroker
from rasa.utils.endpoints import EndpointConfig

from rasa_runtime.event_broker import SealedPikaEventBroker
from textnorm.sealing import BROKER_CONTEXT, Keyring, new_key

KEYS = f"b1:{new_key()}"
HOST = os.environ.get("HEZE_TEST_RABBITMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("HEZE_TEST_RABBITMQ_PORT", "5672"))
URL = f"amqp://guest:guest@{HOST}:{PORT}/"


def event(n: int) -> dict:
    return {"sender_id": "13800000001", "event": "user", "text": f"我的手机号13800000001，第{n}句",
            "timestamp": 1_700_000_000.0 + n, "event_id": n}


def opened(bodies: List[bytes]) -> List[Dict[str, Any]]:
    """The events the bodies seal, in order: a turn's list (``publish_all``) or one event (``publish``)."""
    keyring = Keyring.parse(KEYS)
    events: List[Dict[str, Any]] = []
    for body in bodies:
        payload = json.loads(keyring.open(body.decode(), BROKER_CONTEXT))
        events.extend(payload if isinstance(payload, list) else [payload])
    return events


async def drain(queue: str, expect: int, timeout: float = 10) -> List[bytes]:
    """Every body in ``queue`` (waiting for ``expect`` of them), then the queue and its exchange deleted."""
    bodies: List[bytes] = []
    async with await aio_pika.connect(URL) as connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(bodies) < expect and asyncio.get_running_loop().time() < deadline:
            message = await q.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            bodies.append(message.body)
        await channel.queue_delete(queue)
        await channel.exchange_delete(queue)
    return bodies


async def broker_for(name: str, **kwargs: Any) -> SealedPikaEventBroker:
    config = EndpointConfig(url=HOST, type="rasa_runtime.event_broker.SealedPikaEventBroker", port=PORT,
                            username="guest", password="guest", queues=[name], exchange_name=name, keys=KEYS, **kwargs)
    broker = await EventBroker.create(config)
    assert isinstance(broker, SealedPikaEventBroker)
    return broker


def test_rasa_builds_it_from_the_endpoints_and_the_bodies_are_sealed() -> None:
    """A turn's events go as one message (a list); stock's ``publish`` sends one event (an object)."""
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        assert await broker.publish_all([event(1), event(2)])
        broker.publish(event(3))
        assert await broker.flush()
        await broker.close()
        return await drain(name, 2)

    bodies = asyncio.run(scenario())
    assert len(bodies) == 2
    assert not any(b"13800000001" in b or "手机号".encode() in b for b in bodies)
    keyring = Keyring.parse(KEYS)
    assert [json.loads(keyring.open(b.decode(), BROKER_CONTEXT)) for b in bodies] == [[event(1), event(2)], event(3)]
    assert opened(bodies) == [event(1), event(2), event(3)]


def test_announced_turns_go_out_in_order_without_anyone_waiting() -> None:
    """What the tracker store does after each commit: ``announce`` returns at once; the sender task
    publishes the turns in the order announced, one message each."""
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        for n in range(1, 31):
            broker.announce([event(n * 10 + 1), event(n * 10 + 2)])
            assert broker._unpublished_events  # queued, not yet confirmed: nobody waited
            if n % 3 == 0:
                await asyncio.sleep(0.002)  # some arrive while a round is in flight
        assert await broker.flush()
        await broker.close()
        return await drain(name, 30)

    bodies = asyncio.run(scenario())
    assert len(bodies) == 30
    assert [e["event_id"] for e in opened(bodies)] == [n * 10 + i for n in range(1, 31) for i in (1, 2)]


def test_closing_sends_what_turns_announced_and_did_not_wait_for() -> None:
    """At a graceful stop the last turns' messages may still be queued: ``close`` sends them first."""
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        for n in range(1, 21):
            broker.announce([event(n)])
        await broker.close()
        return await drain(name, 20)

    assert [e["event_id"] for e in opened(asyncio.run(scenario()))] == list(range(1, 21))


def test_events_kept_while_rabbitmq_is_away_go_out_first_and_in_order() -> None:
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        await broker._connection.close()  # type: ignore[union-attr] # as when RabbitMQ goes away
        assert not await broker.publish_all([event(1), event(2)])
        broker.publish(event(3))  # stock's entry point queues behind them
        await asyncio.sleep(0.1)
        await broker.connect()  # what the robust connection does when RabbitMQ is back
        assert await broker.publish_all([event(4)])
        await broker.close()
        return await drain(name, 3)

    assert [e["event_id"] for e in opened(asyncio.run(scenario()))] == [1, 2, 3, 4]


def test_many_conversations_publishing_at_once_keep_each_ones_order_and_lose_nothing() -> None:
    """Ten conversations' turns published at once go out together (one wait for RabbitMQ's confirms,
    not one per message), each conversation's events still in their order."""
    name = f"heze_test_{secrets.token_hex(4)}"

    def turn(conversation: int, n: int) -> List[Dict[str, Any]]:
        return [{**event(conversation * 1000 + n * 10 + i), "sender_id": f"c{conversation}"} for i in range(6)]

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        for n in range(5):
            assert all(await asyncio.gather(*(broker.publish_all(turn(c, n)) for c in range(10))))
        assert not broker._unpublished_events
        await broker.close()
        return await drain(name, 50)

    bodies = asyncio.run(scenario())
    assert len(bodies) == 50  # a message per turn
    got = opened(bodies)
    assert len(got) == 300
    for c in range(10):
        ids = [e["event_id"] for e in got if e["sender_id"] == f"c{c}"]
        assert ids == sorted(ids) and len(ids) == 30


def test_a_turn_waits_for_its_own_events_not_for_the_turns_after_it() -> None:
    """Conversations whose events were confirmed go on while the round of a later turn is in flight
    (before, each caller flushed until the queue was empty, so under load every turn also waited for the
    rounds of the turns that came after it)."""
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        first = asyncio.gather(*(broker.publish_all([event(n)]) for n in range(1, 401)))
        for _ in range(5):  # the first round (400 messages) is on its way
            await asyncio.sleep(0)
        assert not first.done()
        later = asyncio.ensure_future(broker.publish_all([event(401)]))
        assert all(await first)
        assert not later.done() and list(broker._unpublished_events) == [[event(401)]]
        assert await later
        assert not broker._unpublished_events
        await broker.close()
        return await drain(name, 401)

    assert [e["event_id"] for e in opened(asyncio.run(scenario()))] == list(range(1, 402))


def test_a_backlog_larger_than_a_round_goes_out_whole_and_in_order() -> None:
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name)
        await broker._connection.close()  # type: ignore[union-attr]
        for n in range(1, 1201):  # 1,200 turns while RabbitMQ is away: more than two rounds
            assert not await broker.publish_all([event(n)])
        await broker.connect()
        assert await broker.publish_all([event(1201)])
        assert not broker._unpublished_events
        await broker.close()
        return await drain(name, 1201)

    assert [e["event_id"] for e in opened(asyncio.run(scenario()))] == list(range(1, 1202))


def test_a_full_queue_drops_its_oldest_not_a_message_behind_the_round_in_flight() -> None:
    """Kept messages at the limit, RabbitMQ back, a round in flight, and a new turn: the oldest (already in
    the round) is what the full queue drops, and the new turn's message still goes out (before, the
    confirmed round was popped by count and took the new message with it; a helper's review found it)."""
    name = f"heze_test_{secrets.token_hex(4)}"

    async def scenario() -> List[bytes]:
        broker = await broker_for(name, max_unpublished=3)
        await broker._connection.close()  # type: ignore[union-attr]
        for n in range(1, 4):
            assert not await broker.publish_all([event(n)])
        await broker.connect()
        sending = asyncio.ensure_future(broker.flush())
        for _ in range(5):  # the kept three are on their way
            await asyncio.sleep(0)
        assert await broker.publish_all([event(4)])
        await sending
        assert not broker._unpublished_events
        await broker.close()
        return await drain(name, 4)

    assert [e["event_id"] for e in opened(asyncio.run(scenario()))] == [1, 2, 3, 4]


def test_without_keys_the_broker_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_KEYS", raising=False)

    async def scenario() -> None:
        config = EndpointConfig(url=HOST, type="rasa_runtime.event_broker.SealedPikaEventBroker", port=PORT,
                                username="guest", password="guest", queues=["never_made"])
        await EventBroker.create(config)

    with pytest.raises(ValueError, match="DATA_KEYS"):
        asyncio.run(scenario())
