"""conversation summaries: the entities found and the actions taken, for the list's filters

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:00:00

Filled for new events as the console reads them; ``python -m console rebuild`` fills them for
conversations read before.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('conversation_summaries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entities', sa.Text(), server_default=' ', nullable=False))
        batch_op.add_column(sa.Column('actions', sa.Text(), server_default=' ', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('conversation_summaries', schema=None) as batch_op:
        batch_op.drop_column('actions')
        batch_op.drop_column('entities')
