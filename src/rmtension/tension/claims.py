"""The tension stage's claims, read from `tension.json` (and the ECE's CI from `eval/`): mixed RMs do
worse than single-objective ones (`mixed_worse`), mixing hurts beyond dilution (`negative_transfer`),
how much of the interference is a length prior (`tension_is_length_prior`), and preference models are
well calibrated (`calibrated`)."""

from __future__ import annotations

import math
from pathlib import Path

from scipy.stats import t as t_dist

from rmtension.report.core import calibration_cis, ordered_tests, read_config
from rmtension.run.runio import read_json
from rmtension.stats.finding import (
    CALIBRATED,
    LENGTH_CONTROLLED,
    MIXED_WORSE,
    NEGATIVE_TRANSFER,
    NOT_ESTIMABLE_CI,
    RAW,
    TENSION_IS_LENGTH_PRIOR,
    Finding,
    lc_part,
    lc_text,
    length_note,
    not_run,
)
from rmtension.stats.finding import fmt_ci as _ci
from rmtension.stats.verdicts import (
    ECE_WELL_CALIBRATED,
    INCONCLUSIVE,
    any_of_parts,
    claim_min_effect,
    holm,
    min_detectable_effect,
)

HH_TESTS = ("helpful", "harmless")
"""The test sets the tension claims are decided on; other test sets (RMB, XSTest) are reported beside them."""


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


def _lc_entry(d: dict, key: str) -> dict | None:
    """The length-controlled difference of one test set's interference entry (`key`: total or a split)."""
    lc = d.get("length_controlled")
    if lc is None or key == "total":
        return lc
    return lc.get(key, {"estimable": False, "reason": lc.get("reason") or "no length-controlled split"})


def lc_parts(entries: dict[str, dict | None]) -> tuple[dict, dict, dict]:
    """The deciding parts of a difference claim read on its length-controlled entries: (parts for
    `any_of_parts` as `_worse` makes them, their Monte Carlo SEs, `Finding.length_controlled`). A part
    that is not estimable enters with a CI of (-inf, inf) and p 1: it counts in Holm's family and decides nothing."""
    parts, mc_se, shown = {}, {}, {}
    for ts, e in entries.items():
        shown[ts] = lc_part(e, sign=-1.0)
        if shown[ts]["estimable"]:
            parts[ts] = _worse(e)
            se = _worse_mc_se(e)
            if se:
                mc_se[ts] = se
        else:
            parts[ts] = (0.0, NOT_ESTIMABLE_CI, 1.0)
    return parts, mc_se, shown


def _interference_finding(run_dir: Path, fid: str) -> Finding:
    """mixed_worse (the total) or negative_transfer (mixed − the best single on the mixed RM's share),
    decided on the length-controlled difference, the raw one beside it."""
    path = run_dir / "tension.json"
    every = read_json(path)["interference"] if path.exists() else {}
    key = "total" if fid == MIXED_WORSE else "negative_transfer"
    every = {ts: d for ts, d in every.items() if key == "total" or key in d}
    if not every:
        f = not_run(fid, ("train",), run_dir, "tension.json")
        if key != "total" and path.exists():
            f.evidence = "The dilution controls were not trained (set `train.controls: true`)."
        return f
    m = claim_min_effect(run_dir, fid)
    # the verdict reads the HH test sets, Holm-corrected; RMB and XSTest rows are reported beside it
    inter = {ts: d for ts, d in every.items() if ts in HH_TESTS} or every
    raw = {ts: _worse(d if key == "total" else d[key]) for ts, d in inter.items()}
    lc = {ts: _lc_entry(d, key) for ts, d in inter.items()}
    decided_on = LENGTH_CONTROLLED if any(e is not None for e in lc.values()) else RAW
    if decided_on == RAW:  # a table without reply lengths (no `info`): the raw estimate, said as such
        parts = raw
        mc_se = {ts: _worse_mc_se(d if key == "total" else d[key]) for ts, d in inter.items()}
        mc_se, shown = {k: v for k, v in mc_se.items() if v}, None
    else:
        parts, mc_se, shown = lc_parts(lc)
    n_boot = read_config(run_dir).get("eval", {}).get("bootstrap")
    verdict, _, deciding = any_of_parts(parts, m, mc_se=mc_se, n_boot=n_boot)
    adjusted = dict(zip(parts, holm([p for _, _, p in parts.values()])))

    def text(ts: str, d: dict) -> str:
        e = d if key == "total" else d[key]
        est = e.get("estimate", e.get("mixed_minus_best_single"))
        extra = "" if ts in adjusted else " (outside the correction)"
        return f"{ts} test {est:+.3f} {_ci(e)}{extra}"

    if key == "total":
        head = "mixed RM minus the best single-objective RM (the test set's own objective's RM)"
        split = [
            f"{ts}: dilution {d['dilution']['estimate']:+.3f} {_ci(d['dilution'])}, negative transfer "
            f"{d['negative_transfer']['estimate']:+.3f} {_ci(d['negative_transfer'])}"
            for ts, d in inter.items()
            if "dilution" in d
        ]
        tail = (". Raw split: " + "; ".join(split)) if split else ""
    else:
        head = (
            "mixed RM minus the best single-objective RM trained on the mixed RM's share of its objective "
            "(same in-domain pairs, so dilution is taken out)"
        )
        tail = ""
    decided = [(ts, p) for ts, p in parts.items() if all(math.isfinite(x) for x in p[1])]
    mde = max((min_detectable_effect(ci) for _, (_, ci, _) in decided), default=None)
    if mde is None:  # no part estimable: what the raw estimate could detect, a floor on the controlled one's
        mde = max(min_detectable_effect(ci) for _, ci, _ in raw.values())
    if decided_on == LENGTH_CONTROLLED:
        lead = (
            f"Decided on the length-controlled accuracy of the {head} (chosen-longer and chosen-shorter pairs "
            "weighted equally, ties dropped) [95% CI, Holm p]: "
            + "; ".join(
                f"{ts} test {-shown[ts]['estimate']:+.3f} [{-shown[ts]['ci95'][1]:+.3f}, "
                f"{-shown[ts]['ci95'][0]:+.3f}], Holm p {adjusted[ts]:.2g}"
                if shown[ts]["estimable"]
                else f"{ts} test {lc_text(shown[ts])}"
                for ts in shown
            )
            + ". Raw beside it [95% CI]: "
        )
    else:
        lead = f"Accuracy of the {head} [95% CI] (raw: no reply lengths in `tension.json`): "
    evidence = (
        lead
        + "; ".join(text(ts, d) for ts, d in ((t, every[t]) for t in ordered_tests(every)))
        + tail
        + f". Smallest effect of interest {m:.3f}; this study could detect {mde:.3f} (80% power)."
        + monte_carlo_note(deciding)
        + (length_controlled_note(inter, key) if key == "total" else "")
        + length_note(run_dir)
    )
    return Finding(
        fid,
        verdict,
        evidence,
        "tension.json",
        "; ".join(
            f"{ts} raw {-raw[ts][0]:+.3f} {_ci(inter[ts] if key == 'total' else inter[ts][key])}"
            + (f", length-controlled {_signed(shown[ts])}" if shown else "")
            for ts in inter
        ),
        effect={ts: raw[ts][0] for ts in raw},
        ci95={ts: raw[ts][1] for ts in raw},
        min_effect=m,
        min_detectable_effect=mde,
        test=f"accuracy difference on each HH test set, {'length-controlled (the mean of the chosen-longer and chosen-shorter strata), ' if shown else ''}"
        "paired two-level bootstrap (seeds and test pairs), its CI "
        "widened to the seed-level t interval where that is wider (`seed_t`); supported when some Holm-adjusted p "
        "< 0.05 in the claimed direction with a CI past the margin; not supported by the equivalence rule on every "
        "HH test set; inconclusive when a deciding bound or p lies within 2 Monte Carlo SEs of its margin, or a "
        "test set's length-controlled estimate is not estimable (fewer than 30 pairs in a stratum)",
        null="no difference (0): "
        + (
            "the best single-objective RM"
            if key == "total"
            else "the best single-objective RM on the same in-domain pairs"
        ),
        length_controlled=shown,
        decided_on=decided_on,
    )


def _signed(part: dict) -> str:
    """A "worse"-direction `lc_part` shown as the difference (mixed minus single), as the raw numbers are."""
    if not part["estimable"]:
        return "not estimable"
    return f"{-part['estimate']:+.3f} [{-part['ci95'][1]:+.3f}, {-part['ci95'][0]:+.3f}]"


def _worse_mc_se(d: dict) -> list[float] | None:
    """The Monte Carlo SEs of `_worse`'s CI bounds (its bounds swapped), when tension.json has them; a bound
    the seed-level interval set (`_worse`) has none (0: it is computed, not sampled)."""
    se = d.get("ci95_mc_se")
    if se is None:
        return None
    st = d.get("seed_t") or {"ci95": d["ci95"]}
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
    return _interference_finding(run_dir, MIXED_WORSE)


def negative_transfer(run_dir: Path) -> Finding:
    return _interference_finding(run_dir, NEGATIVE_TRANSFER)


def tension_is_length_prior(run_dir: Path) -> Finding:
    """How much of the interference reply length explains: interference minus its length-controlled value."""
    path = run_dir / "tension.json"
    inter = read_json(path)["interference"] if path.exists() else {}
    inter = {
        ts: d for ts, d in inter.items() if ts in HH_TESTS and d.get("length_prior", {}).get("estimable")
    }
    if not inter:
        f = not_run(TENSION_IS_LENGTH_PRIOR, ("train",), run_dir, "tension.json")
        if path.exists():
            f.evidence = "tension.json has no estimable length-controlled interference on the HH test sets."
        return f
    m = claim_min_effect(run_dir, TENSION_IS_LENGTH_PRIOR)
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
        TENSION_IS_LENGTH_PRIOR,
        verdict,
        "Interference (mixed − best single RM) and its length-controlled value [95% CI]: "
        + "; ".join(texts)
        + f". Smallest effect of interest {m:.3f}; this study could detect {mde:.3f} (80% power)."
        + monte_carlo_note(deciding),
        "tension.json",
        "; ".join(
            f"{ts} {d['length_prior']['estimate']:+.3f} {_ci(d['length_prior'])}" for ts, d in inter.items()
        ),
        effect={ts: parts[ts][0] for ts in parts},
        ci95={ts: parts[ts][1] for ts in parts},
        min_effect=m,
        min_detectable_effect=mde,
        test="interference minus its length-controlled value (chosen-longer and chosen-shorter pairs weighted "
        "equally), paired two-level bootstrap on the same resamples; Holm over the HH test sets; equivalence rule",
        null="length explains none of the interference (0)",
    )


def calibrated(run_dir: Path) -> Finding:
    """Every own-objective RM (and the mixed RM) well calibrated on the HH test sets, decided on the
    length-controlled ECE (the mean of the two length strata's ECEs), the raw ECE beside it."""
    if not (run_dir / "tension.json").exists():
        return not_run(CALIBRATED, ("train",), run_dir, "tension.json")
    cal = read_json(run_dir / "tension.json")["calibration"]
    cis = calibration_cis(run_dir)
    cells = [
        (rm, ts)
        for rm, by in cal.items()
        for ts in ordered_tests(by)
        if (ts == rm or rm == "mixed") and ts in HH_TESTS
    ]
    cells = [(rm, ts, cal[rm][ts]["ece"], cis.get((rm, ts), [float("nan")] * 2)) for rm, ts in cells]
    if not cells:  # no RM on its own HH test set: nothing to decide (all() of nothing is no evidence)
        why = "No RM has a calibration row on its own HH test set in `tension.json`: nothing to decide."
        return Finding(CALIBRATED, INCONCLUSIVE, why)
    lc = {f"{rm}/{ts}": cal[rm][ts].get("length_controlled") for rm, ts, *_ in cells}
    decided_on = LENGTH_CONTROLLED if any(v is not None for v in lc.values()) else RAW
    shown = {k: lc_part(v) for k, v in lc.items()} if decided_on == LENGTH_CONTROLLED else None
    deciding = (
        [shown[k]["ci95"] if shown[k]["estimable"] else NOT_ESTIMABLE_CI for k in shown]
        if shown
        else [ci for *_, ci in cells]
    )
    if all(ci[1] <= ECE_WELL_CALIBRATED for ci in deciding):
        verdict = "supported"
    elif any(ci[0] > ECE_WELL_CALIBRATED for ci in deciding):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    parts = [f"{rm} RM on {ts} {ece:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" for rm, ts, ece, ci in cells]
    if shown:
        lead = (
            f"Length-controlled expected calibration error (the mean of the ECEs on the chosen-longer and the "
            f"chosen-shorter pairs) [95% CI] against the {ECE_WELL_CALIBRATED} bar, which decides: "
            + "; ".join(f"{k.replace('/', ' RM on ')} {lc_text(v, signed=False)}" for k, v in shown.items())
            + ". Raw ECE beside it: "
        )
    else:
        lead = f"Expected calibration error [95% CI] against the {ECE_WELL_CALIBRATED} bar: "
    detectable = [ci for ci in deciding if all(math.isfinite(x) for x in ci)] or [ci for *_, ci in cells]
    return Finding(
        CALIBRATED,
        verdict,
        lead + "; ".join(parts) + "." + length_note(run_dir),
        "tension.json, eval/",
        "; ".join(
            p + (f", length-controlled {lc_text(shown[f'{rm}/{ts}'], signed=False)}" if shown else "")
            for p, (rm, ts, *_) in zip(parts, cells)
        ),
        effect={f"{rm}/{ts}": float(ece) for rm, ts, ece, _ in cells},
        ci95={f"{rm}/{ts}": [float(ci[0]), float(ci[1])] for rm, ts, _, ci in cells},
        min_effect=ECE_WELL_CALIBRATED,  # the bar the ECE is judged against
        min_detectable_effect=max((min_detectable_effect(ci) for ci in detectable), default=0.0),
        test="expected calibration error of each own-objective RM (and the mixed RM) on the HH test sets"
        + (
            ", length-controlled (the mean of the two length strata's ECEs, the accuracies' resamples)"
            if shown
            else ""
        )
        + f", bootstrap CI over test pairs; supported when every CI ends at or below {ECE_WELL_CALIBRATED}, "
        "inconclusive where a length stratum has fewer than 30 pairs",
        null=f"ECE above the {ECE_WELL_CALIBRATED} bar",
        source_files=["tension.json", "eval"],
        length_controlled=shown,
        decided_on=decided_on,
    )
