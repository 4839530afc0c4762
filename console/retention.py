"""Retention: conversations, call records and recordings older than ``CONSOLE_RETENTION_DAYS`` are
deleted, once at the console's start and then every day (``python -m console purge`` does it now).

Every event older than the period goes from the tracker store, with the reviewers' annotations of
those events; a conversation with nothing left loses its console summary, one that came back later
keeps its newer sessions and its summary is computed again from them (Rasa reads only the latest
session, so the conversation goes on). Phone calls
(and their recording files) go by their start. Tickets, payments and ratings are service records
and stay; the audit log is append-only and stays (it names conversations, never their content)."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, func, select, true
from sqlalchemy.orm import sessionmaker

from console.auth import audited
from console.conversations import EVENTS, NO_KEYS, ConversationIndex
from textnorm.sealing import Keyring
from services.models import MessageAnnotation, PhoneCall, PhoneTurn

logger = logging.getLogger(__name__)
BATCH = 500


@dataclass(frozen=True)
class Purged:
    conversations: int = 0
    events: int = 0
    calls: int = 0
    recordings: int = 0


def purge(tracker: Engine, sessions: sessionmaker, days: int, now: dt.datetime | None = None,
          keyring: Keyring = NO_KEYS) -> Purged:
    """Delete what is older than ``days`` days; ``days`` 0 keeps everything."""
    if days <= 0:
        return Purged()
    cut = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=days)
    with tracker.connect() as t:
        senders = list(t.execute(select(EVENTS.c.sender_id).where(EVENTS.c.timestamp < cut.timestamp())
                                 .group_by(EVENTS.c.sender_id)).scalars())
    events = gone = 0
    index = ConversationIndex(tracker, sessions, keyring=keyring)
    for start in range(0, len(senders), BATCH):
        batch = senders[start:start + BATCH]
        with tracker.begin() as t:
            events += t.execute(delete(EVENTS).where(EVENTS.c.sender_id.in_(batch),
                                                     EVENTS.c.timestamp < cut.timestamp())).rowcount or 0
            first_left = dict(t.execute(select(EVENTS.c.sender_id, func.min(EVENTS.c.id))
                                        .where(EVENTS.c.sender_id.in_(batch)).group_by(EVENTS.c.sender_id)).all())
        gone += len(set(batch) - set(first_left))
        with sessions() as s:  # reviewers' annotations of the deleted events
            for sender in batch:
                older = MessageAnnotation.event_id < first_left[sender] if sender in first_left else true()
                s.execute(delete(MessageAnnotation).where(MessageAnnotation.sender_id == sender, older))
            s.commit()
        index.rebuild(batch)
    with sessions() as s:
        old = s.execute(select(PhoneCall.id, PhoneCall.recording).where(PhoneCall.started_at < cut)).all()
        ids = [row.id for row in old]
        for start in range(0, len(ids), BATCH):
            batch_ids = ids[start:start + BATCH]
            s.execute(delete(PhoneTurn).where(PhoneTurn.call_pk.in_(batch_ids)))  # a call's turns go with it
            s.execute(delete(PhoneCall).where(PhoneCall.id.in_(batch_ids)))
        files = [Path(row.recording) for row in old if row.recording]
        calls = len(ids)
        result = Purged(gone, events, calls, sum(1 for f in files if f.is_file()))
        if senders or calls:
            audited(s, "retention", "purge", None,
                    f"older than {days} days: {result.conversations} conversations, {result.events} events, "
                    f"{result.calls} calls, {result.recordings} recordings")
        s.commit()
    for path in files:  # only once the rows that name them are gone
        path.unlink(missing_ok=True)
    if senders or calls:
        logger.info("retention: purged %s", result)
    return result
