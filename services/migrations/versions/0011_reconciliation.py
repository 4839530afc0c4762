"""daily reconciliation of payments: runs and their mismatches

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 10:00:00

``reconciliation_runs``: one comparison of a provider's trade bill for one day (China time) with
our orders and refunds, its counts and status; ``reconciliation_mismatches``: its differences,
by order and refund number and amounts only (services/reconcile.py). Nothing personal is kept.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'reconciliation_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('bill_date', sa.Date(), nullable=False),
        sa.Column('provider', sa.String(length=20), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('bill_rows', sa.Integer(), nullable=False),
        sa.Column('payments', sa.Integer(), nullable=False),
        sa.Column('refunds', sa.Integer(), nullable=False),
        sa.Column('matched', sa.Integer(), nullable=False),
        sa.Column('mismatch_count', sa.Integer(), nullable=False),
        sa.Column('error', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reconciliation_runs_bill_date'), ['bill_date'], unique=False)
    op.create_table(
        'reconciliation_mismatches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('order_no', sa.String(length=32), nullable=False),
        sa.Column('refund_no', sa.String(length=64), nullable=True),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('here_fen', sa.BigInteger(), nullable=True),
        sa.Column('there_fen', sa.BigInteger(), nullable=True),
        sa.Column('detail', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['reconciliation_runs.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('reconciliation_mismatches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reconciliation_mismatches_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reconciliation_mismatches_order_no'), ['order_no'], unique=False)


def downgrade() -> None:
    op.drop_table('reconciliation_mismatches')
    op.drop_table('reconciliation_runs')
