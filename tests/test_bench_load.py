"""32 simulated reviewers at once against `rmtension bench serve` on 127.0.0.1 (SQLite, batch
items, no model): bounded loops of fetch-next-item and submit. When the batch is done every item
has exactly k judgments from k different reviewers, and every acknowledged judgment is stored
once; nothing else is."""

from __future__ import annotations

import random
import threading
from collections import Counter

from benchkit import Reviewer, Server, write_batch, write_task
from rmtension.bench.schema import open_engine
from rmtension.bench.store import load_judgments

N_REVIEWERS, N_ITEMS, K = 32, 40, 3
PICKS = ("left", "right", "tie", "both_bad")


def test_32_concurrent_reviewers_leave_exactly_k_judgments_per_item(tmp_path):
    from rmtension.bench.batch import read_jsonl
    from rmtension.bench.store import add_items, put_task
    from rmtension.bench.task import load_task

    db = str(tmp_path / "bench.db")
    task_file = write_task(tmp_path / "load.yaml", "load", "batch", k=K)
    engine = open_engine(db)
    put_task(engine, load_task(task_file))
    add_items(engine, read_jsonl(write_batch(tmp_path / "b.jsonl", N_ITEMS), "load"))
    server = Server(db, [task_file], tmp_path / "serve.log")
    acks, errors, lock = [], [], threading.Lock()
    try:
        reviewers = [Reviewer(server.url, engine, f"rev{i:02d}") for i in range(N_REVIEWERS)]

        def work(rv: Reviewer, rng: random.Random) -> None:
            try:
                for _ in range(N_ITEMS + 1):  # bounded: a reviewer can judge each item at most once
                    item = rv.next_item("load")
                    if item is None:
                        return
                    answer = rv.judge(item, rng.choice(PICKS), strength=rng.randint(1, 3))
                    with lock:
                        acks.append((rv.name, item, answer["judgment_id"]))
            except Exception as e:  # reported below: a thread's failure must fail the test
                errors.append(repr(e))

        threads = [
            threading.Thread(target=work, args=(rv, random.Random(i))) for i, rv in enumerate(reviewers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        server.stop()
    assert errors == []
    stored = load_judgments(engine, "load")
    assert len(acks) == N_ITEMS * K
    assert sorted(j.judgment_id for j in stored) == sorted(key for _, _, key in acks)  # none lost, none extra
    assert sorted((j.reviewer, j.item_id) for j in stored) == sorted((r, i) for r, i, _ in acks)
    per_item = Counter(j.item_id for j in stored)
    assert len(per_item) == N_ITEMS and set(per_item.values()) == {K}
    assert len({(j.item_id, j.reviewer) for j in stored}) == len(stored)  # never twice to one reviewer
    assert {j.left for j in stored} == {0, 1}  # the left side is drawn per assignment
