"""The conversation index fed in real time from the event broker (RabbitMQ; deploy/endpoints.yml).

Rasa publishes the committed events of every conversation, sealed, each with its tracker-store row id,
a turn's events in one message (rasa_runtime/event_broker.py). The console consumes the durable queue:
a batch of messages is opened, applied to the index in one transaction (``ConversationIndex.apply_events``: an event the index has is
not counted again) and only then acknowledged, so a console that stops or crashes mid-batch gets the
messages again and loses none; while it is down RabbitMQ keeps them (durable queue, persistent
messages). The tracker store is still read, slowly, to backfill: conversations from before the broker,
and events a replica could not publish before it died.

A message that does not open with ``DATA_KEYS`` or is not events is not dropped: it is moved to the
queue ``<queue>.unreadable`` (for an administrator: a wrong key, another publisher) and acknowledged.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from console.conversations import ConversationIndex
from textnorm.sealing import BROKER_CONTEXT, PREFIX, Keyring, SealedValueError

logger = logging.getLogger(__name__)


def open_events(body: bytes, keyring: Keyring) -> list[dict[str, Any]]:
    """The events a message body seals: one (stock's shape, a JSON object) or a turn's (a JSON list,
    rasa_runtime/event_broker.py); ValueError when it is not sealed events of ours."""
    text = body.decode("ascii")
    if not text.startswith(PREFIX):
        raise ValueError("not sealed")
    try:
        payload = json.loads(keyring.open(text, BROKER_CONTEXT))
    except SealedValueError as e:
        raise ValueError(f"does not open: {e}") from e
    events = payload if isinstance(payload, list) else [payload]
    if not events or not all(isinstance(event, dict) and isinstance(event.get("sender_id"), str)
                             and isinstance(event.get("event"), str) and isinstance(event.get("event_id"), int)
                             for event in events):
        raise ValueError("not events with sender_id, event and event_id")
    return events


class EventFeed:
    """Consumes the broker's queue into the index until cancelled; reconnects by itself."""

    def __init__(self, url: str, exchange: str, queue: str, index: ConversationIndex, lock: asyncio.Lock,
                 batch: int = 200, retry_s: float = 2.0) -> None:
        self.url, self.exchange, self.queue, self.index, self.lock = url, exchange, queue, index, lock
        self.batch, self.retry_s = batch, retry_s
        self.connected = False
        self.counts = {"received": 0, "applied": 0, "unreadable": 0}

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - RabbitMQ or the database away: try again
                self.connected = False
                if not failing:
                    logger.warning("event feed interrupted (%s: %s); retrying every %.0f s",
                                   type(e).__name__, e, self.retry_s)
                failing = True
                await asyncio.sleep(self.retry_s)
            else:
                failing = False

    async def _consume(self) -> None:
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.batch)
            # Declared as Rasa declares them (a fanout exchange, not durable; a durable queue), so events
            # are kept even when the console starts first.
            exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.FANOUT)
            queue = await channel.declare_queue(self.queue, durable=True)
            await queue.bind(exchange, "")
            await channel.declare_queue(f"{self.queue}.unreadable", durable=True)
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_close(*_: Any) -> None:
                if not closed.done():
                    closed.set_result(None)
            connection.close_callbacks.add(on_close)
            await queue.consume(inbox.put)
            self.connected = True
            logger.info("event feed: consuming %s", self.queue)
            while True:
                getter = asyncio.ensure_future(inbox.get())
                waiting: set[asyncio.Future[Any]] = {getter, closed}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    raise ConnectionError("RabbitMQ connection closed")
                batch = [getter.result()]
                await asyncio.sleep(0)  # let the prefetched messages land, then take them together
                while len(batch) < self.batch and not inbox.empty():
                    batch.append(inbox.get_nowait())
                await self._handle(channel, batch)

    async def _handle(self, channel: aio_pika.abc.AbstractChannel, batch: list[AbstractIncomingMessage]) -> None:
        events, unreadable = [], []
        for message in batch:
            try:
                events.extend(open_events(message.body, self.index.keyring))
            except (ValueError, UnicodeDecodeError) as e:
                logger.error("event-broker message %s moved to %s.unreadable: %s",
                             message.delivery_tag, self.queue, e)
                unreadable.append(message)
        async with self.lock:  # one writer of the index at a time (the tracker-store backfill too)
            applied = await asyncio.to_thread(self.index.apply_events, events)
        for message in unreadable:
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=f"{self.queue}.unreadable")
        await batch[-1].ack(multiple=True)  # after the commit: a crash before here redelivers the batch
        self.counts["received"] += len(batch)
        self.counts["applied"] += applied
        self.counts["unreadable"] += len(unreadable)
