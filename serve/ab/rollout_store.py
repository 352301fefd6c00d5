"""What every ingress replica shares about a guarded rollout, in the feedback store's database.

The decision that concludes a step is kept under the primary key (experiment, step): when replicas decide at
once, the first insert wins and the others read the stored rows back and replay them (serve.ab.rollout), so
all apply the same weights. Holds are not history: one row per experiment keeps the latest. The evidence is
counted by the database over the predictions table, in the windows `rollout.windows` names; the p95 and its
bounds are three order statistics read by rank, never the latencies themselves.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Float, Integer, MetaData, Table, Text, select, text
from sqlalchemy.dialects import postgresql, sqlite

from serve.ab.store import FeedbackStore, value_at_rank
from serve.ab.rollout import (Accuracy, ArmEvidence, Decision, Evidence, RolloutState, baseline_of, p95_ranks,
                              replay, windows)
from serve.config import ExperimentConfig

_tables = MetaData()
ROLLOUTS = Table("rollouts", _tables, Column("experiment", Text, primary_key=True), Column("started_at", Float))
DECISIONS = Table("rollout_decisions", _tables, Column("experiment", Text, primary_key=True),
                  Column("step", Integer, primary_key=True), Column("action", Text), Column("weight", Float),
                  Column("reason", Text), Column("decided_at", Float))
HOLDS = Table("rollout_holds", _tables, Column("experiment", Text, primary_key=True), Column("step", Integer),
              Column("reason", Text), Column("decided_at", Float))
ERRORS = Table("rollout_errors", _tables, Column("experiment", Text), Column("arm", Text), Column("created", Float))

ANSWERED = "predictions WHERE arm = :arm AND image = 0 AND created >= :since AND created < :until"


class RolloutStore:
    """Thread-safe: every call takes a pooled connection of its own from the feedback store's engine."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store, self.engine = store, store.engine
        self.transaction, self.snapshot = store.transaction, store.snapshot

    def _insert(self, table: Table) -> Any:
        return (postgresql if self.engine.dialect.name == "postgresql" else sqlite).insert(table)

    def start(self, experiment: str, now: float) -> float:
        """When the rollout began: `now` if this call is the first for the experiment, else the stored time.
        Read first: only the first look of a rollout needs the write lock."""
        query = select(ROLLOUTS.c.started_at).where(ROLLOUTS.c.experiment == experiment)
        with self.snapshot() as connection:
            started = connection.execute(query).scalar()
        if started is not None:
            return started
        with self.transaction() as connection:
            connection.execute(self._insert(ROLLOUTS).on_conflict_do_nothing(),
                               {"experiment": experiment, "started_at": now})
            return connection.execute(query).scalar_one()

    def state(self, experiment: str, now: float) -> RolloutState:
        """The rollout as the stored decisions make it (started now if it never ran)."""
        started = self.start(experiment, now)
        return replay(started, self.decisions(experiment))

    def decisions(self, experiment: str) -> list[Decision]:
        with self.snapshot() as connection:
            rows = connection.execute(
                select(DECISIONS.c.action, DECISIONS.c.step, DECISIONS.c.weight, DECISIONS.c.reason,
                       DECISIONS.c.decided_at).where(DECISIONS.c.experiment == experiment)
                .order_by(DECISIONS.c.step)).tuples().all()
        return [Decision(*row) for row in rows]

    def conclude(self, experiment: str, decision: Decision) -> bool:
        """Store the decision that concludes its step; False when another replica's decision got there first."""
        if not decision.concludes_step:
            raise ValueError(f"a {decision.action} concludes no step; holds go to hold()")
        with self.transaction() as connection:
            won = connection.execute(self._insert(DECISIONS).on_conflict_do_nothing().returning(DECISIONS.c.step), {
                "experiment": experiment, "step": decision.step, "action": decision.action,
                "weight": decision.weight, "reason": decision.reason, "decided_at": decision.at}).first()
        return won is not None

    def hold(self, experiment: str, decision: Decision) -> None:
        """Keep only the latest hold of the experiment (for the report)."""
        row = {"experiment": experiment, "step": decision.step, "reason": decision.reason, "decided_at": decision.at}
        with self.transaction() as connection:
            insert = self._insert(HOLDS)
            connection.execute(insert.on_conflict_do_update(
                index_elements=[HOLDS.c.experiment],
                set_={k: insert.excluded[k] for k in ("step", "reason", "decided_at")}), row)

    def latest_hold(self, experiment: str) -> Decision | None:
        with self.snapshot() as connection:
            row = connection.execute(select(HOLDS.c.step, HOLDS.c.reason, HOLDS.c.decided_at).where(
                HOLDS.c.experiment == experiment)).first()
        return None if row is None else Decision("hold", row.step, float("nan"), row.reason, row.decided_at)

    def record_errors(self, experiment: str, rows: list[tuple[str, float]]) -> None:
        """5xx answers (arm, when): they count among the arm's requests and as its errors."""
        with self.transaction() as connection:
            connection.execute(ERRORS.insert(), [{"experiment": experiment, "arm": arm, "created": at}
                                                 for arm, at in rows])

    def evidence(self, experiment: ExperimentConfig, state: RolloutState, now: float) -> Evidence:
        """Both arms in their windows and the accuracy since the rollout began, from one snapshot."""
        plan, w = experiment.rollout, windows(experiment.rollout, state, now)
        baseline = baseline_of(experiment)
        with self.snapshot() as connection:
            arms = [self._arm(connection, experiment.name, arm, window, plan.alpha)
                    for arm, window in ((baseline, w.baseline), (plan.challenger, w.challenger))]
            (bn, bc), (cn, cc) = (self._labels(connection, arm, w.accuracy) for arm in (baseline, plan.challenger))
        return Evidence(arms[0], arms[1], Accuracy(bn, bc, cn, cc))

    @staticmethod
    def _labels(connection: Connection, arm: str, window: tuple[float, float]) -> tuple[int, int]:
        """Labels and correct answers on the predictions `arm` served within the window."""
        n, correct = connection.execute(text(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN p.predicted = f.label THEN 1 ELSE 0 END), 0) "
            "FROM predictions p JOIN feedback f USING (request_id, image) "
            "WHERE p.arm = :arm AND p.created >= :since AND p.created < :until"),
            {"arm": arm, "since": window[0], "until": window[1]}).one()
        return int(n), int(correct)

    @staticmethod
    def _arm(connection: Connection, experiment: str, arm: str, window: tuple[float, float],
             alpha: float) -> ArmEvidence:
        params = {"arm": arm, "since": window[0], "until": window[1]}
        answered = connection.execute(text(f"SELECT COUNT(*) FROM {ANSWERED}"), params).scalar_one()
        errors = connection.execute(text(
            "SELECT COUNT(*) FROM rollout_errors WHERE experiment = :experiment AND arm = :arm "
            "AND created >= :since AND created < :until"), {**params, "experiment": experiment}).scalar_one()
        feedback, _ = RolloutStore._labels(connection, arm, window)

        def at_rank(rank: int | None) -> float | None:  # 1-based, ascending
            return value_at_rank(connection, ANSWERED, "latency_s", params, rank)

        p95 = at_rank(max(1, -(-95 * answered // 100))) if answered else None  # nearest rank: ceil(0.95 n)
        low, high = p95_ranks(answered, alpha) if answered else (None, None)
        return ArmEvidence(answered + errors, errors, feedback, p95, at_rank(low), at_rank(high))
