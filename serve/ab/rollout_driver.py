"""Runs the experiment's guarded rollout inside every ingress replica.

Every `decide_every_s` each replica reads the stored decisions (so all replicas route with the same weights),
counts the evidence in the database, asks `rollout.decide`, and stores the answer: a step's conclusion under
the key (experiment, step), where the first replica's insert wins and the others read it back; a hold as the
experiment's latest hold. The new weights go to the router whole (`ExperimentRouter.set_arms`): a request in
flight keeps the arm it was given, and users only move toward the arm that grows (weighted rendezvous hashing).
5xx answers are stored as rows of their own (the predictions table holds answered requests only), so the
error guardrail sees every replica's.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from serve.ab.database import is_transient
from serve.ab.rollout import Decision, RolloutState, arm_weights, baseline_of, challenger_weight, decide
from serve.ab.rollout_store import RolloutStore
from serve.ab.router import ExperimentRouter
from serve.config import ExperimentConfig
from serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


class RolloutDriver:
    def __init__(self, router: ExperimentRouter, store: RolloutStore, metrics: ServeMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.router, self.store, self.metrics, self.clock = router, store, metrics, clock
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout")
        self._task: asyncio.Task | None = None
        self._states: dict[str, RolloutState] = {}  # by experiment name: the last state read from the store
        self._errors: list[tuple[str, str, float]] = []  # (experiment, arm, when) awaiting their write

    def running(self) -> ExperimentConfig | None:
        experiment = self.router.experiment
        return experiment if experiment is not None and experiment.enabled and experiment.rollout else None

    def ensure_started(self) -> None:
        """From the event loop (a request): the loop that will run the ticks."""
        if self.running() and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._errors:  # the last 5xx rows, so that no replica's errors go uncounted
            await asyncio.get_running_loop().run_in_executor(self.executor, self._write_errors)

    def reapply(self) -> None:
        """After a reconfigure: the weights this replica last read, not the first step's, for the same rollout."""
        experiment = self.running()
        if experiment is not None and experiment.name in self._states:
            self._apply(experiment, self._states[experiment.name])

    def note_error(self, arm: str | None) -> None:
        """A 5xx answered by `arm`; written with the next tick."""
        experiment = self.running()
        if experiment is not None and arm:
            self._errors.append((experiment.name, arm, self.clock()))

    async def _loop(self) -> None:
        while (experiment := self.running()) is not None:
            try:
                await self.tick()
            except Exception as exc:  # the database down: keep the weights, try again next time
                if not is_transient(exc):
                    log.exception("rollout tick failed")
                else:
                    log.warning(json.dumps({"event": "rollout_store_unavailable", "error": type(exc).__name__}))
            await asyncio.sleep(experiment.rollout.decide_every_s)
        self._task = None

    async def tick(self) -> Decision | None:
        """One look: returns the decision this replica made and stored (a hold, or a conclusion that won)."""
        experiment = self.running()
        if experiment is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._tick, experiment)

    def _write_errors(self) -> None:
        pending, self._errors = self._errors, []
        for name in {e for e, _, _ in pending}:
            self.store.record_errors(name, [(arm, at) for e, arm, at in pending if e == name])

    def _tick(self, experiment: ExperimentConfig) -> Decision | None:
        self._write_errors()
        now = self.clock()
        state = self._read(experiment, now)
        if state.status != "running":  # concluded: keep applying its weights, count nothing
            return None
        decision = decide(experiment.rollout, state, self.store.evidence(experiment, state, now), now)
        if decision is None:
            return None
        if decision.concludes_step:
            won = self.store.conclude(experiment.name, decision)
            self._read(experiment, now)
            if not won:
                return None
        else:
            self.store.hold(experiment.name, decision)
        self._record(experiment, decision)
        return decision

    def _read(self, experiment: ExperimentConfig, now: float) -> RolloutState:
        state = self.store.state(experiment.name, now)
        self._states[experiment.name] = state
        self._apply(experiment, state)
        return state

    def _apply(self, experiment: ExperimentConfig, state: RolloutState) -> None:
        if self.router.set_arms(arm_weights(experiment, state), experiment):
            w = challenger_weight(experiment.rollout, state)
            for arm, weight in ((baseline_of(experiment), 100.0 - w), (experiment.rollout.challenger, w)):
                self.metrics.rollout_weight.labels(experiment.name, arm).set(weight)

    def _record(self, experiment: ExperimentConfig, decision: Decision) -> None:
        self.metrics.rollout_decisions.labels(experiment.name, decision.action).inc()
        line = json.dumps({"event": "rollout_decision", "experiment": experiment.name, "action": decision.action,
                           "step": decision.step, "weight": decision.weight, "reason": decision.reason})
        level = {"rollback": logging.WARNING, "hold": logging.DEBUG}.get(decision.action, logging.INFO)
        log.log(level, line)

    def report(self) -> dict[str, Any] | None:
        """The `rollout` section of GET /ab/report (blocking: run it on a worker thread)."""
        experiment = self.running()
        if experiment is None:
            return None
        plan = experiment.rollout
        now = self.clock()
        state = self.store.state(experiment.name, now)
        hold = self.store.latest_hold(experiment.name)
        return {"experiment": experiment.name, "baseline": baseline_of(experiment), "challenger": plan.challenger,
                "plan": plan.model_dump(), "status": state.status, "step": state.step,
                "challenger_weight": challenger_weight(plan, state), "started_at": state.step_starts[0],
                "step_started_at": state.step_started,
                "decisions": [{"step": d.step, "action": d.action, "weight": d.weight, "reason": d.reason,
                               "decided_at": d.at} for d in state.history],
                "latest_hold": None if hold is None else
                {"step": hold.step, "reason": hold.reason, "decided_at": hold.at}}

    def close(self) -> None:
        self.executor.shutdown(wait=False)
