"""The simulator: many seeds stay safe and live, seeds reproduce, and a planted bug is caught."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from control.raft.sim import SimOptions, Simulation, main, run_seeds

DEFAULT_SEEDS = 2000
LONG_SEEDS = 100_000
PLANTED_BUG_SEED_BOUND = 600


def _assert_all_pass(first: int, count: int, options: SimOptions, jobs: int) -> None:
    print(f"simulating seeds {first}..{first + count - 1}: {options}")
    for seed, violation, trace in run_seeds(range(first, first + count), options, jobs):
        assert violation is None, (
            f"seed {seed}: {violation}\n{trace}\nreproduce: python -m control.raft.sim "
            f"--seed {seed} --steps {options.steps} --nodes {options.nodes} --trace"
        )


def test_default_seeds_three_nodes() -> None:
    _assert_all_pass(0, DEFAULT_SEEDS, SimOptions(nodes=3, steps=300), jobs=2)


def test_seeds_five_nodes() -> None:
    _assert_all_pass(0, 300, SimOptions(nodes=5, steps=300), jobs=2)


@pytest.mark.long
def test_long_mode() -> None:
    _assert_all_pass(0, LONG_SEEDS, SimOptions(nodes=3, steps=300), jobs=os.cpu_count() or 2)


def _fingerprint(seed: int) -> tuple[int, list[str], list[int], list[object]]:
    sim = Simulation(seed, SimOptions())
    sim.run()
    nodes: list[object] = [
        (s.storage.load_hard_state(), s.storage.load_entries(), s.node and s.node.sm.digest)
        for s in sim.slots
    ]
    return sim.now, list(sim.trace), sorted(sim.checker.acked), nodes


def test_a_seed_reproduces_exactly() -> None:
    first = _fingerprint(11)
    assert first == _fingerprint(11)
    assert first != _fingerprint(12)
    assert first[2], "the run acknowledged proposals"


def test_planted_old_term_commit_bug_is_caught() -> None:
    """With RaftConfig.unsafe_commit_old_term the checkers must report a violation."""
    unsafe = SimOptions(unsafe_commit_old_term=True)
    for seed, violation, _ in run_seeds(range(PLANTED_BUG_SEED_BOUND), unsafe):
        if violation is not None:
            print(f"planted bug caught at seed {seed}: {violation}")
            assert re.match("(leader completeness|state machine safety|log safety)", violation)
            _assert_all_pass(seed, 1, SimOptions(), jobs=1)
            return
    pytest.fail(f"planted bug not caught in {PLANTED_BUG_SEED_BOUND} seeds")


def test_cli_reports_the_failing_seed_and_reproduces_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", str(PLANTED_BUG_SEED_BOUND), "--unsafe-commit-old-term"]) == 1
    out = capsys.readouterr().out
    seed = re.search(r"FAIL seed=(\d+): (.*)", out)
    assert seed is not None
    assert "reproduce: python -m control.raft.sim --seed" in out
    assert main(["--seed", seed.group(1), "--unsafe-commit-old-term"]) == 1
    assert f"FAIL seed={seed.group(1)}: {seed.group(2)}" in capsys.readouterr().out


def test_cli_module_entry_point_passes_clean_seeds() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "control.raft.sim", "--seeds", "5", "--nodes", "5"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 5 seeds from 0, 300 steps, 5 nodes")
