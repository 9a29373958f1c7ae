"""The bench's storage on a real SQLite file and a real PostgreSQL server: assignment to k
different reviewers, idempotent judgments in canonical reply order, expired leases, login tokens
kept only as hashes; plus the task file, the guidelines markup and the batch reader."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from benchkit import fresh_pg_db, pg_url, write_task
from rmtension.bench import access, store
from rmtension.bench.batch import read_jsonl
from rmtension.bench.markup import guidelines_html
from rmtension.bench.records import Item, Turn
from rmtension.bench.schema import assignments, judgments, open_engine, reviewers, sessions
from rmtension.bench.task import load_task
from rmtension.errors import ConfigError, DataError


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = str(tmp_path / "bench.db") if request.param == "sqlite" else fresh_pg_db(pg_url())
    eng = open_engine(url)
    yield eng
    eng.dispose()


def _task(tmp_path, k=2, mode="helpful"):
    return load_task(write_task(tmp_path / "task.yaml", "t", "batch", k=k, mode=mode))


def _items(n, task="t"):
    return [Item(f"i{n_}", task, (Turn("user", f"q{n_}"),), f"a{n_}", f"b{n_}") for n_ in range(n)]


def test_each_item_goes_to_k_different_reviewers_once(engine, tmp_path):
    task = _task(tmp_path, k=2)
    store.put_task(engine, task)
    assert store.add_items(engine, _items(3)) == 3
    assert store.add_items(engine, _items(3)) == 0  # same ids: skipped
    seen: dict[str, list[str]] = {}
    for name in ("r1", "r2", "r3"):
        while (shown := store.next_item(engine, task, name)) is not None:
            assert (
                store.next_item(engine, task, name).item.item_id == shown.item.item_id
            )  # still open: same item
            seen.setdefault(shown.item.item_id, []).append(name)
            store.record(
                engine,
                task,
                name,
                store.Choice(f"key-{name}-{shown.item.item_id}", shown.item.item_id, "tie", 0, ""),
            )
    assert sorted(seen) == ["i0", "i1", "i2"]
    for item_id, names in seen.items():
        assert len(names) == 2 and len(set(names)) == 2, (item_id, names)
    assert store.next_item(engine, task, "r4") is None  # every slot filled


def test_judgment_in_canonical_order_and_idempotent(engine, tmp_path):
    task = _task(tmp_path, k=1, mode="red_team")
    store.put_task(engine, task)
    store.add_items(engine, _items(1))
    shown = store.next_item(engine, task, "ann")
    choice = store.Choice("same-key-1", "i0", "left", 3, "note <b>")
    first = store.record(engine, task, "ann", choice)
    again = store.record(engine, task, "ann", choice)
    # "left" means the reply the page put on the left: reply `shown.left` in canonical order
    assert first.preferred == shown.left and first.left == shown.left
    assert first.signed_strength == (3 if shown.left == 1 else -3)
    assert (first.mode, first.guideline_version, first.note) == ("red_team", "t-1", "note <b>")
    assert again == first
    with engine.connect() as conn:
        assert conn.execute(select(judgments)).all().__len__() == 1
    with pytest.raises(store.Refused, match="already judged"):
        store.record(engine, task, "ann", store.Choice("other-key-2", "i0", "right", 1, ""))
    with pytest.raises(store.Refused, match="no such item among yours"):  # as for an unknown item id
        store.record(engine, task, "bob", store.Choice("bob-key-01", "i0", "right", 1, ""))
    with pytest.raises(store.Refused, match="judgment key is taken"):
        store.record(engine, task, "bob", choice)
    assert [j.judgment_id for j in store.load_judgments(engine, "t")] == ["same-key-1"]


def test_right_tie_and_both_bad(engine, tmp_path):
    task = _task(tmp_path, k=3)
    store.put_task(engine, task)
    store.add_items(engine, _items(1))
    out = {}
    for name, pick in (("a", "right"), ("b", "tie"), ("c", "both_bad")):
        shown = store.next_item(engine, task, name)
        out[name] = (
            shown.left,
            store.record(engine, task, name, store.Choice(f"k-{name}-0001", "i0", pick, 1, "")),
        )
    left, j = out["a"]
    assert j.preferred == 1 - left and j.strength == 1
    assert (out["b"][1].preferred, out["b"][1].strength, out["b"][1].both_bad) == (None, 0, False)
    assert (out["c"][1].preferred, out["c"][1].strength, out["c"][1].both_bad) == (None, 0, True)


def test_expired_lease_moves_the_slot(engine, tmp_path):
    task = _task(tmp_path, k=1)
    store.put_task(engine, task)
    store.add_items(engine, _items(1))
    assert store.next_item(engine, task, "slow").item.item_id == "i0"
    assert store.next_item(engine, task, "fast", lease=3600) is None  # lease still running
    moved = store.next_item(engine, task, "fast", lease=-1)
    assert moved.item.item_id == "i0"
    with pytest.raises(store.Refused):
        store.record(engine, task, "slow", store.Choice("slow-key-1", "i0", "left", 1, ""))
    store.record(engine, task, "fast", store.Choice("fast-key-1", "i0", "left", 1, ""))
    with engine.connect() as conn:
        assert [r.reviewer for r in conn.execute(select(assignments))] == ["fast"]


def test_login_token_once_hashes_only_and_revoke(engine):
    token = access.add_reviewer(engine, "rev", admin=True)
    session = access.exchange(engine, token)
    assert session and access.session_reviewer(engine, session) == access.Reviewer("rev", True)
    assert access.exchange(engine, token) is None  # one-time
    with engine.connect() as conn:
        stored = json.dumps([list(map(str, r)) for r in conn.execute(select(reviewers))])
        stored += json.dumps([list(map(str, r)) for r in conn.execute(select(sessions))])
    assert token not in stored and session not in stored and access.digest(session) in stored
    assert access.revoke(engine, "rev") and access.session_reviewer(engine, session) is None
    assert not access.revoke(engine, "nobody")
    assert access.csrf_ok(session, access.csrf_token(session)) and not access.csrf_ok(session, "")


def test_task_errors_name_file_and_key(tmp_path):
    good = write_task(tmp_path / "ok.yaml", "ok")
    assert load_task(good).k == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("mode: helpful", "mode: sneaky"))
    with pytest.raises(ConfigError, match=r"bad\.yaml: mode: .*helpful.*red_team"):
        load_task(bad)
    bad.write_text(good.read_text() + "redact: ['(']\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: redact: .*does not compile"):
        load_task(bad)
    bad.write_text(good.read_text().replace("  kind: batch", "  kind: batch\n  colour: red"))
    with pytest.raises(ConfigError, match=r"bad\.yaml: source\.colour: unknown key"):
        load_task(bad)


def test_guidelines_markup_escapes_then_renders_a_small_subset():
    got = str(
        guidelines_html(
            "# Rules\n- **book** it <script>x</script>\n  wrapped\n\nUse `a<b` & go\n1. one\n2. two"
        )
    )
    assert got == (
        "<h3>Rules</h3>\n<ul><li><strong>book</strong> it &lt;script&gt;x&lt;/script&gt; wrapped</li></ul>\n"
        "<p>Use <code>a&lt;b</code> &amp; go</p>\n<ol><li>one</li><li>two</li></ol>"
    )


def test_batch_reader_formats_and_errors(tmp_path):
    path = tmp_path / "b.jsonl"
    rows = [
        {"prompt": "plain?", "reply_a": "x", "reply_b": "y", "id": "p1"},
        {"prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: book me", "reply_a": "ok", "reply_b": "no"},
        {
            "prompt": [{"role": "user", "content": "u"}],
            "reply_a": [{"role": "assistant", "content": "m"}],
            "reply_b": "n",
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_jsonl(path, "t")
    assert [i.conversation for i in items] == [
        (Turn("user", "plain?"),),
        (Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "book me")),
        (Turn("user", "u"),),
    ]
    assert items[2].reply_0 == "m" and len({i.item_id for i in items}) == 3
    assert items[0].item_id == "t:p1" and read_jsonl(path, "u")[0].item_id == "u:p1"  # one file, two tasks
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "p", "reply_a": "x"}) + "\n")
    with pytest.raises(DataError, match=r"b\.jsonl:2: needs prompt, reply_a and reply_b"):
        read_jsonl(path, "t")


def test_live_conversation_in_the_store(engine, tmp_path):
    """The live flow's storage without a model: turn -> item -> claimed once -> replies -> judged ->
    the named reply continues; both bad -> two new replies to the same turn."""
    from rmtension.bench import live

    task = load_task(write_task(tmp_path / "live.yaml", "chat", "live"))
    store.put_task(engine, task)
    conv = live.new_conversation(engine, "chat", "ann")
    item = live.add_user_turn(engine, conv, "ann", "  book me  ")
    with pytest.raises(store.Refused, match="judge the replies"):
        live.add_user_turn(engine, conv, "ann", "again")
    with pytest.raises(store.Refused, match="not written yet"):  # no replies yet: nothing to judge
        store.record(engine, task, "ann", store.Choice("early-key-1", item, "left", 1, ""))
    turns, left = live.claim(engine, item, "ann")
    assert turns == (Turn("user", "book me"),) and live.claim(engine, item, "ann") is None  # claimed once
    live.finish(engine, item, ("r0", "r1"), ({"model": "m", "row": 0}, {"model": "m", "row": 1}))
    j = store.record(engine, task, "ann", store.Choice("tie-key-01", item, "tie", 0, ""))
    assert j.preferred is None and live.get_conversation(engine, conv, "ann").judged
    live.continue_with(engine, conv, "ann", item, 1)
    assert [t.content for t in live.get_conversation(engine, conv, "ann").turns] == ["book me", "r1"]

    item2 = live.add_user_turn(engine, conv, "ann", "monday?")
    live.claim(engine, item2, "ann")
    live.finish(engine, item2, ("x0", "x1"), ({}, {}))
    store.record(engine, task, "ann", store.Choice("bad-key-01", item2, "both_bad", 0, ""))
    item3 = live.new_replies(engine, conv, "ann")
    assert item3 != item2 and live.get_conversation(engine, conv, "ann").item_id == item3
    with pytest.raises(store.Refused):  # the other reviewer sees nothing of ann's conversation
        live.get_conversation(engine, conv, "bob")
    live.release(engine, item3)  # not generating: stays pending, claimable
    assert live.claim(engine, item3, "ann") is not None
    assert live.reset_interrupted(engine) == 1 and live.claim(engine, item3, "ann") is not None
    live.end_conversation(engine, conv, "ann")
    assert live.get_conversation(engine, conv, "ann").ended
    assert [i.item_id for i in store.load_items(engine, "chat")] == [item, item2]  # ready items only


def test_best_of_n_run_directory_becomes_items(tmp_path):
    import pandas as pd

    from rmtension.bench.batch import read_batch

    run = tmp_path / "run"
    (run / "bon").mkdir(parents=True)
    context = [{"role": "user", "content": "hi"}]
    (run / "bon" / "prompts.json").write_text(
        json.dumps({"prompts": [{"context": context}, {"context": context}]})
    )
    frame = pd.DataFrame(
        {
            "prompt": [0, 0, 0, 1],
            "sample": [0, 1, 2, 0],
            "response": ["a", "b", "c", "lonely"],
            "rm_helpful": 0.0,
        }
    )
    frame.to_parquet(run / "bon" / "samples.parquet")
    (item,) = read_batch(run, "t")  # prompt 1 has one sample: no pair
    assert (item.conversation, item.reply_0, item.reply_1) == ((Turn("user", "hi"),), "a", "b")
    assert item.source_0 == {"source": "bon", "run": "run", "prompt": 0, "sample": 0}
    with pytest.raises(DataError, match="no bon/samples.parquet"):
        read_batch(tmp_path, "t")
