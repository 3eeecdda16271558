"""scoped api keys: api_keys.scope

A nullable JSON column: {"apps": [...], "kbs": [...], "routes": [...]} limits a key to those apps, knowledge
bases and route groups (luodi.keys). Existing keys get NULL, i.e. stay unscoped and keep working as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 07:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('scope')
