"""phone calls and their turns (voice gateway review records)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phone_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("transport", sa.String(length=20), nullable=False),
        sa.Column("caller", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=20), nullable=True),
        sa.Column("next_step", sa.String(length=10), nullable=False),
        sa.Column("recording", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_phone_calls_call_id", "phone_calls", ["call_id"], unique=True)
    op.create_table(
        "phone_turns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("asr_confidence", sa.Float(), nullable=True),
        sa.Column("dtmf", sa.String(length=32), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("rasa_ms", sa.Integer(), nullable=True),
        sa.Column("tts_ms", sa.Integer(), nullable=True),
        sa.Column("barge_in", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_pk"], ["phone_calls.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_phone_turns_call_pk", "phone_turns", ["call_pk"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_phone_turns_call_pk", table_name="phone_turns")
    op.drop_table("phone_turns")
    op.drop_index("ix_phone_calls_call_id", table_name="phone_calls")
    op.drop_table("phone_calls")
