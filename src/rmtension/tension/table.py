"""Evaluation: per-pair scores of every RM on every test set, and the tension table.

The table reads only the per-pair score files, so it can be recomputed (and traced) without
touching a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rmtension.config import EvalConfig
from rmtension.stats.bootstrap import (
    bootstrap_p as _boot_p,
    calibration,
    cluster_weights,
    correct,
    interval,
    length_baselines,
    length_matched,
    seed_pair_bootstrap,
    seed_resamples,
)
from rmtension.stats.montecarlo import interval_mc_se
from rmtension.stats.seeds import pairs_only_replicates, seed_t_interval
from rmtension.stats.length import (
    controlled_difference,
    length_controlled_accuracy,
    length_controlled_ece,
    length_controlled_interference,
    length_controlled_per_seed,
    length_strata,
    not_estimable_reason,
    resample_counts,
)

RMS = ("helpful", "harmless", "mixed")
XSTEST_RESPOND, XSTEST_REFUSE = "xstest-should-respond", "xstest-should-refuse"


@dataclass
class TestSetInfo:
    """What the table needs of a test set beyond the scores, aligned with its score files' rows."""

    pair_ids: list[str]
    lengths: np.ndarray
    """[N, 2] whole reply lengths in tokens (chosen, rejected): the length baselines."""
    window_lengths: np.ndarray
    """[N, 2] reply tokens inside the model's window: which pairs are length-matched."""
    groups: np.ndarray | None = None
    """[N] cluster of each pair (XSTest: its prompt); CIs then resample clusters. None: pairs."""


def tension_table(
    scores: dict[str, dict[str, list[pd.DataFrame]]],
    cfg: EvalConfig,
    seed: int = 0,
    info: dict[str, TestSetInfo] | None = None,
) -> dict:
    """The three-objective tension table.

    scores[rm][test_set] is one frame per seed, rows aligned by pair id. Accuracy: mean and sd
    over seeds, and a CI from a two-level bootstrap (seeds and test pairs). Interference per test
    set = acc(mixed) - max(acc(helpful RM), acc(harmless RM)); its CI uses the same test-pair
    resamples for all three RMs (paired) and resamples each RM's seeds independently.

    With `info` for a test set: `baselines[test]` (prefer the longer / the shorter reply), each
    RM's accuracy on its length-matched pairs (`length_matched`: replies within 10% of the longer
    one's length, inside the window), cluster-resampled CIs where it gives groups, and on the
    XSTest sets the two paired differences of the avoidant-vs-misuse claim (`xstest`).
    """
    rng = np.random.default_rng(seed)
    extra_rng = np.random.default_rng([seed, 1])  # its own stream: the pair resamples above stay as they were
    info = info or {}
    test_sets = sorted({t for by_test in scores.values() for t in by_test})
    out: dict = {
        "accuracy": {},
        "interference": {},
        "calibration": {},
        "baselines": {},
        "method": {
            "ci": f"{cfg.ci:.0%} percentile bootstrap over test pairs and seeds ({cfg.bootstrap} resamples)",
            "interference": "accuracy(mixed) - accuracy(best single RM), paired over test pairs; the best "
            "single RM is fixed before the run on a test set of one objective (that objective's RM), and only "
            "elsewhere (RMB, XSTest: described, never decided on) chosen by its point estimate; dilution = accuracy(best single on the mixed RM's share of its "
            "objective, `<best>_half`) - accuracy(best single); negative_transfer = accuracy(mixed) - "
            "accuracy(`<best>_half`); p-values: two-sided bootstrap",
            "calibration": f"ECE over {cfg.ece_bins} bins of sigmoid(r_chosen - r_rejected), both orientations",
            "baselines": "accuracy of preferring the longer / the shorter reply (tokens of the backbone's "
            "tokenizer, whole replies; ties count 0.5)",
            "length_matched": "accuracy on pairs whose replies, inside the model's window, differ by at most "
            "10% of the longer one's length",
            "length_controlled": "mean of the accuracies on the pairs whose chosen reply is longer and on those "
            "whose chosen reply is shorter (whole replies, the baselines' tokens; ties dropped and counted; fewer "
            "than 30 pairs in a stratum: not estimable), with the raw CIs' pair and seed resamples; length_prior "
            "= interference - its length-controlled value, paired; the calibration's: the mean of the two "
            "strata's ECEs (`rmtension.stats.length`)",
            "ci95_mc_se": "Monte Carlo SE of each CI bound (order statistics one binomial SD either side; "
            "`rmtension.stats.montecarlo`)",
            "seed_t": "seeds as the unit: estimate +- t * sqrt(pairs-only bootstrap variance + between-seed "
            "variance / seeds), Welch-Satterthwaite df (`rmtension.stats.seeds`)",
            "clusters": "on test sets with groups (XSTest: prompts), the bootstrap resamples groups, not pairs",
        },
    }
    for test in test_sets:
        frames = {rm: scores[rm][test] for rm in scores if test in scores[rm]}
        ids = frames[next(iter(frames))][0].pair_id.to_numpy()
        per_rm = {}
        for rm, fs in frames.items():
            for f in fs:
                if not np.array_equal(f.pair_id.to_numpy(), ids):
                    raise ValueError(f"score files of {rm} on {test} are not aligned by pair id")
            per_rm[rm] = np.stack(
                [correct(f.r_chosen.to_numpy(), f.r_rejected.to_numpy()) for f in fs]
            )  # [S, N]
        pair_idx = rng.integers(0, len(ids), size=(cfg.bootstrap, len(ids)))
        ti = info.get(test)
        if ti is not None and list(ti.pair_ids) != list(ids):
            raise ValueError(f"test set {test}: lengths and groups are not aligned with the score files")
        weights = None
        if ti is not None and ti.groups is not None:
            weights = cluster_weights(ti.groups, cfg.bootstrap, extra_rng)
            pair_idx = None
        # drawn in the order seed_pair_bootstrap drew them, so the raw CIs are as before
        seed_idx = {rm: seed_resamples(len(c), cfg.bootstrap, rng) for rm, c in per_rm.items()}
        reps = {
            rm: seed_pair_bootstrap(
                c, cfg.bootstrap, rng, pair_idx, pair_weights=weights, seed_idx=seed_idx[rm]
            )
            for rm, c in per_rm.items()
        }
        matched = None
        if ti is not None:
            out["baselines"][test] = length_baselines(ti.lengths[:, 0], ti.lengths[:, 1])
            matched = length_matched(ti.window_lengths[:, 0], ti.window_lengths[:, 1])
        for rm, c in per_rm.items():
            seeds_acc = c.mean(axis=1)
            margins = np.concatenate([(f.r_chosen - f.r_rejected).to_numpy() for f in frames[rm]])  # [S * N]
            out["accuracy"].setdefault(rm, {})[test] = {
                "mean": float(seeds_acc.mean()),
                "sd": float(seeds_acc.std(ddof=1)) if len(seeds_acc) > 1 else 0.0,
                "ci95": interval(reps[rm], cfg.ci),
                "p_vs_chance": _boot_p(reps[rm] - 0.5),
                "n": int(len(ids)),
                "per_seed": [float(a) for a in seeds_acc],
                "mean_margin": float(margins.mean()),
                "per_subset": _per_subset(frames[rm][0].subset.to_numpy(), c),
            }
            if matched is not None:
                groups = None if ti.groups is None else ti.groups[matched]
                out["accuracy"][rm][test]["length_matched"] = _matched_accuracy(
                    c, matched, cfg, extra_rng, groups
                )
            out["calibration"].setdefault(rm, {})[test] = calibration(margins, cfg.ece_bins)
        if all(rm in per_rm for rm in RMS):
            out["interference"][test] = interference(per_rm, reps, cfg.ci, own=test if test in RMS else None)
        pair_weights = weights if weights is not None else resample_counts(pair_idx, len(ids))
        _seed_t(out, test, per_rm, pair_weights, cfg.ci)
        lc_reps, strata = {}, None
        if ti is not None:
            strata = length_strata(ti.lengths[:, 0], ti.lengths[:, 1])
            lc_reps = _length_controlled(out, test, per_rm, reps, seed_idx, pair_weights, strata, cfg.ci)
            for rm in per_rm:
                margins = np.stack([(f.r_chosen - f.r_rejected).to_numpy() for f in frames[rm]])  # [S, N]
                lc_ece = length_controlled_ece(margins, strata, cfg.ece_bins, pair_weights, cfg.ci)
                out["calibration"][rm][test]["length_controlled"] = lc_ece.as_dict()
        if {"mixed", "mixed_pcgrad"} <= set(per_rm):  # paired: same pair resamples, seeds resampled per RM
            pc = _paired_difference(per_rm, reps, "mixed_pcgrad", "mixed", cfg.ci)
            if strata is not None:
                pc["length_controlled"] = _controlled_pair(
                    lc_reps, per_rm, strata, "mixed_pcgrad", "mixed", cfg.ci
                )
            out.setdefault("pcgrad", {})[test] = pc
        if test in (XSTEST_RESPOND, XSTEST_REFUSE) and {"helpful", "harmless"} <= set(per_rm):
            # should-respond: helpful RM - harmless RM (avoidance); should-refuse: harmless - helpful (misuse)
            a, b = ("helpful", "harmless") if test == XSTEST_RESPOND else ("harmless", "helpful")
            key = "avoidant" if test == XSTEST_RESPOND else "misuse"
            out.setdefault("xstest", {})[key] = {
                "test_set": test,
                **_paired_difference(per_rm, reps, a, b, cfg.ci, unit=" RM"),
                "n_pairs": int(len(ids)),
                "n_prompts": int(len(np.unique(ti.groups)))
                if ti is not None and ti.groups is not None
                else None,
            }
    return out


def _seed_t(
    out: dict, test: str, per_rm: dict[str, np.ndarray], pair_weights: np.ndarray, level: float
) -> None:
    """Add the random-effects interval with a t quantile (`rmtension.stats.seeds`) as `seed_t` beside each
    accuracy and each interference difference of one test set."""
    pairs_only = {rm: pairs_only_replicates(c, pair_weights) for rm, c in per_rm.items()}
    for rm, c in per_rm.items():
        out["accuracy"][rm][test]["seed_t"] = seed_t_interval(
            float(c.mean()), float(np.var(pairs_only[rm], ddof=1)), [c.mean(axis=1)], level
        )
    inter = out["interference"].get(test)
    if inter is None:
        return
    best = inter["best_single"]
    entries = [(inter, "mixed", best)]
    entries += [
        (inter[k], a, b)
        for k, a, b in (("dilution", f"{best}_half", best), ("negative_transfer", "mixed", f"{best}_half"))
        if k in inter
    ]
    for entry, a, b in entries:
        entry["seed_t"] = seed_t_interval(
            float(per_rm[a].mean() - per_rm[b].mean()),
            float(np.var(pairs_only[a] - pairs_only[b], ddof=1)),
            [per_rm[a].mean(axis=1), per_rm[b].mean(axis=1)],
            level,
        )


def _length_controlled(
    out: dict,
    test: str,
    per_rm: dict[str, np.ndarray],
    reps: dict[str, np.ndarray],
    seed_idx: dict[str, np.ndarray],
    pair_weights: np.ndarray,
    strata: np.ndarray,
    level: float,
) -> dict[str, np.ndarray | None]:
    """Add each RM's length-controlled accuracy and the length-controlled interference (and the length
    prior) of one test set to the table, as extra keys beside the raw ones (`rmtension.stats.length`);
    returns each RM's length-controlled replicates (None where not estimable)."""
    lc_reps = {}
    for rm, c in per_rm.items():
        lc, lc_reps[rm] = length_controlled_accuracy(c, strata, pair_weights, seed_idx[rm], level)
        out["accuracy"][rm][test]["length_controlled"] = lc.as_dict()
    if test in out["interference"]:
        best = out["interference"][test]["best_single"]
        out["interference"][test].update(
            length_controlled_interference(per_rm, reps, lc_reps, strata, best, level, pair_weights)
        )
    return lc_reps


def _controlled_pair(
    lc_reps: dict[str, np.ndarray | None],
    per_rm: dict[str, np.ndarray],
    strata: np.ndarray,
    a: str,
    b: str,
    level: float,
) -> dict:
    """LC(a) - LC(b) on one test set from the RMs' paired length-controlled replicates (`rmtension.stats.length`)."""
    name = f"length-controlled accuracy({a}) - ({b})"
    reason = not_estimable_reason(strata)
    if reason or lc_reps.get(a) is None or lc_reps.get(b) is None:
        return controlled_difference(0.0, None, name, strata, level, reason or "not estimable").as_dict()
    est = float(
        length_controlled_per_seed(per_rm[a], strata).mean()
        - length_controlled_per_seed(per_rm[b], strata).mean()
    )
    return controlled_difference(est, lc_reps[a] - lc_reps[b], name, strata, level, reason).as_dict()


def interference(
    per_rm: dict[str, np.ndarray], reps: dict[str, np.ndarray], level: float, own: str | None = None
) -> dict:
    """Interference on one test set, and its split into dilution and negative transfer.

    per_rm[rm]: [S, N] correctness; reps[rm]: [B] two-level bootstrap replicates sharing the pair
    resamples (paired). The best single RM is chosen once and the same RM is used in every replicate
    (a max inside each replicate biases the difference downwards): on a test set of one objective
    (`own`, "helpful" or "harmless") it is that objective's RM, fixed before the run, so no test
    number chooses it (the higher point estimate of the two would favour "mixed worse"); elsewhere,
    described only, the higher point estimate. With the controls (`<best>_half`, trained on the mixed
    RM's share of that objective):

        total             = mixed - best single (n pairs)
        dilution          = best single(n/2) - best single(n)
        negative_transfer = mixed - best single(n/2)

    so total = dilution + negative_transfer, in the point estimates and in every replicate.
    """
    if own in ("helpful", "harmless"):
        best, chosen = own, "the test set's own objective's RM, fixed before the run"
    else:
        best = "helpful" if per_rm["helpful"].mean() >= per_rm["harmless"].mean() else "harmless"
        chosen = "the higher test point estimate (described only, never decided on)"
    out = {
        "mixed_minus_best_single": float(per_rm["mixed"].mean() - per_rm[best].mean()),
        "ci95": interval(reps["mixed"] - reps[best], level),
        "ci95_mc_se": interval_mc_se(reps["mixed"] - reps[best], level),
        "best_single": best,
        "best_single_chosen_by": chosen,
        "p_value": _boot_p(reps["mixed"] - reps[best]),
    }
    half = f"{best}_half"
    if half in per_rm:
        for key, a, b in (("dilution", half, best), ("negative_transfer", "mixed", half)):
            d = reps[a] - reps[b]
            out[key] = {
                "difference": f"accuracy({a}) - accuracy({b})",
                "estimate": float(per_rm[a].mean() - per_rm[b].mean()),
                "ci95": interval(d, level),
                "ci95_mc_se": interval_mc_se(d, level),
                "p_value": _boot_p(d),
            }
    return out


def _paired_difference(per_rm: dict, reps: dict, a: str, b: str, level: float, unit: str = "") -> dict:
    """accuracy(a) - accuracy(b), mean over seeds, with the CI of the paired replicates (shared pair resamples)."""
    return {
        "difference": f"accuracy({a}{unit}) - accuracy({b}{unit})",
        "estimate": float(per_rm[a].mean() - per_rm[b].mean()),
        "ci95": interval(reps[a] - reps[b], level),
        "p_value": _boot_p(reps[a] - reps[b]),
    }


def _matched_accuracy(
    c: np.ndarray, matched: np.ndarray, cfg: EvalConfig, rng: np.random.Generator, groups: np.ndarray | None
) -> dict:
    """Mean over seeds of the accuracy on the length-matched pairs, with a seeds-and-pairs (or -groups) bootstrap CI."""
    n = int(matched.sum())
    if n == 0:
        return {"n": 0, "mean": None, "ci95": None}
    sub = c[:, matched]
    weights = None if groups is None else cluster_weights(groups, cfg.bootstrap, rng)
    reps = seed_pair_bootstrap(sub, cfg.bootstrap, rng, pair_weights=weights)
    return {"n": n, "mean": float(sub.mean()), "ci95": interval(reps, cfg.ci)}


def _per_subset(subsets: np.ndarray, c: np.ndarray) -> dict[str, dict]:
    """Accuracy per data subset, mean over seeds. `c`: [S, N] per-pair correctness."""
    return {
        str(sub): {"accuracy": float(c[:, subsets == sub].mean()), "n": int((subsets == sub).sum())}
        for sub in sorted(set(subsets))
    }
