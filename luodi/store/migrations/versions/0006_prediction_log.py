"""prediction log: prediction_log

Served predictions, sampled by each app's serve.log: inputs (PII-redacted when the guard is on), output, version,
latency, and the ground truth POST /v1/apps/{name}/feedback brings (luodi.monitor). Rows older than
serve.log.retention_days, or beyond serve.log.max_rows per app, are deleted as new ones are written.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 19:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'prediction_log',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('app', sa.String(length=200), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('latency_ms', sa.Float(), nullable=False),
        sa.Column('inputs', sa.JSON(), nullable=False),
        sa.Column('output', sa.JSON(), nullable=False),
        sa.Column('truth', sa.JSON(), nullable=True),
        sa.Column('feedback_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_prediction_log_app_at', 'prediction_log', ['app', 'at'])


def downgrade() -> None:
    op.drop_index('ix_prediction_log_app_at', table_name='prediction_log')
    op.drop_table('prediction_log')
