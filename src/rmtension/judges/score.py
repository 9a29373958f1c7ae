"""Score pairs with a judge: the study's own forward (`rmtension.model.forward.PairForward`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rmtension.data.types import Pair
from rmtension.judges.load import Judge
from rmtension.model.encode import EncodedPairs, reply_lengths
from rmtension.model.forward import PairForward


@dataclass
class PairRewards:
    """A judge's rewards for chosen and rejected of each pair, sign applied (higher is better)."""

    pair_ids: list[str]
    subsets: list[str]
    chosen: np.ndarray
    """[N] float64."""
    rejected: np.ndarray
    """[N] float64."""
    lengths: np.ndarray
    """[N, 2] whole reply lengths in the judge's tokenizer tokens (chosen, rejected)."""

    @property
    def margins(self) -> np.ndarray:
        """[N] r_chosen - r_rejected."""
        return self.chosen - self.rejected

    def frame(self) -> pd.DataFrame:
        """The study's per-pair score file (`eval/<rm>/seed<k>/<test>.csv`): pair_id, subset, r_chosen, r_rejected."""
        return pd.DataFrame(
            {
                "pair_id": self.pair_ids,
                "subset": self.subsets,
                "r_chosen": self.chosen,
                "r_rejected": self.rejected,
            }
        )


def score_encoded(judge: Judge, enc: EncodedPairs, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """([N] chosen, [N] rejected) rewards of `enc`, times the judge's sign; fp32 forward."""
    with PairForward(judge.model, judge.tokenizer.pad_token_id, bf16=False) as fwd:
        r_c, r_r = fwd.score(enc, batch_size)
    return judge.sign * r_c, judge.sign * r_r


def score_pairs(judge: Judge, pairs: Sequence[Pair], batch_size: int = 16) -> PairRewards:
    """Every pair's rewards and reply lengths under `judge`."""
    pairs = list(pairs)
    enc = judge.encode(pairs)
    r_c, r_r = score_encoded(judge, enc, batch_size)
    whole, _ = reply_lengths(pairs, enc, judge.tokenizer)
    return PairRewards([p.pair_id for p in pairs], [p.subset for p in pairs], r_c, r_r, whole)
