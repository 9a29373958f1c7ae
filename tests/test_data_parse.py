"""Parsing: transcripts, the three formats, the hub path, real rows, and the `data summary` CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rmtension.cli import main
from rmtension.data import (
    FORMATS,
    LoadResult,
    Turn,
    get_format,
    load_file,
    load_hub,
    load_pairs,
    load_rmb,
    parse_transcript,
    render_transcript,
)
from rmtension.data.reader import RowError
from rmtension.data.types import TranscriptError
from rmtension.errors import DataError

HH_SUBSETS = ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]
U, A = "user", "assistant"


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def hh_row(prompt: str, good: str = "good", bad: str = "bad") -> dict:
    return {
        "chosen": f"\n\nHuman: {prompt}\n\nAssistant: {good}",
        "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {bad}",
    }


# --- transcripts ---------------------------------------------------------------------------------


def test_parse_transcript_turns_and_spacing():
    text = "\n\nHuman: hi\n\nAssistant:  two spaces\n\nHuman: more\n\nAssistant: "
    assert parse_transcript(text) == (Turn(U, "hi"), Turn(A, " two spaces"), Turn(U, "more"), Turn(A, ""))
    assert render_transcript(parse_transcript(text)) == text


def test_parse_transcript_accepts_missing_leading_newlines_and_inline_roles():
    turns = parse_transcript("Human: a Human: not a turn\n\nAssistant: b")
    assert turns == (Turn(U, "a Human: not a turn"), Turn(A, "b"))


@pytest.mark.parametrize(
    "text, kind",
    [
        ("\n\nHuman: only a question", "no_assistant_turn"),
        ("\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "consecutive_human_turns"),
        ("intro\n\nHuman: a\n\nAssistant: b", "text_before_first_human"),
        ("\n\nAssistant: a\n\nHuman: b\n\nAssistant: c", "starts_with_assistant"),
        ("", "no_turns"),
    ],
)
def test_parse_transcript_rejects(text, kind):
    with pytest.raises(TranscriptError) as e:
        parse_transcript(text)
    assert e.value.kind == kind


# --- hh rows -------------------------------------------------------------------------------------


def test_hh_row_consecutive_assistants_kept_and_trailing_human_folded():
    parse = get_format("hh").parse_row
    p = parse(
        {
            "chosen": "\n\nHuman: q\n\nAssistant: a1\n\nAssistant: a2",
            "rejected": "\n\nHuman: q\n\nAssistant: a1\n\nAssistant: b",
            "id": 7,
        }
    )
    assert p.context == (Turn(U, "q"), Turn(A, "a1")) and (p.chosen, p.rejected) == ("a2", "b")
    assert p.metadata == {"id": 7} and "consecutive_assistant_turns" in p.flags
    # A model that wrote a fake Human turn: the turn stays in its (rejected) reply, not in the context.
    p = parse(
        {
            "chosen": "\n\nHuman: q\n\nAssistant: fine",
            "rejected": "\n\nHuman: q\n\nAssistant: r\n\nHuman: fake",
        }
    )
    assert p.rejected_context == p.context == (Turn(U, "q"),)
    assert p.rejected == "r\n\nHuman: fake" and p.flags == ("trailing_human_turn",)
    assert render_transcript(p.context, p.rejected) == "\n\nHuman: q\n\nAssistant: r\n\nHuman: fake"


def test_load_file_ids_lines_and_drops(tmp_path):
    rows = [hh_row("a"), hh_row("b", "same", "same"), hh_row("a"), "not a row"]
    f = write_jsonl(tmp_path / "helpful-base" / "test.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_file(f)
    assert str(e.value) == f"{f}:4: row must be a JSON object, got string"
    r = load_file(f, lenient=True)
    assert [p.pair_id for p in r.pairs] == ["helpful-base/test/1"]
    assert r.pairs[0].line == 1 and r.pairs[0].source == str(f) and r.pairs[0].subset == "helpful-base"
    assert r.drops == {"identical_replies": 1, "duplicate": 1} and r.skipped == {"wrong_type": 1}
    assert r.per_file[str(f)]["pairs"] == 1


def test_load_pairs_layout_and_duplicates_prefer_test(tmp_path):
    write_jsonl(tmp_path / "helpful-base" / "train.jsonl", [hh_row("a"), hh_row("b")])
    write_jsonl(tmp_path / "helpful-base" / "test.jsonl", [hh_row("b")])
    write_jsonl(tmp_path / "harmless-base" / "test.jsonl", [hh_row("c")])
    out = load_pairs(tmp_path)
    assert list(out) == ["train", "test"]
    assert [p.pair_id for p in out["test"].pairs] == ["harmless-base/test/1", "helpful-base/test/1"]
    # The train copy of a test pair is the one dropped: the official test set stays whole.
    assert [p.pair_id for p in out["train"].pairs] == ["helpful-base/train/1"] and out["train"].drops == {
        "duplicate": 1
    }


def test_merge_adds_counts():
    a = LoadResult(drops={"duplicate": 1}, files=["x"])
    b = LoadResult(drops={"duplicate": 2, "context_mismatch": 1}, skipped={"malformed_json": 1}, files=["y"])
    m = a.merge(b)
    assert (
        m.drops == {"duplicate": 3, "context_mismatch": 1}
        and m.skipped == {"malformed_json": 1}
        and m.files == ["x", "y"]
    )


# --- jsonl (TRL) format --------------------------------------------------------------------------


def test_jsonl_four_shapes(tmp_path):
    conv = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "q"}]
    rows = [
        {"prompt": "plain question", "chosen": "yes", "rejected": "no", "score": 1},
        {"prompt": "\n\nHuman: q2\n\nAssistant:", "chosen": " good", "rejected": " bad"},
        {
            "prompt": conv,
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
        {
            "chosen": conv + [{"role": "assistant", "content": "c"}],
            "rejected": conv + [{"role": "assistant", "content": "d"}],
        },
        {"chosen": "\n\nHuman: q5\n\nAssistant: e", "rejected": "\n\nHuman: q5\n\nAssistant: f"},
        {
            "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
            "rejected": [{"role": "user", "content": "X"}, {"role": "assistant", "content": "z"}],
        },
    ]
    r = load_file(write_jsonl(tmp_path / "mine" / "train.jsonl", rows), fmt="jsonl", split="train")
    p1, p2, p3, p4, p5 = r.pairs
    assert p1.context == (Turn(U, "plain question"),) and (p1.chosen, p1.metadata) == ("yes", {"score": 1})
    assert p2.context == (Turn(U, "q2"),) and (p2.chosen, p2.rejected) == ("good", "bad")
    assert p3.context == (Turn("system", "be nice"), Turn(U, "q")) and (p3.chosen, p3.rejected) == ("a", "b")
    assert p4.context == p3.context and (p4.chosen, p4.rejected) == ("c", "d")
    assert p5.context == (Turn(U, "q5"),) and p5.pair_id == "mine/train/5"
    assert r.drops == {"context_mismatch": 1}


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"prompt": "q", "chosen": "a", "rejected": ["b"]}, "both be strings or both be message arrays"),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "robot", "content": "a"}],
                "rejected": [],
            },
            "role 'robot'",
        ),
        (
            {
                "prompt": "q",
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "'prompt' must be a message array",
        ),
        (
            {"chosen": [{"role": "user", "content": "q"}], "rejected": [{"role": "user", "content": "q"}]},
            "ending in an assistant",
        ),
        (
            {
                "prompt": [{"role": "system", "content": "s"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "no user turn",
        ),
    ],
)
def test_jsonl_errors_name_the_problem(tmp_path, row, needle):
    f = write_jsonl(tmp_path / "s" / "test.jsonl", [row])
    with pytest.raises(DataError, match=needle):
        load_file(f, fmt="jsonl")


def test_format_registry():
    assert set(FORMATS) == {"hh", "rmb", "jsonl", "xstest"}
    with pytest.raises(DataError, match="unknown data format"):
        get_format("csv")


# --- hub (never the network) ---------------------------------------------------------------------


def test_hub_rows_become_pairs():
    def fake(name, data_dir, split):
        assert name == "Anthropic/hh-rlhf"
        return [hh_row(f"{data_dir} {split} {i}") for i in range(3)]

    out = load_hub(["helpful-base"], loader=fake)
    assert [len(out[s].pairs) for s in ("train", "test")] == [3, 3]
    assert out["test"].pairs[0].source == "hf://datasets/Anthropic/hh-rlhf/helpful-base/test"


def test_hub_failure_is_one_clear_error_even_when_lenient():
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'Anthropic/hh-rlhf' on the Hub (LocalEntryNotFoundError)\nmore")

    with pytest.raises(DataError) as e:
        load_hub(["helpful-base"], lenient=True, loader=offline)
    msg = str(e.value)
    assert (
        "cannot load Anthropic/hh-rlhf data_dir=helpful-base" in msg
        and "RMTENSION_DATA" in msg
        and "\n" not in msg
    )


# --- real data -----------------------------------------------------------------------------------


@pytest.mark.real
def test_real_test_files_counts_match_readme(hh_root):
    out = load_pairs(hh_root)
    assert list(out) == ["test"]
    r = out["test"]
    n_rows = 2312 + 2354 + 1137 + 2749
    assert r.drops == {"context_mismatch": 17, "identical_replies": 36}
    assert len(r.pairs) == n_rows - 17 - 36 and r.skipped == {}
    assert r.flags == {"consecutive_assistant_turns": 10, "empty_reply": 11, "trailing_human_turn": 2}
    assert len({p.pair_id for p in r.pairs}) == len(r.pairs)


@pytest.mark.real
def test_real_rows_render_back_to_the_original_strings(hh_root):
    """Parsing loses nothing: every kept pair renders to exactly the transcripts in the file."""
    for subset in HH_SUBSETS:
        path = hh_root / subset / "test.jsonl.gz"
        rows = [json.loads(x) for x in gzip.open(path, "rt", encoding="utf-8")]
        for p in load_file(path).pairs:
            row = rows[p.line - 1]
            assert render_transcript(p.context, p.chosen) == row["chosen"]
            assert render_transcript(p.context, p.rejected) == row["rejected"]


@pytest.mark.real
def test_real_context_differs_pairs_are_the_dropped_ones(hh_root):
    """helpful-base line 169: the rejected reply is split over two Assistant turns, so the contexts differ."""
    path = hh_root / "helpful-base" / "test.jsonl.gz"
    row = json.loads(gzip.open(path, "rt", encoding="utf-8").readlines()[168])
    p = get_format("hh").parse_row(row)
    assert p.rejected_context != p.context and len(p.rejected_context) == len(p.context) + 1
    assert 169 not in {q.line for q in load_file(path).pairs}


@pytest.mark.real
def test_real_train_sample_keeps_extra_fields(shared_data):
    for subset in HH_SUBSETS:
        r = load_file(
            shared_data / "hh-rlhf-train-sample" / subset / "train_docta_100.jsonl.gz", split="train"
        )
        assert len(r.pairs) + sum(r.drops.values()) == 100 and r.skipped == {}
        meta = r.pairs[0].metadata
        assert (
            set(meta) == {"suggest_chosen_rejected", "suggest_confidence"}
            and r.pairs[0].pair_id == f"{subset}/train/1"
        )


@pytest.mark.real
def test_real_rmb_sample(shared_data):
    r = load_rmb(shared_data / "rmb-sample")
    assert {p.subset for p in r.pairs} == {"rmb-helpful", "rmb-harmless"}
    assert len(r.pairs) == 317 + 306 - 1 and r.drops == {"identical_replies": 1}
    p = next(p for p in r.pairs if p.subset == "rmb-harmless")
    assert p.pair_id == "rmb-harmless/S6/1" and p.context[-1].role == "user"
    assert {"pair_uid", "category_path", "chosen_llm", "rejected_llm"} <= set(p.metadata)
    multi = [p for p in r.pairs if len(p.context) > 1]
    assert multi and all(p.context[-1].role == "user" for p in multi)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_summary_with_tokens(tmp_path, capsys):
    from tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    data = tmp_path / "data"
    write_jsonl(
        data / "helpful-base" / "test.jsonl", [hh_row(f"question {i}", "x" * (10 * i)) for i in range(20)]
    )
    assert (
        main(
            [
                "data",
                "summary",
                "--data",
                str(data),
                "--backbone",
                str(tmp_path / "tok"),
                "--max-length",
                "64",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "helpful-base" in out and "pairs > 64" in out and "carved" in out
    assert main(["data", "summary", "--data", str(data), "--backbone", str(tmp_path / "tok"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    stats = report["tokens"]["helpful-base"]
    assert stats["pairs"] == 20 and stats["chosen"]["max"] >= stats["chosen"]["p99"] >= stats["chosen"]["p50"]


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RMTENSION_DATA", raising=False)
    assert main(["data", "summary", "--no-tokens"]) == 2
    assert capsys.readouterr().err.strip() == "error: no data folder: pass --data or set RMTENSION_DATA"
    write_jsonl(tmp_path / "x" / "test.jsonl", [{"chosen": 1}])
    assert main(["data", "summary", "--data", str(tmp_path), "--no-tokens"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'x' / 'test.jsonl'}:1:" in err


@pytest.mark.real
def test_cli_summary_real_data(hh_root, capsys, monkeypatch):
    monkeypatch.setenv("RMTENSION_DATA", str(hh_root))  # --data defaults to $RMTENSION_DATA
    assert main(["data", "summary", "--no-tokens", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drops"] == {"context_mismatch": 17, "identical_replies": 36}
    assert sum(sum(c.values()) for c in report["splits"].values()) == 8552 - 53


@pytest.mark.real
def test_cli_subprocess(shared_data):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rmtension.cli",
            "data",
            "summary",
            "--data",
            str(shared_data / "rmb-sample"),
            "--format",
            "rmb",
            "--no-tokens",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "rmb-harmless" in out.stdout and "identical_replies=1" in out.stdout


def test_row_error_is_one_line():
    assert RowError("x", "a\nb  c").reason == "a b c"


def test_the_hub_probe_asks_once_and_says_what_the_hub_did(monkeypatch):
    import huggingface_hub.utils
    from huggingface_hub import constants

    from rmtension.data import hh

    calls = []

    class Session:
        def __init__(self, answer):
            self.answer = answer

        def head(self, url, timeout, follow_redirects):
            calls.append((url, timeout))
            if isinstance(self.answer, Exception):
                raise self.answer
            return type("Response", (), {"status_code": self.answer})()

    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    refused = ConnectionRefusedError("[Errno 111] Connection refused\nmore")
    answers = [
        (refused, "is unreachable (ConnectionRefusedError: [Errno 111] Connection refused)"),
        (503, "answered HTTP 503"),
        (404, None),  # an answer: the hub is there, and `datasets` says what it lacks
        (200, None),
    ]
    for answer, expected in answers:
        monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda a=answer: Session(a))
        problem = hh.hub_problem()
        assert problem == (None if expected is None else f"the hub at {constants.ENDPOINT} {expected}")
    assert calls == [(f"{constants.ENDPOINT}/api/datasets/Anthropic/hh-rlhf", hh.PROBE_TIMEOUT_S)] * 4
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline mode: the local cache answers, nothing is dialled
    assert hh.hub_problem() is None and len(calls) == 4
    message = hh.no_data_message("the hub at X is unreachable")
    assert "RMTENSION_DATA=" in message and "--data" in message and "\n" not in message
