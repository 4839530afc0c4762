"""conversation summaries: a pseudonym (ref) for URLs, links, the API and exports

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:30:00

The console fills it for existing rows at start (it is a keyed hash, and the key is the console's).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('conversation_summaries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ref', sa.String(length=24), nullable=True))
        batch_op.create_index(batch_op.f('ix_conversation_summaries_ref'), ['ref'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('conversation_summaries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversation_summaries_ref'))
        batch_op.drop_column('ref')
