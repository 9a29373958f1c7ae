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

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rmtension.report.forest import forest_plot, verdict_table
from rmtension.report.section import Section
from rmtension.run.runio import read_json, write_json
from rmtension.stats.finding import BAI, TANWAR, Finding
from rmtension.stats.verdicts import ECE_WELL_CALIBRATED, VERDICTS

CRITERIA = (
    "Length control: mixed worse, negative transfer, trade-off, calibrated, combined judge keeps both and PCGrad "
    "reduces interference are decided on the length-controlled estimate (the mean of the accuracies, or ECEs, on "
    "the pairs whose chosen reply is longer and on those whose chosen reply is shorter, in the tokenizer's "
    "tokens; ties dropped and counted; the same paired two-level bootstrap as the raw estimate), with the raw "
    "one beside it; a test set with fewer than 30 pairs in a stratum is 'not estimable' and decides nothing "
    "(`rmtension.stats.length`). "
    "Mixed worse and negative transfer: supported when, on some HH test set, the difference is negative with a "
    "Holm-adjusted bootstrap p < 0.05 (two test sets); not supported when on every HH test set the CI lies inside "
    "±min_effect or wholly above 0 (`rmtension.stats.verdicts`). Neuron claims: the equivalence rule on margin "
    "changes in SDs of the unablated margin, against the per-pair mean of layer- and magnitude-matched random "
    "draws (paired t-tests; `rmtension.ablation.claims`); the overlap by a hypergeometric test against "
    "uniform random sets, and whether the sets differ by a permutation null of pseudo-objectives; the double "
    "dissociation as the 2 x 2 interaction. "
    f"Calibrated: supported when every own-objective ECE's CI ends at or below {ECE_WELL_CALIBRATED}, not supported "
    f"when one starts above it (ECE is biased upwards on small test sets). Avoidant vs misuse: the equivalence rule "
    "(`rmtension.stats.verdicts`) on both XSTest differences. sqrt(KL), per curve (best-of-n: pm_test's reading of "
    "pm_train's pick, not pm_train's own curve, whose shape follows from its score distribution alone; RL: pm_train's "
    "reward on held-out prompts): supported when a + b·sqrt(KL) has the lowest Gaussian least-squares AIC, ahead of "
    "a + b·KL (and a + b·log n) by ΔAIC ≥ 2, and its slope's CI lies above 0; not supported when another form wins "
    "by ΔAIC ≥ 2 or the slope's CI lies inside ±min_effect or below 0 (`rmtension.rl.claims`). Train/test gap, "
    "per curve: the equivalence rule on the CI of the gap's excess over regression to the mean, (1 − ρ̂)·E[z of the "
    "pick], in within-prompt SD. Both: every curve must hold. Trade-off: the equivalence rule on 0.5 minus each "
    "single-objective RM's accuracy on the other objective's test pairs; supported when one is, not supported when "
    "both are. Combined judge keeps both: each method at its validation-chosen dial, minus the best single RM on each "
    "HH test set; supported when some method's Bonferroni CIs both lie above −min_effect, not supported when every "
    "method's CI lies wholly below −min_effect on some test set (`rmtension.combine.frontier`)."
)


def write_findings(run_dir: str | Path, fs: list[Finding]) -> Path:
    """`findings.json`: every claim as one entry (id, paper, claim, verdict, evidence, numbers, source)."""
    return write_json(Path(run_dir) / "findings.json", {"findings": [f.as_dict() for f in fs]})


def read_findings(run_dir: Path, compute: Callable[[Path], list[Finding]] | None = None) -> list[Finding]:
    """The findings of `findings.json`, or `compute(run_dir)` when it is absent (and `compute` is given)."""
    path = run_dir / "findings.json"
    if not path.exists() and compute is not None:
        return compute(run_dir)
    return [Finding(**d) for d in read_json(path)["findings"]] if path.exists() else []


def section_summary(run_dir: Path, settings: list[str] = ()) -> Section:
    """The verdict table and the forest plot of every claim first; then, in a subsection, one sentence
    per claim rendered from the same fields, the sources, `settings` (sentences on the settings the
    claims were read at) and the criteria."""
    fs = read_findings(run_dir)
    s = Section("Summary of findings", "summary")
    counts = {v: sum(f.verdict == v for f in fs) for v in VERDICTS}
    s.paragraphs.append(
        f"{len(fs)} claims of {TANWAR}, {BAI} and rmtension's own measurements: "
        + ", ".join(f"{n} {v}" for v, n in counts.items() if n or v in COUNTED)
        + "."
    )
    s.tables.append(
        (
            "Verdicts: each claim's effect [95% CI] by part, raw and length-controlled (ties dropped; 'not "
            "estimable' where a length stratum has fewer than 30 pairs), which one the verdict read, its margin and "
            "the detectable effect",
            verdict_table(fs),
        )
    )
    forest = forest_plot(fs, run_dir)
    if forest is not None:
        s.figures.append(
            (
                "Every decided claim's effect and 95% CI per part, against its ± margin (shaded), in the claim's "
                "own units; filled: raw, hollow below it: length-controlled (which decides where the table says "
                "so); colour: supported (blue), not supported (vermillion), otherwise black. "
                "Source: `findings.json`.",
                forest,
            )
        )
    words = Section("Each claim in words", "summary-claims")
    words.paragraphs += [f.sentence() for f in fs]
    words.tables.append(
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
    words.paragraphs += list(settings)
    words.paragraphs.append("Criteria. " + CRITERIA)
    s.subsections.append(words)
    return s


COUNTED = ("supported", "non-zero but small", "not supported", "inconclusive", "not run")
"""The verdicts the summary always counts ("not testable here" only when some claim has it)."""
