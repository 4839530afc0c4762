"""Hand-offs to human agents and satisfaction ratings: the records a conversation leaves (SMS: services/sms.py)."""
from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import sessionmaker

from services.models import Handoff, Rating

HANDOFF_REASONS = frozenset({"requested", "failed_attempts", "fallback"})


class HandoffsBackend(Protocol):
    def create(self, *, sender_id: str, channel: str, reason: str) -> int: ...


class RatingsBackend(Protocol):
    def record(self, *, sender_id: str, channel: str, flow: str, score: int) -> None: ...


class SqlHandoffs:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def create(self, *, sender_id: str, channel: str, reason: str) -> int:
        if reason not in HANDOFF_REASONS:
            raise ValueError(f"unknown hand-off reason {reason!r}")
        with self._sessions() as s:
            h = Handoff(sender_id=sender_id, channel=channel, reason=reason, status="waiting")
            s.add(h)
            s.commit()
            return h.id


class SqlRatings:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def record(self, *, sender_id: str, channel: str, flow: str, score: int) -> None:
        if not 1 <= score <= 5:
            raise ValueError("a rating is 1 to 5")
        with self._sessions() as s:
            s.add(Rating(sender_id=sender_id, channel=channel, flow=flow, score=score))
            s.commit()
