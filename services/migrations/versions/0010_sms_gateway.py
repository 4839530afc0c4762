"""SMS through a gateway: message state, opt-outs and per-number quotas

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00

``sms_outbox`` becomes the table of every message, whichever provider (services/sms.py): its
template and sealed parameters, provider, state, the gateway's id, error code, attempts and the
delivery receipt. Rows written before keep ``provider`` and ``status`` "outbox". Numbers that
are looked up (opt-outs, quotas, the outbox's ``phone_hash``) are keyed hashes, never the number.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sms_outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('params', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('provider', sa.String(length=16), server_default='outbox', nullable=False))
        batch_op.add_column(sa.Column('status', sa.String(length=12), server_default='outbox', nullable=False))
        batch_op.add_column(sa.Column('phone_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('biz_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('error_code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_sms_outbox_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_sms_outbox_phone_hash'), ['phone_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_sms_outbox_biz_id'), ['biz_id'], unique=False)
    op.create_table(
        'sms_opt_outs',
        sa.Column('phone_hash', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=12), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
        sa.PrimaryKeyConstraint('phone_hash'),
    )
    op.create_table(
        'sms_quota',
        sa.Column('phone_hash', sa.String(length=64), nullable=False),
        sa.Column('day', sa.String(length=8), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('last_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('phone_hash', 'day'),
    )


def downgrade() -> None:
    op.drop_table('sms_quota')
    op.drop_table('sms_opt_outs')
    with op.batch_alter_table('sms_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_outbox_biz_id'))
        batch_op.drop_index(batch_op.f('ix_sms_outbox_phone_hash'))
        batch_op.drop_index(batch_op.f('ix_sms_outbox_status'))
        for name in ('reported_at', 'sent_at', 'next_attempt_at', 'attempts', 'error_code', 'biz_id',
                     'phone_hash', 'status', 'provider', 'params', 'kind'):
            batch_op.drop_column(name)
