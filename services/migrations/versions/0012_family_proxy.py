"""family proxy (子女代办): grants and their audit trail

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:00:00

``proxy_grants``: a family member's leave to act for an elderly citizen (services/proxy.py), the
elder's number sealed and looked up by its keyed hash, the consent code only as an HMAC.
``proxy_audit``: what happened to each grant and what was done under it, numbers masked;
append-only in the database, as ``audit_log`` (0005): UPDATE and DELETE fail on SQLite and
PostgreSQL, TRUNCATE on PostgreSQL.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

MESSAGE = "proxy_audit is append-only"


def upgrade() -> None:
    op.create_table(
        'proxy_grants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('family_id', sa.String(length=128), nullable=False),
        sa.Column('elder_phone', sa.Text(), nullable=False),
        sa.Column('elder_phone_hash', sa.String(length=64), nullable=False),
        sa.Column('relation', sa.String(length=10), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('consented_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ended_by', sa.String(length=10), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_proxy_grants_family_id'), 'proxy_grants', ['family_id'], unique=False)
    op.create_index(op.f('ix_proxy_grants_elder_phone_hash'), 'proxy_grants', ['elder_phone_hash'], unique=False)
    op.create_index(op.f('ix_proxy_grants_status'), 'proxy_grants', ['status'], unique=False)
    op.create_table(
        'proxy_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('grant_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('action', sa.String(length=30), nullable=False),
        sa.Column('detail', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['grant_id'], ['proxy_grants.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_proxy_audit_grant_id'), 'proxy_audit', ['grant_id'], unique=False)
    op.create_index(op.f('ix_proxy_audit_at'), 'proxy_audit', ['at'], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER proxy_audit_no_{verb.lower()} BEFORE {verb} ON proxy_audit "
                       f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
        return
    op.execute("CREATE FUNCTION proxy_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$")
    op.execute("CREATE TRIGGER proxy_audit_no_change BEFORE UPDATE OR DELETE ON proxy_audit "
               "FOR EACH ROW EXECUTE FUNCTION proxy_audit_append_only()")
    op.execute("CREATE TRIGGER proxy_audit_no_truncate BEFORE TRUNCATE ON proxy_audit "
               "FOR EACH STATEMENT EXECUTE FUNCTION proxy_audit_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER proxy_audit_no_{verb}")
    else:
        op.execute("DROP TRIGGER proxy_audit_no_truncate ON proxy_audit")
        op.execute("DROP TRIGGER proxy_audit_no_change ON proxy_audit")
        op.execute("DROP FUNCTION proxy_audit_append_only()")
    op.drop_table('proxy_audit')
    op.drop_table('proxy_grants')
