"""Conversations from the Rasa tracker store: a summary row per conversation for the list (kept up
to date incrementally from the events table), and a readable transcript for the detail page.

The tracker store is read-only here (Rasa owns it): the console reads ``events`` past the highest
event id it has seen. Everything shown is masked (textnorm/masking.py) unless a supervisor reveals it."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Sequence

from sqlalchemy import (Column, Engine, Float, Integer, MetaData, String, Table, Text, func, or_,
                        select)
from sqlalchemy.orm import Session, sessionmaker

from textnorm.masking import mask, mask_data
from textnorm.sealing import Keyring, SealedValueError
from services.models import (AuditEntry, ConsoleState, ConversationSummary, MessageAnnotation, PhoneCall, PhoneTurn, Rating)

logger = logging.getLogger(__name__)
NO_KEYS = Keyring([])

# Rasa 3.6's SQLTrackerStore table (rasa/core/tracker_store.py, SQLEvent).
_meta = MetaData()
EVENTS = Table(
    "events", _meta,
    Column("id", Integer, primary_key=True), Column("sender_id", String(255)), Column("type_name", String(255)),
    Column("timestamp", Float), Column("intent_name", String(255)), Column("action_name", String(255)),
    Column("data", Text),
)
CHANNELS = ("wechat", "miniprogram", "phone", "webchat", "rest")
FALLBACK_ACTIONS = {"action_fallback", "action_default_fallback", "action_offer_human"}
HANDOFF_ACTIONS = {"action_handoff"}
QUIET_ACTIONS = {"action_listen", "action_session_start"}  # every conversation has them: no filter
# What a reviewer does to a conversation (the audit log's actions), for the "reviewer" filter.
REVIEW_ACTIONS = ("reviewed", "unreviewed", "correct", "flag", "unflag", "tags", "note")
TEXT_LIMIT = 4000
BATCH = 5000
WATERMARK = "tracker_events_read"


KEY_STATE = "conversation_ref_key"


def ref_key(sessions: sessionmaker, configured: str = "") -> bytes:
    """The key of the conversation pseudonyms: ``CONSOLE_PSEUDONYM_KEY`` when set, else one made at
    random the first time and kept in the console's state (so links stay the same across restarts)."""
    if configured:
        return configured.encode()
    with sessions() as s:
        state = s.get(ConsoleState, KEY_STATE)
        if state is None:
            state = ConsoleState(key=KEY_STATE, value=secrets.token_hex(32))
            s.add(state)
            s.commit()
        return state.value.encode()


def conversation_ref(key: bytes, sender: str) -> str:
    """A conversation's pseudonym: ``c`` and 20 hex digits of HMAC-SHA256(key, sender id)."""
    return "c" + hmac.new(key, sender.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:20]


def _when(ts: float | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts or 0, dt.timezone.utc)


UNREADABLE = "此条记录无法解密（密钥不对或已删除），请管理员检查 DATA_KEYS。"


@dataclass
class BrokerEvent:
    """An event from the event broker in the shape of a tracker-store row, its data already opened."""

    id: int
    sender_id: str
    type_name: str
    timestamp: float | None
    action_name: str | None
    opened: dict[str, Any]


def event_data(row: Any, keyring: Keyring) -> dict[str, Any] | None:
    """A tracker-store row's event, opened with the deployment's keys (rasa_runtime/tracker_store.py
    seals ``data``); None for a row whose JSON is damaged (logged with its id only). A row that does
    not open raises ``SealedValueError``: the index stops there rather than count it as empty, the
    transcript shows it as unreadable, an export is refused."""
    if isinstance(row, BrokerEvent):
        return row.opened
    try:
        data = json.loads(keyring.open(row.data or "{}", row.sender_id))
    except ValueError as e:
        logger.warning("events row %s cannot be read: %s", row.id, type(e).__name__)
        return None
    return data if isinstance(data, dict) else None


def channel_of(data: dict[str, Any]) -> str:
    channel = data.get("input_channel") or "rest"
    claimed = (data.get("metadata") or {}).get("channel")
    if channel == "rest" and claimed in CHANNELS:
        return str(claimed)
    return channel if channel in CHANNELS else "rest"


class ConversationIndex:
    """Keeps ``conversation_summaries`` in step with the tracker store."""

    def __init__(self, tracker: Engine, sessions: sessionmaker, key: bytes | None = None,
                 keyring: Keyring = NO_KEYS, wechat_deadline_s: float = 4.0) -> None:
        """``wechat_deadline_s``: the WeChat channels' passive-reply deadline (``WECHAT_DEADLINE_S``): a
        reply later than that went out as a customer-service message, flagged "late reply"."""
        self.tracker, self._sessions = tracker, sessions
        self.key = key or ref_key(sessions)
        self.keyring = keyring
        self.wechat_deadline_s = wechat_deadline_s

    def fill_refs(self) -> int:
        """Give a pseudonym to every summary that has none (rows from before they existed)."""
        with self._sessions() as s:
            rows = s.scalars(select(ConversationSummary).where(ConversationSummary.ref.is_(None))).all()
            for row in rows:
                row.ref = conversation_ref(self.key, row.sender_id)
            s.commit()
            return len(rows)

    def sender_of(self, ref: str) -> str | None:
        """The sender id behind a pseudonym, or None."""
        with self._sessions() as s:
            return s.scalar(select(ConversationSummary.sender_id).where(ConversationSummary.ref == ref))

    def _watermark(self, s: Session) -> int:
        state = s.get(ConsoleState, WATERMARK)
        return int(state.value) if state else 0

    def sync(self) -> int:
        """Read events past the watermark; returns how many were read."""
        read = 0
        while True:
            with self._sessions() as s:
                mark = self._watermark(s)
                with self.tracker.connect() as t:
                    rows = t.execute(select(EVENTS).where(EVENTS.c.id > mark).order_by(EVENTS.c.id).limit(BATCH)).all()
                if not rows:
                    return read
                self._ingest(s, rows)
                state = s.get(ConsoleState, WATERMARK) or ConsoleState(key=WATERMARK, value="0")
                state.value = str(rows[-1].id)
                s.merge(state)
                s.commit()
                read += len(rows)

    def apply_events(self, events: list[dict[str, Any]]) -> int:
        """Events from the event broker (console/feed.py), opened, in the order they came; returns how
        many were new. Each carries its tracker-store row id (``event_id``), so an event the index has
        (from the tracker store, or delivered again after a restart) is not counted twice."""
        rows = [BrokerEvent(int(e["event_id"]), str(e["sender_id"]), str(e["event"]), e.get("timestamp"),
                            e.get("name") if e["event"] == "action" else None, e) for e in events]
        if not rows:
            return 0
        late: set[str] = set()
        with self._sessions() as s:
            applied = self._ingest(s, rows, late)
            s.commit()
        if late:
            # Delivered again (a restart before the acknowledgement), or late: a replica that could not
            # reach RabbitMQ sent its kept events after another replica sent the conversation's later
            # ones. Which it was cannot be told from the id, so the conversation is counted again from
            # the tracker store, which has every event (they are published after the commit).
            self.rebuild(sorted(late))
        return applied

    def _ingest(self, s: Session, rows: Sequence[Any], late: set[str] | None = None) -> int:
        """Apply rows (tracker-store rows or broker events) to their summaries, each event once: a
        conversation's events are written one turn at a time, so an id at or below the summary's last
        one is already counted (or, from the broker, came late: its sender goes into ``late``)."""
        senders = {r.sender_id for r in rows}
        summaries = {x.sender_id: x for x in s.scalars(
            select(ConversationSummary).where(ConversationSummary.sender_id.in_(senders)))}
        applied = 0
        for row in rows:
            summary = summaries.get(row.sender_id)
            if summary is None:
                summary = ConversationSummary(sender_id=row.sender_id, ref=conversation_ref(self.key, row.sender_id),
                                              channel="rest", turns=0, intents=" ", entities=" ", actions=" ",
                                              text="", started_at=_when(row.timestamp), tags=" ",
                                              last_at=_when(row.timestamp), reviewed=False, fallback=False,
                                              handoff=False, late_reply=False, silence_hangup=False)
                s.add(summary)
                summaries[row.sender_id] = summary
            elif summary.last_event_id is not None and row.id <= summary.last_event_id:
                if late is not None:
                    late.add(row.sender_id)
                continue
            self._apply(summary, row)
            applied += 1
        self._join_service_data(s, senders, summaries)
        return applied

    def rebuild(self, senders: list[str]) -> None:
        """Summaries computed again from the events that are left (after a retention purge took a
        conversation's old sessions); a conversation with none left loses its summary. What reviewers
        wrote (reviewed, tags, note) stays."""
        with self._sessions() as s:
            summaries = {x.sender_id: x for x in s.scalars(
                select(ConversationSummary).where(ConversationSummary.sender_id.in_(senders)))}
            # Every event there is: the next sync() skips those counted here (ids at or below a
            # summary's last are counted, see _ingest).
            with self.tracker.connect() as t:
                rows = t.execute(select(EVENTS).where(EVENTS.c.sender_id.in_(senders))
                                 .order_by(EVENTS.c.id)).all()
                left = set(t.execute(select(EVENTS.c.sender_id).where(EVENTS.c.sender_id.in_(senders)).distinct())
                           .scalars())
            for sender, x in summaries.items():
                if sender not in left:
                    s.delete(x)
                    continue
                x.turns, x.intents, x.text, x.min_confidence, x.awaiting_since = 0, " ", "", None, None
                x.entities, x.actions = " ", " "
                x.fallback = x.handoff = x.late_reply = False
            for row in rows:
                if row.sender_id in summaries:
                    self._apply(summaries[row.sender_id], row)
            self._join_service_data(s, left & set(summaries), summaries)
            s.commit()

    def _apply(self, x: ConversationSummary, row: Any) -> None:
        x.last_event_id = row.id
        x.last_at = _when(row.timestamp)
        data = event_data(row, self.keyring) or {}
        kind = row.type_name
        if kind == "user":
            if x.turns == 0:
                x.channel = channel_of(data)
                x.started_at = _when(row.timestamp)
            x.turns += 1
            intent = (data.get("parse_data") or {}).get("intent") or {}
            name, conf = intent.get("name"), intent.get("confidence")
            if name and f" {name} " not in x.intents:
                x.intents += f"{name} "
            for e in (data.get("parse_data") or {}).get("entities") or []:
                entity = str(e.get("entity") or "") if isinstance(e, dict) else ""
                if entity and entity.isidentifier() and f" {entity} " not in (x.entities or " "):
                    x.entities = (x.entities or " ") + f"{entity} "
            if name == "nlu_fallback":
                x.fallback = True
            if isinstance(conf, (int, float)) and not str(data.get("text", "")).startswith("/"):
                x.min_confidence = conf if x.min_confidence is None else min(x.min_confidence, conf)
            if len(x.text) < TEXT_LIMIT:
                x.text = (x.text + " " + mask(str(data.get("text") or "")))[:TEXT_LIMIT]
            x.awaiting_since = row.timestamp
        elif kind == "bot":
            if x.awaiting_since is not None and x.channel in ("wechat", "miniprogram") \
                    and (row.timestamp or 0) - x.awaiting_since > self.wechat_deadline_s:
                x.late_reply = True
            x.awaiting_since = None
        elif kind == "action":
            name = str(row.action_name or "")
            if name and name not in QUIET_ACTIONS and f" {name} " not in (x.actions or " "):
                x.actions = (x.actions or " ") + f"{name} "
            if row.action_name in FALLBACK_ACTIONS:
                x.fallback = True
            if row.action_name in HANDOFF_ACTIONS:
                x.handoff = True
        elif kind == "slot" and data.get("name") == "handoff_id" and data.get("value"):
            x.handoff = True

    @staticmethod
    def _join_service_data(s: Session, senders: set[str], summaries: dict[str, ConversationSummary]) -> None:
        for sender, score in s.execute(select(Rating.sender_id, Rating.score).where(Rating.sender_id.in_(senders))
                                       .order_by(Rating.id)):
            summaries[sender].rating = score
        for (sender,) in s.execute(select(PhoneCall.call_id).where(PhoneCall.call_id.in_(senders),
                                                                   PhoneCall.end_reason == "silence")):
            summaries[sender].silence_hangup = True


@dataclass
class Filters:
    channel: str = ""
    date_from: str = ""
    date_to: str = ""
    max_confidence: str = ""
    min_turns: str = ""
    intent: str = ""
    flag: str = ""  # fallback | handoff | late_reply | silence_hangup
    rating: str = ""  # "1".."5" or "low" (1-2)
    reviewed: str = ""  # yes | no
    tag: str = ""
    entity: str = ""  # an entity the NLU found in a citizen's message
    action: str = ""  # an action the bot took
    flagged: str = ""  # yes: a reviewer flagged one of its messages
    reviewer: str = ""  # a staff member who reviewed, corrected, flagged, tagged or noted it
    q: str = ""
    sort: str = "-last_at"
    page: int = 1

    def query(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items() if v not in ("", None) and k != "page"}


SORTS = {"last_at": ConversationSummary.last_at, "started_at": ConversationSummary.started_at,
         "turns": ConversationSummary.turns, "min_confidence": ConversationSummary.min_confidence,
         "rating": ConversationSummary.rating}
FLAGS = {"fallback": ConversationSummary.fallback, "handoff": ConversationSummary.handoff,
         "late_reply": ConversationSummary.late_reply, "silence_hangup": ConversationSummary.silence_hangup}


def _date(value: str, end: bool = False) -> dt.datetime | None:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    moment = dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time(), dt.timezone(dt.timedelta(hours=8)))
    return moment


def list_conversations(s: Session, f: Filters, page_size: int) -> tuple[list[ConversationSummary], int]:
    q = select(ConversationSummary)
    c = ConversationSummary
    if f.channel in CHANNELS:
        q = q.where(c.channel == f.channel)
    if (start := _date(f.date_from)) is not None:
        q = q.where(c.started_at >= start)
    if (end := _date(f.date_to, end=True)) is not None:
        q = q.where(c.started_at < end)
    try:
        q = q.where(c.min_confidence < float(f.max_confidence)) if f.max_confidence else q
    except ValueError:
        pass
    if f.min_turns.isdigit():
        q = q.where(c.turns >= int(f.min_turns))
    if f.intent:
        q = q.where(c.intents.contains(f" {f.intent.strip()} "))
    if f.flag in FLAGS:
        q = q.where(FLAGS[f.flag].is_(True))
    if f.rating == "low":
        q = q.where(c.rating <= 2)
    elif f.rating.isdigit():
        q = q.where(c.rating == int(f.rating))
    if f.reviewed in ("yes", "no"):
        q = q.where(c.reviewed.is_(f.reviewed == "yes"))
    if f.tag:
        q = q.where(c.tags.contains(f" {f.tag.strip()} "))
    if f.entity:
        q = q.where(c.entities.contains(f" {f.entity.strip()} "))
    if f.action:
        q = q.where(c.actions.contains(f" {f.action.strip()} "))
    if f.flagged == "yes":
        q = q.where(c.sender_id.in_(select(MessageAnnotation.sender_id).where(MessageAnnotation.flagged.is_(True))))
    if f.reviewer:
        q = q.where(c.ref.in_(select(AuditEntry.conversation).where(AuditEntry.username == f.reviewer.strip(),
                                                                      AuditEntry.action.in_(REVIEW_ACTIONS))))
    if f.q:
        q = q.where(or_(c.text.contains(f.q), c.sender_id.contains(f.q)))
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    column = SORTS.get(f.sort.lstrip("-"), c.last_at)
    order = column.desc() if f.sort.startswith("-") else column.asc()
    rows = s.scalars(q.order_by(order, c.sender_id).offset((max(1, f.page) - 1) * page_size).limit(page_size)).all()
    return list(rows), int(total)


@dataclass
class Turn:
    """One line of the transcript."""

    event_id: int
    kind: str  # user | bot | action | slot | unreadable (a row that does not open with the keys)
    at: dt.datetime
    text: str = ""
    intent: str | None = None
    confidence: float | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    annotation: MessageAnnotation | None = None


def transcript(tracker: Engine, s: Session, sender: str, reveal_event: int | None = None,
               keyring: Keyring = NO_KEYS) -> list[Turn]:
    """The conversation as turns, masked; ``reveal_event`` shows that one message in the clear."""
    with tracker.connect() as t:
        rows = t.execute(select(EVENTS).where(EVENTS.c.sender_id == sender).order_by(EVENTS.c.id)).all()
    notes = {a.event_id: a for a in s.scalars(select(MessageAnnotation).where(MessageAnnotation.sender_id == sender))}
    turns: list[Turn] = []
    slots: dict[str, Any] = {}  # each slot's value so far: a line only when it changes
    for row in rows:
        try:
            data = event_data(row, keyring)
        except SealedValueError:
            logger.error("events row %s does not open with DATA_KEYS", row.id)
            turns.append(Turn(row.id, "unreadable", _when(row.timestamp), UNREADABLE))
            continue
        if data is None:
            continue
        shown = (lambda v: v) if row.id == reveal_event else mask
        if row.type_name == "user":
            parse = data.get("parse_data") or {}
            intent = parse.get("intent") or {}
            md = data.get("metadata") or {}
            turns.append(Turn(row.id, "user", _when(row.timestamp), shown(str(data.get("text") or "")),
                              intent.get("name"), intent.get("confidence"),
                              [{"entity": e.get("entity"), "value": shown(str(e.get("value")))}
                               for e in parse.get("entities") or []],
                              {"channel": channel_of(data), "metadata": mask_data(md)}, notes.get(row.id)))
        elif row.type_name == "bot":
            buttons = [b.get("title") for b in ((data.get("data") or {}).get("buttons") or []) if isinstance(b, dict)]
            custom = (data.get("data") or {}).get("custom")
            turns.append(Turn(row.id, "bot", _when(row.timestamp), mask(str(data.get("text") or "")),
                              detail={"buttons": buttons, "custom": mask_data(custom) if custom else None}))
        elif row.type_name == "action" and row.action_name != "action_listen":
            turns.append(Turn(row.id, "action", _when(row.timestamp), str(row.action_name),
                              detail={"policy": data.get("policy"), "confidence": data.get("confidence")}))
        elif row.type_name == "slot" and data.get("name") not in ("requested_slot",):
            name, value = str(data.get("name")), data.get("value")
            if slots.get(name) == value:  # a reset of what was already empty, the same value again: no line
                continue
            slots[name] = value
            turns.append(Turn(row.id, "slot", _when(row.timestamp), f"{name} = {mask(json.dumps(value, ensure_ascii=False))}"))
    return turns


def phone_turns(s: Session, sender: str) -> tuple[PhoneCall | None, list[PhoneTurn]]:
    call = s.scalar(select(PhoneCall).where(PhoneCall.call_id == sender))
    if call is None:
        return None, []
    return call, list(s.scalars(select(PhoneTurn).where(PhoneTurn.call_pk == call.id).order_by(PhoneTurn.seq)))



@dataclass
class InboxItem:
    """A citizen's message the assistant was unsure of, waiting for a reviewer's label."""
    ref: str
    sender: str
    event_id: int
    at: dt.datetime
    text: str
    intent: str | None
    confidence: float | None


def inbox(tracker: Engine, s: Session, key: bytes, threshold: float = 0.6, limit: int = 100,
          keyring: Keyring = NO_KEYS) -> list[InboxItem]:
    """Low-confidence and not-understood messages across conversations, newest first, that no reviewer
    has labelled yet (button presses, "/intent" payloads, are not the citizen's words and are left out)."""
    c = ConversationSummary
    senders = list(s.scalars(select(c.sender_id).where(or_(c.min_confidence < threshold, c.fallback.is_(True)))
                             .order_by(c.last_at.desc()).limit(300)))
    if not senders:
        return []
    labelled = set(s.execute(select(MessageAnnotation.sender_id, MessageAnnotation.event_id)
                             .where(MessageAnnotation.sender_id.in_(senders), MessageAnnotation.intent.is_not(None))))
    with tracker.connect() as t:
        rows = t.execute(select(EVENTS).where(EVENTS.c.sender_id.in_(senders), EVENTS.c.type_name == "user")
                         .order_by(EVENTS.c.id.desc())).all()
    items: list[InboxItem] = []
    for row in rows:
        if (row.sender_id, row.id) in labelled:
            continue
        try:
            data = event_data(row, keyring)
        except SealedValueError:
            logger.error("events row %s does not open with DATA_KEYS", row.id)
            continue
        if data is None:
            continue
        text = str(data.get("text") or "")
        intent = (data.get("parse_data") or {}).get("intent") or {}
        name, conf = intent.get("name"), intent.get("confidence")
        unsure = name == "nlu_fallback" or (isinstance(conf, (int, float)) and conf < threshold)
        if not text or text.startswith("/") or not unsure:
            continue
        items.append(InboxItem(conversation_ref(key, row.sender_id), row.sender_id, row.id, _when(row.timestamp),
                               mask(text), name, conf if isinstance(conf, (int, float)) else None))
        if len(items) >= limit:
            break
    return items
