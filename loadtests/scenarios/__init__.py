"""The scenario registry. Each entry has NAME, HELP, a docstring, add_arguments(parser) and
run(args, pool) -> headline ({scenario, figure, ok}); `python -m loadtests <NAME>` runs one."""
from __future__ import annotations

from loadtests.scenarios import cpu_resnet50
from loadtests.scenarios.decode import DecodeAgreement, PhonePhotos
from loadtests.scenarios.endurance import Faults, Soak
from loadtests.scenarios.frontdoor import FrontDoor
from loadtests.scenarios.peers import Peers
from loadtests.scenarios.recording import RecordingCost
from loadtests.scenarios.robustness import BadInputs, Batching
from loadtests.scenarios.rollout import Rollout
from loadtests.scenarios.slowclients import SlowClients
from loadtests.scenarios.spinwait import SpinWait
from loadtests.scenarios.starts import StartStop
from loadtests.scenarios.sweeps import ConcurrencySweep, RateSweep
from loadtests.scenarios.traffic import AbTraffic, MixedModels, MultiImage

# The standard set's order: scenarios on the same server config run back to back and share one server.
SCENARIOS = {s.NAME: s for s in (cpu_resnet50, ConcurrencySweep, RateSweep, MultiImage, MixedModels, AbTraffic,
                                  BadInputs, Soak, Batching, FrontDoor, Faults, DecodeAgreement, PhonePhotos,
                                  SlowClients, Rollout, Peers, RecordingCost, SpinWait, StartStop)}
