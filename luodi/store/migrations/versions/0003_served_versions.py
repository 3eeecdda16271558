"""served versions: the run an app serves when pinned (`luodi promote APP VERSION`)

Additive: apps without a row keep serving their latest finished run, as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 01:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'served_versions',
        sa.Column('app', sa.String(length=200), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('app'),
    )


def downgrade() -> None:
    op.drop_table('served_versions')
