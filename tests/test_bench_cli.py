"""`rmtension bench stats | export | delete` on a real database (SQLite file, and PostgreSQL where
$RMTENSION_TEST_PG names one): the fixed judgments of test_bench_stats stored as rows, read back
through the storage, give the hand-worked statistics; the export and deletions act on the rows."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, insert, select

from benchkit import fresh_pg_db, pg_url
from rmtension.bench import store
from rmtension.bench.live import new_conversation
from rmtension.bench.records import Item, Turn
from rmtension.bench.schema import conversations, items, judgments, open_engine, reviewers
from rmtension.bench.task import Task
from rmtension.cli import main
from test_bench_stats import FIXTURE
from test_bench_train import export_in_training

TASK = Task(
    name="help",
    mode="helpful",
    guideline_version="v1",
    k=3,
    guidelines="Pick the more helpful reply.",
    source={"kind": "batch"},
    redact=[r"\d{3}-\d{3}-\d{4}"],
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = str(tmp_path / "bench.db") if request.param == "sqlite" else fresh_pg_db(pg_url())
    engine = open_engine(url)
    store.put_task(engine, TASK)
    ids = sorted({j.item_id for j in FIXTURE})
    store.add_items(
        engine,
        [
            Item(i, "help", (Turn("user", f"call me at 555-000-111{n}"),), f"yes {i}", f"no {i}")
            for n, i in enumerate(ids)
        ],
    )
    with engine.begin() as conn:  # the stored rows, exactly as `store.record` writes them
        for n, j in enumerate(FIXTURE):
            row = {
                k: getattr(j, k) for k in ("item_id", "task", "mode", "reviewer", "guideline_version", "left")
            }
            conn.execute(
                insert(judgments).values(
                    **row,
                    judgment_id=f"j{n:02d}",
                    preferred=j.preferred,
                    both_bad=j.both_bad,
                    strength=j.strength,
                    seconds=j.seconds,
                    note="",
                    created=float(n),
                )
            )
    yield url, engine
    engine.dispose()


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["bench", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_json_from_stored_rows(db, capsys):
    url, _ = db
    code, out, _ = run(capsys, "stats", "--db", url, "--task", "help", "--bootstrap", "200")
    assert code == 0
    s = json.loads(out)["tasks"]["help"]
    assert s["nominal_alpha"]["estimate"] == pytest.approx(11 / 41)  # worked out in test_bench_stats
    assert s["pairwise_agreement"] == pytest.approx(0.5)
    assert s["left_share"]["estimate"] == pytest.approx(5 / 9) and s["left_share"]["method"] == "Wilson score"
    assert {r["reviewer"]: r["loo_agreement"] for r in s["reviewers"]} == {
        "A": 0.5,
        "B": pytest.approx(1 / 3),
        "C": 0.5,
    }
    code, _, err = run(capsys, "stats", "--db", url, "--task", "nope")
    assert code != 0 and err.strip() == "error: --db: no judgments of task 'nope' yet"


def test_export_warns_redacts_and_counts(db, capsys, tmp_path):
    url, _ = db
    out_file = tmp_path / "e.jsonl"
    code, out, err = run(
        capsys, "export", "--db", url, "--task", "help", "--format", "trl", "--redact", "--out", str(out_file)
    )
    assert code == 0 and "personal" in err
    # majority per item: i1 reply_1, i2 reply_0, i5 reply_0 (one judgment); i3 1-1 tie; i4 both bad
    assert out.strip() == (
        "exported 3 pairs (aggregate=majority) from 12 judgments on 5 items; excluded items: both_bad 1, "
        f"majority_tie 1; items without judgments: 0; wrote {out_file}"
    )
    rows = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [r["chosen"][0]["content"] for r in rows] == ["no i1", "yes i2", "yes i5"]
    assert all(r["prompt"][0]["content"].startswith("call me at [REDACTED]") for r in rows)
    # the file the CLI wrote trains the helpful objective (and mixed), never validation or test
    (tmp_path / "study").mkdir()
    found = export_in_training(out_file, tmp_path / "study", fmt="jsonl")  # TRL rows
    capsys.readouterr()  # the tiny model's save progress
    assert (
        len(found["helpful"]["train"]) == len(found["mixed"]["train"]) == 3
        and found["harmless"]["train"] == []
    )
    assert all(ids == [] for by in found.values() for split, ids in by.items() if split != "train")
    code, _, err = run(
        capsys, "export", "--db", url, "--task", "help", "--format", "csv", "--out", str(out_file)
    )
    assert code != 0 and err.startswith("error: --format must be hh or trl")
    missing = tmp_path / "no" / "such" / "dir.jsonl"
    code, _, err = run(
        capsys, "export", "--db", url, "--task", "help", "--format", "hh", "--out", str(missing)
    )
    assert code != 0 and err.strip() == f"error: --out {missing}: cannot write (No such file or directory)"


def live_item(engine, conv: str, judged_by: str) -> None:
    """An item of conversation `conv`, judged by `judged_by` (rows as the live chat writes them)."""
    with engine.begin() as conn:
        conn.execute(
            insert(items).values(
                item_id=f"live-{conv}",
                task="help",
                kind="live",
                conversation_id=conv,
                conversation="[]",
                reply_0="a",
                reply_1="b",
                source_0="{}",
                source_1="{}",
                state="ready",
                created=0.0,
            )
        )
        conn.execute(
            insert(judgments).values(
                judgment_id=f"j-{conv}",
                item_id=f"live-{conv}",
                task="help",
                mode="helpful",
                reviewer=judged_by,
                guideline_version="v1",
                left=0,
                preferred=0,
                both_bad=False,
                strength=1,
                seconds=1.0,
                note="",
                created=99.0,
            )
        )


def test_delete_a_reviewer_and_a_conversation(db, capsys):
    url, engine = db
    conv = new_conversation(engine, "help", "A")
    live_item(engine, conv, judged_by="B")  # B's judgment of A's conversation holds A's words: it goes too
    with engine.begin() as conn:
        conn.execute(
            insert(reviewers).values(name="A", token_hash=None, admin=False, active=True, created=0.0)
        )
    code, out, _ = run(capsys, "delete", "--db", url, "--reviewer", "A")
    assert code == 0 and out.startswith("deleted reviewer 'A': ")
    with engine.connect() as conn:
        left = conn.execute(select(judgments.c.reviewer, func.count()).group_by(judgments.c.reviewer)).all()
        assert dict(left) == {"B": 4, "C": 3}
        assert conn.execute(select(func.count()).select_from(conversations)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(reviewers)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(items)).scalar() == 5  # batch items stay
    code, _, err = run(capsys, "delete", "--db", url, "--reviewer", "A")
    assert code != 0 and err.strip() == "error: --db: no records of reviewer 'A'"
    conv = new_conversation(engine, "help", "B")
    live_item(engine, conv, judged_by="C")
    code, out, _ = run(capsys, "delete", "--db", url, "--conversation", conv)
    assert code == 0 and out.startswith(
        f"deleted conversation '{conv}': judgments 1, assignments 0, items 1, "
    )
    with engine.connect() as conn:
        left = conn.execute(select(judgments.c.reviewer, func.count()).group_by(judgments.c.reviewer)).all()
        assert dict(left) == {"B": 4, "C": 3}
        assert conn.execute(select(func.count()).select_from(items)).scalar() == 5
    code, _, err = run(capsys, "delete", "--db", url)
    assert code != 0 and "exactly one of --reviewer NAME or --conversation ID" in err
