"""payments through a real provider: orders expire, refunds (full or partial), notification nonces

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00

``payment_orders.expires_at`` is when an unpaid order is closed (WeChat Pay's ``time_expire``);
orders made before it have none and are never closed by the sweep. ``payment_nonces`` keeps the
(timestamp, nonce) pairs of verified notifications for the signature window, so a replayed one is
refused.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payment_orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_payment_orders_expires_at'), ['expires_at'], unique=False)
    op.create_table(
        'payment_refunds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('refund_no', sa.String(length=64), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('amount_fen', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('reason', sa.String(length=80), nullable=False),
        sa.Column('provider_refund_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
        sa.Column('succeeded_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['order_id'], ['payment_orders.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('payment_refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_refunds_refund_no'), ['refund_no'], unique=True)
        batch_op.create_index(batch_op.f('ix_payment_refunds_order_id'), ['order_id'], unique=False)
    op.create_table(
        'payment_nonces',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('provider', sa.String(length=20), nullable=False),
        sa.Column('timestamp', sa.BigInteger(), nullable=False),
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('provider', 'timestamp', 'nonce', name='uq_payment_nonces'),
    )
    with op.batch_alter_table('payment_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_nonces_timestamp'), ['timestamp'], unique=False)


def downgrade() -> None:
    op.drop_table('payment_nonces')
    op.drop_table('payment_refunds')
    with op.batch_alter_table('payment_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payment_orders_expires_at'))
        batch_op.drop_column('expires_at')
