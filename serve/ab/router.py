"""Which arm of the A/B experiment answers a request; swapped whole when the experiment changes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from serve.ab.experiment import Arm, assign
from serve.ab.rollout import RolloutState, arm_weights
from serve.config import ExperimentConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentState:
    config: ExperimentConfig | None
    arms: tuple[Arm, ...]


class ExperimentRouter:
    """Holds the running experiment; a request reads one state, so it sees the old or the new, never half."""

    def __init__(self) -> None:
        self.state = ExperimentState(None, ())

    @property
    def experiment(self) -> ExperimentConfig | None:
        return self.state.config

    def reconfigure(self, experiment: Mapping[str, Any] | None, check_arm: Callable[[str], object]) -> None:
        """`check_arm` raises for an arm naming no loaded model: the update fails, not later requests."""
        parsed = ExperimentConfig.model_validate(experiment) if experiment else None
        arms = tuple(Arm(a.model, a.weight) for a in parsed.arms) if parsed else ()
        if parsed and parsed.rollout:  # its first step until the rollout driver reads the stored decisions
            arms = arm_weights(parsed, RolloutState.start(0.0))
        for arm in arms:
            check_arm(arm.name)
        self.state = ExperimentState(parsed, arms)
        log.info("experiment now %s", parsed)

    def set_arms(self, arms: tuple[Arm, ...], config: ExperimentConfig) -> bool:
        """New weights for the running experiment, swapped whole (a request sees the old or the new arms);
        refused (False) when `config` is no longer the running experiment, so a late rollout tick cannot put
        one experiment's arms under another."""
        state = self.state
        if state.config is not config:
            return False
        if arms != state.arms:
            self.state = ExperimentState(config, arms)
        return True

    def choose(self, model: str | None, headers: Mapping[str, str]) -> str | None:
        """The arm for a request that names no model; None when the request bypasses it or it is off."""
        experiment = self.state.config
        if model is not None or experiment is None or not experiment.enabled:
            return None
        if experiment.mode == "shadow":
            return experiment.primary_arm
        return assign(self.state.arms, headers.get(experiment.sticky_header), salt=experiment.name).name

    def shadow_arms(self, arm: str | None) -> list[str]:
        """The arms to mirror a request to: every other arm, when `arm` is shadow mode's primary."""
        experiment = self.state.config
        if arm is None or experiment is None or experiment.mode != "shadow":
            return []
        return [a.name for a in self.state.arms if a.name != experiment.primary_arm]
