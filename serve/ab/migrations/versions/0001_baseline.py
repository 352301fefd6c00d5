"""The schema as the unversioned SQLite store wrote it (up to commit e1a8f7e).

A database that already has `predictions` was written by that code: it is adopted as it is, rows included,
and only the later revisions run on it.

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KEY = ["request_id", "image"]


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("predictions"):
        return
    op.create_table(
        "predictions",
        sa.Column("request_id", sa.Text, nullable=False), sa.Column("image", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False), sa.Column("arm", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False), sa.Column("predicted", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False), sa.Column("latency_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(*KEY))
    op.create_index("predictions_created", "predictions", ["created"])
    op.create_index("predictions_arm", "predictions", ["arm"])
    op.create_table(
        "shadows",
        sa.Column("request_id", sa.Text, nullable=False), sa.Column("image", sa.Integer, nullable=False),
        sa.Column("arm", sa.Text, nullable=False), sa.Column("model", sa.Text, nullable=False),
        sa.Column("predicted", sa.Integer, nullable=False), sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "arm"),
        sa.ForeignKeyConstraint(KEY, [f"predictions.{c}" for c in KEY], ondelete="CASCADE"))
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.Text, nullable=False), sa.Column("image", sa.Integer, nullable=False),
        sa.Column("label", sa.Integer, nullable=False), sa.Column("created", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(*KEY),
        sa.ForeignKeyConstraint(KEY, [f"predictions.{c}" for c in KEY], ondelete="CASCADE"))


def downgrade() -> None:
    for table in ("feedback", "shadows", "predictions"):
        op.drop_table(table)
