"""SQLAlchemy models of the service database. Schema changes go through Alembic migrations."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.sealed import Sealed


class Base(DeclarativeBase):
    pass


class Application(Base):
    """An application for a government service (办件) and where it stands."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True, index=True)
    service_name: Mapped[str] = mapped_column(String(100))
    applicant_phone: Mapped[str] = mapped_column(String(20), index=True)
    # Only the last four characters of the ID-card number are kept: enough to confirm identity.
    applicant_id_last4: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(20))
    current_step: Mapped[str] = mapped_column(String(50))
    expected_date: Mapped[dt.date | None] = mapped_column(Date)
    office: Mapped[str] = mapped_column(String(100))
    # The department handling it (the open API's keys write only their own department's); None for rows
    # whose source names only the office (services/applications.py belongs_to).
    department: Mapped[str | None] = mapped_column(String(30), index=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    steps: Mapped[list[ApplicationStep]] = relationship(
        back_populates="application", order_by="ApplicationStep.at"
    )


class ApplicationStep(Base):
    """One step in an application's history."""

    __tablename__ = "application_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    step: Mapped[str] = mapped_column(String(50))
    result: Mapped[str] = mapped_column(String(50))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    application: Mapped[Application] = relationship(back_populates="steps")


class Bill(Base):
    """An amount due for one account and one period."""

    __tablename__ = "bills"
    __table_args__ = (UniqueConstraint("bill_type", "account", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_type: Mapped[str] = mapped_column(String(30), index=True)
    # Account number, or the ID-card number for insurance contributions.
    account: Mapped[str] = mapped_column(String(30), index=True)
    holder_name: Mapped[str] = mapped_column(String(50))
    district: Mapped[str] = mapped_column(String(20))
    period: Mapped[str] = mapped_column(String(20))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    due_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10), default="unpaid")


class PaymentOrder(Base):
    """A payment order for one bill. ``active_bill_id`` is unique while the order is
    pending or paid, so one bill never has two live orders, even under concurrent requests."""

    __tablename__ = "payment_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_no: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bills.id"), index=True)
    active_bill_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    provider: Mapped[str] = mapped_column(String(20))
    provider_txn_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    sender_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    paid_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # After this an unpaid order is closed at the provider and expires (None: made before 0009).
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    bill: Mapped[Bill] = relationship()


class PaymentRefund(Base):
    """A refund of part or all of a paid order: ``pending -> succeeded | closed | abnormal``.
    The order becomes ``refunded`` when its succeeded refunds add up to its amount."""

    __tablename__ = "payment_refunds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    refund_no: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("payment_orders.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    reason: Mapped[str] = mapped_column(String(80))
    provider_refund_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    succeeded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    order: Mapped[PaymentOrder] = relationship()


class ReconciliationRun(Base):
    """One day's comparison of a provider's trade bill with our orders and refunds (services/reconcile.py):
    ``running`` (a claim) -> ``ok`` | ``mismatches`` | ``failed`` (``error`` says why; no mismatches kept)."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_date: Mapped[dt.date] = mapped_column(Date, index=True)  # China time
    provider: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    bill_rows: Mapped[int] = mapped_column(Integer, default=0)  # payments and refunds in the bill
    payments: Mapped[int] = mapped_column(Integer, default=0)
    refunds: Mapped[int] = mapped_column(Integer, default=0)
    matched: Mapped[int] = mapped_column(Integer, default=0)
    mismatch_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(200))
    mismatches: Mapped[list["ReconciliationMismatch"]] = relationship(
        back_populates="run", order_by="ReconciliationMismatch.id")


class ReconciliationMismatch(Base):
    """A difference between the bill and our records: order and refund numbers, amounts, a fixed
    phrase; never a payer's openid or anything else personal."""

    __tablename__ = "reconciliation_mismatches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"), index=True)
    order_no: Mapped[str] = mapped_column(String(32), index=True)
    refund_no: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))  # services/reconcile.py KINDS
    here_fen: Mapped[int | None] = mapped_column(BigInteger)  # our amount, if we have one
    there_fen: Mapped[int | None] = mapped_column(BigInteger)  # the bill's amount, if it has one
    detail: Mapped[str] = mapped_column(String(200))
    run: Mapped[ReconciliationRun] = relationship(back_populates="mismatches")


class PaymentNonce(Base):
    """A (timestamp, nonce) pair a provider signed a notification with: seen once, refused twice.
    Rows older than the signature window are pruned; an older message fails its timestamp check."""

    __tablename__ = "payment_nonces"
    __table_args__ = (UniqueConstraint("provider", "timestamp", "nonce", name="uq_payment_nonces"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    timestamp: Mapped[int] = mapped_column(BigInteger, index=True)
    nonce: Mapped[str] = mapped_column(String(64))


class FeedbackTicket(Base):
    """A complaint, report, suggestion or request for help, routed to a department."""

    __tablename__ = "feedback_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(12), unique=True, index=True)
    category: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Sealed("feedback_tickets.content"))
    location: Mapped[str] = mapped_column(Sealed("feedback_tickets.location"))
    contact_phone: Mapped[str | None] = mapped_column(Sealed("feedback_tickets.contact_phone"))
    department: Mapped[str] = mapped_column(String(30), index=True)
    status: Mapped[str] = mapped_column(String(20), default="received", index=True)
    due_date: Mapped[dt.date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(String(20))
    sender_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    reply: Mapped[str | None] = mapped_column(Sealed("feedback_tickets.reply"))


class Handoff(Base):
    """A request to hand a conversation to a human agent."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(20), default="waiting")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Rating(Base):
    """A citizen's satisfaction score (1-5) at the end of a flow (群众满意度)."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    flow: Mapped[str] = mapped_column(String(30))
    score: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SmsOutbox(Base):
    """Every text message, whichever provider: the outbox's rows are the messages themselves; a
    gateway's rows carry their state (services/sms.py: ``pending → sent → delivered | undelivered``,
    ``pending → retry → sent | failed``, ``pending → failed``). Rows before migration 0010 have
    only phone and text."""

    __tablename__ = "sms_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(Sealed("sms_outbox.phone"))
    text: Mapped[str] = mapped_column(Sealed("sms_outbox.text"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    kind: Mapped[str | None] = mapped_column(String(32))  # the template (services/sms.py TEMPLATES)
    params: Mapped[str | None] = mapped_column(Sealed("sms_outbox.params"))  # its parameters, JSON
    provider: Mapped[str] = mapped_column(String(16), default="outbox", server_default="outbox")
    status: Mapped[str] = mapped_column(String(12), default="outbox", server_default="outbox", index=True)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # keyed hash (services/sms.py)
    biz_id: Mapped[str | None] = mapped_column(String(64), index=True)  # the gateway's id for it
    error_code: Mapped[str | None] = mapped_column(String(64))  # the gateway's code, as it sent it
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reported_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # the receipt


class SmsOptOut(Base):
    """A number that gets no SMS (replied TD/退订, or listed by staff), by its keyed hash only."""

    __tablename__ = "sms_opt_outs"

    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(12))  # "reply" | "staff"
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SmsQuota(Base):
    """SMS sent to one number on one day (China time) and when the last went: the rate limit,
    taken by one conditional UPDATE so every process agrees."""

    __tablename__ = "sms_quota"

    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)  # yyyymmdd
    count: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ProxyGrant(Base):
    """A family member's leave to act for an elderly citizen (子女代办, services/proxy.py):
    ``pending`` (a code texted to the elder) ``-> active`` (the elder keyed it in on the phone line)
    ``-> ended | expired``. The elder's number is sealed and looked up by its keyed hash; the code
    only as an HMAC, and only while pending."""

    __tablename__ = "proxy_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[str] = mapped_column(String(128), index=True)  # the family member's Rasa sender id
    elder_phone: Mapped[str] = mapped_column(Sealed("proxy_grants.elder_phone"))
    elder_phone_hash: Mapped[str] = mapped_column(String(64), index=True)  # services/sms.py NumberIndex
    relation: Mapped[str] = mapped_column(String(10))  # what the elder is to the family member: 父亲, 母亲, 家人
    status: Mapped[str] = mapped_column(String(10), index=True)
    code_hash: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # wrong codes keyed in
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    consented_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Pending: when the code lapses; active: when the consent does.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_by: Mapped[str | None] = mapped_column(String(10))  # elder | family | staff | system


class ProxyAudit(Base):
    """What happened to a grant and what was done under it: by whom, when, a short masked detail
    (never a whole personal number). Append-only in the database, as the console's audit log."""

    __tablename__ = "proxy_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("proxy_grants.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(80))  # family | elder | staff:<name> | system
    action: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str] = mapped_column(String(200), default="")


class PhoneCall(Base):
    """One call to the voice line: who called, how it ended and what the PBX does next."""

    __tablename__ = "phone_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)  # the Rasa sender id
    transport: Mapped[str] = mapped_column(String(20))  # audiosocket | websocket
    caller: Mapped[str | None] = mapped_column(Sealed("phone_calls.caller"))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # caller_hangup | handoff | silence | error (a malformed frame or 0xff from the PBX) | busy (refused)
    end_reason: Mapped[str | None] = mapped_column(String(20))
    next_step: Mapped[str] = mapped_column(String(10), default="hangup")  # human | hangup
    recording: Mapped[str | None] = mapped_column(String(255))
    unknown_frames: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # skipped, not fatal
    turns: Mapped[list["PhoneTurn"]] = relationship(back_populates="call", order_by="PhoneTurn.seq")


class PhoneTurn(Base):
    """One exchange on a call, for review: what was heard, which keys, how long the answer took."""

    __tablename__ = "phone_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_pk: Mapped[int] = mapped_column(ForeignKey("phone_calls.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # speech | dtmf | silence | start
    transcript: Mapped[str | None] = mapped_column(Sealed("phone_turns.transcript"))
    asr_confidence: Mapped[float | None] = mapped_column()
    dtmf: Mapped[str | None] = mapped_column(Sealed("phone_turns.dtmf"))
    reply: Mapped[str | None] = mapped_column(Sealed("phone_turns.reply"))
    # Milliseconds from the end of the caller's speech (or the last key) to the first audio byte sent.
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    rasa_ms: Mapped[int | None] = mapped_column(Integer)
    tts_ms: Mapped[int | None] = mapped_column(Integer)
    barge_in: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    call: Mapped[PhoneCall] = relationship(back_populates="turns")


class ConsoleUser(Base):
    """A staff member who may sign in to the console."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))  # reviewer | supervisor | admin
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("console_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Who did what, when, on which conversation. Written by the console, never edited."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    conversation: Mapped[str | None] = mapped_column(String(255), index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class ConversationSummary(Base):
    """One row per conversation in the tracker store, kept up to date by the console for its list."""

    __tablename__ = "conversation_summaries"

    sender_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    # The conversation's pseudonym in every URL, link, API field and export name (console/conversations.py
    # conversation_ref): a sender id can be a phone number; the real one shows only on an audited reveal.
    ref: Mapped[str | None] = mapped_column(String(24), unique=True, index=True)
    channel: Mapped[str] = mapped_column(String(20), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    intents: Mapped[str] = mapped_column(Text, default="")  # " intent_a intent_b " for LIKE filters
    entities: Mapped[str] = mapped_column(Text, default=" ", server_default=" ")  # " entity_a entity_b "
    actions: Mapped[str] = mapped_column(Text, default=" ", server_default=" ")  # " action_a action_b " (the bot's)
    min_confidence: Mapped[float | None] = mapped_column(index=True)
    fallback: Mapped[bool] = mapped_column(default=False)
    handoff: Mapped[bool] = mapped_column(default=False)
    late_reply: Mapped[bool] = mapped_column(default=False)
    silence_hangup: Mapped[bool] = mapped_column(default=False)
    rating: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, default="")  # the citizen's words, masked, for free-text search
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # When the citizen's last message arrived and is still unanswered (UNIX time), for late replies.
    awaiting_since: Mapped[float | None] = mapped_column()
    reviewed: Mapped[bool] = mapped_column(default=False, index=True)
    tags: Mapped[str] = mapped_column(Text, default="")  # " tag1 tag2 "
    note: Mapped[str | None] = mapped_column(Text)


class MessageAnnotation(Base):
    """A reviewer's flag or correction on one message (a tracker event) of a conversation."""

    __tablename__ = "message_annotations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(255), index=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    flagged: Mapped[bool] = mapped_column(default=False)
    intent: Mapped[str | None] = mapped_column(String(100))  # corrected intent
    entities: Mapped[str | None] = mapped_column(Text)  # corrected entities, JSON list
    text: Mapped[str | None] = mapped_column(Text)  # the message, masked, as exported
    username: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("sender_id", "event_id"),)


class ConsoleState(Base):
    """Small key-value state of the console (how far the tracker store has been read)."""

    __tablename__ = "console_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
