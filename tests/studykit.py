"""A tiny study: synthetic HH files in the official layout, a tiny BERT, and a config for it."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml

from tiny import save_tiny

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


def tiny_study(base: Path, **train) -> Path:
    """Write data, model and config under `base`; returns the config path."""
    data = base / "hh"
    write_hh(data, "helpful-base", 60, "yes", "no", 0)
    write_hh(data, "helpful-online", 20, "yes", "no", 1)
    write_hh(data, "harmless-base", 80, "sorry", "sure", 2)
    model = save_tiny(base / "model", "bert")
    cfg = {
        "name": "tiny",
        "data": {
            "path": str(data),
            "max_train_pairs": 40,
            "hub": False,
            "subsets": {"helpful": ["helpful-base", "helpful-online"], "harmless": ["harmless-base"]},
        },
        "model": {"backbone": str(model), "max_length": 64},
        "train": {
            "seeds": [0, 1],
            "epochs": 3,
            "batch_size": 8,
            "lr": 3e-3,
            "trainable": "top:1",
            "bf16": False,
            "eval_every": 2,
            "checkpoint_every": 2,
            **train,
        },
        "eval": {"bootstrap": 200},
    }
    path = base / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


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
