"""Rasa's pika event broker (RabbitMQ) with each message sealed, published in order after the commit.

Named in ``deploy/endpoints.yml`` as ``event_broker: type: rasa_runtime.event_broker.SealedPikaEventBroker``
(Rasa loads a broker class by its module path). The staff console reads the queue to keep its
conversation index in step in real time (console/feed.py).

What differs from stock ``PikaEventBroker``:

- **Sealed bodies.** A message holds events of a conversation (the citizen's words, numbers, slot
  values). RabbitMQ keeps persistent messages on disk, so each body is sealed with AES-256-GCM under
  ``DATA_KEYS`` (textnorm/sealing.py), as the tracker store's rows are. Without keys the broker
  refuses to start. Inside the seal each event is stock's body (``{"sender_id": ..., **event.as_dict()}``)
  plus ``event_id``, the event's row id in the tracker store.
- **One message per turn.** The events a turn wrote go out as one message, a JSON list of those
  bodies (stock's entry point ``publish`` still sends one event, a JSON object). A flow turn writes
  4-8 events, and each message cost the Rasa process about 0.3-0.4 ms of aio-pika's CPU and RabbitMQ a
  disk write and a confirm: in the production profile the broker was 13 % of the project Rasa's
  samples (bench/RESULTS.md). The console reads both shapes (console/feed.py ``open_events``).
- **Published after the commit, in order, not awaited by the turn.** ``HezeTrackerStore.save`` calls
  ``announce`` with the turn's new events once the rows are committed: the message joins this
  process's queue and the turn goes on. One sender task sends what is waiting in rounds, each round's
  confirms awaited together (at most ``publish_timeout_s``). So the queue never announces an event
  that is not on disk, and a process's messages enter the queue in the order they were written.
  (Until 2026-12-08 the turn waited for its message's confirm, which kept a conversation's turns in
  order across replicas too; under 50 paced conversations on the production endpoints that wait was
  most of a turn's time: a round of one message took 8-33 ms on a Rasa loop busy with other turns, and
  turns waited p50 180-340 ms for theirs, bench/RESULTS.md. The console already copes with a
  conversation's events out of order: it reads that conversation again from the tracker store.)
  ``publish_all`` queues a turn's events and waits for their confirm, for callers that need to know.
  Stock publishes before writing, from background tasks that may finish in any order.
- **Nothing dropped while RabbitMQ is away.** A publish that fails or times out keeps the event, and
  every later one not yet confirmed, in the unpublished queue (stock keeps only the failed one and
  sends later ones ahead of it); they are sent in order when the connection is back. ``close`` (a
  graceful stop) sends what is queued first, for up to 10 s. A message still in memory when the
  replica dies is lost to the queue: the console's backfill finds its events in the tracker store only
  if no later event of that conversation reached the console first (known gap: the console does not
  yet compare its counts with the tracker store's).
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
FLUSH_ROUND = 500  # messages sent before their confirms are awaited (each with publish_timeout_s)


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
        # Messages (an event, or a turn's list of events) kept while RabbitMQ is away; past this many the
        # oldest go (the console backfills them from the tracker store).
        self._unpublished_events: Deque[Any] = deque(maxlen=int(max_unpublished))
        self._waiting: Dict[int, "asyncio.Future[bool]"] = {}  # id of a caller's message -> its wake-up
        self._sender: Optional["asyncio.Task[None]"] = None
        self._again = False  # asked to send while a sender was running

    def _message(self, payload: Any, headers: Optional[Dict[Text, Text]]) -> aio_pika.Message:
        """``payload``: one event (stock's shape) or the list of a turn's events."""
        body = self.keyring.seal(json.dumps(payload), BROKER_CONTEXT)
        return aio_pika.Message(body.encode("ascii"), headers=cast(Any, headers), app_id=self.rasa_environment,
                                content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

    def publish(self, event: Dict[Text, Any], headers: Optional[Dict[Text, Text]] = None) -> None:
        """Stock's entry point (fire and forget), kept in order behind ``publish_all``."""
        self._keep(event)
        self._start_sending()

    def announce(self, events: List[Dict[Text, Any]]) -> None:
        """Queue ``events`` (a turn's, one message) behind any unsent ones; the sender task publishes them
        in order. Returns at once: the events are in the tracker store already, and a turn that waited
        for RabbitMQ's confirm waited for the Rasa loop's other turns too (the module's docstring)."""
        if not events:
            return
        self._keep(list(events))
        if self._connected():
            self._start_sending()

    async def publish_all(self, events: List[Dict[Text, Any]]) -> bool:
        """Queue ``events`` (a turn's, one message) behind any unsent ones and wait until RabbitMQ
        confirmed them; True when they went out, False when RabbitMQ is away or a publish failed (they
        are then kept and sent later, in order).

        The caller waits for its own message only: one sender task sends whatever is waiting, in rounds,
        and wakes each caller when the round holding its message is confirmed. (Before, each caller
        flushed under a lock until the queue was empty, so while other conversations kept writing, a
        turn also waited for the rounds of the turns that came after it, with no bound.)"""
        if not events:
            return True
        message: Any = list(events)
        self._keep(message)
        if not self._connected():
            return False
        done: asyncio.Future[bool] = self._loop.create_future()
        self._waiting[id(message)] = done
        self._start_sending()
        return await done

    async def flush(self) -> bool:
        """Send everything waiting; True when the queue was emptied (for stock's entry points and tests)."""
        self._start_sending()
        if self._sender is not None:
            await asyncio.shield(self._sender)
        return not self._unpublished_events

    async def close(self, flush_s: float = 10.0) -> None:
        """Send what is still queued (for up to ``flush_s``), then close: a turn no longer waits for its
        message, so at a graceful stop the last turns' messages may still be here. What cannot be sent
        is logged; its events are in the tracker store."""
        if self._unpublished_events and self._connected():
            try:
                await asyncio.wait_for(self.flush(), flush_s)
            except asyncio.TimeoutError:
                pass
        if self._unpublished_events:
            logger.warning("closing with %d event messages not published to RabbitMQ (their events are in the "
                           "tracker store)", len(self._unpublished_events))
        await super().close()

    def _keep(self, message: Any) -> None:
        """Queue ``message``; when the queue is full the oldest goes (its events are in the tracker store)
        and whoever waits for it is told False at once."""
        if len(self._unpublished_events) >= (self._unpublished_events.maxlen or 0):
            logger.warning("RabbitMQ unreachable and %d messages kept: the oldest are dropped from memory "
                           "(their events are in the tracker store)", len(self._unpublished_events))
            self._wake(id(self._unpublished_events.popleft()), False)
        self._unpublished_events.append(message)

    def _connected(self) -> bool:
        return not (self._exchange is None or self._connection is None or self._connection.is_closed)

    def _start_sending(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = self._loop.create_task(self._send())
        else:  # e.g. the connection came back while a round was failing: go again when it ends
            self._again = True

    async def _send(self) -> None:
        """Send the unpublished messages in order, confirmed by RabbitMQ; stop after a round with a failure.

        What is waiting goes out in rounds of up to ``FLUSH_ROUND`` messages, each round's confirms
        awaited together: RabbitMQ confirms a persistent message once it is on disk, and waiting for each
        before sending the next made every turn of every conversation in this process queue behind one
        confirm per event (600 events of 10 conversations: 0.75 s, now 0.23 s). One channel keeps the
        order of what is sent on it, and one round is in flight at a time. When one fails, the events of
        its round that were confirmed are done and the others are kept and sent later, after them: the
        console meets an event older than one it has and reads that conversation again from the tracker
        store (console/conversations.py). Every caller still waiting is then told False."""
        try:
            while self._unpublished_events:
                if not self._connected():
                    break
                batch = list(itertools.islice(self._unpublished_events, FLUSH_ROUND))
                results = await asyncio.gather(
                    *(asyncio.wait_for(self._exchange.publish(self._message(event, None), ""),
                                       self.publish_timeout_s) for event in batch), return_exceptions=True)
                failures = [r for r in results if isinstance(r, BaseException)]
                confirmed = {id(event) for event, r in zip(batch, results) if not isinstance(r, BaseException)}
                for key in confirmed:
                    self._wake(key, True)
                if not failures:  # the round is at the head (unless the full queue dropped some of it)
                    while self._unpublished_events and id(self._unpublished_events[0]) in confirmed:
                        self._unpublished_events.popleft()
                    continue
                kept = [event for event in self._unpublished_events if id(event) not in confirmed]
                self._unpublished_events.clear()
                self._unpublished_events.extend(kept)
                logger.warning("event message not published to RabbitMQ (%s); %d kept for later",
                               type(failures[0]).__name__, len(self._unpublished_events))
                break
        finally:
            for key in list(self._waiting):  # what is left was not confirmed: those turns go on (kept)
                self._wake(key, False)
            again, self._again = self._again, False
            if again and self._unpublished_events and self._connected():
                self._sender = self._loop.create_task(self._send())  # asked for mid-round: the backlog again

    def _wake(self, key: int, sent: bool) -> None:
        done = self._waiting.pop(key, None)
        if done is not None and not done.done():
            done.set_result(sent)

    def _publish_unpublished_messages(self, *_: Any, **__: Any) -> None:
        """Called by aio-pika when the connection is back: send what was kept, in order."""
        self._start_sending()
