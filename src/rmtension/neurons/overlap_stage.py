"""The overlap nulls of the neuron stage, from the per-pair sums the scoring pass saved.

Files (under the run directory):
    neurons/<rm>/pair_sums.safetensors   `<stat>/<objective>` [P, L, N], `chosen_tokens/<objective>` and
                                          `rejected_tokens/<objective>` [P] (`rmtension.judges.pairsums`)
    neurons/base/pair_sums.safetensors   the same for the base backbone (`BASE_SCORERS` only; no
                                          scores.safetensors, so it is never taken for an RM)

For every RM, scorer and p, `rm_nulls` adds to the overlap entry (`rmtension.neurons.nulls`):
`jaccard_permutation`, `jaccard_split_half`, `jaccard_bootstrap`, `sets_differ` and `jaccard_base`;
for the preference-dependent scorers the base has too (`LEARNING_SCORERS`), `learning`: the RM's
sets_differ effect minus the base backbone's own (`learning_effects`), so that what the two objectives'
texts alone separate is not counted as learning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import stats

from rmtension.neurons.config import NeuronsConfig, p_key
from rmtension.neurons.nulls import Draws, base_overlap, mean_nulls, overlap_nulls
from rmtension.neurons.overlap import jaccard
from rmtension.judges.pairsums import PairSums
from rmtension.judges.neurons import BASE_SCORERS
from rmtension.judges.select import stable_seed, top_percent_rows
from rmtension.run.runio import inside, load_tensors, save_tensors

PAIR_SUMS = "pair_sums.safetensors"
BASE = "base"
OBJECTIVES = ("helpful", "harmless")
NO_BASE = {
    "attribution": "the base backbone's score head is untrained, so its attribution means nothing",
    "rms_change": "the base backbone's rms_change against itself is 0 everywhere",
}
"""Why a scorer has no `jaccard_base`."""


def pair_sums_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "neurons" / name / PAIR_SUMS


def read_pair_sums(run_dir: Path, name: str) -> dict[str, PairSums] | None:
    """objective -> PairSums of model `name` (an RM folder or `BASE`); None when the file is absent."""
    path = pair_sums_path(run_dir, name)
    if not path.is_file():
        return None
    tensors = load_tensors(path)
    return {o: PairSums.from_tensors(tensors, o) for o in OBJECTIVES}


def rm_nulls(
    run_dir: Path, doc: dict, cfg: NeuronsConfig, rm: str, masks: dict[str, dict[str, tuple]]
) -> dict[str, dict[str, dict]]:
    """scorer -> p key -> the nulls of RM `rm`; masks: scorer -> p key -> (helpful_top, harmless_top)."""
    sums = read_pair_sums(run_dir, rm)
    base = read_pair_sums(run_dir, BASE)
    base_pool = PairSums.pool([base[o] for o in OBJECTIVES]) if base is not None else None
    draws = None
    if sums is not None:
        n_a, n_b = sums["helpful"].n_pairs, sums["harmless"].n_pairs
        draws = Draws(n_a, n_b, cfg.permutations, stable_seed(cfg.seed, rm, "overlap-nulls"))
    out: dict = {}
    for scorer in doc["scorers"]:
        mag = scorer in doc["magnitude"]
        by_p = masks[scorer]
        if sums is None or not all(sums[o].supports(scorer) for o in OBJECTIVES):
            why = (
                f"no per-pair sums for {scorer} in neurons/{rm}/{PAIR_SUMS}; re-run `rmtension neurons score`"
            )
            out[scorer] = {k: {"nulls_skipped": why} for k in by_p}
        else:
            observed = {k: jaccard(h, s) for k, (h, s) in by_p.items()}
            out[scorer] = overlap_nulls(
                sums["helpful"], sums["harmless"], scorer, doc["ps"], observed, draws, doc["per_layer"], mag
            )
        if base_pool is not None and scorer in BASE_SCORERS and base_pool.supports(scorer):
            scores = base_pool.scores([scorer])[scorer]
            for k, (h, s) in by_p.items():
                out[scorer][k]["jaccard_base"] = base_overlap(
                    scores, {"helpful": h, "harmless": s}, float(k), doc["per_layer"], mag
                )
            if (
                draws is not None
                and scorer in LEARNING_SCORERS
                and "sets_differ" in next(iter(out[scorer].values()))
            ):
                for k, d in learning_effects(base, scorer, doc, mag, draws, out[scorer]).items():
                    out[scorer][k]["learning"] = d
        else:
            why = NO_BASE.get(scorer, f"no base-backbone sums in neurons/{BASE}/{PAIR_SUMS}")
            for k in by_p:
                out[scorer][k]["jaccard_base"] = {"skipped": why}
    return out


LEARNING_SCORERS = ("contrast",)
"""Preference-dependent scorers the base backbone has too (chosen minus rejected activation): their
trained-minus-base difference is what `neuron_sets_differ` reads. Attribution depends on the
preference as well, but the base's untrained head gives it no base value."""


def learning_effects(
    base: dict[str, PairSums], scorer: str, doc: dict, mag: bool, draws: Draws, trained: dict[str, dict]
) -> dict[str, dict]:
    """p key -> the RM's sets_differ effect minus the base backbone's, on the same pairs and draws.

    The base's helpful and harmless top-p sets (by `scorer` on each objective's scoring pairs) and their
    permutation null give the base's effect d_base (null minus observed Jaccard): how much the two
    objectives' sets differ from text alone. learning = d_rm - d_base, its CI
    learning +- z sqrt(se_rm^2 + se_base^2) (the two share the draws, so this is conservative).
    """
    tops = {
        o: base[o].scores([scorer])[scorer] for o in OBJECTIVES
    }  # [L, N] each: the base's scores per objective
    observed = {
        p_key(p): jaccard(
            top_percent_rows(tops["helpful"].unsqueeze(0), p, doc["per_layer"], mag)[0],
            top_percent_rows(tops["harmless"].unsqueeze(0), p, doc["per_layer"], mag)[0],
        )
        for p in doc["ps"]
    }
    nulls = overlap_nulls(
        base["helpful"], base["harmless"], scorer, doc["ps"], observed, draws, doc["per_layer"], mag
    )
    z = float(stats.norm.ppf(0.975))
    out = {}
    for k, b in nulls.items():
        t = trained[k]["sets_differ"]
        effect = t["effect"] - b["sets_differ"]["effect"]
        se = float(np.sqrt(t["se"] ** 2 + b["sets_differ"]["se"] ** 2))
        out[k] = {
            "effect": float(effect),
            "ci95": [float(effect - z * se), float(effect + z * se)],
            "se": se,
            "rm_effect": t["effect"],
            "base_effect": b["sets_differ"]["effect"],
            "base_jaccard": observed[k],
            "base_jaccard_permutation": b["jaccard_permutation"]["mean"],
        }
    return out


def headline_nulls(entries: list[dict]) -> dict:
    """The primary RM's seeds' nulls of one scorer and p as one entry (`mean_nulls`; base Jaccards averaged)."""
    with_nulls = [e for e in entries if "jaccard_permutation" in e]
    out: dict = mean_nulls(with_nulls) if with_nulls else {"nulls_skipped": entries[0].get("nulls_skipped")}
    out = {k: v for k, v in out.items() if k != "jaccard_base"}
    bases = [e["jaccard_base"] for e in entries]
    if all("skipped" not in b for b in bases):
        out["jaccard_base"] = {k: float(np.nanmean([b[k] for b in bases])) for k in bases[0]}
    else:
        out["jaccard_base"] = bases[0] if "skipped" in bases[0] else {"skipped": "not every seed has it"}
    return out


def save_pair_sums(run_dir: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    return save_tensors(inside(run_dir, "neurons", name, PAIR_SUMS), tensors, meta)
