"""Every kind of bad input: the exact one-line message (file, line, reason) and the lenient count."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rmtension.data import build_dataset, load_file, load_pairs, load_rmb
from rmtension.config import DataConfig
from rmtension.errors import DataError

BAD = Path(__file__).parent / "data" / "bad"

# file, strict message after "<path>:", lenient (pairs, skipped), drops in both modes
CASES = [
    ("malformed_json.jsonl", "2: malformed JSON: Expecting value (column 57)", 2, {"malformed_json": 1}),
    (
        "truncated.jsonl.gz",
        "14: compressed stream is truncated or corrupt (Compressed file ended before the "
        "end-of-stream marker was reached); rows after line 13 are lost",
        13,
        {"truncated_file": 1},
    ),
    ("missing_key.jsonl", "2: row has no key 'rejected' (keys: chosen, rejectd)", 2, {"missing_key": 1}),
    ("wrong_type.jsonl", "2: row key 'chosen' must be a string, got number", 2, {"wrong_type": 1}),
    ("not_object.jsonl", "2: row must be a JSON object, got array", 2, {"wrong_type": 1}),
    ("empty_string.jsonl", "2: row key 'rejected' is an empty string", 2, {"empty_string": 1}),
    ("no_assistant.jsonl", "2: 'chosen': no Assistant turn", 2, {"no_assistant_turn": 1}),
    (
        "two_human.jsonl",
        "2: 'chosen': two Human turns in a row (turns 1 and 2)",
        2,
        {"consecutive_human_turns": 1},
    ),
    (
        "text_before_human.jsonl",
        "2: 'chosen': text before the first Human turn: 'Preamble.'",
        2,
        {"text_before_first_human": 1},
    ),
    (
        "invalid_utf8.jsonl",
        "2: invalid UTF-8 at byte 27 of the line (b'\\xe9?\\\\n')",
        2,
        {"invalid_utf8": 1},
    ),
    ("empty.jsonl", " empty file (no rows)", 0, {"empty_file": 1}),
]


@pytest.mark.parametrize("name, message, n_pairs, skipped", CASES, ids=[c[0] for c in CASES])
def test_bad_file_strict_message_and_lenient_count(name, message, n_pairs, skipped):
    path = BAD / name
    with pytest.raises(DataError) as e:
        load_file(path)
    assert str(e.value) == f"{path}:{message}"
    assert "\n" not in str(e.value) and e.value.path == str(path)
    r = load_file(path, lenient=True)
    assert len(r.pairs) == n_pairs and r.skipped == skipped and r.drops == {}


@pytest.mark.parametrize(
    "name, drops, n_pairs",
    [
        ("context_mismatch.jsonl", {"context_mismatch": 1}, 2),
        ("identical.jsonl", {"identical_replies": 1}, 2),
        ("duplicates.jsonl", {"duplicate": 1}, 3),
        ("bom.jsonl", {}, 2),
    ],
)
def test_drops_are_counted_not_errors(name, drops, n_pairs):
    for lenient in (False, True):
        r = load_file(BAD / name, lenient=lenient)
        assert r.drops == drops and len(r.pairs) == n_pairs and r.skipped == {}


def test_bom_does_not_reach_the_text():
    assert load_file(BAD / "bom.jsonl").pairs[0].context[0].content == "question 1?"


def test_rmb_missing_reject():
    path = BAD / "rmb" / "Harmlessness" / "missing_reject.json"
    with pytest.raises(DataError) as e:
        load_rmb(BAD / "rmb")
    assert (
        str(e.value)
        == f"{path}:2: array element 2: row has no key 'reject' (keys: chosen, conversation_input, pair_uid)"
    )
    r = load_rmb(BAD / "rmb", lenient=True)
    assert len(r.pairs) == 1 and r.skipped == {"missing_key": 1} and r.pairs[0].subset == "rmb-harmless"


def test_jsonl_completion_with_two_messages():
    path = BAD / "jsonl_two_replies.jsonl"
    with pytest.raises(DataError) as e:
        load_file(path, fmt="jsonl")
    assert (
        str(e.value)
        == f"{path}:2: 'chosen' must hold exactly one assistant message, got [assistant, assistant]"
    )
    assert load_file(path, fmt="jsonl", lenient=True).skipped == {"turn_order": 1}


def test_five_megabyte_message(tmp_path):
    huge = "x" * 5_000_000
    path = tmp_path / "helpful-base" / "test.jsonl"
    path.parent.mkdir()
    ok = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    big = {"chosen": f"\n\nHuman: q2\n\nAssistant: {huge}", "rejected": "\n\nHuman: q2\n\nAssistant: b"}
    path.write_text(json.dumps(ok) + "\n" + json.dumps(big) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_file(path)
    assert str(e.value) == (
        f"{path}:2: the chosen reply has 5,000,000 characters, over the limit of 1,000,000 "
        "(max_message_chars)"
    )
    assert load_file(path, lenient=True).skipped == {"message_too_long": 1}
    assert len(load_file(path, max_message_chars=6_000_000).pairs) == 2


def test_directory_without_the_expected_subsets():
    root = BAD / "wrong_layout"
    with pytest.raises(DataError) as e:
        load_pairs(root, subsets=["helpful-base", "harmless-base"])
    assert str(e.value) == (
        f"{root}: missing subset folders: helpful-base, harmless-base "
        "(expected: helpful-base, harmless-base; found: other-subset)"
    )
    with pytest.raises(DataError, match="found: other-subset"):
        build_dataset(DataConfig(), str(root))


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="data folder does not exist"):
        load_pairs(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no subset folder holds train.jsonl\[.gz\] or test.jsonl\[.gz\]"):
        load_pairs(tmp_path)
    (tmp_path / "helpful-base").mkdir()
    (tmp_path / "helpful-base" / "train_docta_100.jsonl.gz").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_pairs(tmp_path, subsets=["helpful-base"])
    assert str(e.value).endswith("no train.jsonl[.gz] or test.jsonl[.gz] (found: train_docta_100.jsonl.gz)")
    (tmp_path / "helpful-base" / "test.jsonl").write_bytes(b"")
    (tmp_path / "helpful-base" / "test.jsonl.gz").write_bytes(b"")
    with pytest.raises(DataError, match="both test.jsonl and test.jsonl.gz: keep one"):
        load_pairs(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "missing.jsonl")


def test_rmb_path_without_subset_folder(tmp_path):
    (tmp_path / "x.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the RMB subset"):
        load_rmb(tmp_path)


def test_json_array_file_errors(tmp_path):
    d = tmp_path / "Helpfulness"
    d.mkdir()
    (d / "a.json").write_text('{"not": "an array"}', encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON array of rows, got object"):
        load_rmb(tmp_path)
    (d / "a.json").write_text('[\n{"pair_uid": 1,\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.json:3: malformed JSON"):
        load_rmb(tmp_path)
    assert load_rmb(tmp_path, lenient=True).skipped == {"malformed_json": 1}


def test_committed_corpus_matches_the_script(tmp_path):
    spec = importlib.util.spec_from_file_location("make_corpus", BAD / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for rel, data in module.corpus().items():
        assert (BAD / rel).read_bytes() == data, f"{rel} is stale: run python tests/data/bad/make_corpus.py"
