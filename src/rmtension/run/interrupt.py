"""Ctrl-C stops at the next safe point (after an optimiser step or between stages), not mid-write."""

from __future__ import annotations

import contextlib
import signal
import threading

from rmtension.errors import RmtensionError

_STOP = threading.Event()


class Interrupted(RmtensionError):
    exit_code = 130


def stop_requested() -> bool:
    return _STOP.is_set()


def request() -> None:
    """Ask for a stop at the next safe point, as Ctrl-C does (used when another process was interrupted)."""
    _STOP.set()


def check(where: str) -> None:
    """Raise `Interrupted` at a safe point if Ctrl-C was pressed."""
    if _STOP.is_set():
        raise Interrupted(f"interrupted {where}; run the same command again (or add --resume) to continue")


@contextlib.contextmanager
def graceful_sigint():
    """First Ctrl-C asks for a stop at the next safe point; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if _STOP.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        _STOP.set()
        print("\nstopping at the next safe point (Ctrl-C again to stop now)...", flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _STOP.clear()
