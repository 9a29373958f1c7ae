"""`rmtension loop run --workers N`: the seeds' rounds in N processes at once.

Seeds share nothing after round 0's inputs (the gold, D_0, the prompts), so worker k of N runs
seeds k, k + N, ... of the config (`run_loop(seeds=...)`) in its own process with cores // N
threads; the parent, which trained the gold first, writes the results from the files once every
worker is done. On 2 bf16 cores two one-thread processes draw 1.22x and compute the KL 1.30x
faster than one two-thread process (SmolLM2-135M; benchmarks/RESULTS-loop.md), since small decode
batches use a second thread poorly. A worker's files equal those of a one-process run of the same thread count; a
different thread count may change float sums in the last bits, so resume with the same --workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from rmtension.errors import RmtensionError


def worker_command(options: Sequence[str], k: int, n: int) -> list[str]:
    """The command line of worker k of n: `rmtension loop run` with `options` and its part."""
    return [sys.executable, "-m", "rmtension", "loop", "run", *options, "--part", f"{k}/{n}"]


def parse_part(part: str, seeds: int) -> tuple[int, int]:
    """'k/N' -> (k, N), with 0 <= k < N <= seeds; anything else is one line."""
    try:
        k, n = (int(x) for x in part.split("/"))
    except ValueError:
        raise RmtensionError(f"--part {part!r}: expected k/N, e.g. 0/2") from None
    if not 0 <= k < n <= seeds:
        raise RmtensionError(f"--part {part!r}: needs 0 <= k < N <= {seeds} (the config's seeds)")
    return k, n


def run_commands(
    commands: Sequence[Sequence[str]], env: dict[str, str] | None = None, poll_s: float = 0.5
) -> None:
    """Run the commands at once (stderr shared with this process), wait for all, and raise one line
    naming every one that failed. A failure stops the others at once; so do Ctrl-C and SIGTERM to
    this process, and (on Linux) its death. What the workers finished stays: a rerun resumes."""
    procs: list[subprocess.Popen] = []
    stopped: set[int] = set()  # the workers this function terminated
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):  # SIGTERM: as Ctrl-C, so the workers are stopped below
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        for cmd in commands:
            procs.append(
                subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            )
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(poll_s)
    finally:
        for k, p in enumerate(procs):
            if p.poll() is None:
                p.terminate()
                stopped.add(k)
        for p in procs:
            p.wait()
        signal.signal(signal.SIGTERM, previous)
    n = len(procs)
    failed = [(k, p.returncode) for k, p in enumerate(procs) if p.returncode != 0 and k not in stopped]
    if failed or stopped:
        said = [f"worker {k + 1}/{n} exited with {code}" for k, code in failed]
        said += [f"worker {k + 1}/{n} stopped" for k in sorted(stopped)]
        user = bool(failed) and all(
            code == RmtensionError.exit_code for _, code in failed
        )  # bad config, data
        advice = "" if user else "; rerun the same command to resume"
        raise RmtensionError(f"{'; '.join(said)} (errors above){advice}")


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_workers(options: Sequence[str], n: int) -> None:
    """`loop run` with `options` in n worker processes (worker_command), cores // n threads each."""
    threads = str(max(1, usable_cores() // n))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    run_commands([worker_command(options, k, n) for k in range(n)], env)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG); libc is
    loaded in the parent (`_PRCTL`), so the child only makes the call."""
    if _PRCTL is not None:
        try:
            _PRCTL(1, signal.SIGTERM)
        except Exception:  # noqa: BLE001 - best effort: without it the parent's handlers still stop them
            pass


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
