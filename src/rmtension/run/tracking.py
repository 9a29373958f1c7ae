"""Training metrics: `metrics.jsonl` in the run directory always, and accelerate's trackers when asked.

One JSON object per optimiser step: `step`, `loss` (mean over the step's pairs), `lr`, and
`val_accuracy` at the steps where validation ran. TensorBoard or W&B (`train.trackers`) get the
same values through `accelerate.Accelerator(log_with=...)`; their files go under
`<rm dir>/tracking/`. Only the main process writes.

A resumed run keeps the lines up to its checkpoint's step and logs the rest again, so after a
resume the file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
from pathlib import Path

from rmtension.run import dist
from rmtension.run.runio import atomic_write_text

PROJECT = "rmtension"
"""Tracker project: the TensorBoard folder under `tracking/`, the W&B project."""


def read_rows(path: Path, upto: int | None = None) -> list[dict]:
    """The complete JSON lines of `path` with step <= `upto` (all when None); a cut-off last line is dropped."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a kill mid-write
        if isinstance(row, dict) and "step" in row and (upto is None or row["step"] <= upto):
            rows.append(row)
    return rows


def _hparams(config: dict) -> dict:
    """Tracker-friendly config: scalars as they are, anything else as text (TensorBoard takes only scalars)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in config.items()}


class MetricsLog:
    """Append-only metrics of one training run; a context manager that closes the trackers on exit.

    `accelerator`: an `accelerate.Accelerator` created with `log_with` = `trackers` (or none) and
    `project_dir` = `<out_dir>/tracking`. `resume_step`: the checkpoint's step when resuming, else None.
    """

    def __init__(
        self,
        out_dir: Path,
        accelerator,
        trackers: list[str],
        run_name: str,
        config: dict,
        resume_step: int | None,
    ):
        self.path = Path(out_dir) / "metrics.jsonl"
        kept = read_rows(self.path, resume_step) if resume_step is not None else []
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.accelerator = accelerator
        if trackers:
            init = {"wandb": {"name": run_name, "dir": str(Path(out_dir) / "tracking")}}
            accelerator.init_trackers(PROJECT, config=_hparams(config), init_kwargs=init)

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, row: dict) -> None:
        """Record one step's values (`step` plus numbers)."""
        if dist.is_main():
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        self.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        # Not `Accelerator.end_training`: that also ends the process group, and a study trains many models.
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers = []
