"""The statistics page's content: judgments per task and reviewer, from the stored judgments."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine

from rmtension.bench.store import load_judgments


def stats_blocks(engine: Engine) -> dict[str, str]:
    """Section title -> preformatted text."""
    judgments = load_judgments(engine)
    per_task = Counter(j.task for j in judgments)
    per_reviewer = Counter((j.task, j.reviewer) for j in judgments)
    lines = [f"{task}: {n} judgments" for task, n in sorted(per_task.items())]
    lines += [f"  {task} / {rev}: {n}" for (task, rev), n in sorted(per_reviewer.items())]
    return {"Judgments": "\n".join(lines) or "none yet"}
