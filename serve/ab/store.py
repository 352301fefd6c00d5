"""Served predictions awaiting feedback, shadow predictions and the feedback itself, in SQLite or PostgreSQL.

The URL picks the database (serve.ab.database): a SQLite file for one node, PostgreSQL for every replica of a
cluster, surviving pods. The store is bounded: rows older than `retention_s` and the oldest beyond `max_rows`
are pruned, and a pruned request id is unknown to /feedback. The report's aggregates (counts, accuracy, mean
confidence, latency percentiles) are computed by the database, never by loading rows.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Float, Integer, MetaData, Table, Text, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from serve.ab.sequential import quantile_ranks
from serve.ab.database import create_store_engine, is_transient, migrate, store_url

log = logging.getLogger(__name__)
# A prune walks the created index (~0.1-0.2 s at a million rows): at most every PRUNE_EVERY_S, once PRUNE_EVERY
# rows came in, so max_rows may be overshot by what arrives in that time.
PRUNE_EVERY = 5000
PRUNE_EVERY_S = 10.0

# What the store reads and writes; the schema itself is made by the migrations (serve/ab/migrations).
_tables = MetaData()
PREDICTIONS = Table("predictions", _tables, Column("request_id", Text), Column("image", Integer),
                    Column("created", Float), Column("arm", Text), Column("model", Text),
                    Column("predicted", Integer), Column("confidence", Float), Column("latency_s", Float))
SHADOWS = Table("shadows", _tables, Column("request_id", Text), Column("image", Integer), Column("arm", Text),
                Column("model", Text), Column("predicted", Integer), Column("confidence", Float),
                Column("latency_s", Float))
FEEDBACK = Table("feedback", _tables, Column("request_id", Text), Column("image", Integer),
                 Column("label", Integer), Column("created", Float))
FIELDS = ("request_id", "image", "arm", "model", "predicted", "confidence", "latency_s")


@dataclass(frozen=True)
class Prediction:
    """What one image of a served request was answered with."""

    request_id: str
    image: int
    arm: str
    model: str
    predicted: int
    confidence: float
    latency_s: float


Stamped = tuple[float, Prediction]  # when it was answered (epoch seconds), and what


@dataclass(frozen=True)
class ArmOutcomes:
    arm: str
    requests: int
    mean_confidence: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    feedback: int
    correct: int
    latency_p95_interval_s: tuple[float | None, float | None] = (None, None)


@dataclass(frozen=True)
class ShadowOutcomes:
    """Paired outcomes of `primary` (answered) and `shadow` (mirrored) on the same images."""

    primary: str
    shadow: str
    compared: int
    agreed: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    paired_feedback: int
    primary_only_correct: int  # McNemar's b
    shadow_only_correct: int   # McNemar's c


def _row(p: Prediction, **extra: Any) -> dict[str, Any]:
    return dict(zip(FIELDS, astuple(p)), **extra)


def _count_if(condition: str) -> str:
    return f"COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0)"


class FeedbackStore:
    """Thread-safe: every call takes a pooled connection of its own."""

    def __init__(self, url: str | Path, max_rows: int, retention_s: float) -> None:
        self.url = store_url(url)
        self.max_rows, self.retention_s = max_rows, retention_s
        self.engine = create_store_engine(self.url)
        self._migrated = False
        self._lock = threading.Lock()
        self._written_since_prune, self._pruned_at = 0, time.monotonic()
        try:
            self.prune()
        except Exception as exc:
            if not is_transient(exc):
                raise
            # the database is down right now: serve anyway, migrate when it answers
            log.warning("feedback store %s unreachable at start (%s); retrying on use",
                        self.url.render_as_string(hide_password=True), type(exc).__name__)

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        self._ensure_schema()
        with self.engine.connect().execution_options(write=True) as connection:
            with connection.begin():
                yield connection

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One consistent view for all of a report's queries."""
        self._ensure_schema()
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    def _ensure_schema(self) -> None:
        with self._lock:
            if not self._migrated:
                migrate(self.engine)
                self._migrated = True

    def _insert_new(self, table: Table) -> Any:
        """INSERT that skips rows whose key is already stored (a retried batch, a repeated id)."""
        dialect = postgresql if self.backend == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    def record(self, predictions: Sequence[Prediction], created: float | None = None) -> None:
        now = time.time() if created is None else created
        self.write([(now, p) for p in predictions], [])

    def record_shadow(self, predictions: Sequence[Prediction]) -> None:
        self.write([], predictions)

    def write(self, predictions: Sequence[Stamped], shadows: Sequence[Prediction]) -> None:
        """One transaction. Shadow rows whose served prediction is not stored (dropped, pruned) are skipped:
        a shadow only counts paired with what was answered."""
        with self.transaction() as connection:
            if predictions:
                connection.execute(self._insert_new(PREDICTIONS), [_row(p, created=t) for t, p in predictions])
            if shadows:
                keys = {(s.request_id, s.image) for s in shadows}
                stored = set(connection.execute(select(PREDICTIONS.c.request_id, PREDICTIONS.c.image).where(
                    tuple_(PREDICTIONS.c.request_id, PREDICTIONS.c.image).in_(list(keys)))).tuples())
                rows = [_row(s) for s in shadows if (s.request_id, s.image) in stored]
                if rows:
                    connection.execute(self._insert_new(SHADOWS), rows)
        self._written_since_prune += len(predictions)
        if self._written_since_prune >= PRUNE_EVERY and time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self.prune()

    def find(self, request_id: str, image: int = 0) -> Prediction | None:
        """The served prediction, if it is still retained."""
        with self.snapshot() as connection:
            row = connection.execute(
                select(*(PREDICTIONS.c[f] for f in FIELDS)).where(
                    PREDICTIONS.c.request_id == request_id, PREDICTIONS.c.image == image,
                    PREDICTIONS.c.created >= time.time() - self.retention_s)).first()
        return Prediction(*row) if row else None

    def add_feedback(self, request_id: str, image: int, label: int) -> bool:
        """True if this is the first feedback for the image: later ones do not count."""
        with self.transaction() as connection:
            inserted = connection.execute(self._insert_new(FEEDBACK).returning(FEEDBACK.c.image), {
                "request_id": request_id, "image": image, "label": label, "created": time.time()}).first()
        return inserted is not None

    def prune(self) -> None:
        self._written_since_prune, self._pruned_at = 0, time.monotonic()
        with self.transaction() as connection:
            connection.execute(text("DELETE FROM predictions WHERE created < :cutoff"),
                               {"cutoff": time.time() - self.retention_s})
            # the newest max_rows by answer time stay (ties at the boundary go too: at most max_rows remain)
            connection.execute(text(
                "DELETE FROM predictions WHERE created <= "
                "(SELECT created FROM predictions ORDER BY created DESC LIMIT 1 OFFSET :keep)"),
                {"keep": self.max_rows})

    def arm_outcomes(self, arm: str) -> ArmOutcomes:
        with self.snapshot() as connection:
            return self._arm_outcomes(connection, arm)

    def shadow_outcomes(self, primary: str, shadow: str) -> ShadowOutcomes:
        with self.snapshot() as connection:
            return self._shadow_outcomes(connection, primary, shadow)

    def feedback_span(self) -> tuple[int, float | None, float | None]:
        """How many labels came in, and when the first and the last did: the experiment's feedback rate."""
        with self.snapshot() as connection:
            count, first, last = connection.execute(text("SELECT COUNT(*), MIN(created), MAX(created) FROM feedback")).one()
        return int(count), first, last

    def outcomes(self, arms: Sequence[str], primary: str | None) -> tuple[list[ArmOutcomes], list[ShadowOutcomes]]:
        """Every arm, and every other arm as a shadow of `primary`, from one snapshot."""
        with self.snapshot() as connection:
            return ([self._arm_outcomes(connection, arm) for arm in arms],
                    [self._shadow_outcomes(connection, primary, arm) for arm in arms if primary and arm != primary])

    @property
    def _then(self) -> str:
        """The join that reads the smaller side (feedback, shadows) first and looks predictions up by key.
        SQLite's planner, without statistics, starts from an arm's predictions instead (30 s against 2 s at a
        million rows); its CROSS JOIN keeps the written order. PostgreSQL plans from its statistics."""
        return "CROSS JOIN" if self.backend == "sqlite" else "JOIN"

    def _arm_outcomes(self, connection: Connection, arm: str) -> ArmOutcomes:
        params = {"arm": arm}
        # every request has an image 0, and (arm, image, latency_s, confidence) covers this: no table lookups
        requests, mean_confidence = connection.execute(text(
            f"SELECT {_count_if('image = 0')}, AVG(confidence) FROM predictions WHERE arm = :arm"), params).one()
        answered = "predictions WHERE arm = :arm AND image = 0"
        p50, p95 = self._percentiles(connection, answered, "latency_s", params)
        p95_interval = tuple(value_at_rank(connection, answered, "latency_s", params, rank)
                             for rank in quantile_ranks(requests, 0.95))
        feedback, correct = connection.execute(text(
            f"SELECT COUNT(*), {_count_if('p.predicted = f.label')} FROM feedback f "
            f"{self._then} predictions p USING (request_id, image) WHERE p.arm = :arm"), params).one()
        return ArmOutcomes(arm, requests, mean_confidence, p50, p95, feedback, correct, p95_interval)

    def _shadow_outcomes(self, connection: Connection, primary: str, shadow: str) -> ShadowOutcomes:
        params = {"primary": primary, "shadow": shadow}
        pairs = f"shadows s {self._then} predictions p USING (request_id, image) WHERE p.arm = :primary AND s.arm = :shadow"
        compared, agreed = connection.execute(text(
            f"SELECT COUNT(*), {_count_if('p.predicted = s.predicted')} FROM {pairs}"), params).one()
        p50, p95 = self._percentiles(connection, f"{pairs} AND s.image = 0", "s.latency_s", params)
        paired, b, c = connection.execute(text(
            f"SELECT COUNT(*), {_count_if('p.predicted = f.label AND s.predicted != f.label')}, "
            f"{_count_if('p.predicted != f.label AND s.predicted = f.label')} FROM shadows s "
            f"{self._then} feedback f USING (request_id, image) {self._then} predictions p USING (request_id, image) "
            "WHERE p.arm = :primary AND s.arm = :shadow"), params).one()
        return ShadowOutcomes(primary, shadow, compared, agreed, p50, p95, paired, b, c)

    @staticmethod
    def _percentiles(connection: Connection, source: str, column: str, params: dict[str, Any],
                     quantiles: Sequence[float] = (0.5, 0.95)) -> list[float | None]:
        """Linear-interpolated percentiles (numpy's default) of `column` over `source` ("table WHERE ...").
        PostgreSQL has percentile_cont; SQLite gets the two neighbouring values by OFFSET into the ordered
        rows and interpolates between them."""
        if connection.dialect.name == "postgresql":
            columns = ", ".join(f"percentile_cont({q}) WITHIN GROUP (ORDER BY {column})" for q in quantiles)
            return list(connection.execute(text(f"SELECT {columns} FROM {source}"), params).one())
        n = connection.execute(text(f"SELECT COUNT(*) FROM {source}"), params).scalar_one()
        values: list[float | None] = []
        for q in quantiles:
            if n == 0:
                values.append(None)
                continue
            position = (n - 1) * q
            low = math.floor(position)
            pair = connection.execute(text(f"SELECT {column} FROM {source} ORDER BY {column} LIMIT 2 OFFSET :low"),
                                      {**params, "low": low}).scalars().all()
            high = pair[1] if len(pair) > 1 else pair[0]
            values.append(pair[0] + (high - pair[0]) * (position - low))
        return values


def value_at_rank(connection: Connection, source: str, column: str, params: dict[str, Any],
                  rank: int | None) -> float | None:
    """The rank-th smallest `column` over `source` ("table WHERE ..."), 1-based; one row read, not all."""
    if rank is None:
        return None
    return connection.execute(text(f"SELECT {column} FROM {source} ORDER BY {column} LIMIT 1 OFFSET :offset"),
                              {**params, "offset": rank - 1}).scalar_one()
