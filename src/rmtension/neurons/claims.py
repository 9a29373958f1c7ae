"""One plain sentence per claim of Tanwar & Atanasova (2026), read from the run directory only.

Claims (all at one top-p and one scorer, in the primary RM, mixed by default):

- identified:    ablating an objective's top neurons lowers its margin more than matched random neurons.
- shared:        helpful_top and harmless_top overlap more than chance (hypergeometric test against
                 random neuron sets of the same sizes: a floor, not a test of "the same neurons").
- sets_differ:   the two sets differ more than sampling noise (permutation null of pseudo-objectives
                 drawn from the pooled scoring pairs; equivalence rule on null minus observed Jaccard).
- influence:     shared neurons matter more than as many objective-only neurons (paired bootstrap CI).
- cross_effect:  ablating one objective's neurons also lowers the other objective's margin.
- double_dissociation: each objective-only set hurts its own objective more than the other's (2x2
                 interaction). The ablation claims (mean ablation, margins in SDs of the unablated
                 margin, equivalence rule) are in `rmtension.neurons.ablation_claims`.

Each verdict is "supported", "not supported" or "inconclusive"; the sentence carries the numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.neurons.claim_base import Claim, fmt_p, nearest_p, p_phrase  # noqa: F401 (re-exported)
from rmtension.run.runio import read_json


def claim_shared(overlap: dict, scorer: str, p: float, alpha: float) -> Claim:
    by_p = overlap.get(scorer, {})
    if not by_p:
        return Claim("shared", "inconclusive", f"No overlap results for scorer {scorer}.")
    k = nearest_p(list(by_p), p)
    o = by_p[k]
    nums = {
        k2: o[k2] for k2 in ("jaccard", "jaccard_random", "p_value", "n_shared", "n_helpful", "n_harmless")
    }
    frac = o["n_shared"] / max(1, min(o["n_helpful"], o["n_harmless"]))
    text = (
        f"{o['n_shared']:g} neurons are in both the top {k}% helpful ({o['n_helpful']:g}) and harmless "
        f"({o['n_harmless']:g}) sets of the {o.get('rm', '')} RM by {scorer} ({frac:.0%} of the smaller set); "
        f"Jaccard {o['jaccard']:.3f} vs {o['jaccard_random']:.3f} expected by chance, "
        f"hypergeometric p {p_phrase(o['p_value'])}."
    )
    if o["p_value"] < alpha and o["jaccard"] > o["jaccard_random"]:
        verdict = "supported"
    elif o["jaccard"] <= o["jaccard_random"]:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    text += (
        " (Chance here is random neuron sets of these sizes, a floor; whether the sets differ more than "
        "sampling noise is tested separately.)"
    )
    boot = o.get("jaccard_bootstrap")
    if boot and boot.get("n") and boot["sd"] == boot["sd"]:
        from rmtension.report.verdicts import min_detectable_effect

        # Jaccard above the floor, its CI from the scoring pairs' bootstrap (the floor is exact)
        effect = o["jaccard"] - o["jaccard_random"]
        ci = [effect - 1.96 * boot["sd"], effect + 1.96 * boot["sd"]]
        nums |= {"effect": effect, "ci95": ci, "min_detectable_effect": min_detectable_effect(ci)}
    return Claim("shared", verdict, f"Shared neurons: {verdict}. " + text, nums)


OVERLAP_TESTS = {
    "shared": (
        "one-sided hypergeometric test of the number of shared neurons (stratified per layer when the sets "
        "are chosen per layer), at the claims' alpha",
        "two uniformly random neuron sets of the same sizes (a floor: the most active neurons top every "
        "objective's list)",
    ),
    "sets_differ": (
        "equivalence rule on the 95% CI of the permutation null's mean Jaccard minus the observed Jaccard "
        "(CI half-width 1.96 sqrt(sd_null^2 + sd_bootstrap^2)); supported also needs the permutation p < alpha",
        "the two objectives' scoring pairs are exchangeable: pseudo-objectives of the same sizes drawn at "
        "random from the pooled pairs (neurons.permutations re-splits)",
    ),
}
"""Claim name -> (the test that decides it, its null), for findings.json's `test` and `null`."""


def claim_sets_differ(overlap: dict, scorer: str, p: float, alpha: float, min_effect: float) -> Claim:
    """Do the helpful and harmless top-p sets differ more than two samples of one objective would?

    Effect (Jaccard units): the permutation null's mean Jaccard minus the observed one, with the CI
    of `rmtension.neurons.nulls.sets_differ_effect`; verdict by the equivalence rule
    (`rmtension.report.verdicts.equivalence_verdict`) against `min_effect`, and "supported" also
    needs the permutation p-value below `alpha`. A placebo (two samples of one objective) gives an
    effect near 0: "inconclusive", or "not supported" when the CI lies inside +-min_effect.
    """
    from rmtension.report.verdicts import INCONCLUSIVE, SUPPORTED, equivalence_verdict, min_detectable_effect

    name, head = "sets_differ", "The helpful and harmless neuron sets differ more than sampling noise"
    by_p = overlap.get(scorer, {})
    if not by_p:
        return Claim(name, "inconclusive", f"{head}: inconclusive. No overlap results for scorer {scorer}.")
    k = nearest_p(list(by_p), p)
    o = by_p[k]
    if "sets_differ" not in o:
        why = (
            o.get("nulls_skipped") or "neurons/overlap.json has no permutation null; re-run the neuron stage"
        )
        return Claim(name, "inconclusive", f"{head} (top {k}%, {scorer}): inconclusive. {why}.")
    d, null, half = o["sets_differ"], o["jaccard_permutation"], o["jaccard_split_half"]
    base = o.get("jaccard_base", {})
    ci = d["ci95"]
    mde = min_detectable_effect(ci)
    verdict = equivalence_verdict(ci, min_effect)
    if verdict == SUPPORTED and not null["p_value"] < alpha:
        verdict = INCONCLUSIVE
    text = (
        f"Jaccard {o['jaccard']:.3f} observed in the {o.get('rm', '')} RM vs {null['mean']:.3f} "
        f"[{null['p2_5']:.3f}, {null['p97_5']:.3f}] when its scoring pairs are split at random into two "
        f"pseudo-objectives of the same sizes ({null['n']} splits, permutation p {p_phrase(null['p_value'])}); "
        f"two halves of one objective overlap at {half['mean']:.3f}"
        + (f", each set and the base backbone's at {base['mean']:.3f}" if "mean" in base else "")
        + f". Null minus observed {d['effect']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] (95% CI), "
        f"judged against ±{min_effect:g}."
    )
    if verdict == INCONCLUSIVE:
        text += f" This sample could detect differences of about {mde:.3f} (80% power)."
    nums = {
        "effect": d["effect"],
        "ci95": ci,
        "min_effect": min_effect,
        "min_detectable_effect": mde,
        "jaccard": o["jaccard"],
        "jaccard_permutation": null["mean"],
        "p_value": null["p_value"],
        "n_permutations": null["n"],
        "jaccard_split_half": half["mean"],
        "jaccard_base": base.get("mean"),
    }
    return Claim(name, verdict, f"{head} (top {k}%, {scorer}): {verdict}. {text}", nums)


def paper_claims(
    run_dir: str | Path,
    p: float = 5.0,
    scorer: str = "mean_act",
    mode: str = "mean",
    alpha: float = 0.05,
    rm_objective: str | None = "mixed",
) -> list[Claim]:
    """The claims from neurons/overlap.json, ablation.csv, neurons/influence.json and
    neurons/dissociation.json.

    `rm_objective` picks the RMs (overlap: seeds averaged, p-values take the largest; ablation: every
    seed is a part that must hold); it falls back to every ablated RM when none of that objective was
    ablated. `mode`: the ablation mode the claims read (mean, the headline; another mode where the run
    has none). Missing files give "inconclusive".
    """
    run_dir = Path(run_dir)
    out: list[Claim] = []
    ov = run_dir / "neurons" / "overlap.json"
    if ov.exists():
        from rmtension.report.verdicts import claim_min_effect

        overlap = read_json(ov)
        out.append(claim_shared(overlap, scorer, p, alpha))
        out.append(
            claim_sets_differ(overlap, scorer, p, alpha, claim_min_effect(run_dir, "neuron_sets_differ"))
        )
    else:
        out += [
            Claim("shared", "inconclusive", "Shared neurons: inconclusive (no neurons/overlap.json)."),
            Claim(
                "sets_differ",
                "inconclusive",
                "The helpful and harmless neuron sets differ more than sampling noise: inconclusive "
                "(no neurons/overlap.json).",
            ),
        ]
    out += ablation_claims(run_dir, p, scorer, mode, rm_objective)
    order = ["identified", "shared", "sets_differ", "influence", "cross_effect", "double_dissociation"]
    return sorted(out, key=lambda c: order.index(c.name))


def ablation_claims(run_dir: Path, p: float, scorer: str, mode: str, rm_objective: str | None) -> list[Claim]:
    """identified, cross_effect, influence and double_dissociation (`rmtension.neurons.ablation_claims`)."""
    from rmtension.neurons import ablation_claims as ac
    from rmtension.report.verdicts import claim_min_effect

    m = lambda claim_id: claim_min_effect(run_dir, claim_id)  # noqa: E731
    out = []
    csv = run_dir / "ablation.csv"
    if csv.exists():
        rows, chosen, used = ac.pick_rows(pd.read_csv(csv), rm_objective, scorer, p, mode)
        out += [
            ac.claim_identified(rows, chosen, used, m("neurons_identified")),
            ac.claim_cross(rows, chosen, used, m("cross_ablation")),
        ]
    else:
        out += [
            Claim(n, "inconclusive", f"{n}: inconclusive (no ablation.csv).")
            for n in ("identified", "cross_effect")
        ]
    for name, file, fn, cid in (
        ("influence", "influence.json", ac.claim_influence, "shared_outsized"),
        ("double_dissociation", "dissociation.json", ac.claim_double_dissociation, "double_dissociation"),
    ):
        path = run_dir / "neurons" / file
        out.append(
            fn(read_json(path), rm_objective, scorer, p, mode, m(cid))
            if path.exists()
            else Claim(name, "inconclusive", f"{name}: inconclusive (no neurons/{file}).")
        )
    return out
