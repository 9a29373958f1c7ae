"""Config of the combine stage: the ways to turn two objectives into one judge, and their grids."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rmtension.strict import Strict
from rmtension.model.kinds import REUSED_RATIOS

METHODS = ("reward_interp", "two_head_dial", "gated", "weight_interp", "data_ratio")
"""Every combination method (`rmtension.combine.stage`): a dial over the separate helpful and harmless
RMs' standardised rewards, the same dial over `two_head`'s two heads, a prompt-conditioned gate over
those heads, a linear path between the two RMs' weights, and mixed RMs trained at a range of helpful
shares of their data."""
NEEDS_TWO_HEAD = ("two_head_dial", "gated")


class CombineConfig(Strict):
    methods: list[Literal["reward_interp", "two_head_dial", "gated", "weight_interp", "data_ratio"]] = Field(
        default_factory=lambda: list(METHODS)
    )
    """Methods on the frontier (`combine/frontier.csv`)."""
    two_head: bool = True
    """Train `two_head`: one backbone on the mixed RM's data and seeds with a score head per objective,
    each pair training only its own objective's head (`rmtension.model.heads`), evaluated as the RMs
    `two_head:helpful` and `two_head:harmless`. Needed by two_head_dial and gated."""
    grid: int = Field(11, ge=2)
    """Dial values w = 0, 1/(grid-1), ..., 1: the helpful weight of the fixed dials, and lambda of
    the weight interpolation (theta = lambda theta_helpful + (1 - lambda) theta_harmless)."""
    ratios: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """data_ratio: helpful shares of the sweep's mixed RMs, all of the matched training size. 0, 0.5 and 1
    are the harmless, mixed and helpful RMs; each other share trains `mixed_r<r>` per seed
    (`rmtension.data.ratios`)."""
    gate_steps: int = Field(300, ge=1)
    """Full-batch Adam steps of the gate's logistic regression."""
    gate_lr: float = Field(0.05, gt=0)
    """Adam learning rate of the gate."""
    gate_l2: float = Field(1e-3, ge=0)
    """L2 penalty on the gate's weights (not its bias), per training prompt."""
    bootstrap: int = Field(1000, ge=100)
    """Two-level bootstrap replicates (seeds, then pairs) of every frontier point's CIs."""
    batch_size: int = Field(64, ge=1)
    """Pairs per forward pass when scoring interpolated weights."""

    @model_validator(mode="after")
    def _two_head_for_its_methods(self) -> CombineConfig:
        needs = [m for m in self.methods if m in NEEDS_TWO_HEAD]
        if needs and not self.two_head:
            raise ValueError(f"combine.methods {needs} use the two-head RM: set combine.two_head: true")
        return self

    @field_validator("ratios")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= r <= 1.0 for r in v):
            raise ValueError("every share must lie in [0, 1]")
        return sorted(set(float(r) for r in v))

    def trained_ratios(self) -> list[float]:
        """The shares that train their own RM: data_ratio's, less those the study trains anyway."""

        return [r for r in self.ratios if r not in REUSED_RATIOS] if "data_ratio" in self.methods else []

    def dials(self) -> list[float]:
        """The grid's dial values, 0 to 1."""
        return [i / (self.grid - 1) for i in range(self.grid)]
