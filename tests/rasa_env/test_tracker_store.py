"""rasa_runtime.tracker_store: with no keys, what is on disk is what stock Rasa writes and reads; with
keys, every row's event is sealed and nothing personal is on disk in clear; the kept tracker is used
only while the database agrees with it; the window keeps the conversation's state."""
from __future__ import annotations

import asyncio
import threading
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import sqlalchemy as sa
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import (ActionExecuted, ActiveLoop, BotUttered, Event, SessionStarted, SlotSet,
                                     UserUttered)
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity

from rasa_runtime.tracker_store import HezeTrackerStore, windowed
from textnorm.sealing import Keyring, SealedValueError, new_key

KEY1, KEY2 = new_key(), new_key()
KEYS = f"k1:{KEY1}"

Clock = Iterator[float]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Collecting(EventBroker):
    def __init__(self) -> None:
        self.published: List[dict] = []

    def publish(self, event: dict) -> None:
        self.published.append(event)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "tracker.db")


def store(domain: Any, db: str, **kwargs: Any) -> HezeTrackerStore:
    kwargs.setdefault("keys", KEYS)
    return HezeTrackerStore(domain=domain, dialect="sqlite", db=db, **kwargs)


def clear_store(domain: Any, db: str, **kwargs: Any) -> HezeTrackerStore:
    return HezeTrackerStore(domain=domain, dialect="sqlite", db=db, keys="", in_clear=True, **kwargs)


def stock(domain: Any, db: str) -> SQLTrackerStore:
    return SQLTrackerStore(domain=domain, dialect="sqlite", db=db)


class FromDisk:
    """Stock's read of the latest session (every event from its SessionStarted on), rows opened."""

    def __init__(self, domain: Any, db: str, keys: str = KEYS) -> None:
        self.store = store(domain, db, keys=keys)

    async def retrieve(self, sender: str) -> DialogueStateTracker:
        return await self.store._retrieve(sender, fetch_events_from_all_sessions=False)


class Talk:
    """Builds turns as Rasa's processor appends them: listen, user, actions, bot messages, slots."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def at(self) -> float:
        self.t += 1.0
        return self.t

    def turn(self, text: str, intent: str, *after: Event) -> List[Event]:
        events: List[Event] = [
            UserUttered(text, {"name": intent, "confidence": 0.97},
                        [{"entity": "bill_type", "value": "water", "start": 0, "end": 1}] if intent == "pay_bill" else [],
                        parse_data={"intent": {"name": intent, "confidence": 0.97}, "entities": [], "text": text},
                        timestamp=self.at())]
        for event in after:
            event.timestamp = self.at()
            events.append(event)
        events.append(ActionExecuted("action_listen", timestamp=self.at()))
        return events

    def start(self) -> List[Event]:
        return [ActionExecuted("action_session_start", timestamp=self.at()), SessionStarted(timestamp=self.at()),
                ActionExecuted("action_listen", timestamp=self.at())]

    def greeting(self, n: int) -> List[Event]:
        return self.turn(f"你好{n}", "greet", ActionExecuted("utter_greet"), BotUttered("您好！", {}))

    def bill(self) -> List[Event]:
        """A bill form over three turns: opened, account given, declined (a form active in between)."""
        return (self.turn("交水费", "pay_bill", ActionExecuted("bill_form"), ActiveLoop("bill_form"),
                          SlotSet("bill_type", "water"), SlotSet("requested_slot", "bill_account"),
                          BotUttered("请说户号。", {}))
                + self.turn("1000000002", "inform", ActionExecuted("bill_form"), SlotSet("bill_account", "1000000002"),
                            SlotSet("requested_slot", "bill_confirm"), BotUttered("水费58.30元，交吗？", {}))
                + self.turn("先不交", "deny", ActionExecuted("bill_form"), ActiveLoop(None),
                            SlotSet("requested_slot", None), ActionExecuted("action_answer_bill"),
                            SlotSet("bill_type", None), SlotSet("bill_account", None), SlotSet("awaiting_rating", "bills"),
                            BotUttered("好的，不交了。", {})))


def play(s: HezeTrackerStore, sender: str, turns: List[List[Event]]) -> DialogueStateTracker:
    """Each list of events is one message: retrieve (or create), update, save."""
    tracker = None
    for events in turns:
        tracker = run(s.get_or_create_tracker(sender, append_action_listen=False))
        for event in events:
            tracker.update(event)
        run(s.save(tracker))
    assert tracker is not None
    return tracker


def dumped(tracker: DialogueStateTracker) -> List[dict]:
    return [e.as_dict() for e in tracker.events]


def test_rows_are_what_stock_reads_back(domain: Any, db: str) -> None:
    talk = Talk()
    ours = clear_store(domain, db)
    turns = [talk.start() + talk.greeting(1)] + [talk.bill()] + [talk.greeting(2)]
    tracker = play(ours, "a", turns)
    back = run(stock(domain, db).retrieve("a"))
    # stock reads the session from its SessionStarted on (action_session_start, just before it, stays on disk)
    assert dumped(back) == [e.as_dict() for t in turns for e in t][1:]
    assert dumped(back) == dumped(run(clear_store(domain, db).retrieve("a")))
    assert back.current_state(EventVerbosity.NONE) == tracker.current_state(EventVerbosity.NONE)
    assert dumped(tracker) == dumped(back)  # the kept tracker is what stock would read
    with ours.session_scope() as session:  # stock's columns filled the same way
        rows = session.query(ours.SQLEvent).filter(ours.SQLEvent.sender_id == "a").all()
    user = next(r for r in rows if r.type_name == "user")
    assert user.intent_name == "greet" and json.loads(user.data)["text"] == "你好1"
    assert {r.action_name for r in rows if r.type_name == "action"} >= {"utter_greet", "bill_form", "action_listen"}


def test_stock_rows_are_read_and_continued_sealed(domain: Any, db: str) -> None:
    """Rows written in clear before encryption was turned on are read; what follows is sealed."""
    talk = Talk()
    old = stock(domain, db)
    t = old.init_tracker("b")
    for event in talk.start() + talk.greeting(1):
        t.update(event)
    run(old.save(t))
    ours = store(domain, db)
    tracker = play(ours, "b", [talk.greeting(2)])
    on_disk = FromDisk(domain, db)
    assert [e["text"] for e in dumped(run(on_disk.retrieve("b"))) if e["event"] == "user"] == ["你好1", "你好2"]
    assert ours.counts["read"] == 1 and dumped(tracker) == dumped(run(on_disk.retrieve("b")))
    with ours.session_scope() as session:
        data = [r.data for r in session.query(ours.SQLEvent).filter(ours.SQLEvent.sender_id == "b").order_by(ours.SQLEvent.id)]
    assert not any(d.startswith("s1:") for d in data[:len(talk.start() + talk.greeting(1))])
    assert all(d.startswith("s1:k1:") for d in data[len(talk.start() + talk.greeting(1)):])


PERSONAL = ["13800000001", "370102199001011234", "6222020200112233445"]


def test_nothing_personal_is_on_disk_in_clear(domain: Any, db: str) -> None:
    """User text, entities, slot values, metadata and the bot's words are sealed; the database file
    (and its WAL) holds none of the numbers; the store reads them back whole."""
    talk = Talk()
    ours = store(domain, db)
    turns = [talk.start() + talk.turn(f"我的电话{PERSONAL[0]}，身份证{PERSONAL[1]}", "inform",
                                      SlotSet("lookup_phone", PERSONAL[0]), BotUttered(f"卡号{PERSONAL[2]}", {}))]
    play(ours, "p", turns)
    ours.engine.dispose()
    raw = b"".join(p.read_bytes() for p in Path(db).parent.iterdir() if p.name.startswith(Path(db).name))
    for number in PERSONAL + ["我的电话"]:
        assert number.encode() not in raw, number
    back = run(FromDisk(domain, db).retrieve("p"))
    assert dumped(back) == [e.as_dict() for t in turns for e in t][1:]
    assert back.get_slot("lookup_phone") == PERSONAL[0]


def test_a_row_moved_to_another_conversation_or_a_missing_key_does_not_open(domain: Any, db: str) -> None:
    talk = Talk()
    ours = store(domain, db)
    play(ours, "q", [talk.start() + talk.greeting(1)])
    with ours.engine.begin() as conn:  # a sealed row copied under another sender id
        conn.execute(ours.SQLEvent.__table__.insert().from_select(
            ["sender_id", "type_name", "timestamp", "intent_name", "action_name", "data"],
            ours.SQLEvent.__table__.select().with_only_columns(
                sa.literal("r"), ours.SQLEvent.type_name, ours.SQLEvent.timestamp, ours.SQLEvent.intent_name,
                ours.SQLEvent.action_name, ours.SQLEvent.data).where(ours.SQLEvent.sender_id == "q")))
    with pytest.raises(SealedValueError):
        run(store(domain, db).retrieve("r"))
    with pytest.raises(SealedValueError, match="k1"):  # the key was removed before the rows were moved
        run(store(domain, db, keys=f"k2:{KEY2}").retrieve("q"))


def test_a_new_key_reads_the_old_rows_and_seals_the_new_ones(domain: Any, db: str) -> None:
    talk = Talk()
    play(store(domain, db), "s", [talk.start() + talk.greeting(1)])
    rotated = store(domain, db, keys=f"k2:{KEY2},k1:{KEY1}")
    play(rotated, "s", [talk.greeting(2)])
    assert [e["text"] for e in dumped(run(FromDisk(domain, db, keys=f"k2:{KEY2},k1:{KEY1}").retrieve("s")))
            if e["event"] == "user"] == ["你好1", "你好2"]
    with rotated.session_scope() as session:
        keys = [Keyring.parse(f"k2:{KEY2},k1:{KEY1}").key_of(r.data)
                for r in session.query(rotated.SQLEvent).order_by(rotated.SQLEvent.id)]
    assert keys == ["k1"] * len(talk.start() + talk.greeting(1)) + ["k2"] * len(talk.greeting(2))


def test_without_keys_the_store_refuses_to_start(domain: Any, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_KEYS", raising=False)
    with pytest.raises(ValueError, match="DATA_KEYS"):
        HezeTrackerStore(domain=domain, dialect="sqlite", db=db)
    monkeypatch.setenv("DATA_KEYS", KEYS)
    assert HezeTrackerStore(domain=domain, dialect="sqlite", db=db).keyring.current == "k1"


def test_a_saved_tracker_is_kept_and_used_while_the_database_agrees(domain: Any, db: str) -> None:
    talk = Talk()
    ours = store(domain, db)
    play(ours, "c", [talk.start() + talk.greeting(1), talk.greeting(2), talk.greeting(3)])
    assert ours.counts == {"kept": 2, "caught_up": 0, "read": 0}


def test_events_another_worker_wrote_are_caught_up(domain: Any, db: str) -> None:
    talk = Talk()
    first, second = store(domain, db), store(domain, db)
    play(first, "d", [talk.start() + talk.greeting(1)])
    play(second, "d", [talk.greeting(2)])  # reads from disk, writes its turn
    tracker = play(first, "d", [talk.greeting(3)])
    assert first.counts["caught_up"] == 1
    assert dumped(tracker) == dumped(run(FromDisk(domain, db).retrieve("d")))


def test_a_tracker_changed_but_not_saved_is_not_used_again(domain: Any, db: str) -> None:
    talk = Talk()
    ours = store(domain, db)
    play(ours, "e", [talk.start() + talk.greeting(1)])
    failed = run(ours.retrieve("e"))
    failed.update(UserUttered("这条没存上", {"name": "greet"}, timestamp=talk.at()))  # the turn fails before save
    again = run(ours.retrieve("e"))
    assert again is not failed and "这条没存上" not in json.dumps(dumped(again), ensure_ascii=False)
    assert ours.counts["read"] == 1


def test_a_new_session_written_elsewhere_is_read_in_full(domain: Any, db: str) -> None:
    talk = Talk()
    ours, other = store(domain, db), store(domain, db)
    play(ours, "f", [talk.start() + talk.greeting(1)])
    play(other, "f", [talk.start() + talk.greeting(2)])
    tracker = run(ours.retrieve("f"))
    assert ours.counts["read"] == 1
    assert [e["text"] for e in dumped(tracker) if e["event"] == "user"] == ["你好2"]


def test_new_events_are_streamed_once_each_after_the_commit_with_their_row_ids(domain: Any, db: str) -> None:
    talk = Talk()
    broker = Collecting()
    ours = store(domain, db, event_broker=broker)
    turns = [talk.start() + talk.greeting(1), talk.greeting(2)]
    play(ours, "g", turns)
    published = [{k: v for k, v in e.items() if k not in ("sender_id", "event_id")} for e in broker.published]
    assert published == [e.as_dict() for t in turns for e in t]
    assert all(e["sender_id"] == "g" for e in broker.published)
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        ids = conn.execute(sa.text("select id from events where sender_id = 'g' order by id")).scalars().all()
    assert [e["event_id"] for e in broker.published] == ids


class Announcing(EventBroker):
    """A broker with ``announce`` (ours) whose RabbitMQ never confirms: awaiting it would hang the turn."""

    def __init__(self) -> None:
        self.messages: List[List[dict]] = []
        self.confirmed: "asyncio.Future[bool] | None" = None

    def publish(self, event: dict) -> None:
        raise AssertionError("a broker with announce gets a turn's events as one message")

    def announce(self, events: List[dict]) -> None:
        self.messages.append(events)

    async def publish_all(self, events: List[dict]) -> bool:
        self.messages.append(events)
        self.confirmed = asyncio.get_running_loop().create_future()
        return await self.confirmed  # never set


def test_a_turn_is_not_held_for_the_brokers_confirm(domain: Any, db: str) -> None:
    """The events are committed before they are announced; the turn ends without waiting for RabbitMQ
    (waiting made the confirm most of a turn's time under load, bench/RESULTS.md)."""
    talk = Talk()
    broker = Announcing()
    ours = store(domain, db, event_broker=broker)
    turns = [talk.start() + talk.greeting(1), talk.greeting(2)]
    playing = threading.Thread(target=play, args=(ours, "h", turns), daemon=True)
    playing.start()
    playing.join(10)
    assert not playing.is_alive(), "the turn waited for the broker"
    assert [len(m) for m in broker.messages] == [len(t) for t in turns]
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        ids = conn.execute(sa.text("select id from events where sender_id = 'h' order by id")).scalars().all()
    assert [e["event_id"] for m in broker.messages for e in m] == ids


@pytest.fixture
def pg() -> Iterator[Dict[str, Any]]:
    """A database of its own on the local PostgreSQL, the production tracker store's (HEZE_TEST_PG_URL)."""
    url = sa.engine.make_url(os.environ.get("HEZE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    url = url.set(drivername="postgresql")  # psycopg2, as Rasa's environment has it
    name = f"heze_test_tracker_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield {"dialect": "postgresql", "host": url.host, "port": url.port, "username": url.username,
           "password": url.password, "db": name}
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_on_postgresql_a_turns_rows_go_in_one_statement_in_order(domain: Any, pg: Dict[str, Any]) -> None:
    """The production dialect writes a turn's events in one INSERT … RETURNING: the rows are in the
    events' order, each published event carries its own row id, and a new store reads the same state back."""
    talk = Talk()
    broker = Collecting()
    ours = HezeTrackerStore(domain=domain, keys=KEYS, event_broker=broker, **pg)
    statements: List[str] = []
    sa.event.listen(ours.engine, "before_cursor_execute",
                    lambda conn, cursor, sql, *rest: statements.append(sql) if sql.startswith("INSERT") else None)
    turns = [talk.start() + talk.greeting(1), talk.bill(), talk.greeting(2)]
    tracker = play(ours, "p", turns)
    assert len(statements) == len(turns)  # one statement per save, however many events
    assert ours.counts == {"kept": len(turns) - 1, "caught_up": 0, "read": 0}  # and the tracker kept between turns
    events = [e.as_dict() for t in turns for e in t]
    assert [{k: v for k, v in e.items() if k not in ("sender_id", "event_id")} for e in broker.published] == events
    with ours.engine.connect() as conn:
        rows = conn.execute(sa.text("select id, data from events where sender_id = 'p' order by id")).all()
    assert [e["event_id"] for e in broker.published] == [r.id for r in rows]
    assert [ours._load("p", r.data) for r in rows] == events
    back = run(HezeTrackerStore(domain=domain, keys=KEYS, **pg).retrieve("p"))
    assert back.current_state(EventVerbosity.NONE) == tracker.current_state(EventVerbosity.NONE)
    ours.engine.dispose()


def test_nothing_is_published_when_the_write_fails(domain: Any, db: str) -> None:
    talk = Talk()
    broker = Collecting()
    ours = store(domain, db, event_broker=broker)
    play(ours, "h", [talk.start() + talk.greeting(1)])
    published = len(broker.published)
    tracker = run(ours.get_or_create_tracker("h", append_action_listen=False))
    for event in talk.greeting(2):
        tracker.update(event)
    with ours.engine.begin() as conn:
        conn.execute(sa.text("drop table events"))
    with pytest.raises(sa.exc.OperationalError):
        run(ours.save(tracker))
    assert len(broker.published) == published


def test_the_window_keeps_the_state_and_every_event_stays_on_disk(domain: Any, db: str) -> None:
    talk = Talk()
    ours = store(domain, db, window=4)
    turns = [talk.start() + talk.greeting(0)] + [talk.greeting(n) for n in range(1, 6)] + [talk.bill()]
    turns += [talk.greeting(n) for n in range(6, 20)]
    tracker = play(ours, "h", turns)
    full = run(FromDisk(domain, db).retrieve("h"))
    kept = run(ours.retrieve("h"))
    assert kept is not None and ours.counts["read"] == 0
    assert len([e for e in kept.events if isinstance(e, UserUttered)]) <= 4 + 2
    with ours.session_scope() as session:  # nothing lost
        assert session.query(ours.SQLEvent).filter(ours.SQLEvent.sender_id == "h").count() == sum(map(len, turns))
    for windowed_tracker in (tracker, kept):
        for key in ("slots", "latest_message", "latest_action", "active_loop", "followup_action", "paused",
                    "latest_input_channel", "latest_action_name"):
            assert windowed_tracker.current_state(EventVerbosity.NONE).get(key) == \
                full.current_state(EventVerbosity.NONE).get(key), key
    # what the policies see: the last states are the same
    assert kept.past_states(domain)[-8:] == full.past_states(domain)[-8:]
    assert kept.get_slot("awaiting_rating") == "bills"  # set before the window, restored by its prefix


def test_the_window_never_starts_inside_a_form(domain: Any) -> None:
    talk = Talk()
    tracker = DialogueStateTracker("i", domain.slots)
    form_turns = talk.turn("交水费", "pay_bill", ActionExecuted("bill_form"), ActiveLoop("bill_form"))
    events = talk.start() + talk.greeting(0) + form_turns
    for n in range(1, 10):
        events += talk.turn(f"不知道{n}", "inform", ActionExecuted("bill_form"))
    for event in events:
        tracker.update(event)
    earlier = windowed(tracker, 4)  # the cut moves back to before the form began
    assert [e.name for e in earlier.events if isinstance(e, ActiveLoop)] == ["bill_form"]
    assert len([e for e in earlier.events if isinstance(e, UserUttered)]) >= 10  # from the turn that opened it
    only_form = DialogueStateTracker("i2", domain.slots)
    for event in talk.start() + events[len(talk.start()) + len(talk.greeting(0)):]:
        only_form.update(event)
    assert windowed(only_form, 4) is only_form  # every cut would be inside the form
    for event in talk.turn("算了", "deny", ActionExecuted("bill_form"), ActiveLoop(None)) + talk.greeting(1) \
            + talk.greeting(2):
        tracker.update(event)
    cut = windowed(tracker, 1)
    assert cut is not tracker and cut.active_loop_name is None
    assert cut.past_states(domain)[-3:] == tracker.past_states(domain)[-3:]


def test_a_short_conversation_is_not_cut(domain: Any) -> None:
    talk = Talk()
    tracker = DialogueStateTracker("j", domain.slots)
    for event in talk.start() + talk.greeting(1) + talk.greeting(2):
        tracker.update(event)
    assert windowed(tracker, 4) is tracker


def test_the_store_is_the_one_the_endpoints_name() -> None:
    from tests.rasa_env.conftest import ROOT
    import yaml

    for path in ("bot/endpoints.yml", "deploy/endpoints.yml"):
        config = yaml.safe_load((ROOT / path).read_text())
        assert config["tracker_store"]["type"] == "rasa_runtime.tracker_store.HezeTrackerStore", path
    broker = yaml.safe_load((ROOT / "deploy" / "endpoints.yml").read_text())["event_broker"]
    assert broker["type"] == "rasa_runtime.event_broker.SealedPikaEventBroker"


def test_turns_undone_by_the_core_fallback_are_not_history(domain: Any) -> None:
    from rasa.shared.core.events import UserUtteranceReverted

    talk = Talk()
    tracker = DialogueStateTracker("k", domain.slots)
    events = talk.start() + [e for n in range(6) for e in talk.greeting(n)]
    for n in range(5):  # what action_default_fallback leaves: the user's message undone
        events += talk.turn(f"听不懂{n}", "nlu_fallback", ActionExecuted("action_default_fallback"),
                            BotUttered("请换个说法。", {}), UserUtteranceReverted())
    for event in events:
        tracker.update(event)
    cut = windowed(tracker, 4)
    in_effect = [e for e in cut.applied_events() if isinstance(e, UserUttered)]
    assert len(in_effect) >= 4  # four greetings still in effect, not one listen
    assert cut.past_states(domain)[-8:] == tracker.past_states(domain)[-8:]


def test_a_reminder_scheduled_before_the_cut_is_still_there(domain: Any) -> None:
    from datetime import datetime
    from rasa.shared.core.events import ReminderScheduled

    talk = Talk()
    tracker = DialogueStateTracker("l", domain.slots)
    reminder = ReminderScheduled("EXTERNAL_remind", datetime(2026, 12, 3, 9, 0), name="bill-due", timestamp=talk.at())
    for event in talk.start() + [reminder] + [e for n in range(12) for e in talk.greeting(n)]:
        tracker.update(event)
    cut = windowed(tracker, 4)
    assert len(cut.events) < len(tracker.events)
    assert any(isinstance(e, ReminderScheduled) and e.name == "bill-due" for e in cut.applied_events())


def test_peek_reads_the_kept_tracker_and_leaves_it(domain: Any, db: str) -> None:
    talk = Talk()
    ours = store(domain, db)
    play(ours, "m", [talk.start() + talk.bill()[:8]])
    peeked = ours.peek("m")
    assert peeked is not None and peeked.get_slot("requested_slot") == "bill_account"
    assert run(ours.retrieve("m")) is peeked and ours.counts["kept"] == 1
    assert ours.peek("nobody") is None


def test_rows_another_writer_adds_during_our_turn_are_read_next_time(domain: Any, db: str) -> None:
    talk = Talk()
    ours, other = store(domain, db), store(domain, db)
    play(ours, "n", [talk.start() + talk.greeting(1)])
    ours_now = run(ours.retrieve("n"))
    play(other, "n", [talk.greeting(2)])  # a lock that expired: the other worker writes meanwhile
    for event in talk.greeting(3):
        ours_now.update(event)
    run(ours.save(ours_now))
    again = run(ours.retrieve("n"))
    assert ours.counts["read"] == 1  # not the kept one: it never saw the other worker's turn
    assert [e["text"] for e in dumped(again) if e["event"] == "user"] == ["你好1", "你好2", "你好3"]  # row order


def test_the_store_adds_its_index_once_and_twice_is_harmless(domain: Any, db: str) -> None:
    store(domain, db)
    second = store(domain, db)  # another worker starting: the index exists already
    indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(second.engine).get_indexes("events")}
    assert indexes["ix_events_sender_id_id"] == ["sender_id", "id"]


def test_the_wrong_keys_stop_the_store_from_starting(domain: Any, db: str) -> None:
    """Started with keys that do not open the rows, the store refuses to start (Rasa's fail-safe
    wrapper would otherwise answer every citizen as a new conversation)."""
    talk = Talk()
    play(store(domain, db), "w", [talk.start() + talk.greeting(1)])
    with pytest.raises(SealedValueError):
        store(domain, db, keys=f"k2:{KEY2}")
    assert store(domain, db, keys=f"k2:{KEY2},k1:{KEY1}").keyring.current == "k2"


def test_the_latest_session_is_read_whole_and_leaves_the_kept_tracker(domain: Any, db: str) -> None:
    """The web chat's history: every event of the latest session, not the window a turn gets."""
    from rasa.shared.core.events import UserUttered

    ours = store(domain, db)
    tracker = DialogueStateTracker.from_events("web:guest:" + "h" * 22, [SessionStarted(), UserUttered("旧")],
                                               slots=domain.slots)
    run(ours.save(tracker))
    tracker.update(SessionStarted())
    for i in range(40):
        tracker.update(UserUttered(f"第{i}句"))
    run(ours.save(tracker))
    read = run(ours.latest_session(tracker.sender_id))
    said = [e.text for e in read.events if isinstance(e, UserUttered)]
    assert said == [f"第{i}句" for i in range(40)]  # the latest session only, all of it
    assert ours.peek(tracker.sender_id) is not None  # the kept tracker is still there
