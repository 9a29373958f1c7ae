"""The study's console line and this process's device: one definition for every stage."""

from __future__ import annotations

import torch

from rmtension.run import dist


def log(msg: str) -> None:
    """One `[rmtension]` line, printed by the main process only."""
    dist.print_main(f"[rmtension] {msg}", flush=True)


def device() -> torch.device:
    """This process's device (its own GPU under `accelerate launch`)."""
    return dist.device()
