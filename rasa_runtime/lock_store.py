"""Rasa's Redis lock store with its ticket queue kept atomically by Redis.

Rasa processes one message of a conversation at a time: each message takes a ticket and waits until
its ticket is served. Stock ``RedisLockStore`` keeps a conversation's tickets as one JSON value that
every replica reads, changes and writes back (issuing a ticket, serving one, dropping expired ones,
deleting the lock when nobody waits). Two replicas doing that at once overwrite each other: two
messages get the same ticket and run together, or a ticket disappears. Measured in the scale-out test
with 20 messages of one citizen sent at once over two replicas: turns ran together and the last
answer came after 17.6 s (stock waiters poll once a second).

``QueueLockStore`` keeps the same contract (``lock(conversation_id)`` as an async context manager;
Rasa calls nothing else) with Redis doing each step atomically:

- a ticket is ``INCR`` of the conversation's counter, so tickets are unique and in arrival order;
- the queue is a sorted set of ticket numbers, with each ticket's expiry in a hash beside it; the
  ticket at the head holds the lock; a Lua script drops expired tickets at the head and tells a
  waiter whether it is now the head, in one step;
- a ticket is alive while its process is: the holder and every waiter renew their own ticket (every
  third of ``ticket_s``), so a turn may take as long as it needs, and a replica that dies lets its
  conversations go within ``ticket_s`` (stock: ``TICKET_LOCK_LIFETIME``, 60 s, however long the turn);
- waiters poll every 10 ms, backing off to 100 ms (stock: 1 s).

Times are Redis's own (``TIME`` inside the scripts), so replicas' clocks do not matter. If Redis loses
its data (a restart without persistence), a waiter whose ticket is gone takes a new one at the back
of the queue rather than fail the message.

Named in ``deploy/endpoints.yml`` as ``lock_store: type: rasa_runtime.lock_store.QueueLockStore``.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, Optional, Text

from rasa.core.lock import TicketLock
from rasa.core.lock_store import RedisLockStore
from rasa.utils.endpoints import EndpointConfig

logger = logging.getLogger(__name__)

KEY_TTL_S = 3600  # a conversation's lock keys are dropped this long after its last message

# KEYS: counter, queue (zset ticket->ticket), expiries (hash ticket->ms); ARGV: ticket_ms, key_ttl_s
_ISSUE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ticket = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], ticket, ticket)
redis.call('HSET', KEYS[3], ticket, now + tonumber(ARGV[1]))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return ticket
"""

# KEYS: queue, expiries; ARGV: ticket, ticket_ms. Returns 1 (holds the lock), 0 (waits), -1 (ticket gone).
_POLL = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local head = redis.call('ZRANGE', KEYS[1], 0, 0)
while head[1] do
  local expires = tonumber(redis.call('HGET', KEYS[2], head[1]) or '0')
  if expires >= now then break end
  redis.call('ZREM', KEYS[1], head[1])
  redis.call('HDEL', KEYS[2], head[1])
  head = redis.call('ZRANGE', KEYS[1], 0, 0)
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2]))
if head[1] == ARGV[1] then return 1 end
return 0
"""

# KEYS: expiries; ARGV: ticket, ticket_ms
_RENEW = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]))
return 1
"""


class QueueLockStore(RedisLockStore):
    """``RedisLockStore`` whose ticket queue Redis keeps atomically; tickets renewed while alive."""

    def __init__(self, host: Text = "localhost", port: int = 6379, db: int = 1, ticket_s: float = 10.0,
                 poll_s: float = 0.01, max_poll_s: float = 0.1, endpoint_config: Optional[EndpointConfig] = None,
                 **kwargs: Any) -> None:
        """Rasa builds a lock store named by its module path with ``endpoint_config=`` alone."""
        if endpoint_config is not None:
            options = dict(endpoint_config.kwargs)
            host = endpoint_config.url or host
            port, db = int(options.pop("port", port)), int(options.pop("db", db))
            ticket_s = float(options.pop("ticket_s", ticket_s))
            kwargs = {**options, **kwargs}
        super().__init__(host=host, port=port, db=db, **kwargs)
        self.ticket_ms = int(float(ticket_s) * 1000)
        self.poll_s, self.max_poll_s = float(poll_s), float(max_poll_s)
        self._issue = self.red.register_script(_ISSUE)
        self._poll = self.red.register_script(_POLL)
        self._renew = self.red.register_script(_RENEW)

    def _keys(self, conversation_id: Text) -> tuple[str, str, str]:
        base = self.key_prefix + conversation_id
        return base + ":next", base + ":queue", base + ":expires"

    def issue(self, conversation_id: Text) -> int:
        return int(self._issue(keys=list(self._keys(conversation_id)), args=[self.ticket_ms, KEY_TTL_S]))

    @asynccontextmanager
    async def lock(self, conversation_id: Text, lock_lifetime: float = 0,
                   wait_time_in_seconds: float = 0) -> AsyncGenerator[TicketLock, None]:
        """Hold the conversation's lock for the block; waits its turn, first come first served.
        ``lock_lifetime`` and ``wait_time_in_seconds`` (stock's) are not used: see ``ticket_s``."""
        _, queue, expires = self._keys(conversation_id)
        ticket = self.issue(conversation_id)
        renewing = asyncio.ensure_future(self._keep_alive(expires, ticket))
        try:
            pause = self.poll_s
            while True:
                state = int(self._poll(keys=[queue, expires], args=[ticket, self.ticket_ms]))
                if state == 1:
                    break
                if state == -1:  # Redis lost it (a restart): queue again rather than fail the message
                    logger.warning("lock ticket of a conversation vanished from Redis; queuing again")
                    ticket = self.issue(conversation_id)
                    renewing.cancel()
                    renewing = asyncio.ensure_future(self._keep_alive(expires, ticket))
                    continue
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, self.max_poll_s)
            yield TicketLock(conversation_id)
        finally:
            renewing.cancel()
            self._release(queue, expires, ticket)

    async def _keep_alive(self, expires: str, ticket: int) -> None:
        while True:
            await asyncio.sleep(self.ticket_ms / 3000)
            try:
                self._renew(keys=[expires], args=[ticket, self.ticket_ms])
            except Exception as e:  # noqa: BLE001 - Redis away: the ticket may lapse, others then go first
                logger.warning("lock ticket not renewed: %s", type(e).__name__)

    def _release(self, queue: str, expires: str, ticket: Optional[int]) -> None:
        try:
            pipe = self.red.pipeline(transaction=True)
            pipe.zrem(queue, ticket)
            pipe.hdel(expires, ticket)
            pipe.execute()
        except Exception as e:  # noqa: BLE001 - the ticket lapses by itself within ticket_s
            logger.warning("lock ticket not released: %s", type(e).__name__)
