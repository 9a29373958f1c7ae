"""Summary of findings: one sentence per claim of the two papers, with numbers, CIs and a verdict.

Claims of Tanwar & Atanasova (2026): mixed RMs do worse than single-objective ones; activation
scores identify each objective's MLP neurons; many neurons are shared; shared neurons have outsized
influence; ablating one objective's neurons also hurts the other. Claims of Bai et al. (2022):
preference models are well calibrated; reward grows about linearly in sqrt(KL); the training PM
rates the policy above a held-out PM; helpfulness and harmlessness trade off.

Verdicts are "supported", "not supported", "inconclusive" or "not run" (the stage that tests the
claim was not configured or its results are absent). The criteria are in `CRITERIA`; every number
is read from the file named in `source` (the ECE's CI is bootstrapped from `eval/`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from scipy.stats import t as t_dist

from rmtension.report.core import calibration_cis, ordered_tests, read_config
from rmtension.report.section import Section
from rmtension.neurons.claims import p_phrase
from rmtension.report.behaviour import avoidant_vs_misuse
from rmtension.audit.report import helpful_refusal_undervalued
from rmtension.combine.report import combined_keeps_both
from rmtension.report.conflict import conflict_tracks_shared_neurons, pcgrad_reduces_interference
from rmtension.report.finding import BAI, TANWAR, Finding, _ci, _not_run, length_note
from rmtension.report.verdicts import VERDICTS, any_of_parts, claim_min_effect, holm, min_detectable_effect
from rmtension.run.runio import read_json, write_json

HH_TESTS = ("helpful", "harmless")
"""The test sets the tension claims are decided on; other test sets (RMB, XSTest) are reported beside them."""
ECE_WELL_CALIBRATED = 0.05
"""An RM counts as well calibrated when the upper end of its ECE's CI is at most this."""


CRITERIA = (
    "Mixed worse and negative transfer: supported when, on some HH test set, the difference is negative with a "
    "Holm-adjusted bootstrap p < 0.05 (two test sets); not supported when on every HH test set the CI lies inside "
    "±min_effect or wholly above 0 (`rmtension.report.verdicts`). Neuron claims: the equivalence rule on margin "
    "changes in SDs of the unablated margin, against the per-pair mean of layer- and magnitude-matched random "
    "draws (paired t-tests; `rmtension.neurons.ablation_claims`); the overlap by a hypergeometric test against "
    "uniform random sets, and whether the sets differ by a permutation null of pseudo-objectives; the double "
    "dissociation as the 2 x 2 interaction. "
    f"Calibrated: supported when every own-objective ECE's CI ends at or below {ECE_WELL_CALIBRATED}, not supported "
    f"when one starts above it (ECE is biased upwards on small test sets). Avoidant vs misuse: the equivalence rule "
    "(`rmtension.report.verdicts`) on both XSTest differences. sqrt(KL), per curve (best-of-n: pm_test's reading of "
    "pm_train's pick, not pm_train's own curve, whose shape follows from its score distribution alone; RL: pm_train's "
    "reward on held-out prompts): supported when a + b·sqrt(KL) has the lowest Gaussian least-squares AIC, ahead of "
    "a + b·KL (and a + b·log n) by ΔAIC ≥ 2, and its slope's CI lies above 0; not supported when another form wins "
    "by ΔAIC ≥ 2 or the slope's CI lies inside ±min_effect or below 0 (`rmtension.optimise.claims`). Train/test gap, "
    "per curve: the equivalence rule on the CI of the gap's excess over regression to the mean, (1 − ρ̂)·E[z of the "
    "pick], in within-prompt SD. Both: every curve must hold. Trade-off: the equivalence rule on 0.5 minus each "
    "single-objective RM's accuracy on the other objective's test pairs; supported when one is, not supported when "
    "both are. Combined judge keeps both: each method at its validation-chosen dial, minus the best single RM on each "
    "HH test set; supported when some method's Bonferroni CIs both lie above −min_effect, not supported when every "
    "method's CI lies wholly below −min_effect on some test set (`rmtension.combine.frontier`)."
)


def _worse(d: dict) -> tuple[float, list[float], float]:
    """(estimate, CI, p) of "worse" from a difference entry: the sign flipped, so positive means worse.

    With the seed-level interval (`seed_t`, `rmtension.stats.seeds`) the CI is the hull of it and the
    bootstrap's, and p the larger of the two: seeds as the unit can only widen what the verdict reads.
    """
    est = d.get("estimate", d.get("mixed_minus_best_single"))
    lo, hi, p = d["ci95"][0], d["ci95"][1], d.get("p_value", 1.0)
    st = d.get("seed_t")
    if st is not None:
        lo, hi = min(lo, st["ci95"][0]), max(hi, st["ci95"][1])
        if st["se"] > 0:
            p = max(p, float(2 * t_dist.sf(abs(est) / st["se"], st["df"])))
    return -est, [-hi, -lo], p


def _interference_finding(run_dir: Path, fid: str, claim: str) -> Finding:
    """mixed_worse (the total) or negative_transfer (mixed − the best single on the mixed RM's share)."""
    path = run_dir / "tension.json"
    every = read_json(path)["interference"] if path.exists() else {}
    key = "total" if fid == "mixed_worse" else "negative_transfer"
    every = {ts: d for ts, d in every.items() if key == "total" or key in d}
    if not every:
        f = _not_run(TANWAR, claim, ("train",), run_dir, "tension.json")
        if key != "total" and path.exists():
            f.evidence = "The dilution controls were not trained (set `train.controls: true`)."
        f.id = fid
        return f
    m = claim_min_effect(run_dir, fid)
    # the verdict reads the HH test sets, Holm-corrected; RMB and XSTest rows are reported beside it
    inter = {ts: d for ts, d in every.items() if ts in HH_TESTS} or every
    parts = {ts: _worse(d if key == "total" else d[key]) for ts, d in inter.items()}
    mc_se = {ts: _worse_mc_se(d if key == "total" else d[key]) for ts, d in inter.items()}
    n_boot = read_config(run_dir).get("eval", {}).get("bootstrap")
    verdict, _, deciding = any_of_parts(parts, m, mc_se={k: v for k, v in mc_se.items() if v}, n_boot=n_boot)
    adjusted = dict(zip(parts, holm([p for _, _, p in parts.values()])))

    def text(ts: str, d: dict) -> str:
        e = d if key == "total" else d[key]
        est = e.get("estimate", e.get("mixed_minus_best_single"))
        extra = f", Holm p {adjusted[ts]:.2g}" if ts in adjusted else " (outside the correction)"
        return f"{ts} test {est:+.3f} {_ci(e)}{extra}"

    if key == "total":
        head = "Accuracy of the mixed RM minus the best single-objective RM [95% CI]: "
        split = [
            f"{ts}: dilution {d['dilution']['estimate']:+.3f} {_ci(d['dilution'])}, negative transfer "
            f"{d['negative_transfer']['estimate']:+.3f} {_ci(d['negative_transfer'])}"
            for ts, d in inter.items()
            if "dilution" in d
        ]
        tail = (". Split: " + "; ".join(split)) if split else ""
    else:
        head = (
            "Accuracy of the mixed RM minus the best single-objective RM trained on the mixed RM's share of "
            "its objective (same in-domain pairs, so dilution is taken out) [95% CI]: "
        )
        tail = ""
    mde = max(min_detectable_effect(ci) for _, ci, _ in parts.values())
    evidence = (
        head
        + "; ".join(text(ts, d) for ts, d in ((t, every[t]) for t in ordered_tests(every)))
        + tail
        + f". Smallest effect of interest {m:.3f}; this study could detect {mde:.3f} (80% power)."
        + monte_carlo_note(deciding)
        + length_controlled_note(inter, key)
        + length_note(run_dir)
    )
    return Finding(
        TANWAR,
        claim,
        verdict,
        evidence,
        "tension.json",
        "; ".join(
            f"{ts} {-parts[ts][0]:+.3f} {_ci(inter[ts] if key == 'total' else inter[ts][key])}"
            for ts in inter
        ),
        id=fid,
        effect={ts: parts[ts][0] for ts in parts},
        ci95={ts: parts[ts][1] for ts in parts},
        min_effect=m,
        min_detectable_effect=mde,
        test="accuracy difference on each HH test set, paired two-level bootstrap (seeds and test pairs), its CI "
        "widened to the seed-level t interval where that is wider (`seed_t`); supported when some Holm-adjusted p "
        "< 0.05 in the claimed direction with a CI past the margin; not supported by the equivalence rule on every "
        "HH test set; inconclusive when a deciding bound or p lies within 2 Monte Carlo SEs of its margin",
        null="no difference (0): "
        + (
            "the best single-objective RM"
            if key == "total"
            else "the best single-objective RM on the same in-domain pairs"
        ),
    )


def _worse_mc_se(d: dict) -> list[float] | None:
    """The Monte Carlo SEs of `_worse`'s CI bounds (its bounds swapped), when tension.json has them; a bound
    the seed-level interval set (`_worse`) has none (0: it is computed, not sampled)."""
    se = d.get("ci95_mc_se")
    if se is None:
        return None
    st = d.get("seed_t", {"ci95": d["ci95"]})
    lo_se = se[0] if d["ci95"][0] <= st["ci95"][0] else 0.0
    hi_se = se[1] if d["ci95"][1] >= st["ci95"][1] else 0.0
    return [hi_se, lo_se]


def monte_carlo_note(deciding: dict) -> str:
    """A sentence on the deciding bounds nearest their margins, in Monte Carlo SEs (`rmtension.stats.montecarlo`)."""
    near = [
        f"{ts}: {d.name} {d.value:+.4f} vs {d.margin:+.4f}, {d.distance_in_se:.1f} MC SE"
        for ts, d in deciding.items()
        if d is not None
    ]
    if not near:
        return ""
    return (
        " Deciding bounds against their margins (within 2 Monte Carlo SEs: inconclusive): "
        + "; ".join(near)
        + "."
    )


def length_controlled_note(inter: dict, key: str) -> str:
    """The length-controlled interference beside the raw one, and the length prior (`tension.json`)."""
    texts = []
    for ts, d in inter.items():
        lc, prior = d.get("length_controlled"), d.get("length_prior")
        if lc is None:
            continue
        lc = lc if key == "total" else lc.get(key)
        if lc is None or not lc["estimable"]:
            texts.append(f"{ts} not estimable ({(lc or {}).get('reason', 'no control')})")
            continue
        part = f"{ts} {lc['estimate']:+.3f} {_ci(lc)}"
        if key == "total" and prior and prior["estimable"]:
            part += f", of which length explains {prior['estimate']:+.3f} {_ci(prior)}"
        texts.append(part)
    if not texts:
        return ""
    return (
        " Length-controlled (chosen longer and chosen shorter pairs weighted equally): "
        + "; ".join(texts)
        + "."
    )


def mixed_worse(run_dir: Path) -> Finding:
    return _interference_finding(run_dir, "mixed_worse", "mixed RMs do worse than single-objective ones")


def negative_transfer(run_dir: Path) -> Finding:
    return _interference_finding(
        run_dir,
        "negative_transfer",
        "mixing hurts beyond dilution (negative transfer between the objectives)",
    )


def tension_is_length_prior(run_dir: Path) -> Finding:
    """How much of the interference reply length explains: interference minus its length-controlled value."""
    claim = "the interference is a length prior (it shrinks when length is controlled)"
    path = run_dir / "tension.json"
    inter = read_json(path)["interference"] if path.exists() else {}
    inter = {
        ts: d for ts, d in inter.items() if ts in HH_TESTS and d.get("length_prior", {}).get("estimable")
    }
    if not inter:
        f = _not_run(TANWAR, claim, ("train",), run_dir, "tension.json")
        if path.exists():
            f.evidence = "tension.json has no estimable length-controlled interference on the HH test sets."
        f.id = "tension_is_length_prior"
        return f
    m = claim_min_effect(run_dir, "tension_is_length_prior")
    # positive: the raw interference is more negative than the length-controlled one (length makes mixed look worse)
    parts = {ts: _worse(d["length_prior"]) for ts, d in inter.items()}
    mc_se = {ts: _worse_mc_se(d["length_prior"]) for ts, d in inter.items()}
    n_boot = read_config(run_dir).get("eval", {}).get("bootstrap")
    verdict, _, deciding = any_of_parts(parts, m, mc_se={k: v for k, v in mc_se.items() if v}, n_boot=n_boot)
    texts = [
        f"{ts} test: raw {d['mixed_minus_best_single']:+.3f} {_ci(d)}, length-controlled "
        f"{d['length_controlled']['estimate']:+.3f} {_ci(d['length_controlled'])}; length explains "
        f"{d['length_prior']['estimate']:+.3f} {_ci(d['length_prior'])}"
        for ts, d in inter.items()
    ]
    mde = max(min_detectable_effect(ci) for _, ci, _ in parts.values())
    return Finding(
        TANWAR,
        claim,
        verdict,
        "Interference (mixed − best single RM) and its length-controlled value [95% CI]: "
        + "; ".join(texts)
        + f". Smallest effect of interest {m:.3f}; this study could detect {mde:.3f} (80% power)."
        + monte_carlo_note(deciding),
        "tension.json",
        "; ".join(
            f"{ts} {d['length_prior']['estimate']:+.3f} {_ci(d['length_prior'])}" for ts, d in inter.items()
        ),
        id="tension_is_length_prior",
        effect={ts: parts[ts][0] for ts in parts},
        ci95={ts: parts[ts][1] for ts in parts},
        min_effect=m,
        min_detectable_effect=mde,
        test="interference minus its length-controlled value (chosen-longer and chosen-shorter pairs weighted "
        "equally), paired two-level bootstrap on the same resamples; Holm over the HH test sets; equivalence rule",
        null="length explains none of the interference (0)",
    )


NEURON_IDS = {
    "identified": "neurons_identified",
    "shared": "neurons_shared",
    "sets_differ": "neuron_sets_differ",
    "influence": "shared_outsized",
    "cross_effect": "cross_ablation",
    "double_dissociation": "double_dissociation",
}
"""claims.py name -> the claim's fixed id in findings.json."""

NEURON_CLAIMS = {  # claims.py name -> (claim, files it needs, config sections that produce them)
    "identified": ("activation scores identify each objective's MLP neurons", "ablation.csv", ("ablation",)),
    "shared": ("many neurons are shared between the objectives", "neurons/overlap.json", ("neurons",)),
    "sets_differ": (
        "the objectives' neuron sets differ more than sampling noise",
        "neurons/overlap.json",
        ("neurons",),
    ),
    "influence": ("shared neurons have outsized influence", "neurons/influence.json", ("ablation",)),
    "cross_effect": ("ablating one objective's neurons also hurts the other", "ablation.csv", ("ablation",)),
    "double_dissociation": (
        "each objective's own neurons matter more for it than for the other objective (double dissociation)",
        "neurons/dissociation.json",
        ("ablation",),
    ),
}


def neuron_findings(run_dir: Path) -> list[Finding]:
    from rmtension.neurons.ablation_claims import TESTS
    from rmtension.neurons.claims import OVERLAP_TESTS, paper_claims
    from rmtension.neurons.report import claim_settings

    claims = {}
    if (run_dir / "neurons" / "overlap.json").exists() or (run_dir / "ablation.csv").exists():
        st = claim_settings(run_dir)
        claims = {
            c.name: c
            for c in paper_claims(
                run_dir, p=st["p"], scorer=st["scorer"], mode="mean", alpha=st["alpha"], rm_objective=st["rm"]
            )
        }
    out = []
    for name, (claim, needs, enable) in NEURON_CLAIMS.items():
        c = claims.get(name)
        if c is None or not (run_dir / needs).exists():
            out.append(_not_run(TANWAR, claim, enable, run_dir, needs))
            out[-1].id = NEURON_IDS[name]
            continue
        head, _, rest = c.sentence.partition(f": {c.verdict}. ")
        evidence = rest if rest else c.sentence
        if rest and "(" in head:  # keep the setting stated in the head, e.g. "(top 5%, mean ablation, ...)"
            evidence = "At " + head[head.index("(") + 1 : head.rindex(")")] + ": " + rest
        n = c.numbers or {}
        numbers = {}
        if "effect" in n and "ci95" in n:
            whole = not isinstance(n["effect"], dict)  # one number: keyed by the claim's name
            numbers = {
                "effect": {name: n["effect"]} if whole else n["effect"],
                "ci95": {name: n["ci95"]} if whole else n["ci95"],
                "min_effect": n.get("min_effect"),
                "min_detectable_effect": n.get("min_detectable_effect"),
            }
        test, null = {**TESTS, **OVERLAP_TESTS}.get(name, ("", ""))
        out.append(
            Finding(
                TANWAR,
                claim,
                c.verdict,
                evidence,
                needs,
                _neuron_key(c),
                id=NEURON_IDS[name],
                test=test,
                null=null,
                **numbers,
            )
        )
    return out


def _neuron_key(c) -> str:
    n = c.numbers
    if c.name == "shared" and n:
        return (
            f"Jaccard {n['jaccard']:.3f} vs {n['jaccard_random']:.3f} by chance, p {p_phrase(n['p_value'])}"
        )
    if c.name == "sets_differ" and n:
        lo, hi = n["ci95"]
        return (
            f"Jaccard {n['jaccard']:.3f} vs {n['jaccard_permutation']:.3f} for random splits; "
            f"null − observed {n['effect']:+.3f} [{lo:+.3f}, {hi:+.3f}], p {p_phrase(n['p_value'])}"
        )
    if isinstance(n.get("effect"), dict) and isinstance(n.get("ci95"), dict):  # the ablation claims
        return "; ".join(
            f"{k} {e:+.3f} [{n['ci95'][k][0]:+.3f}, {n['ci95'][k][1]:+.3f}] SD"
            for k, e in n["effect"].items()
        )
    return ""


def calibrated(run_dir: Path) -> Finding:
    claim = "preference models are well calibrated"
    if not (run_dir / "tension.json").exists():
        return _not_run(BAI, claim, ("train",), run_dir, "tension.json")
    cal = read_json(run_dir / "tension.json")["calibration"]
    cis = calibration_cis(run_dir)
    cells = [
        (rm, ts)
        for rm, by in cal.items()
        for ts in ordered_tests(by)
        if (ts == rm or rm == "mixed") and ts in HH_TESTS
    ]
    cells = [(rm, ts, cal[rm][ts]["ece"], cis.get((rm, ts), [float("nan")] * 2)) for rm, ts in cells]
    if all(ci[1] <= ECE_WELL_CALIBRATED for *_, ci in cells):
        verdict = "supported"
    elif any(ci[0] > ECE_WELL_CALIBRATED for *_, ci in cells):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    parts = [f"{rm} RM on {ts} {ece:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" for rm, ts, ece, ci in cells]
    return Finding(
        BAI,
        claim,
        verdict,
        f"Expected calibration error [95% CI] against the {ECE_WELL_CALIBRATED} bar: "
        + "; ".join(parts)
        + "."
        + length_note(run_dir),
        "tension.json, eval/",
        "; ".join(parts),
        effect={f"{rm}/{ts}": float(ece) for rm, ts, ece, _ in cells},
        ci95={f"{rm}/{ts}": [float(ci[0]), float(ci[1])] for rm, ts, _, ci in cells},
        min_detectable_effect=max((min_detectable_effect(ci) for *_, ci in cells), default=0.0),
        test=f"expected calibration error of each own-objective RM (and the mixed RM) on the HH test sets, "
        f"bootstrap CI over test pairs; supported when every CI ends at or below {ECE_WELL_CALIBRATED}",
        null=f"ECE above the {ECE_WELL_CALIBRATED} bar",
        source_files=["tension.json", "eval"],
    )


def _optimisation(run_dir: Path) -> tuple[dict | None, dict | None]:
    bon = read_json(run_dir / "bon_fit.json")["objectives"] if (run_dir / "bon_fit.json").exists() else None
    rl = read_json(run_dir / "rl.json") if (run_dir / "rl.json").exists() else None
    return bon, rl


def sqrt_kl(run_dir: Path) -> Finding:
    from rmtension.optimise.claims import sqrt_kl_finding
    from rmtension.report.verdicts import claim_min_effect

    claim = "reward grows about linearly in sqrt(KL)"
    bon, rl = _optimisation(run_dir)
    if bon is None and rl is None:
        return _not_run(BAI, claim, ("bon", "rl"), run_dir, "bon_fit.json")
    return sqrt_kl_finding(BAI, claim, bon, rl, claim_min_effect(run_dir, "sqrt_kl"))


def train_test_gap(run_dir: Path) -> Finding:
    from rmtension.optimise.claims import gap_finding
    from rmtension.report.verdicts import claim_min_effect

    claim = "the training PM rates the policy above a held-out PM"
    bon, rl = _optimisation(run_dir)
    if bon is None and rl is None:
        return _not_run(BAI, claim, ("bon", "rl"), run_dir, "bon_fit.json")
    return gap_finding(BAI, claim, bon, rl, claim_min_effect(run_dir, "train_test_gap"))


def tradeoff(run_dir: Path) -> Finding:
    from rmtension.optimise.claims import tradeoff_finding
    from rmtension.report.verdicts import claim_min_effect

    claim = "helpfulness and harmlessness trade off"
    if not (run_dir / "tension.json").exists():
        return _not_run(BAI, claim, ("train",), run_dir, "tension.json")
    acc = read_json(run_dir / "tension.json")["accuracy"]
    front = pd.read_csv(run_dir / "frontier.csv") if (run_dir / "frontier.csv").exists() else None
    return tradeoff_finding(BAI, claim, acc, front, claim_min_effect(run_dir, "tradeoff"))


def findings(run_dir: str | Path) -> list[Finding]:
    """Every claim's finding, in report order, each with its fixed `id`."""
    run_dir = Path(run_dir)
    out = []
    for fn in (mixed_worse, calibrated, sqrt_kl, train_test_gap, tradeoff):
        f = fn(run_dir)
        f.id = fn.__name__  # each claim's id is its function's name
        out.append(f)
    extensions = [
        pcgrad_reduces_interference(run_dir),
        conflict_tracks_shared_neurons(run_dir),
        combined_keeps_both(run_dir),
    ]
    return [
        out[0],
        negative_transfer(run_dir),
        tension_is_length_prior(run_dir),
        *neuron_findings(run_dir),
        *out[1:],
        avoidant_vs_misuse(run_dir),
        helpful_refusal_undervalued(run_dir),
        *extensions,
    ]


def write_findings(run_dir: str | Path) -> Path:
    """`findings.json`: every claim as one entry (id, paper, claim, verdict, evidence, numbers, source)."""
    run_dir = Path(run_dir)
    return write_json(run_dir / "findings.json", {"findings": [f.as_dict() for f in findings(run_dir)]})


def read_findings(run_dir: Path) -> list[Finding]:
    """The findings of `findings.json`, or computed from the run directory when it is absent."""
    path = run_dir / "findings.json"
    if not path.exists():
        return findings(run_dir)
    return [Finding(**d) for d in read_json(path)["findings"]]


def section_summary(run_dir: Path) -> Section:
    fs = read_findings(run_dir)
    s = Section("Summary of findings", "summary")
    counts = {v: sum(f.verdict == v for f in fs) for v in VERDICTS}
    s.paragraphs.append(
        f"{len(fs)} claims of {TANWAR}, {BAI} and rmtension's own measurements: "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + "."
    )
    s.paragraphs += [f.sentence() for f in fs]
    s.tables.append(
        (
            "Claims, verdicts and where their numbers come from",
            pd.DataFrame(
                [
                    {
                        "paper": f.paper,
                        "claim": f.claim,
                        "verdict": f.verdict,
                        "numbers": f.key,
                        "source": f.source,
                    }
                    for f in fs
                ]
            ),
        )
    )
    if (run_dir / "neurons" / "overlap.json").exists():
        from rmtension.neurons.report import claim_settings

        st = claim_settings(run_dir)
        s.paragraphs.append(
            f"The neuron claims are tested at top-{st['p']:g}% by `{st['scorer']}` with mean ablation (zero "
            f"ablation where a run has no mean rows) in the {st['rm']} RM, at significance level {st['alpha']:g}."
        )
    s.paragraphs.append("Criteria. " + CRITERIA)
    return s
