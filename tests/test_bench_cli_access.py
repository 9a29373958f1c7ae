"""`rmtension bench add-reviewer`, `revoke` and `load-batch` as a user runs them: the link logs in
once, revoke ends it, batch items load once, and bad input is one line naming the file or key."""

from __future__ import annotations

import json
import re

from benchkit import write_batch, write_task
from rmtension.bench.access import exchange
from rmtension.bench.schema import open_engine
from rmtension.bench.store import load_items
from rmtension.cli import main


def test_add_reviewer_link_revoke_and_load_batch(tmp_path, capsys):
    db = str(tmp_path / "bench.db")
    assert main(["bench", "add-reviewer", "ana", "--db", db, "--url", "http://127.0.0.1:9000/"]) == 0
    link = capsys.readouterr().out.strip()
    token = re.fullmatch(r"http://127\.0\.0\.1:9000/login\?token=([A-Za-z0-9_-]{40,})", link).group(1)
    engine = open_engine(db)
    assert main(["bench", "revoke", "ana", "--db", db]) == 0
    assert exchange(engine, token) is None  # a revoked reviewer's link is dead
    assert main(["bench", "revoke", "bob", "--db", db]) == 2
    assert capsys.readouterr().err.strip().endswith("no reviewer named 'bob'")

    task = write_task(tmp_path / "t.yaml", "t", "batch")
    batch = write_batch(tmp_path / "b.jsonl", 3)
    assert main(["bench", "load-batch", "--task", str(task), str(batch), "--db", db]) == 0
    assert main(["bench", "load-batch", "--task", str(task), str(batch), "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["loaded 3 new items of 3 into t", "loaded 0 new items of 3 into t"]
    assert [i.reply_0 for i in load_items(engine, "t")] == ["answer a0", "answer a1", "answer a2"]

    batch.write_text(json.dumps({"prompt": "p", "reply_a": "", "reply_b": "b"}) + "\n")
    assert main(["bench", "load-batch", "--task", str(task), str(batch), "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "b.jsonl:1: reply_a must be non-empty text" in err
    assert main(["bench", "add-reviewer", "bad name!", "--db", db]) == 2
    assert "reviewer name 'bad name!'" in capsys.readouterr().err
    assert main(["bench", "add-reviewer", "cy", "--db", "mysql://x"]) == 2
    assert "--db mysql://" in capsys.readouterr().err
