"""SIGKILL a real `rmtension study --config configs/smoke.yaml` at seeded random points.

The reference is the session's uninterrupted smoke study (the `smoke_run` fixture). The kill points are files of that
run, drawn with a fixed seed, one from each third of its timeline (so data/training,
scoring/ablation and sampling/RL are each hit), plus a random delay after the file appears so
the kill can land mid-write. After every kill the same command is run again; after the last
one it runs to the end, and every result file must equal the reference's byte for byte.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, xstest_overrides
from requires import missing
from studykit import start_and_wait

SEED = 20261201
SMOKE = REPO / "configs" / "smoke.yaml"
# Result files that must be identical; each must exist in the reference run.
RESULTS = [
    "tension.json",
    "conflict.json",
    "rm/mixed/seed0/conflict.csv",
    "rm/mixed_pcgrad/seed0/conflict.csv",
    "ablation.csv",
    "bon.csv",
    "frontier.csv",
    "rl.csv",
    "rl.json",
    "bon_fit.json",
    "neurons/sets.json",
    "neurons/overlap.json",
    "data/splits.json",
]
# Files that are rewritten by later stages or carry wall-clock numbers are never kill points.
NOT_MARKERS = (
    "report",
    "figures/",
    "tables/",
    "metrics",
    "config.yaml",
    "provenance",
    "_timing.csv",
    "timings.json",
)

pytestmark = pytest.mark.real


@pytest.fixture(autouse=True)
def _needs_data():
    if not os.environ.get("RMTENSION_DATA"):
        missing("needs RMTENSION_DATA (HH-RLHF in the official layout)")


def command(out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "rmtension.cli", "study", "--config", str(SMOKE), "--out", str(out)]
    return cmd + xstest_overrides()


def run_to_end(out: Path) -> None:
    proc = subprocess.run(command(out), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def kill_when(out: Path, marker: str, delay: float) -> None:
    """Start the study, wait for `marker` (a path under `out`), wait `delay` seconds, SIGKILL it."""
    proc = start_and_wait(command(out), out, marker, timeout=600)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the study had already ended when it was to be killed at {marker}"
    )


def timeline(run_dir: Path) -> list[str]:
    """Files of a finished run, oldest first, without those that are rewritten or timed."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    files.sort(key=lambda p: p.stat().st_mtime_ns)
    rel = [str(p.relative_to(run_dir)) for p in files]
    return [r for r in rel if not any(bad in r for bad in NOT_MARKERS)]


def kill_points(run_dir: Path, rng: random.Random) -> list[tuple[str, float]]:
    files = timeline(run_dir)
    thirds = [files[i * len(files) // 3 : (i + 1) * len(files) // 3] for i in range(3)]
    return [(rng.choice(third), rng.uniform(0.0, 0.5)) for third in thirds]


def test_smoke_study_killed_at_seeded_random_points_resumes_to_identical_results(tmp_path, smoke_run):
    reference = smoke_run
    for name in RESULTS:
        assert (reference / name).is_file(), f"the smoke study no longer writes {name}"

    killed = tmp_path / "killed"
    points = kill_points(reference, random.Random(SEED))
    assert len({p for p, _ in points}) == 3
    for marker, delay in points:
        kill_when(killed, marker, delay)
    run_to_end(killed)

    evals = sorted(str(p.relative_to(reference)) for p in (reference / "eval").rglob("*.csv"))
    assert evals and evals == sorted(str(p.relative_to(killed)) for p in (killed / "eval").rglob("*.csv"))
    weights = sorted(str(p.relative_to(reference)) for p in (reference / "rm").rglob("model.safetensors"))
    assert weights and weights == sorted(
        str(p.relative_to(killed)) for p in (killed / "rm").rglob("model.safetensors")
    )
    # every file is compared before the test fails, so the message lists every stage's files that differ
    differ = [
        name
        for name in weights + evals + RESULTS
        if not (killed / name).is_file() or (killed / name).read_bytes() != (reference / name).read_bytes()
    ]
    assert not differ, f"{differ} differ after kills at {points}"
