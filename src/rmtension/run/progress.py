"""rmtension's progress bars: one per long stage, on stderr, drawn by the main process only.

On a terminal a bar redraws up to ten times a second and is cleared when it closes (the stage's
end line follows). Into a file or a pipe, tqdm would write each redraw into the log, a carriage
return apiece, thousands in a long stage: there a bar redraws at most once every `LOG_EVERY_S`
seconds and leaves its last state as one line.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from rmtension.run import dist

LOG_EVERY_S = 30.0
"""Seconds between a bar's redraws when stderr is not a terminal."""


def stage_bar(name: str, total: int, unit: str = "it", show: bool = True) -> tqdm:
    """A bar labelled `[rmtension] <name>` over `total` units (a silent one unless `show`); use it as a
    context manager."""
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=f"[rmtension] {name}",
        unit=unit,
        file=sys.stderr,
        leave=not tty,
        mininterval=0.1 if tty else LOG_EVERY_S,
        maxinterval=10.0 if tty else LOG_EVERY_S,  # tqdm's monitor thread redraws a stalled bar after this
        dynamic_ncols=tty,
        disable=not show or not dist.is_main(),
    )
