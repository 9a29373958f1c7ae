"""The steering loop's config (`configs/loop.yaml`): one YAML file, read into `LoopConfig`.

Every key is documented on its field; unknown keys, wrong types and out-of-range values are one
`ConfigError` naming the file and the key. The claims' margins (`claims:`) are part of the config,
fixed before a run, so a run cannot choose them after seeing its results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from rmtension.errors import ConfigError
from rmtension.loop.reviewer import SimulatedReviewer, Shortcut
from rmtension.strict import Strict
from rmtension.yaml_file import find_beside, read_mapping


class ShortcutConfig(Strict):
    kind: Literal["length", "refusal", "confidence"]
    """length | refusal | confidence (`rmtension.loop.reviewer`)."""
    weight: float
    """Gold-score units per word (length), for refusing (refusal), lost by hedging (confidence)."""


class ReviewerConfig(Strict):
    kind: Literal["simulated", "bench"] = "simulated"
    """simulated: labels drawn from gold; bench: the round's pairs go to the comparison bench."""
    beta: float = Field(1.0, ge=0)
    """Sharpness of P(a) = σ(β Δg) (gold units)."""
    epsilon: float = Field(0.25, ge=0, le=0.5)
    """Flip probability (AlpacaFarm: 0.25)."""
    seed: int = 1000
    """Seed of the label noise, independent of the policy's seeds."""
    database: str | None = None
    """bench only: the bench's database URL (`rmtension bench serve --db`)."""
    k: int = Field(1, ge=1)
    """bench only: judgments wanted per pair (the label is their majority; ties go to b)."""


class ArmConfig(Strict):
    pm: Literal["online", "offline", "ensemble"] = "online"
    """online: PM_r trained on D_0..D_r; offline: PM_0 throughout; ensemble: `ensemble` PMs, aggregated."""
    shortcuts: list[ShortcutConfig] = []
    """The reviewer's shortcuts (none: the unbiased reviewer)."""
    noise_seed: int | None = None
    """The label-noise seed of this arm's reviewer (default: `reviewer.seed`)."""
    ensemble: int = Field(3, ge=2)
    """ensemble arm: PMs per ensemble (each trained with its own batch order)."""
    aggregate: Literal["wco", "uwo"] = "wco"
    """ensemble arm: worst-case (min over PMs) or uncertainty-weighted (mean − `uwo_lambda`·variance)."""
    uwo_lambda: float = Field(1.0, ge=0)


class GoldConfig(Strict):
    """The judge that plays the humans: `members` MiniLMs fine-tuned (every parameter) on HH training
    pairs that no proxy PM sees (`gold_share` of them by pair hash), scores averaged (an ensemble when
    `members` > 1); or `judges:` any folders / hub ids `rmtension.api.load_judge` reads."""

    backbone: str = "minilm"
    trainable: str = Field("all", pattern=r"^(all|top:[1-9][0-9]*)$")
    """What of each member trains (`all`, or `top:K` blocks and the head; `model.scope`)."""
    judges: list[str] = []
    """Use these judges (z-scored on the D_0 pairs, averaged) instead of training; empty: train."""
    members: int = Field(1, ge=1)
    pairs: int = Field(2048, ge=8)
    """Training pairs per member (from the gold share of the training split)."""
    steps: int = Field(256, ge=1)
    lr: float = 5e-5
    batch: int = Field(16, ge=1)
    max_length: int = Field(256, ge=16)
    test_pairs: int | None = 512
    """HH test pairs for the gold's raw and length-controlled accuracy (None: all)."""


class PMConfig(Strict):
    backbone: str = "minilm"
    trainable: str = Field("all", pattern=r"^(all|top:[1-9][0-9]*)$")
    """What of a proxy PM trains (`all`, or `top:K` blocks and the head; `model.scope`): the frozen
    blocks below need no backward pass."""
    max_length: int = Field(256, ge=16)
    steps0: int = Field(64, ge=1)
    """Bradley-Terry steps of PM_0 on D_0."""
    steps: int = Field(16, ge=0)
    """Steps per online round (warm-started from PM_{r-1}, on D_r plus D_0..D_{r-1})."""
    lr: float = 5e-5
    batch: int = Field(16, ge=1)


class RoundConfig(Strict):
    max_new_tokens: int = Field(32, ge=1)
    max_prompt_tokens: int = Field(192, ge=8)
    n_best_of: int = Field(8, ge=2)
    distill_steps: int = Field(4, ge=1)
    distill_lr: float = 2e-5
    trainable: str = Field("all", pattern=r"^(all|top:[1-9][0-9]*)$")
    """What of the policy distillation trains: `all`, or the top K blocks (the LM head, tied to the
    embeddings, then stays frozen; the frozen blocks' states are computed once per round)."""
    draw_rows: int = Field(64, ge=1)
    """Rows per decode batch of every draw (rounds and measures). A seeded draw is reproducible for
    a fixed batch plan only, so this is part of the config and of each round's spec. For
    SmolLM2-135M on 2 cores (bf16 copy), 64 rows drew about 12% faster than 32."""


class Margins(Strict):
    """Smallest effects of interest of the claims, in each claim's own units."""

    online_beats_offline: float = Field(..., gt=0)
    offline_judge_fades_at_high_end: float = Field(..., gt=0)
    shortcut_steers_policy: dict[str, float] = {}
    """Per shortcut kind, in its behaviour measure's units (words; refusal / hedging rate)."""
    alignment_tax: float = Field(..., gt=0)


class LoopConfig(Strict):
    name: str = "loop"
    objective: Literal["helpful", "harmless"] = "helpful"
    data_path: str | None = None
    """HH-RLHF folder (default: $RMTENSION_DATA)."""
    xstest_path: str | None = None
    """XSTest folder: the policy's compliance / refusal rates on its prompts (None: not measured)."""
    seeds: list[int] = [0, 1]
    rounds: int = Field(3, ge=1)
    prompts_per_round: int = Field(64, ge=1)
    heldout_prompts: int = Field(64, ge=4)
    d0_pairs: int = Field(256, ge=4)
    """HH training pairs (proxy share) the arm's reviewer relabels into D_0."""
    xstest_prompts: int = Field(50, ge=1)
    """XSTest prompts per kind (should-respond, should-refuse)."""
    capability_items: int = Field(104, ge=8)
    capability_seed: int = 0
    heldout_between: int | None = Field(None, ge=1)
    """Held-out prompts measured after rounds 1..R−1 (the first this many of the `heldout_prompts`;
    None: all). Rounds 0 and R, which the claims read, always use all."""
    weight_path: list[float] = [0.0, 0.5, 1.0]
    """λ of θ = λ·θ_R + (1 − λ)·θ_0, measured after the last round."""
    weight_path_arms: list[str] | None = None
    """The arms whose weight path is measured (None: every arm)."""
    bootstrap: int = Field(2000, ge=100)
    policy: str = "smollm2-135m"
    """Registry name or HF causal-LM folder of π_0."""
    precision: Literal["bf16", "fp32"] = "fp32"
    """bf16: where the CPU or GPU has native bf16 matmuls, the policy samples from a bf16 copy of its
    weights, and the PMs and gold (training and scores), distillation and the KL's passes run under
    bf16 autocast (master weights fp32); elsewhere, and with fp32, everything runs in fp32."""
    workers: int = Field(1, ge=1)
    """Processes for the seeds' rounds (`rmtension loop run --workers` overrides it): each runs its
    share of the seeds with cores // workers threads (`rmtension.loop.workers`). The thread count may
    change float sums in the last bits, so a run resumes only with the number it started with
    (loop/precision.json)."""
    pm: PMConfig = PMConfig()
    gold: GoldConfig = GoldConfig()
    round: RoundConfig = RoundConfig()
    reviewer: ReviewerConfig = ReviewerConfig()
    arms: dict[str, ArmConfig]
    claims: Margins
    placebo: str | None = "placebo"
    """The arm that is the zero-weight placebo of `shortcut_steers_policy` (None: none)."""
    baseline: str = "online"
    """The unbiased arm shortcuts and the placebo are compared with."""

    @model_validator(mode="after")
    def _arms_agree(self) -> LoopConfig:
        if self.baseline not in self.arms:
            raise ValueError(f"baseline arm {self.baseline!r} is not among the arms")
        if self.reviewer.kind == "bench" and not self.reviewer.database:
            raise ValueError("reviewer.kind bench needs reviewer.database (the bench's --db)")
        if self.reviewer.kind == "bench" and self.objective != "helpful":
            raise ValueError(
                "reviewer.kind bench asks reviewers which reply is more helpful, so it labels the helpful "
                "objective only; a harmless loop takes simulated reviewers"
            )
        for arm, a in self.arms.items():
            for cut in a.shortcuts:
                if arm != self.baseline and cut.kind not in self.claims.shortcut_steers_policy:
                    raise ValueError(
                        f"arm {arm!r} has a {cut.kind} shortcut but claims.shortcut_steers_policy gives no "
                        f"margin for {cut.kind!r}, so its claim could not be decided"
                    )
        unknown = [a for a in self.weight_path_arms or [] if a not in self.arms]
        if unknown:
            raise ValueError(f"weight_path_arms names {unknown}, which are not among the arms")
        if self.heldout_between is not None and self.heldout_between > self.heldout_prompts:
            raise ValueError(
                f"heldout_between ({self.heldout_between}) is more than heldout_prompts ({self.heldout_prompts})"
            )
        if self.placebo is not None and self.placebo in self.arms:
            cuts = self.arms[self.placebo].shortcuts
            if not cuts or any(s.weight != 0 for s in cuts):
                raise ValueError(f"placebo arm {self.placebo!r} needs shortcuts of weight 0 only")
        return self

    def reviewer_of(self, arm: str) -> SimulatedReviewer:
        """The simulated reviewer of `arm` (β, ε from `reviewer`, its own noise seed and shortcuts)."""
        a = self.arms[arm]
        seed = self.reviewer.seed if a.noise_seed is None else a.noise_seed
        cuts = tuple(Shortcut(s.kind, s.weight) for s in a.shortcuts)
        return SimulatedReviewer(self.reviewer.beta, self.reviewer.epsilon, seed, cuts)

    def round0_key(self, arm: str) -> str:
        """Arms whose reviewers label alike share round 0 (D_0 and PM_0): the key of that reviewer (and of
        the ensemble, for an ensemble arm)."""
        r, a = self.reviewer_of(arm), self.arms[arm]
        blob = json.dumps([r.beta, r.epsilon, r.seed, [[s.kind, s.weight] for s in r.shortcuts]])
        if a.pm == "ensemble":  # PM_0 is an ensemble too
            blob += json.dumps([a.ensemble, a.aggregate, a.uwo_lambda])
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _format_error(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "<root>"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    return f"{source}: {key}: {msg}"[:300]


def _absolute(path: str) -> str:
    """An existing folder as an absolute path (so a run directory records the same folder from any
    working directory); anything else (a hub id, a missing folder the reader reports) as given."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def load_loop_config(path: str | Path, overrides: dict | None = None) -> LoopConfig:
    """Read `path` (YAML); `overrides` (top-level keys) replace the file's. ConfigError on any problem.

    Relative `data_path`, `xstest_path` and `gold.judges` folders also resolve beside the config file
    or in its parent folder (`yaml_file.find_beside`), so the config runs from any folder; found
    folders are stored as absolute paths."""
    raw = read_mapping(path, "the loop config", "the loop config is a mapping of keys (arms, claims, ...)")
    raw.update(overrides or {})
    here = Path(path).resolve().parent
    for key in ("data_path", "xstest_path"):
        if isinstance(raw.get(key), str):
            raw[key] = _absolute(find_beside(raw[key], here))
    gold = raw.get("gold")
    if isinstance(gold, dict) and isinstance(gold.get("judges"), list):
        gold["judges"] = [
            _absolute(find_beside(j, here)) if isinstance(j, str) else j for j in gold["judges"]
        ]
    try:
        return LoopConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e, str(path))) from None
