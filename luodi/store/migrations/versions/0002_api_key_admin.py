"""api key roles: api_keys.admin

Keys that existed before this revision become admin keys, so nobody who could manage keys is locked out;
keys created from now on are user keys unless created with admin=True.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows get TRUE from the column default; then the default becomes FALSE for new rows.
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admin', sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('admin', existing_type=sa.Boolean(), existing_nullable=False,
                              server_default=sa.false())


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('admin')
