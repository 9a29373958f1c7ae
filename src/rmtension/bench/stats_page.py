"""The statistics page's content: `bench.stats.task_stats` of every task's stored judgments, as text."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Engine

from rmtension.bench.stats import Interval, TaskStats, task_stats
from rmtension.bench.store import load_judgments


def _interval(i: Interval) -> str:
    if i.estimate is None:
        return f"n/a (n={i.n})"
    ci = "" if i.low is None else f" [{i.low:.2f}, {i.high:.2f}]"
    return f"{i.estimate:.2f}{ci} (n={i.n}, {i.method})"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def task_text(s: TaskStats) -> str:
    lines = [
        f"mode {s.mode}: {s.judgments} judgments on {s.items} items",
        f"nominal alpha (which reply / tie / both bad): {_interval(s.nominal_alpha)}",
        f"pairwise agreement: {_share(s.pairwise_agreement)} over {s.agreeing_pairs_of} pairs",
        f"ordinal alpha (signed strength -3..3): {_interval(s.ordinal_alpha)}",
        f"position bias, share of left picks: {_interval(s.left_share)}",
        f"tie rate {s.tie_rate:.2f}, both-bad rate {s.both_bad_rate:.2f}, median {s.median_seconds:.1f} s per judgment",
        "",
        "reviewer: judgments, agreement with the leave-one-out majority (compared)",
    ]
    for r in s.reviewers:
        lines.append(f"  {r.reviewer}: {r.judgments}, {_share(r.loo_agreement)} ({r.loo_compared})")
    return "\n".join(lines)


def stats_blocks(engine: Engine, n_boot: int = 1000) -> dict[str, str]:
    """Task name -> its statistics as preformatted text (rendered escaped)."""
    per_task = defaultdict(list)
    for j in load_judgments(engine):
        per_task[j.task].append(j)
    if not per_task:
        return {"No judgments yet": ""}
    return {name: task_text(task_stats(js, n_boot=n_boot)) for name, js in sorted(per_task.items())}
