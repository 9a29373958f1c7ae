"""The `--threads` and `--clock` options that the timing benchmarks share.

On a machine that other jobs load, wall-clock times measure the scheduler: `--threads 1 --clock cpu`
times the CPU that this process spends instead (all its threads), which other jobs barely change.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def add_timing_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this process's CPU time (all its threads); with --threads 1 it ignores other jobs on a shared machine",
    )


def apply_timing_args(args: argparse.Namespace) -> Callable[[], float]:
    """Set torch's threads from `--threads`; return the clock that `--clock` names."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return time.process_time if args.clock == "cpu" else time.perf_counter
