"""departments' open API: clients, idempotency records, audit

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09 10:00:00

``api_clients``: a department's system, its key id and the SHA-256 of its secret (never the key),
scopes, active flag and per-minute rate limit with its current window. ``api_idempotency``: the
answers to writes, by client and Idempotency-Key, kept a day. ``api_audit``: every authenticated
request (client, method, path, status, key; no bodies); append-only in the database, as
``audit_log`` (0005): UPDATE and DELETE fail on SQLite and PostgreSQL, TRUNCATE on PostgreSQL.
Models: services/open_api_models.py.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

MESSAGE = "api_audit is append-only"


def upgrade() -> None:
    op.create_table(
        'api_clients',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key_id', sa.String(length=16), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('department', sa.String(length=30), nullable=False),
        sa.Column('name', sa.String(length=50), nullable=False),
        sa.Column('scopes', sa.String(length=100), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('rate_per_minute', sa.Integer(), nullable=False),
        sa.Column('window_start', sa.BigInteger(), nullable=False),
        sa.Column('window_count', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_api_clients_key_id'), 'api_clients', ['key_id'], unique=True)
    op.create_index(op.f('ix_api_clients_department'), 'api_clients', ['department'], unique=False)
    op.create_table(
        'api_idempotency',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.Column('response', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['api_clients.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id', 'key', name='uq_api_idempotency'),
    )
    op.create_index(op.f('ix_api_idempotency_created_at'), 'api_idempotency', ['created_at'], unique=False)
    op.create_table(
        'api_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('method', sa.String(length=8), nullable=False),
        sa.Column('path', sa.String(length=200), nullable=False),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=64), nullable=True),
        sa.Column('replayed', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['api_clients.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_api_audit_client_id'), 'api_audit', ['client_id'], unique=False)
    op.create_index(op.f('ix_api_audit_at'), 'api_audit', ['at'], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER api_audit_no_{verb.lower()} BEFORE {verb} ON api_audit "
                       f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
        return
    op.execute("CREATE FUNCTION api_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$")
    op.execute("CREATE TRIGGER api_audit_no_change BEFORE UPDATE OR DELETE ON api_audit "
               "FOR EACH ROW EXECUTE FUNCTION api_audit_append_only()")
    op.execute("CREATE TRIGGER api_audit_no_truncate BEFORE TRUNCATE ON api_audit "
               "FOR EACH STATEMENT EXECUTE FUNCTION api_audit_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER api_audit_no_{verb}")
    else:
        op.execute("DROP TRIGGER api_audit_no_truncate ON api_audit")
        op.execute("DROP TRIGGER api_audit_no_change ON api_audit")
        op.execute("DROP FUNCTION api_audit_append_only()")
    op.drop_table('api_audit')
    op.drop_table('api_idempotency')
    op.drop_table('api_clients')
