"""The best-of-n stage's claim `tradeoff` (Bai et al. 2022): helpfulness and harmlessness trade off,
read from the tension table and the best-of-n frontier (`frontier.csv`, read by the held-out PMs)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rmtension.run.runio import read_json
from rmtension.stats.finding import (
    LENGTH_CONTROLLED,
    NOT_ESTIMABLE_CI,
    RAW,
    TRADEOFF,
    Finding,
    lc_part,
    lc_text,
    not_run,
)
from rmtension.stats.verdicts import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    any_of_parts,
    claim_min_effect,
    equivalence_verdict,
    min_detectable_effect,
)


def tradeoff_finding(acc: dict, front, m: float) -> Finding:
    """The tradeoff finding: 0.5 minus each single-objective RM's accuracy on the other objective's test
    pairs (tension.json `accuracy`), decided on the length-controlled accuracy (the raw one beside it):
    Holm over the two parts (`any_of_parts`), supported when one part is, not supported when both are;
    with the best-of-n frontier's end points read by the held-out PMs (`frontier.csv`, a DataFrame or
    None; a frontier without `judged_by` was read by the selecting RMs and is left out)."""
    cross = [
        (a, b, acc[a][b])
        for a, b in (("helpful", "harmless"), ("harmless", "helpful"))
        if b in acc.get(a, {})
    ]
    names = [f"{a} RM on {b}" for a, b, _ in cross]
    below = {k: [0.5 - d["ci95"][1], 0.5 - d["ci95"][0]] for k, (_, _, d) in zip(names, cross)}
    lc = {k: d.get("length_controlled") for k, (_, _, d) in zip(names, cross)}
    decided_on = LENGTH_CONTROLLED if any(v is not None for v in lc.values()) else RAW
    shown = {k: lc_part(v, sign=-1.0, offset=0.5) for k, v in lc.items()} if decided_on != RAW else None
    if shown:  # below chance, length-controlled; a part not estimable decides nothing
        effects = {
            k: (shown[k]["estimate"], shown[k]["ci95"], lc[k].get("p_vs_chance", 1.0))
            if shown[k]["estimable"]
            else (0.0, NOT_ESTIMABLE_CI, 1.0)
            for k in names
        }
    else:
        effects = {
            k: (0.5 - d["mean"], below[k], d.get("p_vs_chance", 1.0)) for k, (_, _, d) in zip(names, cross)
        }
    verdict, by_part, _ = any_of_parts(effects, m) if effects else (INCONCLUSIVE, {}, {})
    if not shown and not all("p_vs_chance" in d for _, _, d in cross):  # a table from before the p-values
        by_part = {k: equivalence_verdict(below[k], m) for k in names}
        verdict = _union(list(by_part.values()))
    texts = [
        f"the {a} RM ranks {b} test pairs correctly {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
        + (f", length-controlled {lc_text(lc_part(lc[k]), signed=False)}" if shown else "")
        + f": {by_part[k]}"
        for k, (a, b, d) in zip(names, cross)
    ]
    evidence = (
        "Accuracy across objectives (0.5 = chance), each judged by how far its "
        + ("length-controlled value " if shown else "")
        + f"lies below chance against ±{m:g}, Holm over the two parts: "
        + "; ".join(texts)
        + "."
    )
    sources = ["tension.json"]
    w = front[front["kind"] == "weighted"].sort_values("w") if front is not None else []
    if len(w) >= 2 and "judged_by" in front:
        lo, hi = w.iloc[0], w.iloc[-1]
        evidence += (
            f" Best-of-{int(hi['n'])} read by the held-out PMs (pm_test): selecting by pm_train_helpful alone "
            f"reaches helpful z {hi['helpful']:+.2f} and harmless z {hi['harmless']:+.2f}; by pm_train_harmless "
            f"alone, {lo['helpful']:+.2f} and {lo['harmless']:+.2f}."
        )
        sources.append("frontier.csv")
    finite = [ci for _, ci, _ in effects.values() if all(math.isfinite(x) for x in ci)] or list(
        below.values()
    )
    mde = max(map(min_detectable_effect, finite), default=0.0)
    if verdict == INCONCLUSIVE and below:
        evidence += f" This sample could detect {mde:.3f} below chance (80% power)."
    return Finding(
        TRADEOFF,
        verdict,
        evidence,
        ", ".join(sources),
        "; ".join(
            f"{a} RM on {b} {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
            + (f", length-controlled {lc_text(lc_part(lc[k]), signed=False)}" if shown else "")
            for k, (a, b, d) in zip(names, cross)
        ),
        effect={k: 0.5 - d["mean"] for k, (_, _, d) in zip(names, cross)},
        ci95=below,
        min_effect=m,
        min_detectable_effect=mde,
        test="equivalence rule on 0.5 minus each cross-objective accuracy's 95% CI"
        + (
            " (length-controlled: the chosen-longer and chosen-shorter strata weighted equally)"
            if shown
            else ""
        )
        + "; supported when one part is, Holm-adjusted over the two parts (bootstrap p against chance)",
        null="each single-objective RM ranks the other objective's test pairs at chance or better",
        source_files=sources,
        length_controlled=shown,
        decided_on=decided_on,
    )


def _union(parts: list[str]) -> str:
    """The uncorrected union of the tables written before `p_vs_chance` (no p-values to correct)."""
    if SUPPORTED in parts:
        return SUPPORTED
    if parts and all(v == NOT_SUPPORTED for v in parts):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def tradeoff(run_dir: Path) -> Finding:
    if not (run_dir / "tension.json").exists():
        return not_run(TRADEOFF, ("train",), run_dir, "tension.json")
    acc = read_json(run_dir / "tension.json")["accuracy"]
    front = pd.read_csv(run_dir / "frontier.csv") if (run_dir / "frontier.csv").exists() else None
    return tradeoff_finding(acc, front, claim_min_effect(run_dir, TRADEOFF))
