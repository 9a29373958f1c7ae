"""The study's console line and this process's device: one definition for every stage."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from rmtension.run import dist


def log(msg: str) -> None:
    """One `[rmtension]` line, printed by the main process only.

    On a terminal, a progress bar that is being drawn is lifted for the line and redrawn under it.
    """
    if sys.stdout.isatty() and sys.stderr.isatty():
        with tqdm.external_write_mode(file=sys.stdout):
            dist.print_main(f"[rmtension] {msg}", flush=True)
    else:  # lifting a bar writes to the log file too: in a file, the bar's lines and these simply alternate
        dist.print_main(f"[rmtension] {msg}", flush=True)


def duration(seconds: float) -> str:
    """`12.3s`, `4m05s` or `1h02m`: a wall time for a console line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def device() -> torch.device:
    """This process's device (its own GPU under `accelerate launch`)."""
    return dist.device()
