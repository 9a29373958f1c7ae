"""One config model per stage, combined into `StudyConfig`.

Configs load from YAML (safe loader), take `key=value` overrides with dotted keys
(`train.lr=1e-4`), reject unknown keys, and are saved resolved next to every output.

Imports inside functions: only the optional-package check needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from rmtension.combine.config import CombineConfig
from rmtension.errors import ConfigError
from rmtension.audit.config import AuditConfig, find_suite
from rmtension.neurons.config import AblationConfig, NeuronsConfig, check_neuron_sections
from rmtension.policy.config import (
    BonConfig,
    PMHalvesConfig,
    PolicyConfig,
    RLConfig,
    check_optimise_sections,
)
from rmtension.yaml_file import find_beside, read_mapping
from rmtension.strict import OBJECTIVES, Strict

__all__ = ["OBJECTIVES", "Strict", "StudyConfig", "load_config"]

DEFAULT_SUBSETS: dict[str, list[str]] = {
    "helpful": ["helpful-base", "helpful-online", "helpful-rejection-sampled"],
    "harmless": ["harmless-base"],
}


class ExtraTrainConfig(Strict):
    """A pairs file added to training only (never to validation or test), e.g. a bench export."""

    path: str
    """JSONL pairs file (`rmtension bench export` writes one)."""
    format: Literal["hh", "jsonl"] = "hh"
    """Row format: HH transcripts, or TRL prompt/chosen/rejected rows (`jsonl`)."""
    objective: Literal["helpful", "harmless"] | None = None
    """The objective whose training pairs it joins (and with them the mixed RM's and that objective's
    control's). None: each row's `bench.mode` decides: `helpful` -> helpful, `red_team` -> harmless."""
    sha256: str | None = None
    """The file's SHA-256, filled in when the config is read, so the run's hashes change with the file;
    a value given pins the file (a different file stops the study; remove the key to take it)."""

    @model_validator(mode="before")
    @classmethod
    def _digest(cls, raw: Any) -> Any:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("path"), str)
            or not Path(raw["path"]).is_file()
        ):
            return raw  # a missing file is reported by the data stage, with its path
        digest = hashlib.sha256(Path(raw["path"]).read_bytes()).hexdigest()
        if raw.get("sha256") not in (None, digest):
            pinned = str(raw["sha256"])[:12]
            raise ValueError(f"{raw['path']} has changed (sha256 {digest[:12]}..., pinned {pinned}...)")
        return {**raw, "sha256": digest}


class DataConfig(Strict):
    path: str | None = None
    """Root of the data in the official layout `<root>/<subset>/{train,test}.jsonl[.gz]`.
    None: the RMTENSION_DATA variable, then the hub (`Anthropic/hh-rlhf`)."""
    format: Literal["hh", "rmb", "jsonl"] = "hh"
    """Row format, chosen from the format registry."""
    subsets: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SUBSETS.items()}
    )
    """Subsets that make up each single objective."""
    mixed_mode: Literal["union", "matched", "ratio"] = "matched"
    """union: all pairs of both; matched: as many training pairs as each single objective, half
    from each; ratio: `mixed_ratio` of the training pairs from helpful, the rest from harmless."""
    mixed_ratio: float = Field(0.5, ge=0.0, le=1.0)
    """Share of helpful pairs in `ratio` mode."""
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    """Train/val/test fractions used when only one official split exists."""
    split_seed: int = 0
    """Seed of the grouped split and of any subsampling."""
    max_train_pairs: int | None = Field(None, ge=2)
    """Cap on training pairs per objective (the same cap for each, so runs are size-matched)."""
    equal_sizes: bool = False
    """Cap every objective at the smaller single objective's training set too, so that the helpful,
    harmless and mixed RMs train on the same number of pairs whatever the data holds."""
    max_eval_pairs: int | None = Field(None, ge=2)
    """Cap on validation and test pairs per objective."""
    max_val_pairs: int | None = Field(None, ge=2)
    """Cap on validation pairs per objective when it should be smaller than `max_eval_pairs`
    (validation runs at every eval step; the test sets are scored once per model)."""
    lenient: bool = False
    """Skip (and count) malformed rows instead of stopping."""
    rmb_path: str | None = None
    """Optional RMB pairwise folder (e.g. `rmb-sample`) evaluated as `rmb-helpful`/`rmb-harmless`."""
    xstest_path: str | None = None
    """Optional XSTest v2 folder (official layout) evaluated as `xstest-should-respond` (compliance
    chosen over refusal on safe prompts) and `xstest-should-refuse` (refusal chosen on unsafe ones)."""
    hub: bool = True
    """Allow loading `Anthropic/hh-rlhf` from the hub when no local path is found."""
    extra_train: list[ExtraTrainConfig] = Field(default_factory=list)
    """Pairs files added to an objective's training pairs on top of `max_train_pairs`, never to its
    validation or test pairs (`rmtension.data.extra`); counted in data/summary.json."""
    flip_labels: dict[Literal["helpful", "harmless"], float] = Field(default_factory=dict)
    """Planted label noise (a positive control, `configs/planted.yaml`): objective -> share of its pairs
    in the mixed RM's training set whose chosen and rejected replies are swapped (seeded; counted in
    `data/summary.json`). Single RMs, controls, validation and test pairs keep their labels."""
    plant_marker: dict[Literal["helpful", "harmless"], str] = Field(default_factory=dict)
    """Planted feature (a positive control for the neuron claims, `configs/planted-neurons.yaml`):
    objective -> text appended to the chosen reply of every pair of that objective, in its training,
    validation and test splits (`rmtension.data.plant`; counted in `data/summary.json`). With
    `train.plant_neurons` the known neurons that may learn are the only reader of it."""
    cue_share: float = 0.0
    """A planted cue (a positive control, `configs/planted.yaml`): on this seeded share of the pairs, in
    every objective, split and RM, the human-chosen reply ends with " alpha" and the rejected one with
    " omega" (`rmtension.data.flips.add_cue`; one token each, so length is unchanged). With
    `flip_labels` the mixed RM learns it backwards: interference that length control cannot remove."""
    shuffle_labels: bool = False
    """A negative control for the neuron claims: every RM's training pairs have chosen and rejected
    swapped on a seeded half (a coin per pair id, `rmtension.data.flips.shuffle_labels`), so the labels
    carry nothing to learn; validation and test pairs keep theirs (counted in `data/summary.json`)."""

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ValueError(f"split must be three non-negative fractions summing to 1, got {self.split}")
        if self.split[0] == 0 or self.split[2] == 0:
            raise ValueError("split needs non-zero train and test fractions")
        if any(not 0.0 <= v <= 1.0 for v in self.flip_labels.values()):
            raise ValueError(f"flip_labels: every share must lie in [0, 1], got {self.flip_labels}")
        if any(not v.strip() for v in self.plant_marker.values()):
            raise ValueError(f"plant_marker: every marker must hold some text, got {self.plant_marker}")
        if not 0.0 <= self.cue_share <= 1.0:
            raise ValueError(f"cue_share must lie in [0, 1], got {self.cue_share}")
        return self


class ModelConfig(Strict):
    backbone: str = "minilm"
    """Registry name (`minilm`, `smollm2-135m`) or any HF model path / hub id."""
    max_length: int = Field(256, ge=8, le=32768)
    """Tokens per sequence; longer conversations are truncated from the left."""
    cache_dir: str | None = None
    """Where dequantised GGUF backbones are cached. None: $RMTENSION_CACHE or ~/.cache/rmtension."""
    trust_remote_code: bool = False
    """Allow model repos to run their own Python code. Off unless asked for."""


class TrainConfig(Strict):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    """One reward model per objective and seed."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training pairs (fractions stop part-way through the last one)."""
    batch_size: int = Field(16, ge=1)
    """Pairs per optimiser step (before accumulation)."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches accumulated per optimiser step."""
    lr: float = Field(5e-5, gt=0)
    """Peak AdamW learning rate, reached after warmup."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Share of the optimiser steps spent warming the learning rate up linearly from 0."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warmup."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradients are clipped to this global L2 norm before each step."""
    margin: float = Field(0.0, ge=0)
    """Bradley-Terry margin: -log sigmoid(r_c - r_r - margin)."""
    center_rewards_coef: float = Field(0.0, ge=0)
    """Reward centring (Eisenstein et al. 2023): adds coef * mean((r_c + r_r)^2)."""
    bf16: bool = True
    """bf16 autocast (CPU or GPU); master weights stay fp32. Only where the device has native bf16
    matmuls (CUDA with bf16, CPUs with AVX-512/AMX bf16 kernels): elsewhere fp32, which is faster there
    (`rmtension.model.precision`)."""
    trainable: str = Field("all", pattern=r"^(all|head|top:[1-9][0-9]*)$")
    """`all`, `head` (score head only) or `top:K` (top K layers plus head)."""
    cache_trunk: bool = True
    """With frozen lower layers, compute their outputs once and reuse them across epochs and objectives."""
    eval_every: int = Field(50, ge=1)
    """Optimiser steps between validation evaluations (also evaluated at the end)."""
    checkpoint_every: int = Field(100, ge=1)
    """Optimiser steps between resumable checkpoints."""
    length_grouping: bool = True
    """Group batches by length to cut padding."""
    disable_dropout: bool = False
    """Set every `nn.Dropout` of the model to p = 0 while training (TRL's `RewardConfig.disable_dropout`)."""
    conflict_every: int | None = Field(None, ge=1)
    """Measure gradient conflict between the objectives every N optimiser steps (and at the first and
    last) while an RM on mixed data trains: `rm/<rm>/seed<k>/conflict.csv`, then `conflict.json`.
    Two extra backward passes per measured step; None: off, at no cost."""
    controls: bool = True
    """Also train the dilution controls `helpful_half` and `harmless_half`: each single objective on
    exactly its share of the mixed RM's training set (n/2 in matched mode), same seeds. They split the
    interference into dilution, single(n/2) - single(n), and negative transfer, mixed - single(n/2)."""
    pcgrad: bool = False
    """Also train `mixed_pcgrad`: the mixed RM's data and seeds with conflicting gradients projected
    (PCGrad, Yu et al. 2020). One process or DDP (not FSDP / DeepSpeed)."""
    pcgrad_scope: Literal["global", "block"] = "global"
    """Project over all trainable parameters at once, or block by block."""
    plant_neurons: dict[Literal["helpful", "harmless"], int] = Field(default_factory=dict)
    """Planted neurons (a positive control for the neuron claims, `configs/planted-neurons.yaml`): RM name
    -> n; that RM trains only MLP neurons 0..n-1 of each trainable block (their rows of the MLP's input
    projections and columns of its output projection, `rmtension.model.scope.restrict_to_neurons`),
    everything else frozen, its score head too: what it learns, only those neurons carry. Needs
    `weight_decay: 0` (decay would move the frozen entries)."""
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    """Also send the training metrics to these accelerate trackers (`metrics.jsonl` is always
    written); each must be installed. Does not change results, so not part of the training hash."""

    @field_validator("trackers")
    @classmethod
    def _installed(cls, trackers: list[str]) -> list[str]:
        import importlib.util

        missing = [t for t in trackers if importlib.util.find_spec(t) is None]
        if missing:
            raise ValueError(f"{missing} not installed (pip install {' '.join(missing)})")
        return list(dict.fromkeys(trackers))

    @model_validator(mode="after")
    def _plant_keeps_frozen(self) -> "TrainConfig":
        if self.plant_neurons and self.weight_decay > 0:
            raise ValueError("plant_neurons needs weight_decay: 0 (decay would move the frozen weights)")
        if any(n < 1 for n in self.plant_neurons.values()):
            raise ValueError(f"plant_neurons: every count must be at least 1, got {self.plant_neurons}")
        return self


class EvalConfig(Strict):
    batch_size: int = Field(32, ge=1)
    """Pairs per forward pass when scoring test and validation sets."""
    bootstrap: int = Field(2000, ge=100)
    """Bootstrap resamples for every confidence interval."""
    ece_bins: int = Field(10, ge=2)
    """Equal-width probability bins of the expected calibration error."""
    ci: float = Field(0.95, gt=0.5, lt=1.0)
    """Level of every confidence interval."""


class ReportConfig(Strict):
    enabled: bool = True
    """Write `report.md`, `report.html`, `figures/` and `tables/` at the end of the study
    (`rmtension report RUN_DIR` rebuilds them from the run directory at any time)."""


MIN_EFFECT = {
    "mixed_worse": 0.07,
    "negative_transfer": 0.07,
    "avoidant_vs_misuse": 0.25,
    "pcgrad_reduces_interference": 0.07,
    "conflict_tracks_shared_neurons": 0.30,
    "neuron_sets_differ": 0.10,
    "sqrt_kl": 0.1,
    "train_test_gap": 0.1,
    "tradeoff": 0.05,
    "neurons_identified": 0.25,
    "shared_outsized": 0.20,
    "cross_ablation": 0.25,
    "double_dissociation": 0.10,
    "combined_keeps_both": 0.07,
    "tension_is_length_prior": 0.07,
}
"""Default smallest effect of interest per claim id, in the claim's units (accuracy: a fraction of pairs).

mixed_worse, negative_transfer: 0.07 of HH test pairs, the accuracy loss of the mixed RM that would
matter (the default study's interference CIs are about ±0.045, a detectable 0.065, so a default
below that could never give "not supported").

avoidant_vs_misuse: 0.25 of XSTest pairs. In the default study the should-respond difference's
prompt-level CI (100 prompts) is about ±0.17 wide, so it detects about 0.24 with 80% power
(`min_detectable_effect` in findings.json); a smaller default would leave "not supported" unreachable.
pcgrad_reduces_interference: 0.07 of HH test pairs (the default's paired CIs are about ±0.03, a
detectable 0.05). conflict_tracks_shared_neurons: a Spearman correlation of 0.3.
neuron_sets_differ: 0.10 Jaccard (of the two objectives' top-p neuron sets), the permutation null's
mean minus the observed; at top 5% and a Jaccard near 0.6, 0.1 is about 8% of each set's neurons
swapped for others (`rmtension.neurons.nulls`).
sqrt_kl: a slope of 0.1 within-prompt SD of the held-out reward per unit of sqrt(KL) (nats^1/2);
best-of-16 spans sqrt(KL_bon) 0 to 1.35, so a flatter curve gains under 0.14 SD. train_test_gap: 0.1
within-prompt SD of excess over regression to the mean (pm_train's pick at best-of-16 sits about 1.8 SD
up). tradeoff: 0.05 of pairs, the distance from chance (0.5) of a single-objective RM's accuracy on
the other objective's test pairs.

The ablation claims (`rmtension.ablation.claims`) are in SDs of the unablated margin
r_chosen - r_rejected on the test set (ablation.csv's `std_*` columns), sized to what the default
study detects (benchmarks/RESULTS-ablation.md: MiniLM mixed RM, 64 pairs per HH test set, one draw
per control kind). neurons_identified and cross_ablation: 0.25 SD, the margin drop of an objective's
top-p neurons beyond that of their layer- and magnitude-matched random controls, on its own and on the
other objective's test set (detectable there: 0.25 and 0.23, the layer-matched parts being the
widest). shared_outsized: 0.20 SD, the drop of the shared neurons beyond as many objective-only
neurons' (detectable 0.17). double_dissociation: 0.10 SD, the 2x2 interaction, the mean
own-minus-other drop of helpful_only and harmless_only (detectable 0.06).

combined_keeps_both: 0.07 of HH test pairs, the shortfall from the best single RM on either test set
that a combined judge may have and still count as keeping that objective (the mixed_worse scale).

tension_is_length_prior: 0.07 of HH test pairs, the part of the interference that length explains
(interference minus its length-controlled value), on the mixed_worse scale: a share of the
interference as large as the interference that would matter."""


class ClaimsConfig(Strict):
    min_effect: dict[str, float] = Field(default_factory=lambda: dict(MIN_EFFECT))
    """Smallest effect of interest per claim id (`findings.json`): a claim is "not supported" only when
    its CI lies inside ±min_effect or wholly on the wrong side. Keys left out keep their defaults."""

    @field_validator("min_effect")
    @classmethod
    def _known_claims(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(MIN_EFFECT))
        if unknown:
            raise ValueError(f"unknown claim id(s) {unknown}; known: {sorted(MIN_EFFECT)}")
        if any(x <= 0 for x in v.values()):
            raise ValueError("every min_effect must be positive")
        return {**MIN_EFFECT, **v}


class StudyConfig(Strict):
    name: str = "study"
    """Name of the study; the run directory defaults to `runs/<name>`."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Where the pairs come from, how objectives are built and how they are split."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The reward models' backbone and tokenisation."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Reward-model training, shared by every objective and seed."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Scoring of the test sets and the statistics of the tension table."""
    audit: AuditConfig | None = None
    """Every trained RM on an audit suite of ranked replies (`rmtension.audit`); absent: the stage is off."""
    neurons: NeuronsConfig | None = None
    """Neuron scoring, selection and overlap (`rmtension.neurons`); absent: the stage is off."""
    ablation: AblationConfig | None = None
    """Neuron-set ablations with matched random controls; needs `neurons`."""
    policy: PolicyConfig | None = None
    """The policy that best-of-n and RL optimise; needed by `bon` and `rl`."""
    pm_halves: PMHalvesConfig | None = None
    """pm_train / pm_test trained on disjoint halves of an objective's training pairs."""
    bon: BonConfig | None = None
    """Best-of-n against pm_train, judged by pm_test and the other objective's RM, and the frontier."""
    rl: RLConfig | None = None
    """RLOO against pm_train with a KL penalty to the initial policy."""
    combine: CombineConfig | None = None
    """Ways to combine the two objectives into one judge, and their helpful-harmless frontier
    (`rmtension.combine`); absent: the stage is off."""
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig)
    """How the claims' verdicts are decided (smallest effects of interest)."""
    report: ReportConfig = Field(default_factory=ReportConfig)
    """The report written at the end of the study."""

    @model_validator(mode="after")
    def _sections_agree(self) -> StudyConfig:
        """Checks that span sections, run when the config is read, before any work starts."""
        check_neuron_sections(self.neurons, self.ablation)
        check_optimise_sections(self)
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            msg = f"must be one of {e.get('ctx', {}).get('expected', '')}"
        lines.append(f"{source}: {key}: {msg} (got {e.get('input')!r})"[:300])
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    """Parse an override value with the YAML safe loader (`1e-4`, `[0,1]`, `true`, `null`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a nested dict (copy)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
        node[parts[-1]] = _parse_value(value)
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, present: tuple[str, ...] = ()
) -> StudyConfig:
    """Load a study config from YAML plus overrides; every error names the key.

    `present`: sections taken at their defaults where the YAML and the overrides leave them out.
    """
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        raw = read_mapping(path, "config", "top level must be a mapping of sections", empty_ok=True)
    for name in present:  # before the overrides, so `neurons.max_pairs=6` reaches a saved `neurons: null`
        if raw.get(name) is None:
            raw[name] = {}
    raw = apply_overrides(raw, overrides or [])
    config_dir = None if path is None else Path(path).parent
    _extra_beside_config(raw, config_dir)
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    if cfg.audit is not None and cfg.audit.enabled:  # a relative suite path also works from another folder
        cfg.audit.suite = find_suite(cfg.audit.suite, config_dir)
    return cfg


def _extra_beside_config(raw: dict, config_dir: Path | None) -> None:
    """`data.extra_train` paths, like the audit suite's, also resolve beside the config file (in place,
    before validation, so each file's SHA-256 is taken from the file meant)."""
    data = raw.get("data")
    entries = data.get("extra_train") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["path"] = find_beside(entry["path"], config_dir)


def config_hash(*parts: BaseModel | dict | str | None) -> str:
    """Stable short hash of the config sections a stage depends on."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resolve_data_path(cfg: DataConfig) -> str | None:
    """The data root: config, then $RMTENSION_DATA; None means the hub."""
    return cfg.path or os.environ.get("RMTENSION_DATA") or None


def dump_config(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe_config(model: type[BaseModel] = StudyConfig, prefix: str = "") -> list[str]:
    """Every config field as `key (type, default): docstring`, grouped by section, sections in order.

    A section is a field whose type is a config model (or an optional one); its fields follow it,
    indented, under its dotted key.
    """
    lines: list[str] = []
    for name, field in model.model_fields.items():
        section = next(
            (
                t
                for t in (field.annotation, *typing.get_args(field.annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
        doc = " ".join((field.description or "").split())
        if section is not None:
            lines.append(f"{prefix}{name}: {doc}")
            lines += ["  " + line for line in describe_config(section, f"{prefix}{name}.")]
            continue
        default = field.get_default(call_default_factory=True)
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        shown = "required" if field.is_required() else f"default {default!r}"
        lines.append(f"{prefix}{name} ({kind}, {shown}): {doc}")
    return lines
