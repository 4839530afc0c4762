"""What the WeChat channels remember between requests: which messages have been taken and their
replies, the numbered choices last offered, turns that failed and wait for the services, and which
citizens are with WeChat's human customer service.

WeChat delivers a message up to four times (at 0, 5, 10 and 15 s) until it gets an answer; only the
first delivery may start a Rasa turn. ``claim(key)`` is atomic: exactly one caller gets
``Claim("new")``; the others get ``"pending"`` until ``finish(key, reply)`` stores the reply, then
``"done"`` with it.

Everything is keyed per citizen of one account: ``MsgKey`` is (account appid, openid, MsgId), or for
events (account, openid, CreateTime, event, key). A message id is unique only within one account's
stream, and an openid only within one account: one citizen must never receive another's reply.

SQLite by default (one file, shared by Rasa's worker processes and read by the console), Redis when
configured. No Rasa imports: the console (Python 3.11) opens the same store to see and end hand-offs.

Version 1 of the store keyed claims on ``MsgId`` alone and choices on the openid alone. Opening it
migrates (``SqliteClaims(..., account=, channel=)``): failed turns, which name their citizen and channel,
move to their new keys as each channel opens the store; old claims and choices, which cannot be
attributed to an account, are dropped. That loses nothing a citizen could see: a claim only serves
WeChat's retries within 15 s of the first delivery, and the Rasa restart that brings the new version
takes longer than that; a dropped choice makes a bare number right after the upgrade read as text.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

# A message is kept this long: longer than WeChat's retries and the customer-service window's use.
KEEP_S = 2 * 24 * 3600
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Reply:
    """What a message was answered with: texts, and whether it was handed to WeChat's human service
    (``transfer`` is then the agent account, or "" for any agent)."""
    texts: List[str] = field(default_factory=list)
    transfer: Optional[str] = None

    def dump(self) -> str:
        return json.dumps({"texts": self.texts, "transfer": self.transfer}, ensure_ascii=False)

    @classmethod
    def load(cls, raw: Union[str, bytes]) -> "Reply":
        data = json.loads(raw)
        return cls([str(t) for t in data.get("texts") or []], data.get("transfer"))


@dataclass(frozen=True)
class Claim:
    state: str  # "new" | "pending" | "done"
    reply: Optional[Reply] = None


@dataclass(frozen=True)
class Human:
    """A citizen handed to WeChat's human customer service, until handed back or ``until``."""
    account: str
    openid: str
    channel: str
    kf_account: str
    since: float
    until: float


def citizen_key(account: str, openid: str) -> str:
    return f"{account}/{openid}"


def message_key(account: str, msg: Dict[str, str]) -> str:
    """(account, openid, ``MsgId``) for messages; events have none: (account, openid, CreateTime,
    event, event key). Account ids and openids hold no "/" (``wechat_protocol.check_message``)."""
    who = citizen_key(account, msg.get("FromUserName", ""))
    if msg.get("MsgId"):
        return f"{who}/msg:{msg['MsgId']}"
    return f"{who}/evt:{msg.get('CreateTime', '')}:{msg.get('Event', '')}:{msg.get('EventKey', '')}"


def message_token(key: str) -> str:
    """The message id Rasa records for a message (``UserUttered.message_id``): a hash of its key,
    which names the citizen's openid, so a message taken over can be found in the tracker."""
    return "wx" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:30]


def _v1_owner(turn: Dict[str, Any], channel: str) -> Optional[str]:
    """The openid of a version-1 failed turn that belongs to ``channel``, else None."""
    metadata = turn.get("metadata") or {}
    return str(turn.get("sender") or "") or None if metadata.get("channel") == channel else None


class SqliteClaims:
    def __init__(self, path: str, clock: Any = time.time, account: str = "", channel: str = "") -> None:
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
            db.execute("CREATE TABLE IF NOT EXISTS wechat_humans (citizen TEXT PRIMARY KEY, account TEXT NOT NULL, "
                       "openid TEXT NOT NULL, channel TEXT NOT NULL, kf_account TEXT NOT NULL, since REAL NOT NULL, "
                       "until REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS wechat_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._migrate(account, channel)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
        return db

    def _migrate(self, account: str, channel: str) -> None:
        """Version 1 → 2 (see the module's docstring). Keys of version 2 all hold a "/"."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT value FROM wechat_meta WHERE name = 'version'").fetchone() is None:
                db.execute("DELETE FROM wechat_claims WHERE instr(key, '/') = 0")
                db.execute("DELETE FROM wechat_choices WHERE instr(sender, '/') = 0")
                db.execute("INSERT INTO wechat_meta (name, value) VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            if account and channel:  # this channel's failed turns of version 1
                for key, turn, created in db.execute("SELECT key, turn, created_at FROM wechat_failed "
                                                     "WHERE instr(key, '/') = 0").fetchall():
                    openid = _v1_owner(json.loads(turn), channel)
                    if openid:
                        db.execute("DELETE FROM wechat_failed WHERE key = ?", (key,))
                        db.execute("INSERT OR REPLACE INTO wechat_failed (key, turn, created_at) VALUES (?, ?, ?)",
                                   (f"{citizen_key(account, openid)}/{key}", turn, created))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def claim(self, key: str, hold_s: float = 0, keep: Optional[Dict[str, Any]] = None) -> Claim:
        """Take a message (``Claim("new")``) or see how it stands. With ``hold_s`` a new claim is also
        leased to the caller, and with ``keep`` the message is kept (as ``keep_failed`` does) until it is
        answered, in the same transaction: a message is never taken without a holder and a record."""
        db = self._db()
        now = self._clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            inserted = db.execute("INSERT OR IGNORE INTO wechat_claims (key, reply, created_at) VALUES (?, NULL, ?)",
                                  (key, now)).rowcount
            if inserted and hold_s:
                db.execute("INSERT OR REPLACE INTO wechat_claims (key, reply, created_at) VALUES (?, NULL, ?)",
                           ("lease/" + key, now))
            if inserted and keep is not None:
                db.execute("INSERT OR REPLACE INTO wechat_failed (key, turn, created_at) VALUES (?, ?, ?)",
                           (key, json.dumps(keep, ensure_ascii=False), now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if inserted:
            if int(now) % 100 == 0:  # now and then, forget old messages
                db.execute("DELETE FROM wechat_claims WHERE created_at < ?", (now - KEEP_S,))
            return Claim("new")
        return self.peek(key) or Claim("pending")

    def peek(self, key: str) -> Optional[Claim]:
        """The claim of a message, without taking it: None when it was never claimed."""
        row = self._db().execute("SELECT reply FROM wechat_claims WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Claim("pending") if row[0] is None else Claim("done", Reply.load(row[0]))

    def finish(self, key: str, reply: Reply, unhold: bool = False, forget: bool = False) -> None:
        """Store a message's reply; in the same step end its holder's lease (``unhold``) and forget the
        kept message (``forget``): a worker that dies after this leaves nothing to take over."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE wechat_claims SET reply = ? WHERE key = ?", (reply.dump(), key))
            if unhold:
                db.execute("DELETE FROM wechat_claims WHERE key = ?", ("lease/" + key,))
            if forget:
                db.execute("DELETE FROM wechat_failed WHERE key = ?", (key,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def release(self, key: str) -> None:
        """Give a claim back (the turn failed before any reply), so a later delivery may try again."""
        self._db().execute("DELETE FROM wechat_claims WHERE key = ? AND reply IS NULL", (key,))

    def set_choices(self, citizen: str, payloads: List[str]) -> None:
        """The payloads of the numbered choices last shown to a citizen ("回复数字选择")."""
        self._db().execute("INSERT OR REPLACE INTO wechat_choices (sender, payloads) VALUES (?, ?)",
                           (citizen, json.dumps(payloads, ensure_ascii=False)))

    def choices(self, citizen: str) -> List[str]:
        row = self._db().execute("SELECT payloads FROM wechat_choices WHERE sender = ?", (citizen,)).fetchone()
        return list(json.loads(row[0])) if row else []

    def keep_failed(self, key: str, turn: Dict[str, Any]) -> None:
        """A message whose turn failed (the services were down), to be answered when they are back."""
        self._db().execute("INSERT OR REPLACE INTO wechat_failed (key, turn, created_at) VALUES (?, ?, ?)",
                           (key, json.dumps(turn, ensure_ascii=False), self._clock()))

    def failed(self, account: str) -> List[Tuple[str, Dict[str, Any]]]:
        """One account's failed turns still waiting, oldest first; ones past the reply window are dropped."""
        db = self._db()
        db.execute("DELETE FROM wechat_failed WHERE created_at < ?", (self._clock() - KEEP_S,))
        prefix = account + "/"
        rows = db.execute("SELECT key, turn FROM wechat_failed WHERE substr(key, 1, ?) = ? ORDER BY created_at "
                          "LIMIT 50", (len(prefix), prefix)).fetchall()
        return [(key, json.loads(turn)) for key, turn in rows]

    def drop_failed(self, key: str) -> None:
        self._db().execute("DELETE FROM wechat_failed WHERE key = ?", (key,))

    def first_in_flight(self, citizen: str) -> Optional[str]:
        """The key of the citizen's oldest message still being answered (taken with ``keep`` and
        neither answered nor kept as failed since), or None: a citizen's messages run in this order."""
        prefix = citizen + "/"
        row = self._db().execute("SELECT key FROM wechat_failed WHERE substr(key, 1, ?) = ? "
                                 "AND json_extract(turn, '$.in_flight') AND created_at > ? "
                                 "ORDER BY created_at, key LIMIT 1",
                                 (len(prefix), prefix, self._clock() - KEEP_S)).fetchone()
        return str(row[0]) if row else None

    def still_failed(self, key: str) -> bool:
        return self._db().execute("SELECT 1 FROM wechat_failed WHERE key = ?", (key,)).fetchone() is not None

    def lease(self, key: str, seconds: float) -> bool:
        """Take ``key`` for ``seconds`` (one worker runs a kept message again at a time); a lease
        older than that is taken over (its holder died)."""
        db, now = self._db(), self._clock()
        name = "lease/" + key
        if db.execute("INSERT OR IGNORE INTO wechat_claims (key, reply, created_at) VALUES (?, NULL, ?)",
                      (name, now)).rowcount:
            return True
        return bool(db.execute("UPDATE wechat_claims SET created_at = ? WHERE key = ? AND created_at < ?",
                               (now, name, now - seconds)).rowcount)

    def renew(self, key: str) -> None:
        """The holder of ``key``'s lease is still at work: its lease runs from now."""
        self._db().execute("UPDATE wechat_claims SET created_at = ? WHERE key = ?", (self._clock(), "lease/" + key))

    def unlease(self, key: str) -> None:
        self._db().execute("DELETE FROM wechat_claims WHERE key = ?", ("lease/" + key,))

    # -- citizens with WeChat's human customer service -----------------------------------------
    def hand_to_human(self, human: Human) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO wechat_humans (citizen, account, openid, channel, kf_account, since, until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (citizen_key(human.account, human.openid), human.account, human.openid,
                                             human.channel, human.kf_account, human.since, human.until))

    def with_human(self, account: str, openid: str) -> Optional[Human]:
        """The hand-off of a citizen still in effect (not handed back, not past ``until``), if any."""
        row = self._db().execute("SELECT account, openid, channel, kf_account, since, until FROM wechat_humans "
                                 "WHERE citizen = ? AND until > ?", (citizen_key(account, openid),
                                                                     self._clock())).fetchone()
        return Human(*row) if row else None

    def humans(self) -> List[Human]:
        """Everyone with a human now, longest waiting first (the console's list)."""
        rows = self._db().execute("SELECT account, openid, channel, kf_account, since, until FROM wechat_humans "
                                  "WHERE until > ? ORDER BY since", (self._clock(),)).fetchall()
        return [Human(*row) for row in rows]

    def hand_back(self, account: str, openid: str) -> bool:
        """The citizen is the bot's again. True when they were with a human."""
        return bool(self._db().execute("DELETE FROM wechat_humans WHERE citizen = ?",
                                       (citizen_key(account, openid),)).rowcount)


class RedisClaims:
    def __init__(self, url: str, prefix: str = "heze:wechat:", account: str = "", channel: str = "",
                 clock: Any = time.time) -> None:
        import redis  # only where Redis is configured

        self._redis: Any = redis.Redis.from_url(url)
        self._prefix = prefix
        self._clock = clock
        self._lease_ms: Dict[str, int] = {}  # leases this process holds, for renew
        if account and channel:
            self._migrate(account, channel)

    def _migrate(self, account: str, channel: str) -> None:
        """Version 1 → 2: this channel's failed turns move to their new keys. Version 1's claims
        (``msg:…``) and choices (``choices:<openid>``) are never read again and expire by themselves."""
        failed = self._prefix + "failed"
        for raw, score in self._redis.zrange(failed, 0, -1, withscores=True):
            old = raw.decode()
            if "/" in old:
                continue
            value = self._redis.get(self._prefix + "failed:" + old)
            openid = _v1_owner(json.loads(value), channel) if value else None
            if openid and self._redis.zrem(failed, old):  # one migrating process wins each
                new = f"{citizen_key(account, openid)}/{old}"
                self._redis.set(self._prefix + "failed:" + new, value, ex=KEEP_S)
                self._redis.zadd(failed, {new: score})
                self._redis.delete(self._prefix + "failed:" + old)

    # The claim, its holder's lease and the kept message in one step (a Lua script runs atomically).
    # A kept message also joins its citizen's queue of messages in flight (``first_in_flight``).
    _CLAIM = ("if redis.call('SET', KEYS[1], '', 'NX', 'EX', ARGV[1]) then "
              "if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end "
              "if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5]) "
              "redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[1]) "
              "redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5]) redis.call('EXPIRE', KEYS[5], ARGV[1]) end "
              "return 1 end return 0")

    def _in_flight(self, key: str) -> str:
        """The sorted set of the messages in flight of the citizen who sent ``key``."""
        return self._prefix + "inflight:" + key.rsplit("/", 1)[0]

    def claim(self, key: str, hold_s: float = 0, keep: Optional[Dict[str, Any]] = None) -> Claim:
        hold_ms = int(hold_s * 1000)
        kept = json.dumps(keep, ensure_ascii=False) if keep is not None else ""
        if self._redis.eval(self._CLAIM, 5, self._prefix + "claim:" + key, self._prefix + "lease:" + key,
                            self._prefix + "failed", self._prefix + "failed:" + key, self._in_flight(key),
                            KEEP_S, hold_ms, kept, self._clock(), key):
            if hold_ms:
                self._lease_ms[key] = hold_ms
            return Claim("new")
        return self.peek(key) or Claim("pending")

    def peek(self, key: str) -> Optional[Claim]:
        value = self._redis.get(self._prefix + "claim:" + key)
        if value is None:
            return None
        return Claim("done", Reply.load(value)) if value else Claim("pending")

    def finish(self, key: str, reply: Reply, unhold: bool = False, forget: bool = False) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._prefix + "claim:" + key, reply.dump(), ex=KEEP_S)
        if unhold:
            self._lease_ms.pop(key, None)
            pipe.delete(self._prefix + "lease:" + key)
        if forget:
            pipe.zrem(self._prefix + "failed", key)
            pipe.delete(self._prefix + "failed:" + key)
            pipe.zrem(self._in_flight(key), key)
        pipe.execute()

    def release(self, key: str) -> None:
        k = self._prefix + "claim:" + key
        if self._redis.get(k) == b"":
            self._redis.delete(k)

    def set_choices(self, citizen: str, payloads: List[str]) -> None:
        self._redis.set(self._prefix + "choices:" + citizen, json.dumps(payloads, ensure_ascii=False), ex=KEEP_S)

    def choices(self, citizen: str) -> List[str]:
        value = self._redis.get(self._prefix + "choices:" + citizen)
        return list(json.loads(value)) if value else []

    def keep_failed(self, key: str, turn: Dict[str, Any]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(self._prefix + "failed", {key: self._clock()})
        pipe.set(self._prefix + "failed:" + key, json.dumps(turn, ensure_ascii=False), ex=KEEP_S)
        if not turn.get("in_flight"):
            pipe.zrem(self._in_flight(key), key)
        pipe.execute()

    def failed(self, account: str) -> List[Tuple[str, Dict[str, Any]]]:
        self._redis.zremrangebyscore(self._prefix + "failed", 0, self._clock() - KEEP_S)
        out = []
        for raw in self._redis.zrange(self._prefix + "failed", 0, -1):
            key = raw.decode()
            if not key.startswith(account + "/"):
                continue
            value = self._redis.get(self._prefix + "failed:" + key)
            if value:
                out.append((key, json.loads(value)))
            if len(out) == 50:
                break
        return out

    def drop_failed(self, key: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._prefix + "failed", key)
        pipe.delete(self._prefix + "failed:" + key)
        pipe.zrem(self._in_flight(key), key)
        pipe.execute()

    def first_in_flight(self, citizen: str) -> Optional[str]:
        queue = self._prefix + "inflight:" + citizen
        self._redis.zremrangebyscore(queue, 0, self._clock() - KEEP_S)
        head = self._redis.zrange(queue, 0, 0)
        return head[0].decode() if head else None

    def still_failed(self, key: str) -> bool:
        return bool(self._redis.exists(self._prefix + "failed:" + key))

    def lease(self, key: str, seconds: float) -> bool:
        ok = bool(self._redis.set(self._prefix + "lease:" + key, "1", nx=True, px=max(1, int(seconds * 1000))))
        if ok:
            self._lease_ms[key] = max(1, int(seconds * 1000))
        return ok

    def renew(self, key: str) -> None:
        """The holder of ``key``'s lease is still at work: its lease runs from now."""
        self._redis.set(self._prefix + "lease:" + key, "1", xx=True, px=self._lease_ms.get(key, 10_000))

    def unlease(self, key: str) -> None:
        self._lease_ms.pop(key, None)
        self._redis.delete(self._prefix + "lease:" + key)

    def hand_to_human(self, human: Human) -> None:
        self._redis.hset(self._prefix + "humans", citizen_key(human.account, human.openid),
                         json.dumps(human.__dict__, ensure_ascii=False))

    def _human(self, raw: Optional[bytes]) -> Optional[Human]:
        if not raw:
            return None
        human = Human(**json.loads(raw))
        return human if human.until > self._clock() else None

    def with_human(self, account: str, openid: str) -> Optional[Human]:
        return self._human(self._redis.hget(self._prefix + "humans", citizen_key(account, openid)))

    def humans(self) -> List[Human]:
        found = [self._human(raw) for raw in self._redis.hvals(self._prefix + "humans")]
        return sorted((h for h in found if h), key=lambda h: h.since)

    def hand_back(self, account: str, openid: str) -> bool:
        return bool(self._redis.hdel(self._prefix + "humans", citizen_key(account, openid)))


Store = Union[SqliteClaims, RedisClaims]


def open_store(location: str, account: str = "", channel: str = "") -> Store:
    """The store at ``WECHAT_CLAIMS``: a ``redis://`` URL or a SQLite file."""
    if location.startswith(("redis://", "rediss://")):
        return RedisClaims(location, account=account, channel=channel)
    return SqliteClaims(location, account=account, channel=channel)
