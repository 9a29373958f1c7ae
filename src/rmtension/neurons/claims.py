"""One plain sentence per claim of Tanwar & Atanasova (2026), read from the run directory only.

Claims (all at one top-p and one scorer, in the primary RM, mixed by default):

- identified:    ablating an objective's top neurons lowers its margin more than matched random neurons.
- shared:        helpful_top and harmless_top overlap more than chance (hypergeometric test).
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
    return Claim("shared", verdict, f"Shared neurons: {verdict}. " + text, nums)


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
    out.append(
        claim_shared(read_json(ov), scorer, p, alpha)
        if ov.exists()
        else Claim("shared", "inconclusive", "Shared neurons: inconclusive (no neurons/overlap.json).")
    )
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
