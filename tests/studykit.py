"""A tiny study: synthetic HH files in the official layout, a tiny BERT, and a config for it."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from tiny import save_tiny

REPO = Path(__file__).resolve().parents[1]


def shipped_study(config: str, out: Path, hh_root: Path, *overrides: str) -> Path:
    """`rmtension study` of the shipped `configs/<config>` on the HH data at `hh_root`, into `out`."""
    from rmtension.cli import main

    argv = ["study", "--config", str(REPO / "configs" / config), "--out", str(out), f"data.path={hh_root}"]
    assert main([*argv, *overrides]) == 0
    return out


@contextmanager
def module_dir(factory, name: str) -> Iterator[Path]:
    """A module fixture's folder, removed once the module's tests are done.

    The real studies keep a MiniLM (90 MB) per reward model; left until the session ends, their folders
    alone would take several GB of the disk the rest of the suite needs."""
    path = factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


WORDS = ["apple", "tree", "house", "river", "sky", "stone", "cloud", "lamp", "door", "bird"]


def write_hh(root: Path, subset: str, n: int, good: str, bad: str, seed: int) -> None:
    """An official-layout test file whose chosen replies end with `good`, rejected with `bad`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        q = f"{i} " + " ".join(rng.choice(WORDS, 2))
        ctx = f"\n\nHuman: {q}\n\nAssistant:"
        rows.append({"chosen": f"{ctx} {q} {good}", "rejected": f"{ctx} {q} {bad}"})
    (root / subset).mkdir(parents=True)
    with gzip.open(root / subset / "test.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


HELPFUL = (("helpful-base", 60), ("helpful-online", 20))
HARMLESS = (("harmless-base", 80),)


def tiny_config(
    base: Path,
    family: str = "bert",
    helpful: tuple[tuple[str, int], ...] = HELPFUL,
    harmless: tuple[tuple[str, int], ...] = HARMLESS,
    max_train_pairs: int = 40,
    max_length: int = 64,
    train: dict | None = None,
    **sections,
) -> dict:
    """The one tiny study config: synthetic HH subsets (`(name, pairs)`) and a tiny `family` backbone
    written under `base`, one seed, one epoch; `train` and `sections` (e.g. `neurons={...}`) override.

    Helpful subsets' chosen replies end in "yes", harmless ones' in "sorry", so both are learnable.
    """
    data = base / "hh"
    for seed, (subset, n) in enumerate(helpful):
        write_hh(data, subset, n, "yes", "no", seed)
    for seed, (subset, n) in enumerate(harmless, start=2):
        write_hh(data, subset, n, "sorry", "sure", seed)
    cfg = {
        "name": "tiny",
        "data": {
            "path": str(data),
            "max_train_pairs": max_train_pairs,
            "hub": False,
            "subsets": {"helpful": [s for s, _ in helpful], "harmless": [s for s, _ in harmless]},
        },
        "model": {"backbone": str(save_tiny(base / f"model-{family}", family)), "max_length": max_length},
        "train": {
            "seeds": [0],
            "epochs": 1,
            "batch_size": 8,
            "lr": 3e-3,
            "trainable": "top:1",
            "bf16": False,
            "eval_every": 2,
            "checkpoint_every": 2,
            **(train or {}),
        },
        "eval": {"bootstrap": 200},
    }
    return {**cfg, **sections}


def write_config(base: Path, cfg: dict) -> Path:
    path = base / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_study(base: Path, **train) -> Path:
    """The tiny study with two seeds and three epochs (plus `train` overrides); returns its config path."""
    return write_config(base, tiny_config(base, train={"seeds": [0, 1], "epochs": 3, **train}))


def start_and_wait(
    command: list[str], out: Path, until: str, env: dict | None = None, timeout: float = 300
) -> subprocess.Popen:
    """Start a study subprocess and return it once `until` (a glob under its run directory `out`) exists.

    Its stderr is piped (read it with `communicate`); its stdout is discarded.
    """
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not list(out.glob(until)):
        if proc.poll() is not None:
            raise AssertionError(f"the study ended before {until} appeared: {proc.stderr.read()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{until} never appeared")
        time.sleep(0.01)
    return proc


def config_keys(model, prefix: str = "") -> list[tuple[str, str | None]]:
    """Every field of a pydantic config model as (dotted key, docstring), sections before their fields."""
    import typing

    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        out.append((prefix + name, field.description))
        for t in [field.annotation, *typing.get_args(field.annotation)]:
            if isinstance(t, type) and issubclass(t, BaseModel):
                out += config_keys(t, f"{prefix}{name}.")
    return out
