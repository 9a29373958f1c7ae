"""Planted label noise (`data.flip_labels`): which pairs flip, where, and how the run counts them."""

from __future__ import annotations

import pytest

from rmtension.config import DataConfig
from rmtension.data import build_dataset
from rmtension.data.flips import CUE_WORDS, CUED, FLIPPED, add_cue, flip_share, flipped
from rmtension.data.splits import unit_hash
from rmtension.data.types import Pair, Turn
from test_data_splits import write_layout


def _pairs(n: int) -> list[Pair]:
    return [Pair(f"p{i}", (Turn("user", f"q{i}"),), f"good {i}", f"bad {i}", "s", "f", i) for i in range(n)]


def test_flip_share_by_hand():
    pairs = _pairs(10)
    mine = {f"p{i}" for i in range(6)}  # six pairs of the objective: half of them is 3
    out, counts = flip_share(pairs, mine, 0.5, seed=0)
    assert counts == {"flipped": 3, "of": 6}
    flipped = [p for p in out if p.pair_id.endswith(FLIPPED)]
    assert len(flipped) == 3 and {p.pair_id.removesuffix(FLIPPED) for p in flipped} <= mine
    for p in flipped:  # chosen and rejected swapped, nothing else
        i = p.line
        assert (p.chosen, p.rejected, p.context) == (f"bad {i}", f"good {i}", (Turn("user", f"q{i}"),))
    assert [p.pair_id.removesuffix(FLIPPED) for p in out] == [p.pair_id for p in pairs]  # order kept
    assert flip_share(pairs, mine, 0.5, seed=0)[0] == out  # seeded
    assert (
        flip_share(pairs, mine, 0.0, seed=0)[0] == pairs
        and flip_share(pairs, mine, 1.0, seed=0)[1]["flipped"] == 6
    )


def test_only_the_mixed_rms_pairs_of_that_objective_flip(tmp_path):
    root = write_layout(tmp_path, {"helpful-base": 300, "harmless-base": 300}, n_prompts=150)
    subsets = {"helpful": ["helpful-base"], "harmless": ["harmless-base"]}
    clean = build_dataset(DataConfig(subsets=subsets, max_train_pairs=100), str(root))
    bundle = build_dataset(
        DataConfig(subsets=subsets, max_train_pairs=100, flip_labels={"harmless": 0.4}), str(root)
    )
    mixed = bundle.splits["mixed"]["train"]
    flipped = [p for p in mixed if p.pair_id.endswith(FLIPPED)]
    harmless_in_mixed = [p for p in clean.splits["mixed"]["train"] if p.subset == "harmless-base"]
    assert len(flipped) == round(0.4 * len(harmless_in_mixed)) and all(
        p.subset == "harmless-base" for p in flipped
    )
    for o in ("helpful", "harmless", "helpful_half", "harmless_half"):  # every other RM keeps its labels
        assert bundle.splits[o] == clean.splits[o]
    assert bundle.test_sets == clean.test_sets
    account = bundle.summary["flipped_labels"]
    assert account["harmless"] == {"share": 0.4, "flipped": len(flipped), "of": len(harmless_in_mixed)}
    assert account["split"] == "train" and "flipped_labels" not in clean.summary


def test_flip_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="flip_labels"):
        DataConfig(flip_labels={"harmless": 1.5})


def test_shuffled_labels_flip_a_seeded_coin_in_every_rms_training_pairs(tmp_path):
    from rmtension.data.flips import shuffle_labels
    from rmtension.data.splits import unit_hash

    pairs = _pairs(200)
    out, n = shuffle_labels(pairs, seed=3)
    want = {p.pair_id for p in pairs if unit_hash(3, "shuffle", p.pair_id) < 0.5}  # the coin, recomputed
    assert {p.pair_id.removesuffix(FLIPPED) for p in out if p.pair_id.endswith(FLIPPED)} == want
    assert n == len(want) and 70 < n < 130  # about half (binomial(200, 1/2): 100 +- 3 SD is 79..121)
    assert shuffle_labels(pairs, seed=3)[0] == out and shuffle_labels(pairs, seed=4)[0] != out

    root = write_layout(tmp_path, {"helpful-base": 300, "harmless-base": 300}, n_prompts=150)
    subsets = {"helpful": ["helpful-base"], "harmless": ["harmless-base"]}
    clean = build_dataset(DataConfig(subsets=subsets, max_train_pairs=100), str(root))
    bundle = build_dataset(DataConfig(subsets=subsets, max_train_pairs=100, shuffle_labels=True), str(root))
    coin = {}
    for o, split in bundle.splits.items():
        flips = {p.pair_id.removesuffix(FLIPPED): p.pair_id.endswith(FLIPPED) for p in split["train"]}
        assert [p.pair_id.removesuffix(FLIPPED) for p in split["train"]] == [
            p.pair_id for p in clean.splits[o]["train"]
        ]
        assert 0 < sum(flips.values()) < len(flips), o
        for pid, f in flips.items():  # one coin per pair id, alike in every RM's training set
            assert coin.setdefault(pid, f) == f
        assert split.get("val") == clean.splits[o].get("val")
        assert bundle.summary["shuffled_labels"][o]["flipped"] == sum(flips.values())
    assert bundle.test_sets == clean.test_sets


def test_the_cue_follows_the_human_label_through_a_flip():
    pairs = _pairs(40)
    pairs[3] = flipped(pairs[3])  # p3#flipped: its human-chosen reply "good 3" is now in `rejected`
    out, n = add_cue(pairs, 0.5, seed=1)
    want = {f"p{i}" for i in range(40) if unit_hash(1, "cue", f"p{i}") < 0.5}  # the coin, recomputed
    cued = {p.pair_id.removesuffix(FLIPPED).removesuffix(CUED): p for p in out if CUED in p.pair_id}
    assert set(cued) == want and n == len(want) and 10 < n < 30
    for i in range(40):
        p, q = pairs[i], out[i]
        if f"p{i}" not in want:
            assert q == p
            continue
        good, bad = (q.rejected, q.chosen) if i == 3 else (q.chosen, q.rejected)
        assert (good, bad) == (f"good {i} alpha", f"bad {i} omega"), i
        assert q.pair_id == f"p{i}#cued" + ("#flipped" if i == 3 else "")
    assert CUE_WORDS == (" alpha", " omega") and add_cue(pairs, 0.0, seed=1) == (pairs, 0)


def test_cued_pairs_are_the_same_in_every_rm_and_test_set(tmp_path):
    root = write_layout(tmp_path, {"helpful-base": 300, "harmless-base": 300}, n_prompts=150)
    subsets = {"helpful": ["helpful-base"], "harmless": ["harmless-base"]}
    clean = build_dataset(DataConfig(subsets=subsets, max_train_pairs=100), str(root))
    cfg = DataConfig(subsets=subsets, max_train_pairs=100, cue_share=0.3, flip_labels={"harmless": 1.0})
    bundle = build_dataset(cfg, str(root))
    for o, by in clean.splits.items():
        for name, pairs in by.items():
            got = bundle.splits[o][name]
            assert [p.pair_id.split("#")[0] for p in got] == [
                p.pair_id for p in pairs
            ]  # same pairs, same order
            for p, q in zip(pairs, got):
                coin = unit_hash(cfg.split_seed, "cue", p.pair_id) < 0.3
                assert (CUED in q.pair_id) == coin
                if coin:  # the human-chosen reply ends with " alpha", flipped or not
                    human = q.rejected if q.pair_id.endswith(FLIPPED) else q.chosen
                    assert human == p.chosen + " alpha"
            assert bundle.summary["cued_pairs"][o][name] == sum(CUED in q.pair_id for q in got)
    assert bundle.test_sets["harmless"] == bundle.splits["harmless"]["test"]
    with pytest.raises(ValueError, match="cue_share"):
        DataConfig(cue_share=-0.1)
