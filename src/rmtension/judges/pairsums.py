"""Per-pair neuron sums: any split or resample of the scoring pairs is a re-aggregation, not a re-scoring.

Every score of `rmtension.judges.neurons` is a ratio of sums over pairs. For pair i the scoring
pass keeps its contributions, each [L, N]:

    act_chosen[i]     sum over the chosen reply's real tokens of the activation a
    act_rejected[i]   the same over the rejected reply's tokens
    fire[i]           number of tokens (both replies) that fire (a > 0; act(gate) > 0 for gated MLPs)
    sq_change[i]      sum over tokens of (a - a_base)^2
    attr[i]           sum over tokens of a * d(r_chosen - r_rejected)/da (rows are independent, so the
                      gradient of the batch's summed margin holds each pair's own gradient)

and its token counts t_c[i], t_r[i]. For weights w [R, P] (0/1 for a subset of the pairs, counts
for a bootstrap resample) the R scores are, with S_x = sum_i w_ri x_i:

    mean_act    = (S_act_chosen + S_act_rejected) / (S_t_c + S_t_r)
    fire_rate   = S_fire / (S_t_c + S_t_r)
    rms_change  = sqrt(S_sq_change / (S_t_c + S_t_r))
    attribution = S_attr / sum_i w_ri
    contrast    = S_act_chosen / S_t_c - S_act_rejected / S_t_r

which with w = 1 are exactly the full-data scores. All five scorers decompose, so every null of
`rmtension.neurons.nulls` is available for each of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

STATS = ("act_chosen", "act_rejected", "fire", "sq_change", "attr")
NEEDS = {
    "mean_act": ("act_chosen", "act_rejected"),
    "fire_rate": ("fire",),
    "rms_change": ("sq_change",),
    "attribution": ("attr",),
    "contrast": ("act_chosen", "act_rejected"),
}
"""scorer -> the per-pair sums it is computed from."""


def stats_for(scorers: Sequence[str]) -> list[str]:
    """The per-pair sums the `scorers` need, in `STATS` order."""
    need = {s for scorer in scorers for s in NEEDS[scorer]}
    return [s for s in STATS if s in need]


def scores_from_sums(
    sums: Mapping[str, torch.Tensor],
    chosen_tokens: torch.Tensor | float,
    rejected_tokens: torch.Tensor | float,
    pairs: torch.Tensor | float,
    scorers: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Scores from summed statistics (the formulas of the module docstring).

    sums: stat -> [..., L, N]; the counts are scalars or [...] (one per leading index). Empty
    denominators count as 1, so a score over no tokens is 0, never NaN.
    """

    def count(x: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(x, dtype=torch.float64).clamp(min=1.0)
        return t.reshape(*t.shape, 1, 1)  # broadcasts over [L, N]

    tc, tr = chosen_tokens, rejected_tokens
    tokens, chosen, rejected, n = (
        count(torch.as_tensor(tc) + torch.as_tensor(tr)),
        count(tc),
        count(tr),
        count(pairs),
    )
    out = {}
    for s in scorers:
        if s == "mean_act":
            out[s] = (sums["act_chosen"] + sums["act_rejected"]) / tokens
        elif s == "fire_rate":
            out[s] = sums["fire"] / tokens
        elif s == "rms_change":
            out[s] = (sums["sq_change"] / tokens).sqrt()
        elif s == "attribution":
            out[s] = sums["attr"] / n
        elif s == "contrast":
            out[s] = sums["act_chosen"] / chosen - sums["act_rejected"] / rejected
        else:
            raise ValueError(f"unknown scorer {s!r}")
    return out


@dataclass
class PairSums:
    """One model's per-pair sums on one data set, pairs in the data set's order."""

    stats: dict[str, torch.Tensor]
    """stat -> [P, L, N] (float64 while scoring, float32 on disk)."""
    chosen_tokens: torch.Tensor
    """[P] real tokens of each chosen reply."""
    rejected_tokens: torch.Tensor
    """[P] real tokens of each rejected reply."""

    @classmethod
    def zeros(cls, pairs: int, layers: int, neurons: int, stats: Sequence[str]) -> "PairSums":
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        return cls({s: z(pairs, layers, neurons) for s in stats}, z(pairs), z(pairs))

    @property
    def n_pairs(self) -> int:
        return len(self.chosen_tokens)

    def supports(self, scorer: str) -> bool:
        return all(s in self.stats for s in NEEDS[scorer])

    def aggregate(self, weights: torch.Tensor, scorers: Sequence[str]) -> dict[str, torch.Tensor]:
        """weights [R, P] (row r: how often each pair counts in sample r) -> scorer -> [R, L, N] float64."""
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.dim() != 2 or w.shape[1] != self.n_pairs:
            raise ValueError(f"weights must be [R, {self.n_pairs}], got {list(w.shape)}")
        need = stats_for(scorers)
        missing = [s for s in need if s not in self.stats]
        if missing:
            raise ValueError(f"no per-pair sums {missing} for scorers {list(scorers)}")
        sums = {}
        for s in need:
            x = self.stats[s]
            sums[s] = (w @ x.reshape(self.n_pairs, -1).double()).reshape(len(w), *x.shape[1:])
        return scores_from_sums(
            sums, w @ self.chosen_tokens.double(), w @ self.rejected_tokens.double(), w.sum(1), scorers
        )

    def scores(self, scorers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Full-data scores, scorer -> [L, N] float64 (weights all 1)."""
        return {s: v[0] for s, v in self.aggregate(torch.ones(1, self.n_pairs), scorers).items()}

    @classmethod
    def pool(cls, parts: Sequence["PairSums"]) -> "PairSums":
        """The pairs of several data sets as one (their order: `parts` in turn); stats they all have."""
        common = [s for s in STATS if all(s in p.stats for p in parts)]
        return cls(
            {s: torch.cat([p.stats[s] for p in parts]) for s in common},
            torch.cat([p.chosen_tokens for p in parts]),
            torch.cat([p.rejected_tokens for p in parts]),
        )

    def layers_from(self, first: int) -> "PairSums":
        """The sums of blocks `first`.. only ([P, L - first, N])."""
        return PairSums(
            {s: v[:, first:] for s, v in self.stats.items()}, self.chosen_tokens, self.rejected_tokens
        )

    def to_tensors(self, tag: str) -> dict[str, torch.Tensor]:
        """`<stat>/<tag>` [P, L, N] and `chosen_tokens/<tag>`, `rejected_tokens/<tag>` [P], float32."""
        out = {f"{s}/{tag}": v.float().contiguous() for s, v in self.stats.items()}
        out[f"chosen_tokens/{tag}"] = self.chosen_tokens.float()
        out[f"rejected_tokens/{tag}"] = self.rejected_tokens.float()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], tag: str) -> "PairSums":
        try:
            return cls(
                {s: tensors[f"{s}/{tag}"] for s in STATS if f"{s}/{tag}" in tensors},
                tensors[f"chosen_tokens/{tag}"],
                tensors[f"rejected_tokens/{tag}"],
            )
        except KeyError as e:
            raise KeyError(f"no per-pair sums for {tag!r} ({e})") from None
