"""One claim's finding (`Finding`), as `findings.json` stores it, and the "not run" finding."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rmtension.report.core import configured, read_config

TANWAR = "Tanwar & Atanasova (2026)"
BAI = "Bai et al. (2022)"


@dataclass
class Finding:
    paper: str
    claim: str
    verdict: str
    """supported | not supported | inconclusive | not run"""
    evidence: str
    """The numbers, in words."""
    source: str
    key: str = ""
    """The headline numbers, short (for side-by-side comparisons)."""
    id: str = ""
    """Fixed id of the claim (`findings.json`, `rmtension compare`)."""
    effect: dict | None = None
    """Point estimates, by part of the claim."""
    ci95: dict | None = None
    """95% CIs, by part."""
    min_effect: float | None = None
    """The smallest effect of interest the verdict used (`claims.min_effect`)."""
    min_detectable_effect: float | None = None
    """The effect this sample could detect with 80% power (the largest over the parts)."""
    test: str = ""
    """The test that decides the verdict, in words."""
    null: str = ""
    """What the effect is compared against (the null or the control), in words."""
    source_files: list[str] | None = None
    """Files of the run directory the numbers come from (None: `source` split on commas)."""

    def sentence(self) -> str:
        return f"{self.paper}, {self.claim}: **{self.verdict}**. {self.evidence}"

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["source_files"] is None:
            d["source_files"] = [f.strip() for f in self.source.split(",") if f.strip()]
        return d


HINTS = {
    ("train",): "`train:`",
    ("neurons",): "`neurons:`",
    ("ablation",): "`neurons:` and `ablation:`",
    ("bon", "rl"): "`policy:`, `pm_halves:` and `bon:` or `rl:`",
}
"""What to enable for a claim, keyed by the config sections any of which produces its evidence."""


def _not_run(paper: str, claim: str, enable: tuple[str, ...], run_dir: Path, expects: str) -> Finding:
    """A claim whose evidence is absent: its stage was not configured (any of `enable`), or its file is missing."""
    if any(configured(read_config(run_dir), k) for k in enable):
        why = f"Enabled in the config, but `{expects}` is not in the run directory."
    else:
        why = f"Not run in this study (enable {HINTS[enable]} in the config)."
    return Finding(paper, claim, "not run", why, "")


def _ci(d: dict, key: str = "ci95") -> str:
    return f"[{d[key][0]:+.3f}, {d[key][1]:+.3f}]"


def length_note(run_dir: Path, tests: tuple[str, ...] = ("helpful", "harmless")) -> str:
    """A sentence naming the test sets on which length alone beats chance (two-sided binomial test at 0.05)."""
    from rmtension.rm.stats import beats_chance
    from rmtension.run.runio import read_json

    path = run_dir / "tension.json"
    base = read_json(path).get("baselines", {}) if path.exists() else {}
    hits = []
    for ts in tests:
        b = base.get(ts)
        if not b or not b["n"]:
            continue
        rule = "longer" if b["longer"] >= b["shorter"] else "shorter"
        if beats_chance(b[rule], b["n"]):
            hits.append(f"{ts} (prefer the {rule} reply: {b[rule]:.3f})")
    if not hits:
        return ""
    return " Length alone beats chance on the same pairs: " + "; ".join(hits) + " (`tension.json` baselines)."
