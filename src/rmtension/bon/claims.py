"""The best-of-n stage's claim `tradeoff` (Bai et al. 2022): helpfulness and harmlessness trade off,
read from the tension table and the best-of-n frontier (`frontier.csv`, read by the held-out PMs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.run.runio import read_json
from rmtension.stats.finding import TRADEOFF, Finding, not_run
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
    """The tradeoff finding: the equivalence rule on 0.5 minus each single-objective RM's accuracy on the
    other objective's test pairs (tension.json `accuracy`), supported when one part is, not supported
    when both are; with the best-of-n frontier's end points read by the held-out PMs (`frontier.csv`,
    a DataFrame or None; a frontier without `judged_by` was read by the selecting RMs and is left out)."""
    cross = [
        (a, b, acc[a][b])
        for a, b in (("helpful", "harmless"), ("harmless", "helpful"))
        if b in acc.get(a, {})
    ]
    below = {f"{a} RM on {b}": [0.5 - d["ci95"][1], 0.5 - d["ci95"][0]] for a, b, d in cross}  # below chance
    parts = [equivalence_verdict(ci, m) for ci in below.values()]
    if cross and all("p_vs_chance" in d for _, _, d in cross):  # Holm over the two parts (`any_of_parts`)
        effects = {k: (0.5 - d["mean"], below[k], d["p_vs_chance"]) for k, (_, _, d) in zip(below, cross)}
        verdict, by_part, _ = any_of_parts(effects, m)
        parts = list(by_part.values())
    elif SUPPORTED in parts:
        verdict = SUPPORTED
    elif parts and all(v == NOT_SUPPORTED for v in parts):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    texts = [
        f"the {a} RM ranks {b} test pairs correctly {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]: {v}"
        for (a, b, d), v in zip(cross, parts)
    ]
    evidence = (
        f"Accuracy across objectives (0.5 = chance), each judged by how far it lies below chance against ±{m:g}: "
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
    mde = max(map(min_detectable_effect, below.values()), default=0.0)
    if verdict == INCONCLUSIVE and below:
        evidence += f" This sample could detect {mde:.3f} below chance (80% power)."
    return Finding(
        TRADEOFF,
        verdict,
        evidence,
        ", ".join(sources),
        "; ".join(
            f"{a} RM on {b} {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]" for a, b, d in cross
        ),
        effect={k: 0.5 - d["mean"] for k, (_, _, d) in zip(below, cross)},
        ci95=below,
        min_effect=m,
        min_detectable_effect=mde,
        test="equivalence rule on 0.5 minus each cross-objective accuracy's 95% CI; supported when one part is, "
        "Holm-adjusted over the two parts (bootstrap p against chance, `p_vs_chance`) where tension.json has them",
        null="each single-objective RM ranks the other objective's test pairs at chance or better",
        source_files=sources,
    )


def tradeoff(run_dir: Path) -> Finding:
    if not (run_dir / "tension.json").exists():
        return not_run(TRADEOFF, ("train",), run_dir, "tension.json")
    acc = read_json(run_dir / "tension.json")["accuracy"]
    front = pd.read_csv(run_dir / "frontier.csv") if (run_dir / "frontier.csv").exists() else None
    return tradeoff_finding(acc, front, claim_min_effect(run_dir, TRADEOFF))
