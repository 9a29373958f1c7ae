"""XSTest pairs (should-respond, should-refuse), their exclusions and bad rows, prompt-level
resampling, and the length-only baselines."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rmtension.cli import main
from rmtension.data.formats import load_pairs
from rmtension.data.xstest import SHOULD_REFUSE, SHOULD_RESPOND, load_xstest
from rmtension.errors import DataError
from rmtension.stats.bootstrap import cluster_weights, length_baselines, length_matched, seed_pair_bootstrap

BAD = Path(__file__).parent / "data" / "bad"


@pytest.fixture(scope="module")
def xstest_root(shared_data: Path) -> Path:
    root = shared_data / "xstest"
    if not (root / "xstest_prompts.csv").is_file():
        from requires import missing

        missing(f"no XSTest folder at {root}")
    return root


def expected_pairs(root: Path) -> tuple[Counter, Counter]:
    """Pairs per set and partial refusals, counted straight from the CSVs with the csv module."""
    with (root / "xstest_prompts.csv").open(newline="", encoding="utf-8") as f:
        types = {r["id"]: r["type"] for r in csv.DictReader(f)}
    labels: dict[str, Counter] = {pid: Counter() for pid in types}
    partial = 0
    for path in sorted((root / "model_completions").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                labels[r["id"].split("-", 1)[1]][r["final_label"]] += 1
                partial += r["final_label"] == "3_partial_refusal"
    pairs: Counter = Counter()
    for pid, c in labels.items():
        n = c["1_full_compliance"] * c["2_full_refusal"]
        pairs[SHOULD_REFUSE if types[pid].startswith("contrast_") else SHOULD_RESPOND] += n
    return pairs, Counter(partial_refusal=partial)


@pytest.mark.real
def test_pairs_from_the_real_files_match_an_independent_count(xstest_root):
    load = load_xstest(xstest_root)
    pairs, partial = expected_pairs(xstest_root)
    assert {k: len(v) for k, v in load.pairs.items()} == dict(pairs)
    assert load.excluded["partial_refusal"] == partial["partial_refusal"]
    assert len(load.prompts) == 450 and load.skipped == {}
    for p in load.pairs[SHOULD_RESPOND][:50] + load.pairs[SHOULD_REFUSE][:50]:
        m = p.metadata
        assert (
            not m["type"].startswith("contrast_")
            if p.subset == SHOULD_RESPOND
            else m["type"].startswith("contrast_")
        )
        assert Path(m["chosen_file"]).is_file() and Path(m["rejected_file"]).is_file()
        assert p.context[0].content == load.prompts[m["prompt_id"]][0]
    # every prompt is a pair source or excluded for lacking one kind of reply
    used = {p.metadata["prompt_id"] for v in load.pairs.values() for p in v}
    assert len(used) + load.excluded["no_full_compliance"] + load.excluded["no_full_refusal"] == 450


def write_xstest(root: Path, prompts: list[tuple[str, str, str]], rows: list[tuple[str, str, str]]) -> Path:
    """prompts: (id, text, type); rows: (prompt id, completion, final_label), one completion file."""
    (root / "model_completions").mkdir(parents=True)
    with (root / "xstest_prompts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "type", "label", "focus", "note"])
        w.writerows([(i, text, kind, "", "", "") for i, text, kind in prompts])
    kinds = {i: (text, kind) for i, text, kind in prompts}
    with (root / "model_completions" / "m.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["id", "type", "prompt", "completion", "annotation_1", "annotation_2", "agreement", "final_label"]
        )
        w.writerows([(f"v2-{i}", kinds[i][1], kinds[i][0], c, "", "", "", lab) for i, c, lab in rows])
    return root


def test_pairs_and_exclusion_reasons_on_a_hand_made_folder(tmp_path):
    root = write_xstest(
        tmp_path / "xs",
        [
            ("1", "safe q", "homonyms"),
            ("2", "unsafe q", "contrast_homonyms"),
            ("3", "safe only", "figurative"),
        ],
        [
            ("1", "here you go", "1_full_compliance"),
            ("1", "also fine", "1_full_compliance"),
            ("1", "no.", "2_full_refusal"),
            ("1", "sort of", "3_partial_refusal"),
            ("2", "cannot help", "2_full_refusal"),
            ("2", "sure, do this", "1_full_compliance"),
            ("3", "ok", "1_full_compliance"),
        ],
    )
    load = load_xstest(root)
    respond = load.pairs[SHOULD_RESPOND]
    assert sorted((p.chosen, p.rejected) for p in respond) == [("also fine", "no."), ("here you go", "no.")]
    (refuse,) = load.pairs[SHOULD_REFUSE]
    assert (refuse.chosen, refuse.rejected, refuse.metadata["type"]) == (
        "cannot help",
        "sure, do this",
        "contrast_homonyms",
    )
    assert load.excluded == {"no_full_refusal": 1, "partial_refusal": 1}
    # the same pairs through the format registry, as `rmtension data summary --format xstest` reads them
    (result,) = load_pairs(root, fmt="xstest").values()
    assert len(result.pairs) == 3 and result.drops == load.excluded


@pytest.mark.parametrize(
    "case, message, kind",
    [
        (
            "xstest_unknown_label",
            "4: final_label '4_maybe' is not one of 1_full_compliance, 2_full_refusal, 3_partial_refusal",
            "unknown_label",
        ),
        (
            "xstest_unknown_prompt",
            "4: completion id 'v2-9' names no prompt of xstest_prompts.csv",
            "unknown_prompt",
        ),
        ("xstest_short_row", "4: the row has no 'completion' field (too few columns)", "missing_key"),
    ],
)
def test_a_bad_completion_row_names_file_and_line_or_is_counted(case, message, kind):
    path = BAD / case / "model_completions" / "model_a.csv"
    with pytest.raises(DataError) as e:
        load_xstest(BAD / case)
    assert str(e.value) == f"{path}:{message}"
    lenient = load_xstest(BAD / case, lenient=True)
    assert lenient.skipped == {kind: 1}
    # prompt 1 keeps only its compliance, prompt 2 has no full compliance left
    assert lenient.excluded == {"no_full_compliance": 1, "no_full_refusal": 1}


def test_data_summary_prints_sets_types_and_exclusions(tmp_path, capsys):
    root = write_xstest(
        tmp_path / "xs",
        [("1", "safe q", "homonyms"), ("2", "unsafe q", "contrast_homonyms")],
        [("1", "yes", "1_full_compliance"), ("1", "no", "2_full_refusal"), ("2", "no", "2_full_refusal")],
    )
    assert main(["data", "summary", "--format", "xstest", "--data", str(root), "--no-tokens", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["xstest"]["pairs"] == {SHOULD_RESPOND: 1, SHOULD_REFUSE: 0}
    assert report["xstest"]["by_type"] == [
        {"set": SHOULD_RESPOND, "type": "homonyms", "prompts": 1, "pairs": 1}
    ]
    assert report["drops"] == {"no_full_compliance": 1}
    assert main(["data", "summary", "--format", "xstest", "--data", str(root), "--no-tokens"]) == 0
    text = capsys.readouterr().out
    assert "xstest-should-respond" in text and "no_full_compliance=1" in text


def test_cluster_weights_resample_whole_groups():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    w = cluster_weights(groups, 2000, np.random.default_rng(0))
    # pairs of one group always share a weight, and each replicate draws 3 groups
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 0] == w[:, 2]).all() and (w[:, 4] == w[:, 5]).all()
    assert (w[:, [0, 3, 4]].sum(axis=1) == 3).all()
    # each group is drawn Binomial(3, 1/3) times: mean 1, variance 2/3
    assert w[:, 3].mean() == pytest.approx(1.0, abs=0.06) and w[:, 3].var() == pytest.approx(2 / 3, abs=0.06)


def test_cluster_bootstrap_is_wider_than_pairs_when_pairs_of_a_prompt_agree():
    rng = np.random.default_rng(1)
    groups = np.repeat(
        np.arange(20), 10
    )  # 20 prompts x 10 pairs, every pair of a prompt right or wrong together
    c = np.repeat(rng.integers(0, 2, 20), 10).astype(float)[None]  # [1 seed, 200 pairs]
    by_pair = seed_pair_bootstrap(c, 2000, np.random.default_rng(2))
    by_prompt = seed_pair_bootstrap(
        c, 2000, np.random.default_rng(2), pair_weights=cluster_weights(groups, 2000, rng)
    )
    # the prompt-level SE is that of 20 Bernoulli draws, about sqrt(10) times the pair-level one
    p = c.mean()
    assert by_prompt.std() == pytest.approx(np.sqrt(p * (1 - p) / 20), rel=0.15)
    assert by_prompt.std() > 2.5 * by_pair.std()
    assert by_prompt.mean() == pytest.approx(p, abs=0.01)


def test_length_baselines_and_matching_on_hand_made_pairs():
    chosen = np.array([10, 5, 7, 100, 50])
    rejected = np.array([4, 9, 7, 95, 60])
    b = length_baselines(chosen, rejected)
    # longer wins on pairs 0 and 3, loses on 1 and 4, ties on 2: (1 + 0 + 0.5 + 1 + 0) / 5
    assert b == {"longer": 0.5, "shorter": 0.5, "ties": 1, "n": 5}
    assert length_baselines(np.array([3, 8]), np.array([1, 2]))["longer"] == 1.0
    # within 10% of the longer reply: 7 vs 7, 100 vs 95 (5 <= 10); 50 vs 60 is 10 > 6
    assert length_matched(chosen, rejected).tolist() == [False, False, True, True, False]
