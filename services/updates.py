"""Telling a citizen that a department moved their case on (issue 19): called by the open API
(services/open_api.py) after a department's update is committed.

Tickets: the citizen who left a mobile number when filing ("请留个手机号，方便回复您") asked to be
answered there, so each status change the department makes is texted to it (template
``ticket_update``; the city's SMS rules apply: opt-outs, one a minute, ten a day). An anonymous
ticket has no one to tell.

Applications: the citizens who asked for the application's progress notices (the offer after they
checked it, actions/conversation.py; topic ``application_progress``) each get a reminder queued with
the newest step, which the reminder scheduler delivers on the channel they asked on (services/reminders.py:
quiet hours, limits, retries and the result recorded). Once the application is finished the
subscriptions end: nothing more will come."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from services.container import Services
from services.models import Application, FeedbackTicket
from services.sms import MAX_PARAM, SmsMessage
from services.subscriptions import FINISHED_STATUSES, PROGRESS_KEY, TOPICS, Reminder, Subscription
from services.tickets import STATUS_NAMES

log = logging.getLogger(__name__)


def tell_citizen(services: Services, kind: str, ref: str,
                 now: dt.datetime | None = None) -> str:
    """What was done for the update of ``kind`` ("ticket" or "application") number ``ref``."""
    if kind == "application":
        return queue_progress_notices(services, ref, now or dt.datetime.now(dt.timezone.utc))
    with services.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.number == ref)).first()
        if ticket is None:
            return "no such ticket"
        phone, status = ticket.contact_phone, STATUS_NAMES.get(ticket.status, ticket.status)
    if not phone:
        return "anonymous: nobody to tell"
    # held, not dropped, when the number just had one (the receipt of the ticket, say)
    outcome = services.sms.send(phone, SmsMessage("ticket_update", {"ticket": ref, "status": status}), hold=True)
    log.info("ticket %s update texted to its filer: %s", ref, outcome)
    return f"sms {outcome}"


def progress_text(step: str, result: str) -> str:
    """The news of one step, as short as an SMS variable and a WeChat notice field take it."""
    return (step if not result or result == step else f"{step}，{result}")[:MAX_PARAM]


def queue_progress_notices(services: Services, number: str, now: dt.datetime) -> str:
    """A notice of the application's newest step for each citizen who asked for its progress; their
    subscriptions end when it is finished."""
    with services.sessions() as s:
        app = s.scalar(select(Application).options(selectinload(Application.steps)).where(Application.number == number))
        if app is None or not app.steps:
            return "no such application"
        newest = max(app.steps, key=lambda st: st.id)  # the step just added (a back-dated one too)
        subs = list(s.scalars(select(Subscription).where(Subscription.topic == "application_progress",
                                                         Subscription.subject == number,
                                                         Subscription.status == "active")))
        if not subs:
            return "nobody subscribed"
        progress = progress_text(newest.step, newest.result)
        text = TOPICS["application_progress"].text.format(subject=number, progress=progress)
        due_key = f"{PROGRESS_KEY}{number}:{newest.id}"
        told = set(s.scalars(select(Reminder.subscription_id).where(Reminder.due_key == due_key)))
        queued = 0
        for sub in subs:
            if sub.id not in told:  # one notice per step and citizen, however often the update is told
                s.add(Reminder(subscription_id=sub.id, due_key=due_key, text=text, status="queued", attempts=0,
                               next_attempt_at=now))
                queued += 1
            if app.status in FINISHED_STATUSES:
                sub.status, sub.cancelled_at = "ended", now
        try:
            s.commit()
        except IntegrityError:  # told at the same moment by another process: its notices stand
            s.rollback()
            return "already queued"
    log.info("application %s: %d progress notice(s) queued", number, queued)
    return f"{queued} notice(s) queued"
