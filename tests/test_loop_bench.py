"""The bench reviewer: a round's pairs go to the comparison bench, the loop stops with one line while
judgments are missing, and continues once simulated reviewers have posted them to a served bench."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchkit import Reviewer, Server
from rmtension.bench.schema import open_engine
from rmtension.bench.store import load_judgments
from rmtension.errors import ConfigError
from rmtension.loop.bench_reviewer import BenchReviewer, LoopPaused, majority, shown_database
from rmtension.loop.config import load_loop_config
from rmtension.loop.rounds import run_round
from test_loop_rounds import CONTEXTS, SPEC, fresh, gold


def play(folder, reviewer):
    policy, reference, pm, tok = fresh()
    return run_round(
        folder / "arm" / "seed0" / "round1", SPEC, policy, reference, pm, tok, CONTEXTS, gold, reviewer
    )


def test_the_loop_waits_for_the_bench_and_continues_with_its_judgments(tmp_path):
    db = str(tmp_path / "bench.sqlite")
    reviewer = BenchReviewer(db, k=2)
    with pytest.raises(LoopPaused) as paused:
        play(tmp_path, reviewer)
    message = str(paused.value)
    assert "\n" not in message and "6 of 6 judgments missing" in message and "loop-arm-seed0-r1" in message
    task_file = tmp_path / "arm" / "seed0" / "round1" / "bench" / "task.yaml"
    assert str(task_file) in message

    server = Server(db, [task_file], tmp_path / "serve.log")
    try:
        engine = open_engine(db)
        people = [Reviewer(server.url, engine, name) for name in ("ana", "ben")]
        first = people[0].next_item("loop-arm-seed0-r1")
        people[0].judge(first, pick="left")
        with pytest.raises(LoopPaused, match="5 of 6 judgments missing"):  # a rerun adds no item twice
            play(tmp_path, reviewer)
        for n, person in enumerate(people):
            while (item := person.next_item("loop-arm-seed0-r1")) is not None:
                person.judge(item, pick="left" if n == 0 else "right")
        found = load_judgments(engine, "loop-arm-seed0-r1")
        engine.dispose()
    finally:
        server.stop()
    assert len(found) == 6
    result = play(tmp_path, reviewer)  # continues: labels, PM, policy
    by_item = {i: [j.preferred for j in found if j.item_id.endswith(f":{i}")] for i in range(3)}
    expected = [v.count(0) > v.count(1) for v in (by_item[i] for i in range(3))]
    assert result.a_preferred == expected
    assert np.isnan(result.flip_rate) and len(result.pm_losses) == SPEC.pm_steps
    rows = [json.loads(x) for x in (task_file.parent / "pairs.jsonl").read_text().splitlines()]
    assert [r["reply_a"] for r in rows] == result.pairs.a


class J:
    def __init__(self, item_id, preferred):
        self.item_id, self.preferred = item_id, preferred


def test_majority_of_hand_written_judgments():
    js = [J("t:0", 0), J("t:0", 0), J("t:0", 1), J("t:1", 1), J("t:1", 0), J("t:2", None)]
    got = majority(js, "t", 4)
    assert got.a_preferred.tolist() == [True, False, False, False]  # an even split and a tie go to b
    assert got.judgments.tolist() == [3, 2, 1, 0]


def test_a_database_url_is_printed_without_its_password():
    assert shown_database("postgresql+psycopg://bench:s3cret@db:5432/bench") == (
        "postgresql+psycopg://bench:***@db:5432/bench"
    )
    assert shown_database("runs/bench.db") == "runs/bench.db"
    assert "s3cret" not in shown_database("postgresql://u:s3cret@h:notaport/x")


def test_a_bench_reviewer_labels_the_helpful_objective_only(tmp_path):
    shipped = Path(__file__).resolve().parents[1] / "configs" / "loop.yaml"
    bench = {"reviewer": {"kind": "bench", "database": str(tmp_path / "bench.db")}}
    assert load_loop_config(shipped, {**bench, "objective": "helpful"}).reviewer.kind == "bench"
    with pytest.raises(ConfigError, match="helpful objective only"):
        load_loop_config(shipped, {**bench, "objective": "harmless"})
