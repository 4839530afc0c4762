"""progress notices: a subscription may be about one application

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 16:00:00

``subscriptions.subject``: what a subscription is about when its topic is about one thing, such as
the application whose progress a citizen asked to be told of (topic ``application_progress``, the
application's number). Null for the yearly topics.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriptions') as batch:
        batch.add_column(sa.Column('subject', sa.String(length=40), nullable=True))
        batch.create_index('ix_subscriptions_subject', ['subject'])


def downgrade() -> None:
    with op.batch_alter_table('subscriptions') as batch:
        batch.drop_index('ix_subscriptions_subject')
        batch.drop_column('subject')
