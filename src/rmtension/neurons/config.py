"""Configs of the neuron-scoring stage and the ablation stage (`neurons:` and `ablation:` in the study YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rmtension.errors import ConfigError
from rmtension.model.kinds import check_rm_names
from rmtension.run.saved_config import read_config
from rmtension.strict import Strict

Scorer = Literal["mean_act", "fire_rate", "rms_change", "attribution", "contrast"]
SetName = Literal["helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only"]
ALL_SCORERS: list[str] = ["mean_act", "fire_rate", "rms_change", "attribution", "contrast"]
ALL_SETS: list[str] = ["helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only"]


def _check_ps(ps: list[float]) -> list[float]:
    if not ps or any(not 0 < p <= 100 for p in ps):
        raise ValueError(f"every p must be a percentage in (0, 100], got {ps}")
    return sorted(set(float(p) for p in ps))


class NeuronsConfig(Strict):
    enabled: bool = True
    """Run the neuron-scoring stage in `rmtension study`."""
    rms: list[str] = Field(default_factory=lambda: ["mixed", "helpful", "harmless"])
    """Reward models to analyse, by registered name (`rmtension.model.kinds`). Each is scored on helpful and on harmless data, so its
    helpful_top, harmless_top and shared sets all live inside that one model."""
    layers: Literal["trained", "all"] = "trained"
    """Blocks whose MLP neurons are analysed: `trained`, the blocks the RMs trained (`train.trainable`:
    every block under full fine-tuning, the top K under `top:K`), or `all`. Below a frozen trunk every
    RM has the base model's neurons, the same in each; score files, sets and ablations then cover the
    trained blocks only (`first_layer` in their metadata)."""
    max_seeds: int = Field(1, ge=1)
    """Analyse the RMs of the first `max_seeds` training seeds (each seed repeats all the work)."""
    primary_rm: str = "mixed"
    """RM whose overlap is the headline of overlap.json (mean over seeds); the first of `rms` if absent."""
    scorers: list[Scorer] = Field(default_factory=lambda: list(ALL_SCORERS))
    """Scores to compute. `attribution` adds one backward pass, `rms_change` one base-backbone forward."""
    max_pairs: int = Field(128, ge=2)
    """Scoring pairs per objective: a seeded sample of that objective's train split."""
    ps: list[float] = Field(default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 20.0])
    """Top-p percentages that define the neuron sets."""
    per_layer: bool = False
    """Top p% within each layer instead of the paper's global percentile over all neurons."""
    magnitude: list[Scorer] = Field(default_factory=lambda: ["contrast"])
    """Scorers ranked by |score| (signed scorers whose sign is not 'more'). Gated MLPs (Llama, SmolLM2)
    add mean_act: the sign of act(gate) * up is not identifiable there."""
    permutations: int = Field(50, ge=50)
    """Random re-splits of the scoring pairs behind each overlap null (`rmtension.neurons.nulls`):
    pseudo-objective permutations, split halves and bootstrap resamples, this many of each. A draw
    re-aggregates saved per-pair sums (no forward pass); the permutation p-value is at least 1/(1 + this)."""
    batch_size: int = Field(16, ge=1)
    """Pairs per scoring batch (2x rows: chosen and rejected share a batch)."""
    bf16: bool = True
    """bf16 autocast for the scoring forwards; sums are always accumulated in float64."""
    seed: int = 0
    """Seed of the scoring sample."""

    @field_validator("ps")
    @classmethod
    def _valid_ps(cls, v: list[float]) -> list[float]:
        return _check_ps(v)

    @field_validator("rms")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        return check_rm_names(v)

    @field_validator("primary_rm")
    @classmethod
    def _registered_primary(cls, v: str) -> str:
        return check_rm_names([v])[0]


class AblationConfig(Strict):
    """Cost: one pass over the sampled test pairs per condition, a condition being one RM x scorer x
    p x mode x set, or one random control draw of it (per control kind), plus 4 size-matched sets
    per (RM, scorer, p, mode); empty and repeated sets are free. At `claim_p` each of the five sets
    gets `random_draws` (mean mode) or `zero_draws` (zero mode) draws per control kind, so with the
    defaults 5 x (1 + 2 x 20) + 4 = 209 mean conditions and 5 x (1 + 2 x 3) + 4 = 39 zero ones; each
    other p of the sweep adds |sweep_sets| x (1 + 2 x sweep_draws) per mode. The random controls run
    on the HH test sets only (the XSTest sets get the sets themselves). A condition costs about 0.7
    of a forward (`rmtension.judges.ablate`); benchmarks/RESULTS-ablation.md has measured times.
    """

    enabled: bool = True
    """Run the ablation stage in `rmtension study`."""
    rms: list[str] | None = Field(default_factory=lambda: ["mixed"])
    """Registered RM names whose scored RMs are ablated (the mixed RM holds both objectives' neurons);
    None: every RM the neuron stage scored."""
    scorers: list[Scorer] = Field(default_factory=lambda: ["mean_act"])
    """Scorers whose sets are ablated (mean_act is the paper's). Each one multiplies the cost."""
    ps: list[float] | None = None
    """Top-p sweep; None: all of `neurons.ps`. Every p must be one of `neurons.ps`."""
    sets: list[SetName] = Field(default_factory=lambda: list(ALL_SETS))
    """Neuron sets to ablate; each also gets its matched random controls."""
    sweep_sets: list[SetName] | None = None
    """Sets ablated at every p of the sweep; the rest of `sets` only at `claim_p`. None: every set at every p."""
    modes: list[Literal["zero", "mean"]] = Field(default_factory=lambda: ["mean", "zero"])
    """mean: set activations to their mean over the set's objective's scoring data (the claims' headline);
    zero: to 0 (the paper's), reported beside it."""
    controls: list[Literal["layer", "magnitude"]] = Field(default_factory=lambda: ["layer", "magnitude"])
    """Kinds of random control (`rmtension.ablation.controls`): the same number of neurons per layer, or per
    layer and mean-|activation| decile (needs the mean_act scores). Each kind has its own draws and rows."""
    random_draws: int = Field(20, ge=1)
    """Random draws per control kind for every condition that carries a claim: the sets at `claim_p`
    in mean mode. The set is tested against the per-pair mean over the draws."""
    zero_draws: int = Field(3, ge=1)
    """Draws per control kind for zero ablation at `claim_p`."""
    sweep_draws: int = Field(1, ge=0)
    """Draws per control kind at the sweep's other p (either mode), and for the claim sets that no claim
    compares with their controls; 0: those sets run without controls."""
    claim_ps: list[float] | None = None
    """Top-p percentages that each decide the claims (the paper's 10, 20 and 30 in configs/neurons.yaml);
    None: `claim_p` alone. Every one gets the claim draws."""
    claim_mode: Literal["mean", "zero"] = "mean"
    """The ablation mode whose rows decide the claims and get `random_draws`; the other mode is reported
    beside it with `beside_draws` draws."""
    beside_draws: int | None = Field(None, ge=0)
    """Draws per control kind at a claim p in the mode beside `claim_mode`; None: `zero_draws` (the
    default claim mode is mean, zero mode beside it). 0: the sets alone, against the clean model."""
    positive_control: Scorer | None = None
    """A scorer whose top sets, ablated like the claim sets and compared with the claim sets' own random
    controls (the same sizes), show that the pipeline can reach a claim's margin: the top attribution
    neurons, selected on the scoring pairs (train split), disjoint from the test pairs. A claim whose
    positive control does not reach its margin is "not testable here" (`rmtension.ablation.claims`)."""
    own_objective: bool = False
    """Each single-objective RM is ablated on its own objective only: its own top set (helpful_top in the
    helpful RM) on its own test set. The mixed RM keeps `sets` and `test_sets`."""
    relative_margins: dict[float, float] | None = None
    """Margins in the paper's unit, the relative accuracy drop (acc_reference - acc_set) / acc_clean, per
    claim p; when set, the neuron-ablation claims are read in that unit at every p of `claim_ps` (every
    part must hold: an intersection-union test) instead of in SDs of the margin
    (`rmtension.ablation.relative`); every claim p needs its margin. Fixed in the config before the run."""
    influence_matched: bool = True
    """Also compare `shared` with an equally large set of helpful_only (harmless_only) neurons,
    cutting the larger of the two to a random subset: a size-matched test of the shared
    neurons' influence (rows `shared@helpful_only` and `helpful_only@shared`)."""
    test_sets: list[str] = Field(default_factory=lambda: ["helpful", "harmless"])
    """Test sets (names in the data bundle) on which accuracy and margin are measured; the XSTest sets
    are added when `data.xstest_path` is set (the sets only, without random controls)."""
    max_test_pairs: int | None = Field(64, ge=2)
    """Cap on pairs per test set (a seeded sample); None: all."""
    batch_size: int = Field(32, ge=1)
    """Pairs per forward batch."""
    stack: int | None = Field(None, ge=1)
    """Conditions stacked in one forward (rows = stack x 2 x batch_size); None: 1 on a CPU, 8 on a GPU
    (`rmtension.judges.ablate.STACK`)."""
    bf16: bool | Literal["auto"] = "auto"
    """bf16 autocast for the forwards (clean and ablated alike); auto: on a GPU that supports it and on
    CPUs with native bf16 (AVX-512 BF16, AMX), else float32, which is about 4x faster on an AVX2 CPU."""
    bootstrap: int = Field(1000, ge=100)
    """Bootstrap resamples of the test pairs for every CI."""
    ci: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the CIs."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Significance level the claims use."""
    claim_p: float = 5.0
    """Top-p (%) whose results decide the claims (the nearest p run if absent)."""
    seed: int = 0
    """Seed of the test sample, random controls and bootstrap."""

    @field_validator("ps")
    @classmethod
    def _valid_ps(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else _check_ps(v)

    @field_validator("rms")
    @classmethod
    def _registered(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else check_rm_names(v)

    @field_validator("claim_ps")
    @classmethod
    def _valid_claim_ps(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else _check_ps(v)

    @field_validator("relative_margins")
    @classmethod
    def _valid_margins(cls, v: dict[float, float] | None) -> dict[float, float] | None:
        if v is not None and any(not 0 < m < 1 for m in v.values()):
            raise ValueError(f"every relative margin must lie in (0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _margin_per_claim_p(self) -> AblationConfig:
        """A claim p without its margin would be judged against NaN (`rmtension.ablation.relative`)."""
        if self.relative_margins is not None:
            have = {p_key(p) for p in self.relative_margins}
            missing = [p for p in self.claim_points() if p_key(p) not in have]
            if missing:
                raise ValueError(f"relative_margins has no margin for claim p {missing}")
        return self

    def claim_points(self) -> list[float]:
        """The top-p percentages that decide the claims."""
        return list(self.claim_ps) if self.claim_ps else [self.claim_p]

    def draws_beside(self) -> int:
        """Draws per control kind in the mode beside `claim_mode` at a claim p."""
        return self.zero_draws if self.beside_draws is None else self.beside_draws


def p_key(p: float) -> str:
    """JSON key of a percentage: 5.0 -> '5', 0.5 -> '0.5'."""
    return f"{float(p):g}"


def check_neuron_sections(ncfg: NeuronsConfig | None, acfg: AblationConfig | None) -> None:
    """Reject ablation settings the neuron stage cannot serve, before any work is done."""
    if acfg is None or not acfg.enabled:
        return
    if ncfg is None or not ncfg.enabled:
        raise ConfigError("ablation: needs the neuron sets; add a `neurons:` section (with enabled: true)")
    missing = [p for p in acfg.ps or [] if p_key(p) not in {p_key(q) for q in ncfg.ps}]
    if missing:
        raise ConfigError(f"ablation.ps: {missing} not among neurons.ps {ncfg.ps}")
    if acfg.rms is not None and not set(acfg.rms) & set(ncfg.rms):
        raise ConfigError(f"ablation.rms: none of {acfg.rms} is scored (neurons.rms is {ncfg.rms})")
    unscored = [s for s in acfg.scorers if s not in ncfg.scorers]
    if unscored:
        raise ConfigError(f"ablation.scorers: {unscored} not among neurons.scorers {ncfg.scorers}")
    if "mean" in acfg.modes and "mean_act" not in ncfg.scorers:
        raise ConfigError("ablation.modes: 'mean' needs the mean_act scores; add mean_act to neurons.scorers")


def claim_settings(run_dir: Path) -> dict:
    """The claim settings saved in config.yaml (defaults where the run has no such section)."""
    raw = read_config(run_dir)
    n = NeuronsConfig.model_validate(raw.get("neurons") or {})
    a = AblationConfig.model_validate(raw.get("ablation") or {})
    return {"p": a.claim_p, "scorer": a.scorers[0], "alpha": a.alpha, "rm": n.primary_rm, "ci": a.ci}
