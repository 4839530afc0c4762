"""Rasa's pika event broker (RabbitMQ) with each message sealed, published in order after the commit.

Named in ``deploy/endpoints.yml`` as ``event_broker: type: rasa_runtime.event_broker.SealedPikaEventBroker``
(Rasa loads a broker class by its module path). The staff console reads the queue to keep its
conversation index in step in real time (console/feed.py).

What differs from stock ``PikaEventBroker``:

- **Sealed bodies.** A message is an event of a conversation (the citizen's words, numbers, slot
  values). RabbitMQ keeps persistent messages on disk, so each body is sealed with AES-256-GCM under
  ``DATA_KEYS`` (textnorm/sealing.py), as the tracker store's rows are. Without keys the broker
  refuses to start. Inside the seal the body is stock's (``{"sender_id": ..., **event.as_dict()}``)
  plus ``event_id``, the event's row id in the tracker store.
- **Published after the commit, in order, awaited.** ``HezeTrackerStore.save`` calls ``publish_all``
  for each new event once the rows are committed, and waits for RabbitMQ's confirm (at most
  ``publish_timeout_s``; the events waiting in this process go out together) before the turn ends and
  the conversation's lock is released. So the queue never announces an event that is not on disk, and,
  unless a publish fails, a conversation's events enter the queue in the order they were written,
  whichever replica wrote them. Stock publishes before writing, from background tasks that may finish
  in any order.
- **Nothing dropped while RabbitMQ is away.** A publish that fails or times out keeps the event, and
  every later one not yet confirmed, in the unpublished queue (stock keeps only the failed one and
  sends later ones ahead of it); they are sent in order when the connection is back. An event kept in
  memory is lost if the replica dies before RabbitMQ returns: the console's index then gets it from
  the tracker store (its backfill), not from the queue.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Text, cast

import aio_pika
from rasa.core.brokers.pika import PikaEventBroker

from textnorm.sealing import BROKER_CONTEXT, Keyring

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "heze_events"
FLUSH_ROUND = 500  # events sent before their confirms are awaited (each with publish_timeout_s)


class SealedPikaEventBroker(PikaEventBroker):
    """``PikaEventBroker`` whose message bodies are sealed and whose events keep their order."""

    def __init__(self, host: Text, username: Text, password: Text, keys: Optional[Text] = None,
                 publish_timeout_s: float = 2.0, max_unpublished: int = 100_000, **kwargs: Any) -> None:
        self.keyring = Keyring.parse(keys if keys is not None else os.environ.get("DATA_KEYS", ""))
        if not self.keyring:
            raise ValueError("DATA_KEYS is not set: the event broker's messages hold personal data and are "
                             "encrypted (python -m textnorm.sealing new-key makes a key)")
        kwargs.setdefault("queues", [DEFAULT_QUEUE])
        super().__init__(host, username, password, **kwargs)
        self.publish_timeout_s = float(publish_timeout_s)
        # Kept while RabbitMQ is away; past this many the oldest go (the console backfills them).
        self._unpublished_events: Deque[Dict[Text, Any]] = deque(maxlen=int(max_unpublished))
        self._flushing = asyncio.Lock()

    def _message(self, event: Dict[Text, Any], headers: Optional[Dict[Text, Text]]) -> aio_pika.Message:
        body = self.keyring.seal(json.dumps(event), BROKER_CONTEXT)
        return aio_pika.Message(body.encode("ascii"), headers=cast(Any, headers), app_id=self.rasa_environment,
                                content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

    def publish(self, event: Dict[Text, Any], headers: Optional[Dict[Text, Text]] = None) -> None:
        """Stock's entry point (fire and forget), kept in order behind ``publish_all``."""
        self._unpublished_events.append(event)
        task = self._loop.create_task(self.flush())
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    async def publish_all(self, events: List[Dict[Text, Any]]) -> bool:
        """Queue ``events`` behind any unsent ones and send them all, in order; True when all went out."""
        if len(self._unpublished_events) + len(events) > (self._unpublished_events.maxlen or 0):
            logger.warning("RabbitMQ unreachable and %d events kept: the oldest are dropped from memory "
                           "(they are in the tracker store)", len(self._unpublished_events))
        self._unpublished_events.extend(events)
        return await self.flush()

    async def flush(self) -> bool:
        """Send the unpublished events in order, confirmed by RabbitMQ; stop after a round with a failure.

        What is waiting goes out in rounds of up to ``FLUSH_ROUND`` events, each round's confirms
        awaited together: RabbitMQ confirms a persistent message once it is on disk, and waiting for each
        before sending the next made every turn of every conversation in this process queue behind one
        confirm per event (600 events of 10 conversations: 0.75 s, now 0.23 s). One channel keeps the
        order of what is sent on it. When one fails, the events of its round that were confirmed are
        done and the others are kept and sent later, after them: the console meets an event older
        than one it has and reads that conversation again from the tracker store (console/conversations.py)."""
        async with self._flushing:
            while self._unpublished_events:
                if self._exchange is None or self._connection is None or self._connection.is_closed:
                    return False
                batch = list(itertools.islice(self._unpublished_events, FLUSH_ROUND))
                results = await asyncio.gather(
                    *(asyncio.wait_for(self._exchange.publish(self._message(event, None), ""), self.publish_timeout_s)
                      for event in batch), return_exceptions=True)
                failures = [r for r in results if isinstance(r, BaseException)]
                confirmed = {id(event) for event, r in zip(batch, results) if not isinstance(r, BaseException)}
                if not failures:
                    for _ in batch:  # the round is the head of the deque: appends go to its other end
                        self._unpublished_events.popleft()
                    continue
                kept = [event for event in self._unpublished_events if id(event) not in confirmed]
                self._unpublished_events.clear()
                self._unpublished_events.extend(kept)
                logger.warning("event not published to RabbitMQ (%s); %d kept for later",
                               type(failures[0]).__name__, len(self._unpublished_events))
                return False
            return True

    def _publish_unpublished_messages(self, *_: Any, **__: Any) -> None:
        """Called by aio-pika when the connection is back: send what was kept, in order."""
        task = self._loop.create_task(self.flush())
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)
