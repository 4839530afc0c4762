"""the department an application belongs to

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 15:00:00

``applications.department``: the department that handles the application (市场监督管理局, 民政局 …). The
departments' open API lets a key with ``applications:write`` add progress steps only to its own
department's applications. Rows from before (or from a source that names only the office) have none;
for those the office must name the key's department (``services/applications.py`` ``belongs_to``).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('applications') as batch:
        batch.add_column(sa.Column('department', sa.String(length=30), nullable=True))
        batch.create_index('ix_applications_department', ['department'])


def downgrade() -> None:
    with op.batch_alter_table('applications') as batch:
        batch.drop_index('ix_applications_department')
        batch.drop_column('department')
