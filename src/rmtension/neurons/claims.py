"""One plain sentence per claim of Tanwar & Atanasova (2026), read from the run directory only.

Claims (all at one top-p, one scorer and zero ablation, in the primary RM, mixed by default):

- identified:    ablating an objective's top neurons lowers its accuracy more than matched random neurons.
- shared:        helpful_top and harmless_top overlap more than chance (hypergeometric test).
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
    return Claim("shared", verdict, f"Shared neurons: {verdict}. " + text, nums)


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
    """The four claims from neurons/overlap.json, ablation.csv and neurons/influence.json.

    `rm_objective` picks the RMs (all seeds averaged; p-values take the largest); it falls back
    to every ablated RM when none of that objective was ablated. Missing files give "inconclusive".
    """
    run_dir = Path(run_dir)
    out: list[Claim] = []
    ov = run_dir / "neurons" / "overlap.json"
    out.append(
        claim_shared(read_json(ov), scorer, p, alpha)
        if ov.exists()
        else Claim("shared", "inconclusive", "Shared neurons: inconclusive (no neurons/overlap.json).")
    )
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
    order = ["identified", "shared", "influence", "cross_effect"]
    return sorted(out, key=lambda c: order.index(c.name))
