"""personal fields sealed at rest: columns that hold sealed text become unbounded text

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 18:40:00

A sealed value (services/sealed.py) is longer than the number it holds, so the bounded columns
among them become TEXT. Rows already there stay in clear until ``python -m console rekey``.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

WIDENED = [("feedback_tickets", "location", 200), ("feedback_tickets", "contact_phone", 20),
           ("sms_outbox", "phone", 20), ("phone_calls", "caller", 32), ("phone_turns", "dtmf", 32)]


def upgrade() -> None:
    for table, column, length in WIDENED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length), type_=sa.Text())


def downgrade() -> None:
    # Sealed values are longer than these bounds: run a downgrade only on a database whose values
    # were never sealed (PostgreSQL refuses longer values; SQLite keeps them).
    for table, column, length in WIDENED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=length))
