"""One plain sentence per claim of Tanwar & Atanasova (2026), read from the run directory only.

Claims (all at one top-p, one scorer and zero ablation, in the primary RM, mixed by default):

- identified:    ablating an objective's top neurons lowers its accuracy more than matched random neurons.
- shared:        helpful_top and harmless_top overlap more than chance (hypergeometric test against
                 random neuron sets of the same sizes: a floor, not a test of "the same neurons").
- sets_differ:   the two sets differ more than sampling noise (permutation null of pseudo-objectives
                 drawn from the pooled scoring pairs; equivalence rule on null minus observed Jaccard).
- influence:     shared neurons matter more than as many objective-only neurons (paired bootstrap CI).
- cross_effect:  ablating one objective's neurons also lowers the other objective's accuracy.

Each verdict is "supported", "not supported" or "inconclusive"; the sentence carries the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from rmtension.run.runio import read_json


@dataclass
class Claim:
    name: str
    verdict: str
    """supported | not supported | inconclusive"""
    sentence: str
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def fmt_p(p: float, digits: int = 2) -> str:
    """A p-value for text: `0.031`, `2.2e-16`, and `< 1e-300` where it underflowed to 0."""
    if p != p:  # NaN
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.{digits}g}"


def p_phrase(p: float) -> str:
    """`= 0.03` or `< 1e-300`, to follow a "p" in a sentence."""
    text = fmt_p(p)
    return text if text.startswith("<") else "= " + text


def nearest_p(values, p: float):
    """The element of `values` (percentages, as numbers or JSON keys) closest to `p`."""
    return min(values, key=lambda q: abs(float(q) - p))


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


def _pick(
    frame: pd.DataFrame, rm_objective: str | None, scorer: str, p: float, mode: str
) -> tuple[pd.DataFrame, float]:
    sets = frame[
        (frame["scorer"] == scorer)
        & (frame["mode"] == mode)
        & ~frame["neuron_set"].str.startswith("random")
        & (frame["neuron_set"] != "none")
    ]
    if rm_objective is not None:
        sets = sets[sets["rm"].str.startswith(rm_objective + "-")]
    if sets.empty:
        return sets, p
    chosen = min(sets["p"].unique(), key=lambda q: abs(q - p))
    return sets[sets["p"] == chosen], float(chosen)


def _effect(rows: pd.DataFrame, neuron_set: str, test: str) -> dict | None:
    r = rows[(rows["neuron_set"] == neuron_set) & (rows["test_set"] == test)]
    if r.empty:
        return None
    return {
        "delta_vs_random": float(r["delta_vs_random"].mean()),
        "delta_vs_base": float(r["delta_vs_base"].mean()),
        "p_value": float(r["p_value"].max()),
        "n_neurons": float(r["n_neurons"].mean()),
        "n_rms": len(r),
    }


def _sig_neg(e: dict | None, alpha: float) -> bool:
    return e is not None and e["delta_vs_random"] < 0 and e["p_value"] < alpha


def _fmt(name: str, test: str, e: dict | None) -> str:
    if e is None:
        return f"{name} on {test}: not run"
    return (
        f"{name} on {test}: {e['delta_vs_random']:+.3f} vs random ({e['delta_vs_base']:+.3f} vs unablated, "
        f"McNemar p {p_phrase(e['p_value'])}, {e['n_neurons']:.0f} neurons)"
    )


def claim_identified(rows: pd.DataFrame, p: float, alpha: float) -> Claim:
    own = {
        "helpful": _effect(rows, "helpful_top", "helpful"),
        "harmless": _effect(rows, "harmless_top", "harmless"),
    }
    n_sig = sum(_sig_neg(e, alpha) for e in own.values())
    # A drop that is not significant is not evidence against the claim; no drop at all is.
    no_drop = all(e is not None and e["delta_vs_random"] >= 0 for e in own.values())
    verdict = "supported" if n_sig == 2 else "not supported" if n_sig == 0 and no_drop else "inconclusive"
    text = "; ".join(_fmt(f"{o}_top", o, e) for o, e in own.items())
    return Claim(
        "identified",
        verdict,
        f"Objective neurons identified (top {p:g}%, accuracy change): {verdict}. {text}.",
        own,
    )


def claim_cross(rows: pd.DataFrame, p: float, alpha: float) -> Claim:
    own = [_effect(rows, "helpful_top", "helpful"), _effect(rows, "harmless_top", "harmless")]
    cross = {
        "helpful_top->harmless": _effect(rows, "helpful_top", "harmless"),
        "harmless_top->helpful": _effect(rows, "harmless_top", "helpful"),
    }
    if not any(_sig_neg(e, alpha) for e in own):
        verdict = "inconclusive"
    else:
        verdict = "supported" if any(_sig_neg(e, alpha) for e in cross.values()) else "not supported"
    text = "; ".join(_fmt(k.split("->")[0], k.split("->")[1], e) for k, e in cross.items())
    return Claim(
        "cross_effect",
        verdict,
        f"Ablating one objective's neurons also hurts the other (top {p:g}%): {verdict}. {text}.",
        cross,
    )


def claim_influence(influence: dict, rm_objective: str | None, scorer: str, p: float, mode: str) -> Claim:
    recs = [
        r
        for r in influence.get("records", [])
        if r["scorer"] == scorer
        and r["mode"] == mode
        and (rm_objective is None or r["rm"].startswith(rm_objective + "-"))
    ]
    if not recs:
        return Claim(
            "influence", "inconclusive", "Shared neurons' influence: inconclusive (no ablation results)."
        )
    chosen = min({r["p"] for r in recs}, key=lambda q: abs(q - p))
    comps = [c for r in recs if r["p"] == chosen for c in r["comparisons"] if c["own"]]
    if not comps:
        return Claim(
            "influence",
            "inconclusive",
            f"Shared neurons' influence: inconclusive (at top {chosen:g}% the "
            "shared set or both objective-only sets are empty, so there is nothing to compare).",
        )
    kind = "matched" if all("matched" in c for c in comps) else "per_neuron"
    lows = [c[kind]["ci"][0] for c in comps]
    highs = [c[kind]["ci"][1] for c in comps]
    verdict = (
        "supported"
        if min(lows) > 0
        else "not supported"
        if max(highs) < 0 or all(c[kind]["diff"] <= 0 for c in comps)
        else "inconclusive"
    )
    what = (
        "accuracy drop from ablating the shared neurons minus that from as many objective-only neurons"
        if kind == "matched"
        else "accuracy drop per neuron, shared minus objective-only"
    )
    parts = [
        f"{c['other']} on {c['test_set']}: {c[kind]['diff']:+.4f} [{c[kind]['ci'][0]:+.4f}, {c[kind]['ci'][1]:+.4f}]"
        for c in comps
    ]
    nums = {
        "kind": kind,
        "p": chosen,
        "comparisons": [{"other": c["other"], "test_set": c["test_set"], **c[kind]} for c in comps],
    }
    return Claim(
        "influence",
        verdict,
        f"Shared neurons have disproportionate influence (top {chosen:g}%, {what}, "
        f"{int(round(100 * influence.get('ci', 0.95)))}% CI): {verdict}. " + "; ".join(parts) + ".",
        nums,
    )


def paper_claims(
    run_dir: str | Path,
    p: float = 5.0,
    scorer: str = "mean_act",
    mode: str = "zero",
    alpha: float = 0.05,
    rm_objective: str | None = "mixed",
) -> list[Claim]:
    """The five claims from neurons/overlap.json, ablation.csv and neurons/influence.json.

    `rm_objective` picks the RMs (all seeds averaged; p-values take the largest); it falls back
    to every ablated RM when none of that objective was ablated. Missing files give "inconclusive".
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
    csv = run_dir / "ablation.csv"
    if csv.exists():
        frame = pd.read_csv(csv)
        rows, chosen = _pick(frame, rm_objective, scorer, p, mode)
        if rows.empty:
            rm_objective = None
            rows, chosen = _pick(frame, None, scorer, p, mode)
        out += [claim_identified(rows, chosen, alpha), claim_cross(rows, chosen, alpha)]
    else:
        out += [
            Claim(n, "inconclusive", f"{n}: inconclusive (no ablation.csv).")
            for n in ("identified", "cross_effect")
        ]
    inf = run_dir / "neurons" / "influence.json"
    out.append(
        claim_influence(read_json(inf), rm_objective, scorer, p, mode)
        if inf.exists()
        else Claim(
            "influence", "inconclusive", "Shared neurons' influence: inconclusive (no influence.json)."
        )
    )
    order = ["identified", "shared", "sets_differ", "influence", "cross_effect"]
    return sorted(out, key=lambda c: order.index(c.name))
