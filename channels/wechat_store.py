"""Which WeChat messages have been taken, and their replies: WeChat delivers a message up to four
times (at 0, 5, 10 and 15 s) until it gets an answer; only the first delivery may start a Rasa turn.

``claim(key)`` is atomic: exactly one caller gets ``Claim("new")``; the others get ``"pending"``
until ``finish(key, reply)`` stores the reply, then ``"done"`` with it. SQLite by default (one file,
shared by Rasa's worker processes), Redis when configured. Messages whose turn failed (the action
server was down) are kept (``keep_failed``) until a later attempt answers them."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

# A message is kept this long: longer than WeChat's retries and the customer-service window's use.
KEEP_S = 2 * 24 * 3600


@dataclass(frozen=True)
class Claim:
    state: str  # "new" | "pending" | "done"
    reply: Optional[List[str]] = None


def message_key(msg: dict) -> str:
    """``MsgId`` for messages; events have none: sender + CreateTime (+ event and key)."""
    if msg.get("MsgId"):
        return f"msg:{msg['MsgId']}"
    return f"evt:{msg.get('FromUserName', '')}:{msg.get('CreateTime', '')}:{msg.get('Event', '')}:{msg.get('EventKey', '')}"


class SqliteClaims:
    def __init__(self, path: str, clock: Any = time.time) -> None:
        self._path = path
        self._clock = clock
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS wechat_claims (key TEXT PRIMARY KEY, reply TEXT, "
                       "created_at REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS wechat_choices (sender TEXT PRIMARY KEY, payloads TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS wechat_failed (key TEXT PRIMARY KEY, turn TEXT NOT NULL, "
                       "created_at REAL NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
        return db

    def claim(self, key: str) -> Claim:
        db = self._db()
        now = self._clock()
        inserted = db.execute("INSERT OR IGNORE INTO wechat_claims (key, reply, created_at) VALUES (?, NULL, ?)",
                              (key, now)).rowcount
        if inserted:
            if int(now) % 100 == 0:  # now and then, forget old messages
                db.execute("DELETE FROM wechat_claims WHERE created_at < ?", (now - KEEP_S,))
            return Claim("new")
        row = db.execute("SELECT reply FROM wechat_claims WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] is None:
            return Claim("pending")
        return Claim("done", json.loads(row[0]))

    def finish(self, key: str, reply: List[str]) -> None:
        self._db().execute("UPDATE wechat_claims SET reply = ? WHERE key = ?", (json.dumps(reply, ensure_ascii=False), key))

    def release(self, key: str) -> None:
        """Give a claim back (the turn failed before any reply), so a later delivery may try again."""
        self._db().execute("DELETE FROM wechat_claims WHERE key = ? AND reply IS NULL", (key,))

    def set_choices(self, sender: str, payloads: List[str]) -> None:
        """The payloads of the numbered choices last shown to a citizen ("回复数字选择")."""
        self._db().execute("INSERT OR REPLACE INTO wechat_choices (sender, payloads) VALUES (?, ?)",
                           (sender, json.dumps(payloads, ensure_ascii=False)))

    def choices(self, sender: str) -> List[str]:
        row = self._db().execute("SELECT payloads FROM wechat_choices WHERE sender = ?", (sender,)).fetchone()
        return list(json.loads(row[0])) if row else []

    def keep_failed(self, key: str, turn: Dict[str, Any]) -> None:
        """A message whose turn failed (the services were down), to be answered when they are back."""
        self._db().execute("INSERT OR REPLACE INTO wechat_failed (key, turn, created_at) VALUES (?, ?, ?)",
                           (key, json.dumps(turn, ensure_ascii=False), self._clock()))

    def failed(self) -> List[Tuple[str, Dict[str, Any]]]:
        """The failed turns still waiting, oldest first; ones past the reply window are dropped."""
        db = self._db()
        db.execute("DELETE FROM wechat_failed WHERE created_at < ?", (self._clock() - KEEP_S,))
        rows = db.execute("SELECT key, turn FROM wechat_failed ORDER BY created_at LIMIT 50").fetchall()
        return [(key, json.loads(turn)) for key, turn in rows]

    def drop_failed(self, key: str) -> None:
        self._db().execute("DELETE FROM wechat_failed WHERE key = ?", (key,))


class RedisClaims:
    def __init__(self, url: str, prefix: str = "heze:wechat:") -> None:
        import redis  # only where Redis is configured

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def claim(self, key: str) -> Claim:
        k = self._prefix + key
        if self._redis.set(k, "", nx=True, ex=KEEP_S):
            return Claim("new")
        value = self._redis.get(k)
        if not value:
            return Claim("pending")
        return Claim("done", json.loads(value))

    def finish(self, key: str, reply: List[str]) -> None:
        self._redis.set(self._prefix + key, json.dumps(reply, ensure_ascii=False), ex=KEEP_S)

    def release(self, key: str) -> None:
        k = self._prefix + key
        if self._redis.get(k) == b"":
            self._redis.delete(k)

    def set_choices(self, sender: str, payloads: List[str]) -> None:
        self._redis.set(self._prefix + "choices:" + sender, json.dumps(payloads, ensure_ascii=False), ex=KEEP_S)

    def choices(self, sender: str) -> List[str]:
        value = self._redis.get(self._prefix + "choices:" + sender)
        return list(json.loads(value)) if value else []

    def keep_failed(self, key: str, turn: Dict[str, Any]) -> None:
        self._redis.zadd(self._prefix + "failed", {key: time.time()})
        self._redis.set(self._prefix + "failed:" + key, json.dumps(turn, ensure_ascii=False), ex=KEEP_S)

    def failed(self) -> List[Tuple[str, Dict[str, Any]]]:
        self._redis.zremrangebyscore(self._prefix + "failed", 0, time.time() - KEEP_S)
        out = []
        for raw in self._redis.zrange(self._prefix + "failed", 0, 49):
            key = raw.decode()
            value = self._redis.get(self._prefix + "failed:" + key)
            if value:
                out.append((key, json.loads(value)))
        return out

    def drop_failed(self, key: str) -> None:
        self._redis.zrem(self._prefix + "failed", key)
        self._redis.delete(self._prefix + "failed:" + key)
