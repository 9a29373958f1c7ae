"""One claim's finding (`Finding`): the one type every claim of the study is decided into.

A finding carries what its verdict needs (id, verdict, effect and CI per part, the test and its
null, the margin `min_effect`, the detectable effect) and the numbers its sentence shows. The
sentence is rendered from those fields (`Finding.sentence`); nothing ever parses it back. Claim ids
are the constants below, and each id's paper and wording is declared once in `CLAIMS`.
`findings.json` stores `Finding.as_dict()`, whose schema `tests/findings_schema.py` checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rmtension.run.runio import configured, read_config, read_json
from rmtension.stats.bootstrap import beats_chance
from rmtension.stats.verdicts import NOT_RUN, min_detectable_effect

TANWAR = "Tanwar & Atanasova (2026)"
BAI = "Bai et al. (2022)"
OURS = "rmtension"

MIXED_WORSE = "mixed_worse"
NEGATIVE_TRANSFER = "negative_transfer"
TENSION_IS_LENGTH_PRIOR = "tension_is_length_prior"
NEURONS_IDENTIFIED = "neurons_identified"
NEURONS_SHARED = "neurons_shared"
NEURON_SETS_DIFFER = "neuron_sets_differ"
SHARED_OUTSIZED = "shared_outsized"
CROSS_ABLATION = "cross_ablation"
DOUBLE_DISSOCIATION = "double_dissociation"
CALIBRATED = "calibrated"
SQRT_KL = "sqrt_kl"
TRAIN_TEST_GAP = "train_test_gap"
TRADEOFF = "tradeoff"
AVOIDANT_VS_MISUSE = "avoidant_vs_misuse"
HELPFUL_REFUSAL_UNDERVALUED = "helpful_refusal_undervalued"
PCGRAD_REDUCES_INTERFERENCE = "pcgrad_reduces_interference"
CONFLICT_TRACKS_SHARED_NEURONS = "conflict_tracks_shared_neurons"
COMBINED_KEEPS_BOTH = "combined_keeps_both"


RAW, LENGTH_CONTROLLED = "raw", "length-controlled"
"""The estimates a verdict may read (`Finding.decided_on`)."""
NOT_ESTIMABLE_CI = [-math.inf, math.inf]
"""The CI a part whose length-controlled estimate is not estimable enters a verdict with: it decides nothing."""


@dataclass(frozen=True)
class Claim:
    """What a claim says and whose it is; its evidence is a `Finding`."""

    paper: str
    text: str


CLAIMS: dict[str, Claim] = {
    MIXED_WORSE: Claim(TANWAR, "mixed RMs do worse than single-objective ones"),
    NEGATIVE_TRANSFER: Claim(
        TANWAR, "mixing hurts beyond dilution (negative transfer between the objectives)"
    ),
    TENSION_IS_LENGTH_PRIOR: Claim(
        TANWAR, "the interference is a length prior (it shrinks when length is controlled)"
    ),
    NEURONS_IDENTIFIED: Claim(TANWAR, "activation scores identify each objective's MLP neurons"),
    NEURONS_SHARED: Claim(TANWAR, "many neurons are shared between the objectives"),
    NEURON_SETS_DIFFER: Claim(TANWAR, "the objectives' neuron sets differ more than sampling noise"),
    SHARED_OUTSIZED: Claim(TANWAR, "shared neurons have outsized influence"),
    CROSS_ABLATION: Claim(TANWAR, "ablating one objective's neurons also hurts the other"),
    DOUBLE_DISSOCIATION: Claim(
        TANWAR,
        "each objective's own neurons matter more for it than for the other objective (double dissociation)",
    ),
    CALIBRATED: Claim(BAI, "preference models are well calibrated"),
    SQRT_KL: Claim(BAI, "reward grows about linearly in sqrt(KL)"),
    TRAIN_TEST_GAP: Claim(BAI, "the training PM rates the policy above a held-out PM"),
    TRADEOFF: Claim(BAI, "helpfulness and harmlessness trade off"),
    AVOIDANT_VS_MISUSE: Claim(BAI, "the harmless RM is more avoidant and the helpful RM more open to misuse"),
    HELPFUL_REFUSAL_UNDERVALUED: Claim(
        "rmtension (after Bai et al. 2022)",
        "the harmless RM ranks a refusal that offers nothing above a helpful refusal of the same length",
    ),
    PCGRAD_REDUCES_INTERFERENCE: Claim(
        OURS, "projecting conflicting gradients (PCGrad) reduces interference"
    ),
    CONFLICT_TRACKS_SHARED_NEURONS: Claim(
        OURS, "blocks where the objectives' gradients conflict more hold more shared neurons"
    ),
    COMBINED_KEEPS_BOTH: Claim(OURS, "a combined judge keeps both objectives"),
}
"""Every claim id -> its paper and wording; the summary lists the findings in the study's stage order."""


@dataclass
class Finding:
    id: str
    """Fixed id of the claim (one of the constants above; `findings.json`, `rmtension compare`)."""
    verdict: str
    """supported | not supported | inconclusive | not run (`rmtension.stats.verdicts`)."""
    evidence: str = ""
    """The numbers, in words, rendered from the fields and `numbers` when the finding is made."""
    source: str = ""
    """The run-directory files the numbers come from, comma-separated."""
    key: str = ""
    """The headline numbers, short (for side-by-side comparisons); rendered from effect and CI when empty."""
    effect: dict | None = None
    """Point estimates, by part of the claim."""
    ci95: dict | None = None
    """95% CIs, by part."""
    min_effect: float | None = None
    """The margin: the smallest effect of interest the verdict used (`claims.min_effect`)."""
    min_detectable_effect: float | None = None
    """The effect this sample could detect with 80% power (the largest over the parts)."""
    test: str = ""
    """The test that decides the verdict, in words."""
    null: str = ""
    """What the effect is compared against (the null or the control), in words."""
    source_files: list[str] | None = None
    """Files of the run directory the numbers come from (None: `source` split on commas)."""
    setting: str = ""
    """The setting the claim is read at, e.g. "top 5%, mean ablation" (shown after the claim)."""
    numbers: dict = field(default_factory=dict)
    """Further numbers the evidence shows (p-values, counts, per-part verdicts)."""
    length_controlled: dict | None = None
    """Per part: the length-controlled estimate beside the raw one (`lc_part`: estimable, estimate, ci95, the
    strata's and ties' counts, and the reason when not estimable); None: not computed."""
    decided_on: str = RAW
    """Which estimate the verdict reads: "raw" (`effect`, `ci95`) or "length-controlled" (`length_controlled`)."""
    positive_control: dict | None = None
    """The positive control that shows the pipeline can reach the margin (None: none run)."""
    mc_error: dict | None = None
    """Per part: the Monte Carlo standard error of the CI bound that decides the verdict (None: not computed)."""
    paper: str = ""
    claim: str = ""

    def __post_init__(self) -> None:
        c = CLAIMS.get(self.id)
        if c is not None:
            self.paper = self.paper or c.paper
            self.claim = self.claim or c.text
        if not self.key and self.effect and self.ci95:
            self.key = "; ".join(
                f"{part} {e:+.3f} [{self.ci95[part][0]:+.3f}, {self.ci95[part][1]:+.3f}]"
                for part, e in self.effect.items()
                if part in self.ci95
            )

    @property
    def margin(self) -> float | None:
        return self.min_effect

    def sentence(self) -> str:
        """`<paper>, <claim> (<setting>): **<verdict>**. <evidence>`: the summary's sentence."""
        setting = f" ({self.setting})" if self.setting else ""
        return f"{self.paper}, {self.claim}{setting}: **{self.verdict}**. {self.evidence}".rstrip()

    def statement(self) -> str:
        """`<Claim> (<setting>): **<verdict>**. <evidence>`: the sentence without its paper, for a stage's section."""
        setting = f" ({self.setting})" if self.setting else ""
        claim = self.claim[:1].upper() + self.claim[1:]
        return f"{claim}{setting}: **{self.verdict}**. {self.evidence}".rstrip()

    def parts(self) -> list[tuple[str, float, list[float]]]:
        """(part, effect, CI) of every part with a finite effect and CI."""
        out = []
        for part, e in (self.effect or {}).items():
            ci = (self.ci95 or {}).get(part)
            if ci is not None and all(math.isfinite(float(x)) for x in (e, *ci)):
                out.append((part, float(e), [float(ci[0]), float(ci[1])]))
        return out

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


def not_run(claim_id: str, enable: tuple[str, ...], run_dir: Path, expects: str) -> Finding:
    """A claim whose evidence is absent: its stage was not configured (any of `enable`), or its file is missing."""
    if any(configured(read_config(run_dir), k) for k in enable):
        why = f"Enabled in the config, but `{expects}` is not in the run directory."
    else:
        why = f"Not run in this study (enable {HINTS[enable]} in the config)."
    return Finding(claim_id, NOT_RUN, why)


def single_part(name: str, effect: float, ci: list[float]) -> dict:
    """The `effect`, `ci95` and `min_detectable_effect` fields of a finding with one part."""
    return {"effect": {name: effect}, "ci95": {name: ci}, "min_detectable_effect": min_detectable_effect(ci)}


def lc_part(d: dict | None, sign: float = 1.0, offset: float = 0.0) -> dict:
    """One part's entry of `Finding.length_controlled` from a `rmtension.stats.length.LengthControlled` dict.

    The estimate and CI are mapped to the claim's direction as offset + sign * x (e.g. "worse" is
    -difference, "below chance" is 0.5 - accuracy); None (nothing computed) reads as not estimable.
    """
    if d is None:
        return {"estimable": False, "estimate": None, "ci95": None, "reason": "no length-controlled estimate"}
    out = {k: d.get(k) for k in ("n_chosen_longer", "n_chosen_shorter", "n_ties")}
    if not d.get("estimable"):
        return {"estimable": False, "estimate": None, "ci95": None, "reason": d.get("reason", ""), **out}
    ci = sorted(offset + sign * x for x in d["ci95"])
    return {"estimable": True, "estimate": offset + sign * d["estimate"], "ci95": ci, "reason": "", **out}


def lc_text(part: dict, signed: bool = True) -> str:
    """An `lc_part` entry in words: "+0.012 [-0.030, +0.054] (12 tied pairs dropped)" or "not estimable (why)"."""
    if not part["estimable"]:
        return f"not estimable ({part['reason']})"
    ties = part.get("n_ties")
    dropped = f" ({ties} tied pairs dropped)" if ties else ""
    f = "+.3f" if signed else ".3f"
    return f"{part['estimate']:{f}} [{part['ci95'][0]:{f}}, {part['ci95'][1]:{f}}]{dropped}"


def fmt_ci(d: dict, key: str = "ci95") -> str:
    return f"[{d[key][0]:+.3f}, {d[key][1]:+.3f}]"


def length_note(run_dir: Path, tests: tuple[str, ...] = ("helpful", "harmless")) -> str:
    """A sentence naming the test sets on which length alone beats chance (two-sided binomial test at 0.05)."""
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
