"""Killed, interrupted and corrupted studies finish with the same results as an uninterrupted one.

Each study runs in a subprocess (`python -m rmtension.cli`), as a user would run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import studykit
from studykit import tiny_study

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rmtension.cli", "study", "--config", str(cfg), "--out", str(out)]


def finish(cfg: Path, out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def start_and_wait(cfg: Path, out: Path, until: str) -> subprocess.Popen:
    """Start a study and return once `until` (a glob under `out`) exists."""
    return studykit.start_and_wait(cmd(cfg, out), out, until, env=ENV)


def results(out: Path) -> dict:
    return json.loads((out / "tension.json").read_text())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliable")
    cfg = tiny_study(base, seeds=[0], epochs=4)
    reference = base / "reference"
    finish(cfg, reference)
    return base, cfg, results(reference)


@pytest.mark.parametrize(
    "point",
    [
        "data/splits.json",  # data stage written, nothing trained
        "rm/helpful/seed0/checkpoint/state.json",  # mid-training, after a checkpoint
        "manifests/train_harmless_seed0.json",  # between two trainings
        "eval/helpful/seed0/*.csv",  # during evaluation
    ],
)
def test_sigkill_then_rerun_gives_identical_results(study, point):
    base, cfg, reference = study
    out = base / f"killed-{abs(hash(point))}"
    proc = start_and_wait(cfg, out, point)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finish(cfg, out)
    assert results(out) == reference


def test_sigint_stops_at_a_safe_point_and_says_how_to_resume(study):
    base, cfg, reference = study
    out = base / "sigint"
    proc = start_and_wait(cfg, out, "rm/helpful/seed0/checkpoint/state.json")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "run the same command again" in err and "Traceback" not in err
    finish(cfg, out)
    assert results(out) == reference


def test_corrupted_artifacts_are_detected_and_recomputed(study):
    base, cfg, reference = study
    out = base / "corrupt"
    finish(cfg, out)
    model = out / "rm/mixed/seed0/model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a half-written file
    csv = out / "eval/helpful/seed0/harmless.csv"
    csv.write_text(csv.read_text()[:-20])  # cut off mid-row
    proc = finish(cfg, out)
    assert "model.safetensors differs" in proc.stderr and "harmless.csv differs" in proc.stderr
    assert results(out) == reference


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_checkpoints_are_refused_without_running_their_code(tmp_path):
    import pickle

    from rmtension.errors import ArtifactError
    from rmtension.run.runio import load_torch_state

    marker = tmp_path / "pwned"
    evil = tmp_path / "optim.pt"
    evil.write_bytes(pickle.dumps({"optimizer": _Payload(marker)}))
    with pytest.raises(ArtifactError, match="refused or corrupted"):
        load_torch_state(evil)
    assert not marker.exists()


def test_models_load_from_safetensors_only(tmp_path):
    import torch

    from rmtension.errors import RmtensionError
    from rmtension.model.backbones import load_reward_model
    from tiny import save_tiny

    folder = save_tiny(tmp_path / "m", "bert")
    state = load_reward_model(str(folder)).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")  # a pickle: must not be loaded
    with pytest.raises(RmtensionError, match="cannot load a safetensors model"):
        load_reward_model(str(folder))


@pytest.mark.parametrize("name", ["../../etc", "a/../../b", "/abs/path", "..", "x\\..\\y"])
def test_output_paths_stay_inside_the_run_directory(tmp_path, name):
    from rmtension.run.runio import inside, safe_name

    assert "/" not in safe_name(name) and safe_name(name) not in ("", ".", "..")
    target = inside(tmp_path, "eval", safe_name(name), "x.csv")
    assert tmp_path.resolve() in target.resolve().parents
