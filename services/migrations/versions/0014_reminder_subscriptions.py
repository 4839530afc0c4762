"""reminder subscriptions with consent, and the reminders due

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 12:00:00

``subscriptions``: a citizen (sender id, channel) and a topic (services/subscriptions.py), the phone
number of SMS and call reminders sealed and looked up by its keyed hash. ``subscription_consents``: given (with
the words agreed to) and withdrawn; append-only in the database, as ``audit_log`` (0005).
``reminders``: one per subscription and occasion, queued then sent, refused, failed or skipped.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

MESSAGE = "subscription_consents is append-only"


def upgrade() -> None:
    op.create_table(
        'subscriptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sender_id', sa.String(length=128), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('topic', sa.String(length=40), nullable=False),
        sa.Column('phone', sa.Text(), nullable=True),
        sa.Column('phone_hash', sa.String(length=64), nullable=True),
        sa.Column('by_call', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_subscriptions_sender_id', 'subscriptions', ['sender_id'])
    op.create_index('ix_subscriptions_topic', 'subscriptions', ['topic'])
    op.create_index('ix_subscriptions_phone_hash', 'subscriptions', ['phone_hash'])
    op.create_index('ix_subscriptions_status', 'subscriptions', ['status'])
    op.create_table(
        'subscription_consents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscription_id', sa.Integer(), sa.ForeignKey('subscriptions.id'), nullable=False),
        sa.Column('sender_id', sa.String(length=128), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('topic', sa.String(length=40), nullable=False),
        sa.Column('action', sa.String(length=12), nullable=False),
        sa.Column('wording', sa.String(length=300), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_subscription_consents_subscription_id', 'subscription_consents', ['subscription_id'])
    op.create_index('ix_subscription_consents_sender_id', 'subscription_consents', ['sender_id'])
    op.create_table(
        'reminders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscription_id', sa.Integer(), sa.ForeignKey('subscriptions.id'), nullable=False),
        sa.Column('due_key', sa.String(length=64), nullable=False),
        sa.Column('text', sa.String(length=300), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('result', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('subscription_id', 'due_key'),
    )
    op.create_index('ix_reminders_subscription_id', 'reminders', ['subscription_id'])
    op.create_index('ix_reminders_status', 'reminders', ['status'])
    op.create_index('ix_reminders_next_attempt_at', 'reminders', ['next_attempt_at'])
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER subscription_consents_no_{verb.lower()} BEFORE {verb} ON subscription_consents "
                       f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
    else:
        op.execute(f"CREATE FUNCTION subscription_consents_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$")
        op.execute("CREATE TRIGGER subscription_consents_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON "
                   "subscription_consents FOR EACH STATEMENT EXECUTE FUNCTION subscription_consents_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS subscription_consents_append_only ON subscription_consents")
        op.execute("DROP FUNCTION IF EXISTS subscription_consents_append_only()")
    op.drop_table('reminders')
    op.drop_table('subscription_consents')
    op.drop_table('subscriptions')
