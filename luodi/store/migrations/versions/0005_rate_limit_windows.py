"""shared rate limits: rate_limit_windows

Requests per rate-limited caller per minute, counted by every server on the store, so that a key's rate limit
holds across replicas (luodi.serve.ratelimit.StoreRateLimiter). Rows older than the previous minute are deleted
as they age.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 14:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rate_limit_windows',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('window', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key', 'window'),
    )


def downgrade() -> None:
    op.drop_table('rate_limit_windows')
