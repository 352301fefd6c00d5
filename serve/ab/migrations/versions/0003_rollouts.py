"""Guarded rollouts (serve/ab/rollout.py) shared by every ingress replica: when each began, the decision that
concluded each step (its primary key lets exactly one replica's decision win), the latest hold, and the 5xx
answers per arm (the prediction table only holds answered requests).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("experiment", sa.Text, primary_key=True), sa.Column("started_at", sa.Float, nullable=False))
    op.create_table(
        "rollout_decisions",
        sa.Column("experiment", sa.Text, nullable=False), sa.Column("step", sa.Integer, nullable=False),
        sa.Column("action", sa.Text, nullable=False), sa.Column("weight", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False), sa.Column("decided_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("experiment", "step"),
        sa.ForeignKeyConstraint(["experiment"], ["rollouts.experiment"], ondelete="CASCADE"))
    op.create_table(
        "rollout_holds",
        sa.Column("experiment", sa.Text, primary_key=True), sa.Column("step", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False), sa.Column("decided_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["experiment"], ["rollouts.experiment"], ondelete="CASCADE"))
    op.create_table(
        "rollout_errors",
        sa.Column("experiment", sa.Text, nullable=False), sa.Column("arm", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False))
    op.create_index("rollout_errors_arm_created", "rollout_errors", ["experiment", "arm", "created"])


def downgrade() -> None:
    for table in ("rollout_errors", "rollout_holds", "rollout_decisions", "rollouts"):
        op.drop_table(table)
