"""The scenario registry: each module has NAME, HELP, add_arguments(parser) and run(args, pool) -> headline."""
from __future__ import annotations

from types import ModuleType

from loadtests.scenarios import cpu_resnet50

SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in (cpu_resnet50,)}
