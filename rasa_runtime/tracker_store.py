"""Rasa's SQL tracker store, minus reloading and replaying a whole conversation on every turn.

Stock ``SQLTrackerStore`` reads every event of the session from the database, deserialises and
replays them for each message and counts them again on save; every later step of the turn (each
policy's featurisation, the tracker copy before each action, the tracker sent to the action server)
walks all of them again, so a turn costs more the longer the conversation (bench/RESULTS.md).

``HezeTrackerStore`` keeps the tracker it last saved for a conversation in memory and, on the next
message, asks the database one question: is the newest event of this sender still the one we
saved? If so the kept tracker is used as it is; if other events arrived (another Rasa worker,
``POST /conversations/<id>/tracker/events``) only those are read and applied; if a new session
started there, or the kept tracker was changed without being saved, the session is read in full,
as stock does.

The tracker handed to Rasa holds the last ``window`` user turns of events (at most ``window`` + 2),
preceded by ``SlotSet`` events that restore every slot to its value where the window starts. A
window only starts where no form is active and nothing is paused, so the conversation's state is
exactly the full one's; only history older than the window is left out, which no policy reads
(memoization looks at 4 states, rules at their own few turns) and no action reads (they look back at
most two user turns). The database keeps every event: the prefix is never written.

Durability is unchanged: ``save`` writes the new events and commits before it returns, as stock
does; memory only ever holds what is already on disk. A kept tracker is handed out once (checked
out) and comes back only through ``save``, so two requests never share one object. The table and
columns are stock Rasa's; the console opens the rows with the same keys, and the HTTP API's full
tracker and ``rasa export`` read them through this store.

Personal data is encrypted at rest: each row's ``data`` (the event as JSON: the citizen's text,
entities, slot values, metadata, the bot's words) is sealed with AES-256-GCM under ``DATA_KEYS``
(textnorm/sealing.py), bound to its sender id; the other columns (type, intent and action names,
timestamp) stay as stock writes them, so the per-turn queries and the indexes work unchanged. Rows
written in clear before encryption are read as they are; ``python -m console rekey`` seals them and
moves old rows to a new key. Every read of ``data`` here goes through ``_load``: stock's full-tracker
read (HTTP API, ``rasa export``) too.

With an event broker (deploy/endpoints.yml: ``rasa_runtime.event_broker.SealedPikaEventBroker``),
``save`` queues the new events for the broker after the commit, each with its row id (``event_id``);
the broker publishes them in order without holding the turn: stock publishes before writing and
re-reads the whole stored tracker to find the new events (``stream_events``), one more full read per turn.

Creating this store installs ``rasa_runtime.patches`` (the documented way they get installed).
"""
from __future__ import annotations

import asyncio

import itertools
import json
import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Text, Tuple

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, Event, ReminderScheduled, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker, TrackerEventDiffEngine

from rasa_runtime import patches
from textnorm.masking import install_log_masking
from textnorm.sealing import Keyring

logger = logging.getLogger(__name__)

DEFAULT_KEEP = 10_000  # conversations kept in memory (least recently used dropped first)
DEFAULT_WINDOW = 4  # user turns of history handed to Rasa
SLACK = 2  # the window is cut again once it holds this many more turns


class _Saved:
    """What a tracker object has in the database: its first ``count`` events, up to row ``last_id``."""

    __slots__ = ("count", "last_id")

    def __init__(self, count: int, last_id: int) -> None:
        self.count = count
        self.last_id = last_id


def windowed(tracker: DialogueStateTracker, turns: int) -> DialogueStateTracker:
    """The same conversation state with only the last ``turns`` user turns of events (or ``tracker``).

    Only user turns still in effect count (one undone by ``UserUtteranceReverted``, as Rasa's core
    fallback does, is not a turn of history). The new tracker's events: the reminders still
    scheduled before the cut (Rasa checks a reminder is still in the tracker before it fires), one
    ``SlotSet`` per slot whose value differs from its initial value at the cut, then the events from
    the ``action_listen`` before the ``turns``-th last user message on. The cut moves to an earlier
    turn while a form is active, the conversation is paused or a follow-up action is due there;
    with no such turn, ``tracker`` is returned as it is."""
    events: List[Event] = list(tracker.events)
    applied = {id(e) for e in tracker.applied_events()}
    listens = [i - 1 for i, e in enumerate(events)
               if isinstance(e, UserUttered) and id(e) in applied and i > 0
               and isinstance(events[i - 1], ActionExecuted) and events[i - 1].action_name == ACTION_LISTEN_NAME]
    if len(listens) <= turns + SLACK:
        return tracker
    candidates = set(listens[:len(listens) - turns + 1])
    state = tracker.init_copy()
    cut, values = None, {}
    for i, event in enumerate(events[:max(candidates) + 1]):
        if i in candidates and state.active_loop_name is None and not state.is_paused() \
                and state.followup_action is None:
            cut, values = i, {name: slot.value for name, slot in state.slots.items()}
        state.update(event)
    if cut is None:
        return tracker
    at = events[cut].timestamp
    result = tracker.init_copy()
    reminders = [e for e in events[:cut] if isinstance(e, ReminderScheduled) and id(e) in applied]
    prefix: List[Event] = reminders + [SlotSet(name, value, timestamp=at) for name, value in values.items()
                                       if value != result.slots[name].value]
    for event in prefix + events[cut:]:
        result.update(event)
    return result


def from_session_start(tracker: DialogueStateTracker) -> DialogueStateTracker:
    """The tracker as stock reads it back: from its latest ``SessionStarted`` on (or ``tracker``).

    Stock keeps only events timestamped at or after the session's start, so the
    ``action_session_start`` just before it is left out from the second turn of a session on."""
    starts = [e.timestamp for e in tracker.events if isinstance(e, SessionStarted)]
    if not starts or all(e.timestamp >= starts[-1] for e in tracker.events):
        return tracker
    result = tracker.init_copy()
    for event in tracker.events:
        if event.timestamp >= starts[-1]:
            result.update(event)
    return result


class HezeTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` that keeps each conversation's saved tracker and reads only what changed."""

    engine: Any  # stock's (a pooled one for a SQLite file, below)
    # When the database fails, the turn fails (rasa_runtime.patches): no answer from a stranger's
    # in-memory tracker, no turn kept only in this replica's memory.
    fail_safe = False

    def __init__(self, domain: Any = None, keep: int = DEFAULT_KEEP, window: int = DEFAULT_WINDOW,
                 keys: Optional[Text] = None, in_clear: bool = False, **kwargs: Any) -> None:
        """``keys``: the keyring (``DATA_KEYS`` from the environment when not given). Without keys the
        store refuses to start, unless ``in_clear`` says the rows are to be written as stock does."""
        self.keyring = Keyring.parse(keys if keys is not None else os.environ.get("DATA_KEYS", ""))
        if not self.keyring and not in_clear:
            raise ValueError("DATA_KEYS is not set: the tracker store encrypts personal data at rest "
                             "(python -m textnorm.sealing new-key makes a key; see .env.example)")
        patches.install()
        # Rasa has configured its logging (console and --log-file) by now: mask what it writes.
        install_log_masking()
        super().__init__(domain=domain, **kwargs)
        if self.engine.dialect.name == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            # SQLAlchemy 1.4 opens a new connection to a SQLite file for every use (NullPool): keep a few.
            url = self.engine.url
            self.engine.dispose()
            self.engine = sa.create_engine(url, poolclass=sa.pool.QueuePool, pool_size=2,
                                           connect_args={"check_same_thread": False})
            self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)
        self.keep = int(keep)
        self.window = int(window)
        self._kept: "OrderedDict[Text, DialogueStateTracker]" = OrderedDict()
        # id(tracker) -> (weak reference, what it has on disk); trackers are unhashable (they define ==).
        self._saved: Dict[int, Tuple["weakref.ref[DialogueStateTracker]", _Saved]] = {}
        self.counts = {"kept": 0, "caught_up": 0, "read": 0}
        # The per-turn statements, in SQLAlchemy Core (the ORM query costs more than the database).
        events = self.SQLEvent.__table__
        self._insert = events.insert()
        # One INSERT … RETURNING for a turn's rows where the driver returns every row's id from an
        # executemany (psycopg2's execute_values); elsewhere a statement per row.
        self._insert_returning = (events.insert().returning(events.c.id)
                                  if getattr(self.engine.dialect, "insert_executemany_returning", False) else None)
        self._head_query = (sa.select(sa.func.max(events.c.id))
                            .where(events.c.sender_id == sa.bindparam("sender_id")))
        self._since_query = (sa.select(sa.func.count(), sa.func.max(events.c.id))
                             .where(events.c.sender_id == sa.bindparam("sender_id"), events.c.id > sa.bindparam("after")))
        self._after_query = (sa.select(events.c.id, events.c.type_name, events.c.data)
                             .where(events.c.sender_id == sa.bindparam("sender_id"), events.c.id > sa.bindparam("after"))
                             .order_by(events.c.id))
        with self.session_scope():
            pass  # stock's check that a configured PostgreSQL schema exists, once
        self._index_sender_and_id()
        self._check_keys()

    def _check_keys(self) -> None:
        """The newest sealed row opens with the keyring, or the store does not start: with the wrong
        ``DATA_KEYS`` every read would fail, Rasa's fail-safe wrapper would answer each citizen as a
        new conversation and the turns written on top of the old rows would be miscounted."""
        events = self.SQLEvent.__table__
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events.c.sender_id, events.c.data).where(events.c.data.like("s1:%"))
                               .order_by(events.c.id.desc()).limit(1)).first()
        if row is not None:
            self._load(row.sender_id, row.data)

    def _index_sender_and_id(self) -> None:
        """An index on (sender_id, id), added beside stock's: the per-turn ``max(id)`` of one sender.

        With stock's index on sender_id alone, PostgreSQL answers ``max(id) WHERE sender_id = ?``
        by walking the primary key backwards until it meets that sender, which for a new sender is
        the whole table (measured: greeting p50 from 22 to 568 ms as the table grew during a
        benchmark). Several Rasa workers may start at once: "already exists" is fine."""
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_events_sender_id_id ON events (sender_id, id)"))
        except sa.exc.SQLAlchemyError as e:  # a concurrent creation by another worker
            logger.info("index on events (sender_id, id) not created here: %s", type(e).__name__)

    # -- reading -----------------------------------------------------------------------------

    async def retrieve(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        """The tracker of the latest session: the kept one if the database has nothing newer."""
        kept = self._kept.pop(sender_id, None)
        with self.engine.connect() as conn:
            head = self._head(conn, sender_id)
            if head is None:
                return None
            saved = self._saved_of(kept) if kept is not None else None
            if kept is not None and saved is not None and len(kept.events) == saved.count:
                if saved.last_id == head:
                    self.counts["kept"] += 1
                    return kept
                if self._catch_up(conn, kept, saved):
                    self.counts["caught_up"] += 1
                    return kept
        self.counts["read"] += 1
        with self.session_scope() as session:
            return self._read(session, sender_id)

    def _head(self, conn: Any, sender_id: Text) -> Optional[int]:
        """The id of the sender's newest event row (the sender_id index answers it)."""
        return conn.execute(self._head_query, {"sender_id": sender_id}).scalar()

    def _catch_up(self, conn: Any, tracker: DialogueStateTracker, saved: _Saved) -> bool:
        """Apply the rows written after ours; False when they start a new session (read in full)."""
        rows = conn.execute(self._after_query, {"sender_id": tracker.sender_id, "after": saved.last_id}).all()
        if not rows or any(row.type_name == SessionStarted.type_name for row in rows):
            return False
        for row in rows:
            tracker.update(Event.from_parameters(self._load(tracker.sender_id, row.data)))
        saved.count, saved.last_id = len(tracker.events), rows[-1].id
        return True

    def _read(self, session: Any, sender_id: Text) -> Optional[DialogueStateTracker]:
        rows = self._event_query(session, sender_id, fetch_events_from_all_sessions=False).all()
        if not rows or not self.domain:
            return None
        full = DialogueStateTracker.from_dict(sender_id, [self._load(sender_id, row.data) for row in rows],
                                              self.domain.slots)
        tracker = windowed(full, self.window)
        self._mark(tracker, _Saved(len(tracker.events), rows[-1].id))
        return tracker

    def _saved_of(self, tracker: DialogueStateTracker) -> Optional[_Saved]:
        entry = self._saved.get(id(tracker))
        return entry[1] if entry is not None and entry[0]() is tracker else None

    def _mark(self, tracker: DialogueStateTracker, saved: _Saved) -> None:
        key = id(tracker)
        self._saved[key] = (weakref.ref(tracker, lambda _: self._saved.pop(key, None)), saved)

    async def latest_session(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        """The whole latest session of a conversation, read off the event loop, for reading only (the web
        chat's history after a reload); the kept tracker and the turn in progress are not touched."""
        return await asyncio.to_thread(self._latest_session, sender_id)

    def _latest_session(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, fetch_events_from_all_sessions=False).all()
            events = [self._load(sender_id, row.data) for row in rows]
        if not self.domain or not events:
            return None
        return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)

    def peek(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        """The kept tracker of a conversation, left in place, for reading only (None when not kept).

        For a caller that wants a slot after a turn (the phone channel asks which answer comes
        next), where ``retrieve`` would check the tracker out and leave the next turn a full read."""
        return self._kept.get(sender_id)

    # -- writing -----------------------------------------------------------------------------

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Write the events the database does not have yet, commit, then keep the tracker."""
        saved = self._saved_of(tracker)
        if saved is None:  # a tracker this store did not read (Rasa's create_tracker, or built elsewhere)
            with self.engine.connect() as conn:
                head = self._head(conn, tracker.sender_id)
            if head is not None:  # the database has some of it: stock counts what is there
                with self.session_scope() as session:
                    new = list(self._additional_events(session, tracker))
                with self.engine.begin() as conn:
                    written = self._write(conn, tracker.sender_id, new)
                self._kept.pop(tracker.sender_id, None)
                self._announce(tracker.sender_id, new, written)
                return
            saved = _Saved(0, 0)  # a new conversation: every event is new
            self._mark(tracker, saved)
        new = list(itertools.islice(tracker.events, saved.count, None))
        ids: List[int] = []
        if new:
            with self.engine.begin() as conn:  # commits on leaving
                ids = self._write(conn, tracker.sender_id, new)
                since = conn.execute(self._since_query, {"sender_id": tracker.sender_id, "after": saved.last_id}).one()
            ours_only = since[0] == len(ids) and since[1] == ids[-1]
            saved.count, saved.last_id = saved.count + len(new), ids[-1]
            if not ours_only:  # another writer got in (a lock that expired mid-turn): read it all next time
                self._kept.pop(tracker.sender_id, None)
                self._saved.pop(id(tracker), None)
                self._announce(tracker.sender_id, new, ids)
                return
        kept = windowed(from_session_start(tracker), self.window)
        if kept is not tracker:
            self._mark(kept, _Saved(len(kept.events), saved.last_id))
        self._keep(kept)
        self._announce(tracker.sender_id, new, ids)

    def _announce(self, sender_id: Text, events: List[Event], ids: List[int]) -> None:
        """Hand the committed events to the event broker, each with its row id (``event_id``), as one
        message queued in order (``announce``; rasa_runtime/event_broker.py), without waiting for
        RabbitMQ. Stock publishes before it writes; a broker that is not ours gets stock's
        fire-and-forget ``publish`` per event."""
        if self.event_broker is None or not events:
            return
        bodies = [{"sender_id": sender_id, **event.as_dict(), "event_id": row_id} for event, row_id in zip(events, ids)]
        try:
            announce = getattr(self.event_broker, "announce", None)
            if announce is not None:
                announce(bodies)
                return
            for body in bodies:
                self.event_broker.publish(body)
        except Exception:  # noqa: BLE001 - the turn is committed: it must not be reported failed (and sent again)
            logger.exception("events of a saved turn not handed to the event broker")

    def _write(self, conn: Any, sender_id: Text, events: List[Event]) -> List[int]:
        """Insert the events' rows in order; their ids, in the same order.

        On PostgreSQL the rows go in one statement (psycopg2's ``execute_values`` with ``RETURNING``): a
        turn writes 4-8 events, and a round trip each made retrieve + save cost 8.1-8.8 ms a turn against
        4.1-5.0 ms (bench/RESULTS.md). The ids a sequence gives one statement's rows rise in the order of
        the rows, so sorted they are the events' ids. SQLite (SQLAlchemy 1.4 has no RETURNING there) is
        in the process: a statement per row costs little."""
        rows = [self._row(sender_id, e) for e in events]
        if self._insert_returning is not None and len(rows) > 1:
            ids = sorted(row[0] for row in conn.execute(self._insert_returning, rows).all())
            if len(ids) != len(rows):
                raise RuntimeError(f"{len(rows)} events written but {len(ids)} ids returned")
            return ids
        return [conn.execute(self._insert, row).inserted_primary_key[0] for row in rows]

    def _row(self, sender_id: Text, event: Event) -> Dict[Text, Any]:
        """One ``events`` row, with the columns stock ``SQLTrackerStore.save`` fills; ``data`` sealed."""
        data = event.as_dict()
        return {"sender_id": sender_id, "type_name": event.type_name, "timestamp": data.get("timestamp"),
                "intent_name": data.get("parse_data", {}).get("intent", {}).get("name"),
                "action_name": data.get("name"), "data": self.keyring.seal(json.dumps(data), sender_id)}

    def _load(self, sender_id: Text, stored: Text) -> Dict[Text, Any]:
        """A row's event as a dict: opened (a row written in clear is read as it is). A row that does
        not open (a key removed too early, a damaged row) raises: a conversation is never silently
        read without some of its events."""
        return json.loads(self.keyring.open(stored, sender_id))

    async def _retrieve(self, sender_id: Text, fetch_events_from_all_sessions: bool) -> Optional[DialogueStateTracker]:
        """Stock's read (full tracker, ``stream_events``), with the rows opened."""
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, fetch_events_from_all_sessions).all()
            events = [self._load(sender_id, row.data) for row in rows]
        if not self.domain or not events:
            return None
        return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)

    def _keep(self, tracker: DialogueStateTracker) -> None:
        self._kept[tracker.sender_id] = tracker
        self._kept.move_to_end(tracker.sender_id)
        while len(self._kept) > self.keep:
            self._kept.popitem(last=False)

    async def stream_events(self, tracker: DialogueStateTracker) -> None:
        """Stock's, for stock callers; ``save`` announces its own committed rows (``_announce``)."""
        if self.event_broker is None:
            return None
        old = await super().retrieve(tracker.sender_id)
        await self._stream_new_events(self.event_broker, TrackerEventDiffEngine.event_difference(old, tracker),
                                      tracker.sender_id)
