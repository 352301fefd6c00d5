"""The CPU accounting the peers benchmark reads: against processes that burn a known amount of CPU."""
from __future__ import annotations

import subprocess
import sys

import pytest

from loadtests import cpu

# Burns CPU for `seconds` of its own CPU time, prints the CPU time it measured itself, then waits for stdin.
BURNER = """
import sys, time
print(time.process_time(), flush=True)
start = time.process_time()
while time.process_time() - start < float(sys.argv[1]):
    pass
print(time.process_time(), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def burner():
    """A sleeping parent (sh) with one burning python child, so the tree and the names are exercised."""
    proc = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0" 0.5', BURNER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=10)


def test_counts_the_cpu_a_child_burns(burner):
    start = float(burner.stdout.readline())
    before = cpu.snapshot(burner.pid)
    end = float(burner.stdout.readline())  # the burn is done once this line arrives
    spent = cpu.by_name(before, cpu.snapshot(burner.pid))
    python = [name for name in spent if name.startswith("python")]
    assert len(python) == 1, spent
    assert spent[python[0]] == pytest.approx(end - start, abs=0.05)
    assert spent["sh"] < 0.05  # the waiting parent


def test_gone_and_missing_processes():
    assert cpu.cpu_seconds(2**22 + 1) == 0.0  # above pid_max's default: no such process
    assert cpu.by_name({1: ("x", 1.0)}, {}) == {}
    assert cpu.by_name({}, {7: ("born", 0.3), 8: ("born", 0.2)}) == {"born": pytest.approx(0.5)}


def test_measure_adds_the_generator(burner):
    burner.stdout.readline()
    result, spent = cpu.measure(burner.pid, lambda: sum(range(2_000_000)))
    assert result == sum(range(2_000_000))
    assert spent[cpu.GENERATOR] > 0.01
