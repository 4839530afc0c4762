"""Aggregate figures departments read through the open API (``GET /api/v1/kpis``): 事项办结率,
群众满意度, 工单按期答复率. Counts and rates only; a figure made from fewer than ``MIN_GROUP`` records is
withheld (None, with a reason), so a small group, one applicant or one rating, cannot be singled out."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import sessionmaker

from services.models import Application, FeedbackTicket, Rating
from services.applications import office_names
from services.tickets import ticket_department

MIN_GROUP = 5
CHINA = dt.timezone(dt.timedelta(hours=8))
FINISHED = frozenset({"已办结"})  # an application's status when it is done
ANSWERED = ("resolved", "closed")  # a ticket's statuses once answered
TOO_FEW = "fewer_than_5_records"
NOT_BY_DEPARTMENT = "not_recorded_by_department"


@dataclass(frozen=True)
class Figure:
    value: float | None
    count: int | None  # the records it is made from; None when withheld
    reason: str | None  # why the value is None

    def as_json(self) -> dict[str, object]:
        return {"value": self.value, "count": self.count, "reason": self.reason}


def _figure(value: float | None, count: int) -> Figure:
    if count < MIN_GROUP:
        return Figure(None, None, TOO_FEW)
    return Figure(None if value is None else round(value, 4), count, None)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def kpis(sessions: sessionmaker, start: dt.date, end: dt.date, department: str | None, today: dt.date) -> dict[str, Figure]:
    """The figures for the days ``start``..``end`` (China time, both included), for one department
    or all. Applications count by the day they were submitted and belong to a department when it is
    recorded for them, else when their office names it (full or short name: 民政局, 民政); tickets by their due date up to ``today`` and
    the tickets' department name (services/tickets.py DEPARTMENT_NAMES), on time when answered by
    then (the console dashboard's 工单按期办结率); ratings carry no department."""
    # In UTC: SQLite keeps times without their zone, and the rows' defaults (CURRENT_TIMESTAMP) are UTC.
    since = dt.datetime.combine(start, dt.time(), CHINA).astimezone(dt.timezone.utc)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), CHINA).astimezone(dt.timezone.utc)
    with sessions() as s:
        apps = select(Application.status).where(Application.submitted_at >= since, Application.submitted_at < until)
        if department:  # the recorded department, else an office naming it (by its short name too: an
            # aggregate read, looser than belongs_to, which lets a key write only where the full name stands)
            by_office = or_(*(Application.office.like(_like(n), escape="\\") for n in sorted(office_names(department))))
            apps = apps.where(or_(Application.department.in_(sorted(office_names(department))),
                                  and_(Application.department.is_(None), by_office)))
        statuses = list(s.scalars(apps))
        tickets = s.execute(select(FeedbackTicket.status, FeedbackTicket.due_date, FeedbackTicket.updated_at)
                            .where(FeedbackTicket.due_date >= start, FeedbackTicket.due_date <= min(end, today),
                                   *([FeedbackTicket.department == ticket_department(department)] if department else [])))
        due = list(tickets)
        scores = s.execute(select(func.count(), func.avg(Rating.score))
                           .where(Rating.created_at >= since, Rating.created_at < until)).one()
    finished = sum(1 for status in statuses if status in FINISHED)
    on_time = sum(1 for status, due_date, updated in due if status in ANSWERED and _day(updated) <= due_date)
    rated, mean = int(scores[0] or 0), scores[1]
    return {
        "completion_rate": _figure(finished / len(statuses) if statuses else None, len(statuses)),
        "satisfaction": (Figure(None, None, NOT_BY_DEPARTMENT) if department
                         else _figure(float(mean) if mean is not None else None, rated)),
        "tickets_on_time_rate": _figure(on_time / len(due) if due else None, len(due)),
    }


def _day(at: dt.datetime) -> dt.date:
    """A stored time's day in China (SQLite gives times back without their zone: UTC)."""
    return (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).astimezone(CHINA).date()
