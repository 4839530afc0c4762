"""rasa_runtime.lock_store against this machine's Redis: one message of a conversation at a time, first
come first served, across several replicas (store instances) taking tickets at the same moment; a
replica that dies lets go; a Redis that lost its data does not fail the waiting messages.

``replicas_at_once`` with stock's RedisLockStore in place of ours (2 replicas x 10 messages at once),
run three times on 2026-12-07: 3, 5 and 6 of the 20 turns ran while another held the lock
(bench/RESULTS.md); with ours, none."""
from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from typing import Any, List

import pytest
import redis
from rasa.core.lock_store import _create_from_endpoint_config
from rasa.utils.endpoints import EndpointConfig

from rasa_runtime.lock_store import QueueLockStore

HOST = os.environ.get("HEZE_TEST_REDIS_HOST", "127.0.0.1")
PORT = int(os.environ.get("HEZE_TEST_REDIS_PORT", "6379"))
DB = 3


def ours(**kwargs: Any) -> QueueLockStore:
    return QueueLockStore(host=HOST, port=PORT, db=DB, key_prefix="heze", **kwargs)


async def burst(stores: List[Any], conversation: str, n: int, turn_s: float = 0.02) -> dict:
    """``n`` messages of one conversation at once, spread over ``stores`` (replicas)."""
    holding, overlaps, order = 0, 0, []

    async def message(i: int) -> None:
        nonlocal holding, overlaps
        async with stores[i % len(stores)].lock(conversation):
            holding += 1
            overlaps += holding > 1
            order.append(i)
            await asyncio.sleep(turn_s)
            holding -= 1

    started = time.monotonic()
    results = await asyncio.gather(*(message(i) for i in range(n)), return_exceptions=True)
    return {"overlaps": overlaps, "served": len(order), "failed": sum(isinstance(r, Exception) for r in results),
            "seconds": time.monotonic() - started, "order": order}


def test_one_message_at_a_time_in_the_order_the_tickets_were_taken() -> None:
    stores = [ours(), ours()]
    result = asyncio.run(burst(stores, "c-" + uuid.uuid4().hex, 20))
    assert result["overlaps"] == 0 and result["served"] == 20 and result["failed"] == 0
    assert result["order"] == list(range(20))  # gather starts them in order: tickets 1..20
    assert result["seconds"] < 5  # waiters are not parked a second at a time (stock polls every 1 s)


def replicas_at_once(make_store: Any, n: int = 2, each: int = 10) -> dict:
    """``n`` replicas (threads, one event loop each: stock's Redis calls do not yield, so asyncio alone
    would serialise them) sending ``each`` messages of one conversation at the same moment."""
    conversation = "c-" + uuid.uuid4().hex
    shared = {"holding": 0, "overlaps": 0, "served": 0, "failed": 0}
    guard = threading.Lock()

    def replica() -> None:
        store = make_store()

        async def message() -> None:
            async with store.lock(conversation):
                with guard:
                    shared["holding"] += 1
                    shared["overlaps"] += shared["holding"] > 1
                await asyncio.sleep(0.02)
                with guard:
                    shared["holding"] -= 1
                    shared["served"] += 1

        async def burst_() -> None:
            results = await asyncio.gather(*(message() for _ in range(each)), return_exceptions=True)
            with guard:
                shared["failed"] += sum(isinstance(r, Exception) for r in results)

        asyncio.run(burst_())

    threads = [threading.Thread(target=replica) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return shared


def test_replicas_taking_tickets_at_the_same_moment_never_hold_the_lock_together() -> None:
    result = replicas_at_once(ours)
    assert result == {"holding": 0, "overlaps": 0, "served": 20, "failed": 0}


def test_a_replica_that_dies_holding_the_lock_lets_go_within_the_ticket_time() -> None:
    conversation = "c-" + uuid.uuid4().hex
    dead, alive = ours(ticket_s=1.0), ours(ticket_s=1.0)
    dead.issue(conversation)  # took the lock, then died: no renewal, no release

    async def scenario() -> float:
        started = time.monotonic()
        async with alive.lock(conversation):
            return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert 0.5 < waited < 3


def test_a_long_turn_keeps_its_lock_past_the_ticket_time() -> None:
    conversation = "c-" + uuid.uuid4().hex
    a, b = ours(ticket_s=0.6), ours(ticket_s=0.6)

    async def scenario() -> dict:
        return await burst([a, b], conversation, 3, turn_s=1.5)  # each turn longer than a ticket lives

    result = asyncio.run(scenario())
    assert result["overlaps"] == 0 and result["served"] == 3


def test_waiting_messages_survive_redis_losing_its_data() -> None:
    conversation = "c-" + uuid.uuid4().hex
    stores = [ours(), ours()]

    async def scenario() -> dict:
        async def wipe() -> None:
            await asyncio.sleep(0.05)
            redis.Redis(host=HOST, port=PORT, db=DB).flushdb()  # what a restart without persistence leaves

        result, _ = await asyncio.gather(burst(stores, conversation, 10, turn_s=0.02), wipe())
        return result

    result = asyncio.run(scenario())
    assert result["served"] == 10 and result["failed"] == 0


def test_rasa_builds_it_from_the_endpoints() -> None:
    config = EndpointConfig(url=HOST, type="rasa_runtime.lock_store.QueueLockStore", port=PORT, db=DB,
                            key_prefix="heze", ticket_s=7)
    store = _create_from_endpoint_config(config)
    assert isinstance(store, QueueLockStore) and store.ticket_ms == 7000
    assert store.key_prefix.startswith("heze:")
