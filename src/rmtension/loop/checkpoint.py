"""Saving policies: an HF causal-LM folder to use elsewhere, and RL checkpoints that resume exactly.

- `save_policy_folder(model, tokenizer, folder)` writes `config.json`, `model.safetensors`, the
  generation config and the tokenizer files: any HF causal-LM loader (`load_policy`,
  `AutoModelForCausalLM.from_pretrained`) reads it back to the same weights.
- `save_rl_checkpoint(path, state)` / `load_rl_checkpoint(path)` write and read the
  `rmtension.rl.loop.RLState` that `run_rloo` hands its `checkpoint` hook after every
  update: the trained parameters, the optimiser state, the global generator states, the step and
  the logs so far. `run_rloo(initial_policy, ..., resume=load_rl_checkpoint(path))` then continues
  the run as if it had never stopped (tests/test_loop_checkpoint.py).

Both writes are atomic (a temporary name, then a rename), so a run killed while writing leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from rmtension.errors import ArtifactError
from rmtension.rl.loop import RLState

CHECKPOINT_VERSION = 1


def save_policy_folder(model: torch.nn.Module, tokenizer, folder: str | Path) -> Path:
    """`model` (any HF causal LM) and its tokenizer as an HF folder at `folder` (replaced if present)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def save_rl_checkpoint(path: str | Path, state: RLState) -> Path:
    """One file with everything in `state` (torch.save of plain tensors and Python values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"version": CHECKPOINT_VERSION, **asdict(state)}, tmp)
    os.replace(tmp, path)
    return path


def load_rl_checkpoint(path: str | Path) -> RLState:
    """The state saved at `path`; a missing, truncated or foreign file is an `ArtifactError` naming it."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no RL checkpoint there") from None
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise ArtifactError(f"{path}: not a readable RL checkpoint ({type(e).__name__})") from None
    if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
        raise ArtifactError(f"{path}: not an RL checkpoint of version {CHECKPOINT_VERSION}")
    saved.pop("version")
    return RLState(**saved)
