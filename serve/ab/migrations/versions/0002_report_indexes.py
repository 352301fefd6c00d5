"""The report aggregates in the database: an index ordered by latency within each arm's first images lets it
walk them in order for the percentiles instead of sorting an arm's rows, and with confidence in it the per-arm
counts and mean read the index alone. It covers the old arm index.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("predictions_arm_latency", "predictions", ["arm", "image", "latency_s", "confidence"])
    op.drop_index("predictions_arm", table_name="predictions")


def downgrade() -> None:
    op.create_index("predictions_arm", "predictions", ["arm"])
    op.drop_index("predictions_arm_latency", table_name="predictions")
