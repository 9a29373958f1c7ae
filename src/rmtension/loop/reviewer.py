"""Simulated reviewers: labels of a pair (a, b) drawn from gold scores, with noise and shortcuts.

The synthetic setup of Gao et al. (2022, "Scaling Laws for Reward Model Overoptimization") and
AlpacaFarm (Dubois et al. 2023): a gold judge plays the humans, and a reviewer turns its scores g
into a preference label

    P(a preferred) = σ(β · (g'(a) − g'(b))),    g'(y) = g(y) + bias(y),

then flips the label with probability ε (AlpacaFarm flips 25% to match the variability of human
labels). `bias` is the sum of the reviewer's shortcuts (`shortcut_bias`), each a weight times a
feature of the reply text:

    length       weight × words in the reply (whitespace-separated words, not tokens: a reviewer
                 reads words, and the same weight then means the same for any policy's tokenizer);
                 a negative weight prefers shorter replies
    refusal      weight × refuses(reply)  (1 when the reply refuses, `rmtension.loop.detectors`)
    confidence   −weight × hedges(reply)  (hedging costs `weight`)

A shortcut of weight 0 adds exactly 0.0, so its labels equal the unbiased reviewer's bit for bit.

Label noise has its own random stream, `np.random.default_rng([NOISE_TAG, seed, stream])`: it
depends only on the reviewer's seed and the caller's `stream` (e.g. the round), never on the
policy's seed or on any global generator, and a resumed loop redraws the same labels.

`fit_reviewer` goes the other way: from labels of pairs whose gold difference is known (a real
team's judgments on the comparison bench), the maximum-likelihood β and ε, so that a simulated
reviewer can imitate that team.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rmtension.loop.detectors import hedges, refuses

SHORTCUT_KINDS = ("length", "refusal", "confidence")
NOISE_TAG = 0x5245_5649_4557  # "REVIEW": keeps the reviewer's streams apart from any other seeded with `seed`


@dataclass(frozen=True)
class Shortcut:
    """A bias a reviewer adds to the gold score before labelling (see the module docstring)."""

    kind: str
    """length | refusal | confidence"""
    weight: float
    """Gold-score units per word (length), for refusing (refusal), or lost by hedging (confidence)."""

    def __post_init__(self) -> None:
        if self.kind not in SHORTCUT_KINDS:
            raise ValueError(f"shortcut kind {self.kind!r} is not one of {', '.join(SHORTCUT_KINDS)}")


def word_count(reply: str) -> int:
    """Whitespace-separated words: the `length` shortcut's feature."""
    return len(reply.split())


def shortcut_feature(kind: str, reply: str) -> float:
    """The feature a shortcut multiplies by its weight: words, refuses (0/1), minus hedges (0/−1)."""
    if kind == "length":
        return float(word_count(reply))
    if kind == "refusal":
        return float(refuses(reply))
    if kind == "confidence":
        return -float(hedges(reply))
    raise ValueError(f"shortcut kind {kind!r} is not one of {', '.join(SHORTCUT_KINDS)}")


def shortcut_bias(replies: Sequence[str], shortcuts: Sequence[Shortcut]) -> np.ndarray:
    """[N] replies -> [N] float64: Σ_s weight_s · feature_s(reply); zeros without shortcuts."""
    bias = np.zeros(len(replies), dtype=np.float64)
    for s in shortcuts:
        bias += s.weight * np.array([shortcut_feature(s.kind, r) for r in replies], dtype=np.float64)
    return bias


def preference_prob(gold_a: np.ndarray, gold_b: np.ndarray, beta: float) -> np.ndarray:
    """[N], [N] scores -> [N] P(a preferred) = σ(β · (g_a − g_b)), float64.

    Computed as (1 + tanh(x / 2)) / 2, which equals the logistic σ(x) without overflow for large |x|.
    """
    x = beta * (np.asarray(gold_a, dtype=np.float64) - np.asarray(gold_b, dtype=np.float64))
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def draw_labels(
    prob_a: np.ndarray, epsilon: float, u_prefer: np.ndarray, u_flip: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[N] P(a preferred), flip probability ε, two [N] uniforms in [0, 1) -> ([N] a preferred, [N] flipped).

    The reviewer prefers a when u_prefer < P(a); the label then flips when u_flip < ε.
    """
    prefer = np.asarray(u_prefer) < np.asarray(prob_a)
    flipped = np.asarray(u_flip) < epsilon
    return prefer ^ flipped, flipped


@dataclass
class Labels:
    """A reviewer's labels of N pairs (a_i, b_i)."""

    a_preferred: np.ndarray
    """[N] bool: the label (after flips)."""
    prob_a: np.ndarray
    """[N] float64: P(a preferred) before flips, shortcut bias included."""
    flipped: np.ndarray
    """[N] bool: the label was flipped (probability ε)."""
    bias_a: np.ndarray
    """[N] float64: the shortcut bias added to a's gold score."""
    bias_b: np.ndarray
    """[N] float64: the same for b."""
    shortcut_changed: np.ndarray
    """[N] bool: the label differs from the one the same draws give without the shortcuts' bias, in a
    pair whose two replies get different biases (all False without shortcuts): the labels the
    shortcuts changed."""

    @property
    def flip_rate(self) -> float:
        """The measured fraction of flipped labels (its expectation is ε)."""
        return float(self.flipped.mean()) if len(self.flipped) else float("nan")


@dataclass(frozen=True)
class SimulatedReviewer:
    """Labels pairs from gold scores: σ(β Δg') then a flip with probability ε (module docstring)."""

    beta: float = 1.0
    """Sharpness: P(a preferred) = σ(β (g'(a) − g'(b))); large β is a near-deterministic reviewer."""
    epsilon: float = 0.25
    """Flip probability; AlpacaFarm's 25% matches the variability of human labels."""
    seed: int = 0
    """Seed of the label noise, independent of the policy's."""
    shortcuts: tuple[Shortcut, ...] = field(default_factory=tuple)
    """Biases added to the gold score before labelling."""

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if not 0 <= self.epsilon <= 0.5:
            raise ValueError(
                f"epsilon must be in [0, 0.5] (above 0.5 labels mostly contradict), got {self.epsilon}"
            )

    def noise(self, stream: int) -> np.random.Generator:
        """The label-noise generator of `stream` (e.g. a round): a function of (seed, stream) alone."""
        return np.random.default_rng([NOISE_TAG, self.seed, stream])

    def label(
        self,
        replies_a: Sequence[str],
        replies_b: Sequence[str],
        gold_a: np.ndarray,
        gold_b: np.ndarray,
        stream: int = 0,
    ) -> Labels:
        """N pairs: replies [N] and [N], their gold scores [N] and [N] -> `Labels`."""
        n = len(replies_a)
        if not (len(replies_b) == len(gold_a) == len(gold_b) == n):
            raise ValueError(
                f"replies and gold scores differ in length: {n}, {len(replies_b)}, {len(gold_a)}, {len(gold_b)}"
            )
        bias_a, bias_b = shortcut_bias(replies_a, self.shortcuts), shortcut_bias(replies_b, self.shortcuts)
        prob_a = preference_prob(
            np.asarray(gold_a, np.float64) + bias_a, np.asarray(gold_b, np.float64) + bias_b, self.beta
        )
        u = self.noise(stream).random((2, n))
        a_preferred, flipped = draw_labels(prob_a, self.epsilon, u[0], u[1])
        plain, _ = draw_labels(preference_prob(gold_a, gold_b, self.beta), self.epsilon, u[0], u[1])
        changed = (a_preferred != plain) & (bias_a != bias_b)  # equal biases cancel (up to rounding)
        return Labels(a_preferred, prob_a, flipped, bias_a, bias_b, changed)


def label_prob(delta: np.ndarray, beta: float, epsilon: float) -> np.ndarray:
    """[N] gold differences g'(a) − g'(b) -> [N] P(label says a) = ε + (1 − 2ε) σ(β Δ) (flips included)."""
    return epsilon + (1.0 - 2.0 * epsilon) * preference_prob(np.asarray(delta, np.float64), 0.0, beta)


def label_log_likelihood(delta: np.ndarray, a_preferred: np.ndarray, beta: float, epsilon: float) -> float:
    """Σ_i log P(label_i | Δ_i; β, ε) for [N] differences and [N] boolean labels."""
    p = np.clip(label_prob(delta, beta, epsilon), 1e-300, 1.0)
    q = np.clip(1.0 - label_prob(delta, beta, epsilon), 1e-300, 1.0)
    a = np.asarray(a_preferred, dtype=bool)
    return float(np.log(p[a]).sum() + np.log(q[~a]).sum())


@dataclass(frozen=True)
class FittedReviewer:
    """β and ε fitted by maximum likelihood to labels of pairs with known gold differences."""

    beta: float
    epsilon: float
    n: int
    log_likelihood: float


def fit_reviewer(delta: np.ndarray, a_preferred: np.ndarray, max_beta: float = 100.0) -> FittedReviewer:
    """The (β, ε) under which a simulated reviewer best imitates observed labels: [N] gold differences
    g(a) − g(b) and [N] boolean labels (e.g. a team's judgments on the comparison bench).

    Maximum likelihood of P(a) = ε + (1 − 2ε) σ(β Δ) over β in [0, max_beta], ε in [0, 0.5]
    (L-BFGS-B from β = 1, ε = 0.1). With labels that ignore Δ, β goes to 0 and ε is not identified.
    """
    from scipy.optimize import minimize

    delta, labels = np.asarray(delta, np.float64), np.asarray(a_preferred, dtype=bool)
    if len(delta) != len(labels) or not len(delta):
        raise ValueError(
            f"need equal, non-zero numbers of differences and labels, got {len(delta)} and {len(labels)}"
        )
    best = minimize(
        lambda x: -label_log_likelihood(delta, labels, x[0], x[1]) / len(delta),
        x0=np.array([1.0, 0.1]),
        method="L-BFGS-B",
        bounds=[(0.0, max_beta), (0.0, 0.5)],
    )
    beta, epsilon = (float(v) for v in best.x)
    return FittedReviewer(beta, epsilon, len(delta), label_log_likelihood(delta, labels, beta, epsilon))


def labels_file(labels) -> dict:
    """What a round's labels.json holds: the labels, the measured flip rate and, for a simulated
    reviewer, how many labels its shortcuts changed (`Labels.shortcut_changed`; people on the bench
    have no such count)."""
    out = {"a_preferred": labels.a_preferred.tolist(), "flip_rate": labels.flip_rate}
    if hasattr(labels, "shortcut_changed"):
        out["shortcut_changed"] = int(labels.shortcut_changed.sum())
    return out
