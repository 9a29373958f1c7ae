"""Work the loop's arms would repeat on π_0, done once: π_0's draws and the gold's scores.

Within a seed every arm starts from the same π_0 and draws with the same seeds, so π_0's held-out
replies (round 0's measure) and round 1's pairs and best-of-n draws are the same in every arm; the
greedy XSTest and capability replies are the same in every seed too, and so are the gold's scores
of the same texts (D_0's among them). `KeptPolicy` keeps a draw while its weights are π_0's (checked
against the reference before every draw: a distilled, interpolated or reloaded policy draws
afresh) and hands the same call's result back to the next arm; `kept_gold` does the same for gold
calls. Both return exactly what the call would have computed (the same inputs to the same
deterministic function), so the loop's files do not change; only the time does. One `kept` dict
serves one π_0 (one `run_loop`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from rmtension.data.types import Turn
from rmtension.loop.measure import GoldFn, changed_params
from rmtension.policy.sampling import Policy, Sampled


def same_weights(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> bool:
    """True when every parameter of `model` equals (bit for bit) the reference's of the same name, and
    the reference holds no others."""
    return len(dict(model.named_parameters())) == len(reference) and not changed_params(model, reference)


@dataclass
class KeptPolicy(Policy):
    """A `Policy` whose draws are kept in `kept` (shared by the arms of one seed) while its weights
    equal `reference` (π_0's); any other weights draw as a plain `Policy` and keep nothing."""

    reference: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    kept: dict[tuple, Sampled] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, policy: Policy, reference: dict[str, torch.Tensor], kept: dict[tuple, Sampled]) -> KeptPolicy:
        """`policy` (its fields as they are) keeping its π_0 draws in `kept`; `reference`: π_0's
        parameters by name."""
        own = {f.name: getattr(policy, f.name) for f in fields(Policy) if f.init}
        return cls(**own, reference=reference, kept=kept)

    def draw(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        seed: int | None = 0,
        batch_size: int = 32,
    ) -> Sampled:
        args = (prompts, n, max_new_tokens, temperature, seed, batch_size)
        if not same_weights(self.model, self.reference):
            return super().draw(*args)
        key = (
            tuple(self.stop_ids),
            self.pad_id,
            tuple(tuple(p) for p in prompts),
            n,
            max_new_tokens,
            float(temperature),
            seed,
            batch_size,
            self.draw_bf16,
        )
        if key not in self.kept:
            self.kept[key] = super().draw(*args)
        return copy.deepcopy(self.kept[key])


def kept_gold(gold: GoldFn, kept: dict[tuple, np.ndarray]) -> GoldFn:
    """`gold` with each call's scores kept in `kept` by its (contexts, replies): a repeated call (the
    same texts in the same order, so the same batches) returns a copy of the first one's scores."""

    def score(contexts: Sequence[tuple[Turn, ...]], replies: Sequence[str]) -> np.ndarray:
        key = (tuple(tuple(c) for c in contexts), tuple(replies))
        if key not in kept:
            kept[key] = np.asarray(gold(contexts, replies))
        return kept[key].copy()

    return score
