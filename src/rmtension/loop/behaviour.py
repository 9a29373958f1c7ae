"""What a policy's replies look like: the behaviour-drift measures of the steering loop.

Per set of replies: mean length in words (the `length` shortcut's unit), refusal and hedging rates
(`rmtension.loop.detectors`) and distinct-n (Li et al. 2016, "A Diversity-Promoting Objective
Function for Neural Conversation Models"): distinct n-grams over all n-grams of all replies, words
lower-cased and split on whitespace. A policy that collapses onto one safe reply has distinct-n near
0; one that never repeats itself has 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rmtension.loop.detectors import hedges, refuses
from rmtension.loop.reviewer import word_count


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams, pooled over `replies` (NaN when no reply has n words)."""
    grams = []
    for reply in replies:
        words = reply.lower().split()
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


@dataclass(frozen=True)
class Behaviour:
    """Behaviour measures of a set of replies."""

    n: int
    mean_words: float
    refusal_rate: float
    hedge_rate: float
    distinct_1: float
    distinct_2: float


def behaviour(replies: Sequence[str]) -> Behaviour:
    """The measures of `replies` (at least one)."""
    if not replies:
        raise ValueError("no replies to measure")
    return Behaviour(
        len(replies),
        float(np.mean([word_count(r) for r in replies])),
        float(np.mean([refuses(r) for r in replies])),
        float(np.mean([hedges(r) for r in replies])),
        distinct_n(replies, 1),
        distinct_n(replies, 2),
    )
