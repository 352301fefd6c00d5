"""Served predictions awaiting feedback, shadow predictions and the feedback itself, in SQLite.

An embedded file survives restarts and is shared by every ingress replica on the node (WAL mode
lets them write concurrently). It is bounded: rows older than `retention_s` and the oldest
beyond `max_rows` are pruned, and a pruned request id is unknown to /feedback.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL, image INTEGER NOT NULL, created REAL NOT NULL, arm TEXT NOT NULL,
    model TEXT NOT NULL, predicted INTEGER NOT NULL, confidence REAL NOT NULL, latency_s REAL NOT NULL,
    PRIMARY KEY (request_id, image));
CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created);
CREATE INDEX IF NOT EXISTS predictions_arm ON predictions (arm);
CREATE TABLE IF NOT EXISTS shadows (
    request_id TEXT NOT NULL, image INTEGER NOT NULL, arm TEXT NOT NULL, model TEXT NOT NULL,
    predicted INTEGER NOT NULL, confidence REAL NOT NULL, latency_s REAL NOT NULL,
    PRIMARY KEY (request_id, image, arm),
    FOREIGN KEY (request_id, image) REFERENCES predictions (request_id, image) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, image INTEGER NOT NULL, label INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (request_id, image),
    FOREIGN KEY (request_id, image) REFERENCES predictions (request_id, image) ON DELETE CASCADE);
"""
PRUNE_EVERY = 500  # inserts between prunes


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


@dataclass(frozen=True)
class ArmOutcomes:
    arm: str
    requests: int
    mean_confidence: float | None
    latencies_s: list[float]
    feedback: int
    correct: int


@dataclass(frozen=True)
class ShadowOutcomes:
    """Paired outcomes of `primary` (answered) and `shadow` (mirrored) on the same images."""

    primary: str
    shadow: str
    compared: int
    agreed: int
    latencies_s: list[float]
    paired_feedback: int
    primary_only_correct: int  # McNemar's b
    shadow_only_correct: int   # McNemar's c


class FeedbackStore:
    """One connection; callers serialise access (the ingress uses a one-thread executor)."""

    def __init__(self, path: str | Path, max_rows: int, retention_s: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows, self.retention_s = max_rows, retention_s
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._inserts = 0
        self.prune()

    def close(self) -> None:
        self.db.close()

    def record(self, predictions: list[Prediction]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(p.request_id, p.image, now, p.arm, p.model, p.predicted, p.confidence, p.latency_s)
                 for p in predictions])
        self._count_insert()

    def record_shadow(self, predictions: list[Prediction]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO shadows VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(p.request_id, p.image, p.arm, p.model, p.predicted, p.confidence, p.latency_s) for p in predictions])

    def find(self, request_id: str, image: int = 0) -> Prediction | None:
        """The served prediction, if it is still retained."""
        row = self.db.execute(
            "SELECT request_id, image, arm, model, predicted, confidence, latency_s FROM predictions "
            "WHERE request_id = ? AND image = ? AND created >= ?",
            (request_id, image, time.time() - self.retention_s)).fetchone()
        return Prediction(*row) if row else None

    def add_feedback(self, request_id: str, image: int, label: int) -> bool:
        """True if this is the first feedback for the image: later ones do not count."""
        with self.db:
            cursor = self.db.execute("INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?)",
                                     (request_id, image, label, time.time()))
        return cursor.rowcount == 1

    def prune(self) -> None:
        with self.db:
            self.db.execute("DELETE FROM predictions WHERE created < ?", (time.time() - self.retention_s,))
            # rowids grow with every insert, so this keeps at most the newest max_rows without a scan
            self.db.execute("DELETE FROM predictions WHERE rowid <= (SELECT MAX(rowid) FROM predictions) - ?",
                            (self.max_rows,))

    def _count_insert(self) -> None:
        self._inserts += 1
        if self._inserts % PRUNE_EVERY == 0:
            self.prune()

    def arm_outcomes(self, arm: str) -> ArmOutcomes:
        requests, mean_confidence = self.db.execute(
            "SELECT COUNT(DISTINCT request_id), AVG(confidence) FROM predictions WHERE arm = ?", (arm,)).fetchone()
        latencies = [r[0] for r in self.db.execute(
            "SELECT latency_s FROM predictions WHERE arm = ? AND image = 0", (arm,))]
        feedback, correct = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(p.predicted = f.label), 0) FROM predictions p "
            "JOIN feedback f USING (request_id, image) WHERE p.arm = ?", (arm,)).fetchone()
        return ArmOutcomes(arm, requests, mean_confidence, latencies, feedback, correct)

    def shadow_outcomes(self, primary: str, shadow: str) -> ShadowOutcomes:
        compared, agreed = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(p.predicted = s.predicted), 0) FROM predictions p "
            "JOIN shadows s USING (request_id, image) WHERE p.arm = ? AND s.arm = ?", (primary, shadow)).fetchone()
        latencies = [r[0] for r in self.db.execute(
            "SELECT s.latency_s FROM predictions p JOIN shadows s USING (request_id, image) "
            "WHERE p.arm = ? AND s.arm = ? AND s.image = 0", (primary, shadow))]
        paired, b, c = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(p.predicted = f.label AND s.predicted != f.label), 0), "
            "COALESCE(SUM(p.predicted != f.label AND s.predicted = f.label), 0) FROM predictions p "
            "JOIN shadows s USING (request_id, image) JOIN feedback f USING (request_id, image) "
            "WHERE p.arm = ? AND s.arm = ?", (primary, shadow)).fetchone()
        return ShadowOutcomes(primary, shadow, compared, agreed, latencies, paired, b, c)
