"""Applications (办件): where an application stands, looked up by number or by applicant."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import selectinload, sessionmaker

from services.models import Application
from services.tickets import DEPARTMENT_NAMES, ticket_department


@dataclass(frozen=True)
class ApplicationView:
    number: str
    service_name: str
    status: str
    current_step: str
    expected_date: dt.date | None
    office: str
    submitted_at: dt.datetime
    steps: tuple[tuple[str, str, dt.datetime], ...]


class ApplicationsUnavailable(Exception):
    """The platform could not answer now (down, too slow, or refusing our calls). Not an answer:
    the citizen is told it cannot be checked now and offered a human, never "not found"."""


class ApplicationsBackend(Protocol):
    """Read access to the application platform: SQL (the embedded default), or the provincial
    platform over HTTP (services/provincial.py), which may raise ``ApplicationsUnavailable``."""

    def by_number(self, number: str) -> ApplicationView | None: ...

    def by_applicant(self, phone: str, id_last4: str) -> list[ApplicationView]: ...


def office_names(department: str) -> set[str]:
    """The names an office may give ``department`` by: its full and its short name (民政局, 民政)."""
    return {department, ticket_department(department), DEPARTMENT_NAMES.get(department, department)} - {""}


def full_name(department: str) -> str:
    """A department by its full name, whichever name it was given by (民政 -> 民政局)."""
    return DEPARTMENT_NAMES.get(ticket_department(department), department)


def belongs_to(app: Application, department: str) -> bool:
    """Whether ``department`` (full or short name) handles the application: its recorded department,
    or, for a row that records none, an office that names the department in full ("单县民政局社会救助股"
    is 民政局's). Short names are not enough for a write: "交通" is in "公安局交通警察支队"."""
    if not department:
        return False
    if app.department:
        return full_name(app.department) == full_name(department)
    return full_name(department) in app.office


def _view(app: Application) -> ApplicationView:
    return ApplicationView(
        number=app.number,
        service_name=app.service_name,
        status=app.status,
        current_step=app.current_step,
        expected_date=app.expected_date,
        office=app.office,
        submitted_at=app.submitted_at,
        steps=tuple((s.step, s.result, s.at) for s in app.steps),
    )


class SqlApplications:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def by_number(self, number: str) -> ApplicationView | None:
        with self._sessions() as s:
            app = s.scalar(
                select(Application).options(selectinload(Application.steps)).where(Application.number == number)
            )
            return _view(app) if app else None

    def by_applicant(self, phone: str, id_last4: str) -> list[ApplicationView]:
        with self._sessions() as s:
            apps = s.scalars(
                select(Application)
                .options(selectinload(Application.steps))
                .where(Application.applicant_phone == phone, Application.applicant_id_last4 == id_last4.upper())
                .order_by(Application.submitted_at.desc())
            ).all()
            return [_view(a) for a in apps]
