"""Grouped splits, objectives (union/matched/ratio), caps, manifests, on synthetic and real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmtension.config import DataConfig
from rmtension.data import DataBundle, build_dataset, check_no_leak, load_hub, mixed_sizes, split_pairs, take
from rmtension.data import objectives
from rmtension.data.summary import summarize
from rmtension.errors import ConfigError, DataError

SUBSETS = {"helpful": ["helpful-base", "helpful-online"], "harmless": ["harmless-base"]}


def hh_row(prompt: str, i: object) -> dict:
    return {
        "chosen": f"\n\nHuman: {prompt}\n\nAssistant: good {i}",
        "rejected": f"\n\nHuman: {prompt}\n\nAssistant: bad {i}",
    }


def write_layout(
    root: Path, sizes: dict[str, int], files=("test",), n_prompts: int | None = None, offset: int = 0
) -> Path:
    """`<root>/<subset>/<file>.jsonl` with `sizes[subset]` rows per file.

    Prompts repeat across rows and subsets (`n_prompts` distinct ones), so grouping matters.
    """
    for subset, n in sizes.items():
        for split in files:
            rows = [
                hh_row(f"prompt {offset + (i * 7) % (n_prompts or n)}", f"{subset}-{split}-{i}")
                for i in range(n)
            ]
            path = root / subset / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture
def carved_root(tmp_path) -> Path:
    return write_layout(
        tmp_path, {"helpful-base": 300, "helpful-online": 200, "harmless-base": 240}, n_prompts=150
    )


def cfg(**kw) -> DataConfig:
    return DataConfig(subsets=SUBSETS, **kw)


def ids(bundle: DataBundle) -> dict:
    return bundle.manifest()


def test_same_seed_same_split_other_seed_other_split(carved_root):
    a, b = build_dataset(cfg(), str(carved_root)), build_dataset(cfg(), str(carved_root))
    assert ids(a) == ids(b)
    c = build_dataset(cfg(split_seed=1), str(carved_root))
    assert ids(c)["splits"]["helpful"]["train"] != ids(a)["splits"]["helpful"]["train"]


def test_no_prompt_in_two_splits_across_objectives(carved_root):
    bundle = build_dataset(cfg(), str(carved_root))
    assert check_no_leak(bundle.splits) == [] and bundle.summary["groups_in_two_splits"] == 0
    # Prompts are shared between helpful and harmless subsets here; the split is still clean.
    groups = {o: {s: {p.group_key for p in ps} for s, ps in by.items()} for o, by in bundle.splits.items()}
    assert groups["helpful"]["train"] & groups["harmless"]["train"]
    for o1 in groups:
        for o2 in groups:
            for s1 in groups[o1]:
                for s2 in groups[o2]:
                    if s1 != s2:
                        assert not groups[o1][s1] & groups[o2][s2], (o1, s1, o2, s2)


def test_carved_fractions_are_close(carved_root):
    bundle = build_dataset(cfg(split=(0.6, 0.2, 0.2)), str(carved_root))
    n = {
        s: len(bundle.splits["helpful"][s]) + len(bundle.splits["harmless"][s])
        for s in ("train", "val", "test")
    }
    total = sum(n.values())
    assert total == 740 and abs(n["train"] / total - 0.6) < 0.12 and abs(n["test"] / total - 0.2) < 0.1
    assert set(bundle.summary["split_mode"].values()) == {"carved"}


def test_mixed_modes_sizes(carved_root):
    base = build_dataset(cfg(), str(carved_root))
    n_help, n_harm = len(base.splits["helpful"]["train"]), len(base.splits["harmless"]["train"])
    assert n_help > n_harm
    union = build_dataset(cfg(mixed_mode="union"), str(carved_root))
    assert len(union.splits["mixed"]["train"]) == n_help + n_harm
    matched = build_dataset(cfg(mixed_mode="matched"), str(carved_root))
    mixed = matched.splits["mixed"]["train"]
    assert len(mixed) == n_harm
    n_help_part = sum(p.subset != "harmless-base" for p in mixed)
    assert n_help_part == n_harm - n_harm // 2
    ratio = build_dataset(cfg(mixed_mode="ratio", mixed_ratio=0.75), str(carved_root))
    mixed = ratio.splits["mixed"]["train"]
    assert len(mixed) == n_harm and sum(p.subset != "harmless-base" for p in mixed) == round(0.75 * n_harm)
    # The mixed halves are drawn from the single-objective training sets (nested, not re-drawn).
    single = {p.pair_id for o in ("helpful", "harmless") for p in ratio.splits[o]["train"]}
    assert {p.pair_id for p in mixed} <= single


def test_caps_give_every_objective_n_training_pairs(carved_root):
    for mode in ("matched", "ratio", "union"):
        bundle = build_dataset(cfg(max_train_pairs=40, max_eval_pairs=10, mixed_mode=mode), str(carved_root))
        assert [len(bundle.splits[o]["train"]) for o in ("helpful", "harmless", "mixed")] == [40, 40, 40]
        assert len(bundle.splits["helpful"]["val"]) == 10 and len(bundle.test_sets["harmless"]) == 10
        # Mixed val is the union of the two single-objective val sets; mixed has no test split.
        assert (
            bundle.splits["mixed"]["val"]
            == bundle.splits["helpful"]["val"] + bundle.splits["harmless"]["val"]
        )
        assert "test" not in bundle.splits["mixed"] and set(bundle.test_sets) == {"helpful", "harmless"}


def test_val_cap_limits_validation_only(carved_root):
    both = build_dataset(cfg(max_eval_pairs=12), str(carved_root))
    val_only = build_dataset(cfg(max_eval_pairs=12, max_val_pairs=5), str(carved_root))
    assert [len(val_only.splits[o]["val"]) for o in ("helpful", "harmless")] == [5, 5]
    assert len(val_only.splits["mixed"]["val"]) == 10
    # The test sets keep the larger cap, and the capped validation set is a prefix-nested draw of the same pool.
    assert [len(val_only.test_sets[o]) for o in ("helpful", "harmless")] == [12, 12]
    assert val_only.test_sets == both.test_sets
    assert {p.pair_id for p in val_only.splits["helpful"]["val"]} <= {
        p.pair_id for p in both.splits["helpful"]["val"]
    }
    # A val cap above the eval cap changes nothing.
    assert build_dataset(cfg(max_eval_pairs=12, max_val_pairs=50), str(carved_root)).splits == both.splits


def test_caps_are_nested_and_seeded(carved_root):
    small = build_dataset(cfg(max_train_pairs=20), str(carved_root)).splits["helpful"]["train"]
    big = build_dataset(cfg(max_train_pairs=60), str(carved_root)).splits["helpful"]["train"]
    other = build_dataset(cfg(max_train_pairs=20, split_seed=3), str(carved_root)).splits["helpful"]["train"]
    assert {p.pair_id for p in small} < {p.pair_id for p in big}
    assert {p.pair_id for p in small} != {p.pair_id for p in other}


def test_mixed_sizes_by_hand():
    assert mixed_sizes(1000, 300, "matched", 0.5, None) == (150, 150)
    assert mixed_sizes(1000, 301, "matched", 0.5, None) == (151, 150)
    assert mixed_sizes(1000, 300, "matched", 0.5, 100) == (50, 50)
    assert mixed_sizes(1000, 300, "ratio", 0.8, None) == (240, 60)
    assert mixed_sizes(1000, 30, "ratio", 0.8, 100) == (24, 6)  # the smaller objective has only 30
    assert mixed_sizes(1000, 300, "union", 0.5, None) == (1000, 300)


def test_official_splits_keep_test_and_carve_val_from_train(tmp_path):
    sizes = {"helpful-base": 200, "helpful-online": 50, "harmless-base": 150}
    write_layout(tmp_path, sizes, files=("train",))
    root = write_layout(tmp_path, sizes, files=("test",), offset=100)  # test prompts start at 100
    bundle = build_dataset(cfg(), str(root))
    assert set(bundle.summary["split_mode"].values()) == {"official"}
    assert all(
        p.pair_id.split("/")[1] == "test" for p in bundle.test_sets["helpful"] + bundle.test_sets["harmless"]
    )
    assert len(bundle.test_sets["harmless"]) == 150
    train_val = bundle.splits["harmless"]["train"] + bundle.splits["harmless"]["val"]
    assert all(p.pair_id.split("/")[1] == "train" for p in train_val)
    assert 0 < len(bundle.splits["harmless"]["val"]) < 50
    # The official files share prompts 100..149 (harmless) between train and test: those train pairs
    # are removed and counted, so no group is in two splits.
    assert len(train_val) == 100
    assert bundle.summary["official_shared_groups"] > 0 and bundle.summary["groups_in_two_splits"] == 0
    test_groups = {p.group_key for p in bundle.test_sets["helpful"] + bundle.test_sets["harmless"]}
    kept = [p for o in ("helpful", "harmless") for s in ("train", "val") for p in bundle.splits[o][s]]
    assert not test_groups & {p.group_key for p in kept}
    assert bundle.summary["split_drops"]["train_group_in_official_test"] == 200 + 50 + 150 - len(kept)


def test_official_train_pairs_outside_test_groups_are_kept(tmp_path):
    # train prompts 0..99 and test prompts 50..149: exactly the 50 train rows of prompts 50..99 go
    for split, lo in (("train", 0), ("test", 50)):
        for subset in ("helpful-base", "harmless-base"):
            path = tmp_path / subset / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [hh_row(f"{subset} prompt {lo + i}", f"{split}-{i}") for i in range(100)]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c = DataConfig(subsets={"helpful": ["helpful-base"], "harmless": ["harmless-base"]})
    bundle = build_dataset(c, str(tmp_path))
    assert bundle.summary["split_drops"] == {"train_group_in_official_test": 100}
    for o in ("helpful", "harmless"):
        kept = bundle.splits[o]["train"] + bundle.splits[o]["val"]
        assert len(kept) == 50 and all(int(p.context[-1].content.split()[-1]) < 50 for p in kept)


def test_half_selectors_split_one_subset_into_disjoint_prompt_halves(carved_root):
    placebo = DataConfig(subsets={"helpful": ["helpful-base@half0"], "harmless": ["helpful-base@half1"]})
    bundle = build_dataset(placebo, str(carved_root))
    whole = build_dataset(
        DataConfig(subsets={"helpful": ["helpful-base"], "harmless": ["harmless-base"]}), str(carved_root)
    )
    for split in ("train", "val"):
        a, b = (bundle.splits[o][split] for o in ("helpful", "harmless"))
        assert a and b and not {p.group_key for p in a} & {p.group_key for p in b}
        assert {p.subset for p in a + b} == {"helpful-base"}
        # together the halves are the whole subset's split (no caps here)
        assert sorted(p.pair_id for p in a + b) == sorted(p.pair_id for p in whole.splits["helpful"][split])
    ta, tb = bundle.test_sets["helpful"], bundle.test_sets["harmless"]
    assert sorted(p.pair_id for p in ta + tb) == sorted(p.pair_id for p in whole.test_sets["helpful"])
    # about half the groups each, the split recomputed by hand from the documented hash
    from rmtension.data.splits import unit_hash

    groups = {p.group_key for p in whole.splits["helpful"]["train"]}
    by_hand = {g for g in groups if unit_hash(0, "half", g) < 0.5}
    assert {p.group_key for p in bundle.splits["helpful"]["train"]} == by_hand
    assert 0.3 < len(by_hand) / len(groups) < 0.7


def test_half_selector_errors(carved_root):
    with pytest.raises(ConfigError, match="half0 or <subset>@half1"):
        build_dataset(
            DataConfig(subsets={"helpful": ["helpful-base@half2"], "harmless": ["harmless-base"]}),
            str(carved_root),
        )
    with pytest.raises(ConfigError, match="both helpful and harmless"):
        build_dataset(
            DataConfig(subsets={"helpful": ["helpful-base"], "harmless": ["helpful-base@half1"]}),
            str(carved_root),
        )


def test_control_objectives_are_the_mixed_rms_in_domain_share(carved_root):
    bundle = build_dataset(cfg(mixed_mode="matched", max_train_pairs=60), str(carved_root))
    mixed = {p.pair_id for p in bundle.splits["mixed"]["train"]}
    helpful_ids = {p.pair_id for p in bundle.splits["helpful"]["train"]}
    half = {p.pair_id for p in bundle.splits["helpful_half"]["train"]}
    harm_half = {p.pair_id for p in bundle.splits["harmless_half"]["train"]}
    assert len(half) == 30 and len(harm_half) == 30 and half | harm_half == mixed
    assert half <= helpful_ids  # nested: the half is a subset of the single objective's n pairs
    assert bundle.splits["helpful_half"]["val"] == bundle.splits["helpful"]["val"]


def test_official_and_carved_subsets_together_do_not_leak(tmp_path):
    write_layout(tmp_path, {"helpful-base": 120}, files=("train", "test"), n_prompts=60)
    write_layout(
        tmp_path, {"helpful-online": 100, "harmless-base": 120}, n_prompts=60, offset=30
    )  # half the prompts shared
    bundle = build_dataset(cfg(), str(tmp_path))
    assert bundle.summary["split_mode"] == {
        "harmless-base": "carved",
        "helpful-base": "official",
        "helpful-online": "carved",
    }
    carved = {
        s: {p.group_key for p in ps if p.subset != "helpful-base"}
        for s, ps in bundle.splits["helpful"].items()
    }
    carved_h = {s: {p.group_key for p in ps} for s, ps in bundle.splits["harmless"].items()}
    official_test = {p.group_key for p in bundle.test_sets["helpful"] if p.subset == "helpful-base"}
    assert carved["train"] and carved_h["train"] and carved["test"] & official_test
    assert not (carved["train"] | carved_h["train"] | carved["val"] | carved_h["val"]) & official_test


def test_split_pairs_is_independent_of_input_order(carved_root):
    from rmtension.data import load_pairs

    pairs = load_pairs(carved_root)["test"].pairs
    a = split_pairs({"test": pairs}, (0.7, 0.1, 0.2), 0)
    b = split_pairs({"test": pairs[::-1]}, (0.7, 0.1, 0.2), 0)
    assert {s: sorted(p.pair_id for p in ps) for s, ps in a.pairs.items()} == {
        s: sorted(p.pair_id for p in ps) for s, ps in b.pairs.items()
    }
    assert take(pairs, 5, 0) == take(pairs, 5, 0) and len(take(pairs, None, 0)) == len(pairs)


def test_manifest_and_summary_are_json(carved_root):
    bundle = build_dataset(cfg(max_train_pairs=30), str(carved_root))
    back = json.loads(json.dumps(bundle.manifest()))
    assert len(back["splits"]["mixed"]["train"]) == 30 and back["test_sets"]["helpful"]
    summary = json.loads(json.dumps(bundle.summary))
    assert summary["counts_per_subset"]["harmless-base"]["total"] == 240
    assert summary["objectives"]["mixed"]["train"] == 30 and summary["drops"] == {}


def test_summarize_adds_token_percentiles(carved_root):
    from tiny import tiny_tokenizer

    bundle = build_dataset(cfg(max_train_pairs=20, max_eval_pairs=10), str(carved_root))
    s = summarize(bundle, tiny_tokenizer(), max_length=40)
    tok = s["tokens"]["harmless-base"]
    assert set(tok["chosen"]) == {"p50", "p90", "p99", "max"} and 0 <= tok["truncated"] <= tok["pairs"]
    assert "tokens" not in summarize(bundle)


def test_config_errors(carved_root):
    with pytest.raises(ConfigError, match="no subsets for harmless"):
        build_dataset(DataConfig(subsets={"helpful": ["helpful-base"]}), str(carved_root))
    with pytest.raises(DataError, match="missing subset folders: helpful-rejection-sampled"):
        build_dataset(DataConfig(), str(carved_root))
    with pytest.raises(DataError, match="data.hub is false"):
        build_dataset(cfg(hub=False), None)


def test_hub_path_when_no_root(monkeypatch):
    def fake(name, data_dir, split):
        return [hh_row(f"{data_dir} {split} prompt {i}", i) for i in range(30)]

    monkeypatch.setattr(
        objectives, "load_hub", lambda subsets, lenient: load_hub(subsets, lenient=lenient, loader=fake)
    )
    bundle = build_dataset(cfg(), None)
    assert set(bundle.summary["split_mode"].values()) == {"official"}
    assert (
        bundle.summary["source"] == "hf://datasets/Anthropic/hh-rlhf"
        and len(bundle.test_sets["harmless"]) == 30
    )


@pytest.mark.real
def test_real_default_split(hh_root, shared_data):
    bundle = build_dataset(DataConfig(rmb_path=str(shared_data / "rmb-sample")), str(hh_root))
    s = bundle.summary
    assert s["drops"] == {"context_mismatch": 17, "identical_replies": 36} and s["groups_in_two_splits"] == 0
    total = sum(c["total"] for c in s["counts_per_subset"].values())
    assert total == 8499
    train = sum(c["train"] for c in s["counts_per_subset"].values())
    assert 0.66 < train / total < 0.74
    assert s["objectives"]["mixed"]["train"] == s["objectives"]["harmless"]["train"]
    assert s["test_sets"]["rmb-helpful"] == 306 and s["test_sets"]["rmb-harmless"] == 316
    again = build_dataset(DataConfig(rmb_path=str(shared_data / "rmb-sample")), str(hh_root))
    assert again.manifest() == bundle.manifest()


def test_take_is_pinned_across_machines():
    # golden values: a change of hash, salt or ordering would change every carved split and cap
    from rmtension.data.splits import unit_hash
    from rmtension.data.types import Pair, Turn

    pairs = [Pair(f"p{i}", (Turn("user", "q"),), "a", "b", "s", "f", i) for i in range(10)]
    assert [p.pair_id for p in take(pairs, 4, 7, "train")] == ["p0", "p2", "p7", "p8"]
    assert take(list(reversed(pairs)), 4, 7, "train") == take(pairs, 4, 7, "train")[::-1]
    assert unit_hash(0, "x", "p1") == pytest.approx(0.07025979026994132, abs=1e-15)


def test_equal_sizes_caps_every_objective_at_the_smaller_one(carved_root):
    free = build_dataset(cfg(), str(carved_root))
    n = min(len(free.splits[o]["train"]) for o in ("helpful", "harmless"))
    assert len(free.splits["helpful"]["train"]) > n  # helpful has more pairs than harmless here
    eq = build_dataset(cfg(equal_sizes=True), str(carved_root))
    assert {len(eq.splits[o]["train"]) for o in ("helpful", "harmless", "mixed")} == {n}
