"""`rmtension loop run --workers N`: the seeds' rounds in N processes at once.

Seeds share nothing after round 0's inputs (the gold, D_0, the prompts), so worker k of N runs
seeds k, k + N, ... of the config (`run_loop(seeds=...)`) in its own process with cores / N
threads; the parent, which trained the gold first, writes the results from the files once every
worker is done. On 2 cores two one-thread processes draw about 1.2x and compute the KL about 1.1x
faster than one two-thread process (SmolLM2-135M, bf16), since small decode batches use a second
thread poorly. A worker's files equal those of a one-process run of the same thread count; a
different thread count may change float sums in the last bits, so resume with the same --workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from rmtension.errors import RmtensionError


def worker_command(argv: Sequence[str], k: int, n: int) -> list[str]:
    """The command line of worker k of n: this `loop run` with one worker and its part (click takes
    an option's last value)."""
    return [sys.executable, "-m", "rmtension", *argv, "--workers", "1", "--part", f"{k}/{n}"]


def run_workers(argv: Sequence[str], n: int) -> None:
    """Start n workers (stderr shared with this process, each line tagged by its seeds), wait for all,
    and raise one line naming every worker that failed."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // n))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    procs = [
        subprocess.Popen(worker_command(argv, k, n), env=env, stdout=subprocess.DEVNULL) for k in range(n)
    ]
    try:
        codes = [p.wait() for p in procs]
    except BaseException:  # interrupted: stop the workers too; their finished phases are kept
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [f"worker {k + 1}/{n} exited with {c}" for k, c in enumerate(codes) if c != 0]
    if failed:
        raise RmtensionError(f"{'; '.join(failed)} (its error is above); rerun the same command to resume")
