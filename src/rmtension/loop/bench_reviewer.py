"""A reviewer of kind `bench`: the round's pairs go to the comparison bench, people label them.

At a round's label phase, `BenchReviewer.label_round` writes the round's pairs as a batch task,
`<round>/bench/task.yaml` and `<round>/bench/pairs.jsonl`, and loads them into the bench's database
(items already there are skipped, so a rerun adds nothing twice). While judgments are missing it
stops the loop with one line (`LoopPaused`): how many, which task, and the command that serves it.
Once every pair has `k` judgments, rerunning the loop continues the round: the label of a pair is the
majority of its judgments' picks (reply a is the bench's reply 0); a pair with no majority (ties,
"both bad", an even split) is labelled b. The flip rate of people is unknown and recorded as NaN;
`rmtension.loop.reviewer.fit_reviewer` fits β and ε to such labels when gold scores are known.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rmtension.data.types import Turn
from rmtension.errors import RmtensionError

GUIDELINES = """# How to judge
- Read the conversation, then both replies.
- Pick the reply that is more helpful to the person asking: correct, relevant, clear.
"""


class LoopPaused(RmtensionError):
    """The loop waits for people's judgments on the bench; rerun it once they are in."""

    exit_code = 3


@dataclass(frozen=True)
class BenchLabels:
    a_preferred: np.ndarray
    """[N] bool: the majority picked reply a."""
    judgments: np.ndarray
    """[N] int: judgments per pair."""

    @property
    def flip_rate(self) -> float:
        return float("nan")  # unknown for people


@dataclass(frozen=True)
class BenchReviewer:
    """Labels a round's pairs by the bench's judgments (module docstring)."""

    database: str
    """The bench's database: a SQLite path or a PostgreSQL URL (`rmtension bench serve --db`)."""
    k: int = 1
    """Judgments wanted per pair."""
    task_prefix: str = "loop"
    mode: str = "helpful"

    def task_name(self, folder: Path, round_: int) -> str:
        parts = [p for p in (folder.parent.parent.name, folder.parent.name) if p]
        return "-".join([self.task_prefix, *parts, f"r{round_}"])[-64:].lstrip("-_.")

    def write_task(self, folder: Path, name: str, contexts: Sequence[tuple[Turn, ...]], a, b) -> Path:
        bench = folder / "bench"
        bench.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "id": str(i),
                "prompt": [{"role": t.role, "content": t.content} for t in c],
                "reply_a": x,
                "reply_b": y,
            }
            for i, (c, x, y) in enumerate(zip(contexts, a, b))
        ]
        (bench / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        task = {
            "name": name,
            "mode": self.mode,
            "guideline_version": "loop-1",
            "k": self.k,
            "guidelines": GUIDELINES,
            "source": {"kind": "batch", "path": str(bench / "pairs.jsonl")},
        }
        (bench / "task.yaml").write_text(json.dumps(task, indent=1))  # JSON is YAML
        return bench / "task.yaml"

    def label_round(self, folder: Path, round_: int, contexts, replies_a, replies_b) -> BenchLabels:
        """The labels once every pair has `k` judgments; else `LoopPaused` naming what is missing."""
        from rmtension.bench.batch import read_batch
        from rmtension.bench.schema import open_engine
        from rmtension.bench.store import add_items, load_judgments, put_task
        from rmtension.bench.task import load_task

        name = self.task_name(Path(folder), round_)
        task_file = self.write_task(Path(folder), name, contexts, replies_a, replies_b)
        task = load_task(task_file)
        engine = open_engine(self.database)
        try:
            put_task(engine, task)
            add_items(engine, read_batch(task.source.path, name))
            found = load_judgments(engine, name)
        finally:
            engine.dispose()
        labels = majority(found, name, len(replies_a))
        missing = int(np.maximum(self.k - labels.judgments, 0).sum())
        if missing:
            raise LoopPaused(
                f"{task_file.parent}: {missing} of {self.k * len(replies_a)} judgments missing in bench task "
                f"{name!r}; serve it (rmtension bench serve --db {shown_database(self.database)} --task {task_file}) "
                "and rerun"
            )
        return labels


def majority(judgments, task: str, n: int) -> BenchLabels:
    """[n] labels of items `task:0` .. `task:<n-1>` from their judgments (module docstring)."""
    picks: dict[int, Counter] = {i: Counter() for i in range(n)}
    for j in judgments:
        index = int(j.item_id.rsplit(":", 1)[1])
        picks[index][j.preferred] += 1
    a = np.array([picks[i][0] > picks[i][1] for i in range(n)], dtype=bool)
    return BenchLabels(a, np.array([sum(picks[i].values()) for i in range(n)], dtype=int))


def shown_database(database: str) -> str:
    """`database` as it may be printed: a URL's password masked (`***`), a SQLite path as given."""
    if "://" not in database:
        return database
    try:
        return make_url(database).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can parse: show only its scheme
        return database.split("://", 1)[0] + "://***"
