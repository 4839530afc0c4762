"""The WeChat channels' store (channels/wechat_store.py) on SQLite and on the running Redis:
claims per (account, openid, MsgId), choices, failed turns, hand-offs, and the migration from version 1."""
from __future__ import annotations

import json
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from channels.wechat_store import Claim, Human, RedisClaims, Reply, SqliteClaims, citizen_key, message_key

OA, MINI = "wx00000000000000a1", "wx00000000000000b2"


def redis_store(prefix: str, **kw: Any) -> RedisClaims:
    store = RedisClaims("redis://127.0.0.1:6379/0", prefix=prefix, **kw)
    try:
        store.peek("ping")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis is needed for this test (127.0.0.1:6379): {exc}")
    return store


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        return SqliteClaims(str(tmp_path / "claims.db"))
    return redis_store(f"heze-test-{uuid.uuid4().hex}:")


def test_each_message_is_claimed_exactly_once(store: Any) -> None:
    key = message_key(OA, {"MsgId": "6969", "FromUserName": "o1"})
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: store.claim(key), range(32)))
    assert sum(r.state == "new" for r in results) == 1 and all(r.state in ("new", "pending") for r in results)
    store.finish(key, Reply(["您好", "第二段"]))
    assert store.claim(key) == store.peek(key) == Claim("done", Reply(["您好", "第二段"]))
    other = message_key(OA, {"FromUserName": "o1", "CreateTime": "1800000000", "Event": "subscribe"})
    assert other.startswith(f"{OA}/o1/evt:") and store.claim(other).state == "new"
    store.release(other)  # a failed turn gives its claim back: the next delivery may try again
    assert store.claim(other).state == "new"
    assert store.peek(message_key(OA, {"MsgId": "1", "FromUserName": "o1"})) is None


def test_a_msgid_is_another_message_for_another_citizen_or_account(store: Any) -> None:
    # Once keyed on MsgId alone: a second citizen got the first one's reply, and no turn.
    mine = message_key(OA, {"MsgId": "42", "FromUserName": "o1"})
    store.claim(mine)
    store.finish(mine, Reply(["您的身份证号……"]))
    assert store.claim(message_key(OA, {"MsgId": "42", "FromUserName": "o2"})).state == "new"
    assert store.claim(message_key(MINI, {"MsgId": "42", "FromUserName": "o1"})).state == "new"


def test_choices_and_failed_turns_are_kept_per_citizen_and_account(store: Any) -> None:
    assert store.choices(citizen_key(OA, "o1")) == []
    store.set_choices(citizen_key(OA, "o1"), ["/check_progress", "/pay_bill"])
    store.set_choices(citizen_key(MINI, "o1"), ["/greet"])
    assert store.choices(citizen_key(OA, "o1")) == ["/check_progress", "/pay_bill"]
    assert store.choices(citizen_key(MINI, "o1")) == ["/greet"]
    assert store.failed(OA) == []
    store.keep_failed(f"{OA}/o1/msg:1", {"sender": "o1", "text": "转人工", "metadata": {"channel": "wechat"}})
    store.keep_failed(f"{MINI}/m1/msg:1", {"sender": "m1", "text": "查工单", "metadata": {"channel": "miniprogram"}})
    assert [(k, t["text"]) for k, t in store.failed(OA)] == [(f"{OA}/o1/msg:1", "转人工")]
    assert [t["text"] for _, t in store.failed(MINI)] == ["查工单"]
    store.drop_failed(f"{OA}/o1/msg:1")
    assert store.failed(OA) == []


def test_hand_offs_until_handed_back_or_past_their_time(store: Any) -> None:
    import time

    now = time.time()
    store.hand_to_human(Human(OA, "o1", "wechat", "kf2001@heze", now - 10, now + 600))
    store.hand_to_human(Human(MINI, "m1", "miniprogram", "", now - 5, now + 600))
    store.hand_to_human(Human(OA, "o9", "wechat", "", now - 3600, now - 1))  # lapsed
    assert store.with_human(OA, "o1") == Human(OA, "o1", "wechat", "kf2001@heze", now - 10, now + 600)
    assert store.with_human(OA, "o9") is None and store.with_human(MINI, "o1") is None
    assert [(h.account, h.openid) for h in store.humans()] == [(OA, "o1"), (MINI, "m1")]
    assert store.hand_back(OA, "o1") and not store.hand_back(OA, "o1")
    assert store.with_human(OA, "o1") is None


def version_1_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE wechat_claims (key TEXT PRIMARY KEY, reply TEXT, created_at REAL NOT NULL)")
    db.execute("CREATE TABLE wechat_choices (sender TEXT PRIMARY KEY, payloads TEXT NOT NULL)")
    db.execute("CREATE TABLE wechat_failed (key TEXT PRIMARY KEY, turn TEXT NOT NULL, created_at REAL NOT NULL)")
    db.execute("INSERT INTO wechat_claims VALUES ('msg:42', '[\"您的身份证号……\"]', 1)")
    db.execute("INSERT INTO wechat_choices VALUES ('o1', '[\"/pay_bill\"]')")
    for key, sender, channel in (("msg:7", "o1", "wechat"), ("msg:8", "m1", "miniprogram")):
        turn = {"sender": sender, "text": "转人工", "metadata": {"channel": channel}}
        db.execute("INSERT INTO wechat_failed VALUES (?, ?, ?)", (key, json.dumps(turn), 9e9))
    db.commit()
    db.close()


def test_version_1_sqlite_is_migrated_as_each_channel_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "wechat.db"
    version_1_sqlite(path)
    store = SqliteClaims(str(path), account=OA, channel="wechat", clock=lambda: 1e9)
    # The claim keyed on MsgId alone is gone: it cannot say whose it was.
    assert store.claim(message_key(OA, {"MsgId": "42", "FromUserName": "o2"})).state == "new"
    assert store.choices("o1") == [] and store.choices(citizen_key(OA, "o1")) == []
    assert [k for k, _ in store.failed(OA)] == [f"{OA}/o1/msg:7"]  # the official account's, re-keyed
    assert store.failed(MINI) == []
    mini = SqliteClaims(str(path), account=MINI, channel="miniprogram", clock=lambda: 1e9)
    assert [k for k, _ in mini.failed(MINI)] == [f"{MINI}/m1/msg:8"]
    again = SqliteClaims(str(path), account=OA, channel="wechat", clock=lambda: 1e9)  # opening twice is harmless
    assert [k for k, _ in again.failed(OA)] == [f"{OA}/o1/msg:7"]


def test_version_1_redis_failed_turns_are_migrated() -> None:
    prefix = f"heze-test-{uuid.uuid4().hex}:"
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    for key, sender, channel in (("msg:7", "o1", "wechat"), ("msg:8", "m1", "miniprogram")):
        r.zadd(prefix + "failed", {key: 1.0e9})
        r.set(prefix + "failed:" + key, json.dumps({"sender": sender, "text": "转人工", "metadata": {"channel": channel}}))
    r.set(prefix + "msg:42", json.dumps(["您的身份证号……"]))  # a version-1 claim: never read again
    store = redis_store(prefix, account=OA, channel="wechat", clock=lambda: 1.0e9 + 1)
    assert [k for k, _ in store.failed(OA)] == [f"{OA}/o1/msg:7"]
    assert store.claim(message_key(OA, {"MsgId": "42", "FromUserName": "o2"})).state == "new"
    mini = redis_store(prefix, account=MINI, channel="miniprogram", clock=lambda: 1.0e9 + 1)
    assert [k for k, _ in mini.failed(MINI)] == [f"{MINI}/m1/msg:8"]
    assert r.zcard(prefix + "failed") == 2


def test_a_claim_is_held_and_kept_in_the_same_step_and_only_once(store: Any) -> None:
    key = "wxacct/o1/msg:9"
    kept = {"sender": "o1", "text": "查工单", "metadata": {}, "message_id": "wx1", "in_flight": True}
    assert store.claim(key, 10, kept).state == "new"
    assert store.claim(key, 10, {**kept, "text": "another"}).state == "pending"  # neither kept nor held again
    assert store.failed("wxacct") == [(key, kept)]
    assert store.lease(key, 10) is False  # the first caller holds it
    store.renew(key)
    store.unlease(key)
    assert store.lease(key, 10) is True


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_citizens_messages_in_flight_are_first_come_first_served(kind: str, tmp_path: Path) -> None:
    now = [1_800_000_000.0]

    def clock() -> float:
        return now[0]
    store: Any = (SqliteClaims(str(tmp_path / "claims.db"), clock=clock) if kind == "sqlite"
                  else redis_store(f"heze-test-{uuid.uuid4().hex}:", clock=clock))
    mine, theirs = citizen_key(OA, "o1"), citizen_key(OA, "o2")
    assert store.first_in_flight(mine) is None
    keys = [message_key(OA, {"MsgId": m, "FromUserName": "o1"}) for m in ("9", "10", "11")]  # "10" < "9" as text
    for key in keys:
        now[0] += 1
        store.claim(key, 10, {"sender": "o1", "text": "t", "metadata": {}, "in_flight": True})
    other = message_key(OA, {"MsgId": "1", "FromUserName": "o2"})
    store.claim(other, 10, {"sender": "o2", "text": "t", "metadata": {}, "in_flight": True})
    store.claim(message_key(OA, {"MsgId": "12", "FromUserName": "o1"}))  # no turn, nothing kept
    assert store.first_in_flight(mine) == keys[0] and store.first_in_flight(theirs) == other
    store.finish(keys[0], Reply(["答"]), True, True)  # answered
    assert store.first_in_flight(mine) == keys[1]
    store.keep_failed(keys[1], {"sender": "o1", "text": "t", "metadata": {}})  # failed: waits for a round, not in flight
    assert store.first_in_flight(mine) == keys[2]
    store.drop_failed(keys[2])
    assert store.first_in_flight(mine) is None and sorted(k for k, _ in store.failed(OA)) == sorted([keys[1], other])
    now[0] += 3 * 24 * 3600  # past the reply window: forgotten
    assert store.first_in_flight(theirs) is None
