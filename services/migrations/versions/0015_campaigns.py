"""reminder campaigns written by staff, and their tests

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 12:00:00

``campaigns``: one message to the active subscribers of a topic (services/campaigns.py), a draft
until scheduled; scheduling writes its ``reminders`` rows (due key ``campaign:<id>``).
``campaign_tests``: a test of a campaign to a staff member's mobile (sealed), queued by the console
and sent by the services process. ``ix_reminders_due_key``: a campaign's figures and settling read its
reminders by due key; the table's other indexes lead with the subscription.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'campaigns',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('topic', sa.String(length=40), nullable=False),
        sa.Column('channel', sa.String(length=12), nullable=False),
        sa.Column('subscribed_before', sa.Date(), nullable=True),
        sa.Column('text', sa.String(length=60), nullable=False),
        sa.Column('deadline', sa.Date(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('queued', sa.Integer(), nullable=False),
        sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_campaigns_status', 'campaigns', ['status'])
    op.create_table(
        'campaign_tests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('campaign_id', sa.Integer(), sa.ForeignKey('campaigns.id'), nullable=False),
        sa.Column('phone', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_campaign_tests_campaign_id', 'campaign_tests', ['campaign_id'])
    op.create_index('ix_campaign_tests_status', 'campaign_tests', ['status'])
    op.create_index('ix_reminders_due_key', 'reminders', ['due_key'])


def downgrade() -> None:
    op.drop_index('ix_reminders_due_key', table_name='reminders')
    op.drop_table('campaign_tests')
    op.drop_table('campaigns')
