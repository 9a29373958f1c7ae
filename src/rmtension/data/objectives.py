"""From loaded pairs to the three training objectives: `helpful`, `harmless` and `mixed`.

`helpful` and `harmless` are the subsets named in `DataConfig.subsets`. `mixed` combines them by
`DataConfig.mixed_mode`:

- `union`: every training pair of both (capped at `max_train_pairs` like the others);
- `matched`: n training pairs, half from each, where n is the smaller single-objective training
  set (so with `max_train_pairs=N` and enough data, all three objectives train on N pairs);
- `ratio`: the same n, `mixed_ratio` of it from helpful and the rest from harmless.

Every subsample is a prefix of one seeded order per objective, so the helpful half of `mixed` is a
subset of the `helpful` training set: the objectives differ in composition, not in luck.
Mixed val is the union of the helpful and harmless val sets; test sets exist per objective only
(a mixed model is evaluated on each), so `splits["mixed"]` has no "test".

Two control objectives split the interference in two: `helpful_half` and `harmless_half` train on
exactly the helpful (harmless) pairs of `mixed`, the mixed RM's in-domain share (n/2 in matched mode),
with the single objective's val set. single(n/2) - single(n) is dilution; mixed - single(n/2) is
negative transfer.

A subset name may carry a half selector: `helpful-base@half0` and `helpful-base@half1` are the two
disjoint halves of `helpful-base`, split by a hash of (split seed, prompt group), so a prompt's
pairs stay in one half. Two halves of one subset as the two objectives make a placebo study.
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rmtension.config import DataConfig
from rmtension.data.extra import add_extra_train
from rmtension.data.flips import CUED, FLIPPED, add_cue, flip_share, shuffle_labels
from rmtension.data.plant import MARKED, mark_chosen
from rmtension.data.formats import load_hub, load_pairs, load_rmb
from rmtension.data.xstest import load_xstest, xstest_account
from rmtension.data import hh
from rmtension.data.hh import HUB_ID
from rmtension.data.splits import SplitResult, split_pairs, take, unit_hash
from rmtension.data.summary import build_summary
from rmtension.data.types import Pair
from rmtension.errors import ConfigError, DataError

SINGLE = ("helpful", "harmless")
CONTROLS = {"helpful_half": "helpful", "harmless_half": "harmless"}
"""Control objective -> the single objective whose share of the mixed training set it learns from."""
HALVES = ("half0", "half1")


def parse_selector(name: str) -> tuple[str, str | None]:
    """`"helpful-base@half1"` -> ("helpful-base", "half1"); `"helpful-base"` -> ("helpful-base", None)."""
    subset, at, half = name.partition("@")
    if not at:
        return name, None
    if half not in HALVES or not subset:
        raise ConfigError(f"data.subsets: {name!r}: a selector is <subset>@half0 or <subset>@half1")
    return subset, half


def half_of(pair: Pair, seed: int) -> str:
    """The half (`half0` / `half1`) of its subset a pair belongs to: a hash of its prompt group."""
    return HALVES[unit_hash(seed, "half", pair.group_key) >= 0.5]


def selects(selectors: Sequence[str], seed: int):
    """A predicate on pairs: does one of `selectors` (subset names, with or without a half) take the pair?"""
    whole = {s for s, h in map(parse_selector, selectors) if h is None}
    halves = {(s, h) for s, h in map(parse_selector, selectors) if h is not None}
    return lambda p: p.subset in whole or (p.subset, half_of(p, seed)) in halves


@dataclass
class DataBundle:
    """Everything later stages read about the data."""

    splits: dict[str, dict[str, list[Pair]]]
    """objective ("helpful", "harmless", "mixed") -> split ("train", "val", and "test" for the single objectives)."""
    test_sets: dict[str, list[Pair]]
    """"helpful", "harmless", plus "rmb-helpful" / "rmb-harmless" when `rmb_path` is set and
    "xstest-should-respond" / "xstest-should-refuse" when `xstest_path` is set."""
    summary: dict[str, Any]
    """JSON-able account of the load: counts per subset and split, drops, skips, files, split mode."""

    def manifest(self) -> dict[str, Any]:
        """Pair ids per objective and split, and per test set (JSON-able; `pair_id`s are stable)."""
        return {
            "splits": {
                obj: {split: [p.pair_id for p in pairs] for split, pairs in by.items()}
                for obj, by in self.splits.items()
            },
            "test_sets": {name: [p.pair_id for p in pairs] for name, pairs in self.test_sets.items()},
        }


def objective_subsets(cfg: DataConfig) -> dict[str, list[str]]:
    """{"helpful": [...], "harmless": [...]} from the config, checked."""
    missing = [o for o in SINGLE if not cfg.subsets.get(o)]
    if missing:
        raise ConfigError(
            f"data.subsets: no subsets for {', '.join(missing)} (need 'helpful' and 'harmless' lists)"
        )
    parsed = {o: [parse_selector(n) for n in cfg.subsets[o]] for o in SINGLE}
    both = sorted(
        f"{a}@{ha}" if ha else a
        for a, ha in parsed["helpful"]
        for b, hb in parsed["harmless"]
        if a == b and (ha is None or hb is None or ha == hb)
    )
    if both:
        raise ConfigError(
            f"data.subsets: {', '.join(both)} listed under both helpful and harmless (overlapping)"
        )
    return {o: list(cfg.subsets[o]) for o in SINGLE}


def base_subsets(selectors: Sequence[str]) -> list[str]:
    """The subsets to load for `selectors`, half selectors removed, in first-seen order."""
    return list(dict.fromkeys(parse_selector(n)[0] for n in selectors))


def mixed_sizes(n_helpful: int, n_harmless: int, mode: str, ratio: float, cap: int | None) -> tuple[int, int]:
    """(helpful, harmless) training pairs of the mixed objective.

    `n_*` are the available training pairs; `cap` is `max_train_pairs`.
    >>> mixed_sizes(1000, 300, "matched", 0.5, None), mixed_sizes(1000, 300, "ratio", 0.8, 200)
    ((150, 150), (160, 40))
    >>> mixed_sizes(1000, 300, "union", 0.5, None)
    (1000, 300)
    """
    if mode == "union":
        return n_helpful, n_harmless  # capped jointly afterwards
    n = min(min(n_helpful, cap or n_helpful), min(n_harmless, cap or n_harmless))  # each single run's size
    n_help = n - n // 2 if mode == "matched" else round(ratio * n)
    return n_help, n - n_help


def build_objectives(
    split: SplitResult, cfg: DataConfig
) -> tuple[dict[str, dict[str, list[Pair]]], dict[str, list[Pair]]]:
    """(splits per objective, test sets per objective) from grouped splits, with caps applied."""
    subsets = objective_subsets(cfg)
    seed, cap_train, cap_eval = cfg.split_seed, cfg.max_train_pairs, cfg.max_eval_pairs
    cap_val = min(c for c in (cap_eval, cfg.max_val_pairs, math.inf) if c is not None)
    cap_val = None if cap_val == math.inf else cap_val
    takes = {o: selects(subsets[o], seed) for o in SINGLE}
    pool = {o: {s: [p for p in split.pairs[s] if takes[o](p)] for s in split.pairs} for o in SINGLE}
    for o in SINGLE:
        if not pool[o]["train"]:
            raise DataError(",".join(subsets[o]), None, f"objective {o} has no training pairs")
    if cfg.equal_sizes:
        cap_train = min(cap_train or math.inf, *(len(pool[o]["train"]) for o in SINGLE))
    splits = {
        o: {
            "train": take(pool[o]["train"], cap_train, seed, "train"),
            "val": take(pool[o]["val"], cap_val, seed, "val"),
            "test": take(pool[o]["test"], cap_eval, seed, "test"),
        }
        for o in SINGLE
    }
    n_help, n_harm = mixed_sizes(
        len(pool["helpful"]["train"]),
        len(pool["harmless"]["train"]),
        cfg.mixed_mode,
        cfg.mixed_ratio,
        cap_train,
    )
    mixed_train = _prefix(pool["helpful"]["train"], n_help, seed) + _prefix(
        pool["harmless"]["train"], n_harm, seed
    )
    if cfg.mixed_mode == "union":
        mixed_train = take(mixed_train, cap_train, seed, "train")
    splits["mixed"] = {"train": mixed_train, "val": splits["helpful"]["val"] + splits["harmless"]["val"]}
    for (
        control,
        single,
    ) in CONTROLS.items():  # the mixed RM's in-domain share, with the single objective's val
        share = {p.pair_id for p in pool[single]["train"]}
        splits[control] = {
            "train": [p for p in mixed_train if p.pair_id in share],
            "val": splits[single]["val"],
        }
    for o, marker in sorted(cfg.plant_marker.items()):  # a planted feature, wherever o's pairs are
        ids = {p.pair_id for pairs in pool[o].values() for p in pairs}
        for split in splits.values():
            for name, pairs in split.items():
                split[name] = mark_chosen(pairs, marker, ids)
    for objective, fraction in sorted(cfg.flip_labels.items()):  # planted label noise, the mixed RM's only
        ids = {p.pair_id for p in pool[objective]["train"]}
        ids |= {i + MARKED for i in ids}  # the same pairs when they carry a planted marker
        splits["mixed"]["train"], _ = flip_share(splits["mixed"]["train"], ids, fraction, seed)
    if cfg.shuffle_labels:  # a negative control: every RM's training labels on a seeded coin
        for split in splits.values():
            split["train"], _ = shuffle_labels(split["train"], seed)
    if cfg.cue_share:  # a planted cue that is not length, after the flips so that it follows them
        for by in splits.values():
            for name in by:
                by[name], _ = add_cue(by[name], cfg.cue_share, seed)
    return splits, {o: splits[o]["test"] for o in SINGLE}


def flip_account(mixed_train: Sequence[Pair], cfg: DataConfig) -> dict[str, Any]:
    """`data/summary.json`'s count of planted flips: per objective, the share asked for and the pairs flipped."""
    takes = {o: selects(objective_subsets(cfg)[o], cfg.split_seed) for o in SINGLE}
    out: dict[str, Any] = {"objective": "mixed", "split": "train"}
    for o, share in sorted(cfg.flip_labels.items()):
        mine = [p for p in mixed_train if takes[o](p)]
        n_flip = sum(p.pair_id.endswith(FLIPPED) for p in mine)
        out[o] = {"share": share, "flipped": n_flip, "of": len(mine)}
    return out


def _prefix(pairs: Sequence[Pair], n: int, seed: int) -> list[Pair]:
    """`take` with the training salt, so the mixed half is nested in the single objective's set."""
    return take(pairs, n, seed, "train")


def check_no_leak(splits: dict[str, dict[str, list[Pair]]]) -> list[str]:
    """Group keys found in more than one split (train/val/test) across all objectives; [] when clean."""
    where: dict[str, set[str]] = {}
    for by in splits.values():
        for name, pairs in by.items():
            for p in pairs:
                where.setdefault(p.group_key, set()).add(name)
    return sorted(g for g, names in where.items() if len(names) > 1)


def check_source(cfg: DataConfig, root: str | None, probe: bool = False) -> None:
    """Raise the study's one-line `DataError` at once where it has nothing to read: no `root`, and the
    hub turned off or without this format; with `probe`, also where the hub does not answer
    (`hh.hub_problem`: one quick request, no retries)."""
    if root is not None:
        return
    if not cfg.hub or cfg.format != "hh":
        why = "data.hub is false" if cfg.format == "hh" else f"format {cfg.format!r} has no hub source"
        raise DataError("data.path", None, f"no data path ({why}): set data.path or RMTENSION_DATA")
    problem = hh.hub_problem() if probe else None
    if problem is not None:
        raise DataError(f"hf://datasets/{HUB_ID}", None, hh.no_data_message(problem))


def build_dataset(cfg: DataConfig, root: str | None) -> DataBundle:
    """Load, split and assemble the objectives. `root` None: `Anthropic/hh-rlhf` from the hub (if `cfg.hub`)."""
    subsets = objective_subsets(cfg)
    wanted = base_subsets(subsets["helpful"] + subsets["harmless"])
    check_source(cfg, root)
    if root is not None:
        loaded = load_pairs(root, fmt=cfg.format, subsets=wanted, lenient=cfg.lenient)
    else:  # the hub's own failures come from its loader (`hh.hub_records`), in the same one line
        loaded = load_hub(wanted, lenient=cfg.lenient)
    split = split_pairs({s: r.pairs for s, r in loaded.items()}, cfg.split, cfg.split_seed)
    splits, test_sets = build_objectives(split, cfg)
    extra = add_extra_train(splits, cfg)  # training only, after the caps
    rmb = None
    if cfg.rmb_path:
        rmb = load_rmb(cfg.rmb_path, lenient=cfg.lenient)
        for name in ("rmb-helpful", "rmb-harmless"):
            pairs = [p for p in rmb.pairs if p.subset == name]
            if pairs:
                test_sets[name] = take(pairs, cfg.max_eval_pairs, cfg.split_seed, "test")
    xs = None
    if cfg.xstest_path:
        xs = load_xstest(cfg.xstest_path, lenient=cfg.lenient)
        for name, pairs in xs.pairs.items():
            if pairs:  # every pair: CIs resample prompts, and a cap would cut prompts unevenly
                test_sets[name] = pairs
    summary = build_summary(
        cfg, root if root is not None else f"hf://datasets/{HUB_ID}", loaded, split, splits, test_sets, rmb
    )
    if xs is not None:
        summary["xstest"] = xstest_account(xs)
    if extra:
        summary["extra_train"] = extra
    # 0 by construction unless the official files themselves share prompts (official_shared_groups).
    summary["groups_in_two_splits"] = len(check_no_leak(splits))
    if cfg.flip_labels:
        summary["flipped_labels"] = flip_account(splits["mixed"]["train"], cfg)
    if cfg.plant_marker:
        summary["planted_marker"] = {
            o: {
                "marker": marker,
                **{k: sum(MARKED in p.pair_id for p in v) for k, v in splits[o].items()},
            }
            for o, marker in sorted(cfg.plant_marker.items())
        }
    if cfg.cue_share:
        summary["cued_pairs"] = {
            o: {name: sum(CUED in p.pair_id for p in pairs) for name, pairs in by.items()}
            for o, by in splits.items()
        }
    if cfg.shuffle_labels:
        summary["shuffled_labels"] = {
            o: {"flipped": sum(p.pair_id.endswith(FLIPPED) for p in s["train"]), "of": len(s["train"])}
            for o, s in splits.items()
        }
    return DataBundle(splits, test_sets, summary)
