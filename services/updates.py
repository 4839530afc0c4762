"""Telling a citizen that a department moved their case on (issue 19): called by the open API
(services/open_api.py) after a department's update is committed.

Tickets: the citizen who left a mobile number when filing ("请留个手机号，方便回复您") asked to be
answered there, so each status change the department makes is texted to it (template
``ticket_update``; the city's SMS rules apply: opt-outs, one a minute, ten a day). An anonymous
ticket has no one to tell. Applications: no citizen has opted in to progress messages yet (the
subscription topics are the yearly reminders), so nothing is sent: said in the log line."""
from __future__ import annotations

import logging

from sqlalchemy import select

from services.container import Services
from services.models import FeedbackTicket
from services.sms import SmsMessage
from services.tickets import STATUS_NAMES

log = logging.getLogger(__name__)


def tell_citizen(services: Services, kind: str, ref: str) -> str:
    """What was done for the update of ``kind`` ("ticket" or "application") number ``ref``."""
    if kind != "ticket":
        return "nobody subscribed"
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
