"""The simulated reviewer: label probabilities, flips, noise seeds and shortcuts, on hand-worked values."""

import math

import numpy as np
import pytest
import torch

from rmtension.loop.reviewer import (
    Shortcut,
    SimulatedReviewer,
    draw_labels,
    fit_reviewer,
    label_log_likelihood,
    label_prob,
    preference_prob,
    shortcut_bias,
)
from rmtension.policy.sampling import sample
from tiny import tiny_causal_lm


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_preference_prob_on_hand_worked_scores():
    p = preference_prob(np.array([1.0, 0.0, -2.0, 3.0]), np.array([0.0, 0.0, 0.0, 3.5]), beta=2.0)
    expected = [sigmoid(2.0), 0.5, sigmoid(-4.0), sigmoid(-1.0)]  # 0.8808, 0.5, 0.0180, 0.2689
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert preference_prob(np.array([5.0]), np.array([1.0]), beta=0.0)[0] == 0.5  # β = 0: a coin
    # no overflow far out in the tails
    np.testing.assert_allclose(preference_prob(np.array([1e4, -1e4]), np.zeros(2), 1.0), [1.0, 0.0])


def test_draw_labels_from_given_uniforms():
    prob = np.array([0.9, 0.9, 0.2, 0.2])
    a, flipped = draw_labels(prob, 0.25, np.array([0.5, 0.95, 0.1, 0.3]), np.array([0.9, 0.1, 0.3, 0.2]))
    # prefers a: 0.5<0.9 yes, 0.95<0.9 no, 0.1<0.2 yes, 0.3<0.2 no; flips: 0.9,0.1,0.3,0.2 < 0.25 -> F,T,F,T
    assert flipped.tolist() == [False, True, False, True]
    assert a.tolist() == [True, True, True, True]


def test_flip_rate_and_label_rate_within_binomial_intervals():
    n, eps, beta = 40_000, 0.25, 1.5
    gold_a, gold_b = np.full(n, 1.0), np.full(n, 0.0)
    labels = SimulatedReviewer(beta=beta, epsilon=eps, seed=3).label(["x"] * n, ["y"] * n, gold_a, gold_b)
    z = 3.29  # two-sided 99.9%
    assert abs(labels.flip_rate - eps) <= z * math.sqrt(eps * (1 - eps) / n)
    p = sigmoid(beta * 1.0)
    p_label = p * (1 - eps) + (1 - p) * eps  # preferred then kept, or not preferred then flipped
    assert abs(labels.a_preferred.mean() - p_label) <= z * math.sqrt(p_label * (1 - p_label) / n)
    np.testing.assert_allclose(labels.prob_a, p)
    none = SimulatedReviewer(beta=beta, epsilon=0.0, seed=3).label(["x"] * n, ["y"] * n, gold_a, gold_b)
    assert none.flip_rate == 0.0


def test_label_noise_ignores_the_policy_seed_and_global_generators():
    reviewer = SimulatedReviewer(beta=1.0, epsilon=0.25, seed=7)
    rng = np.random.default_rng(0)
    gold_a, gold_b = rng.normal(size=64), rng.normal(size=64)
    replies = ["a reply"] * 64
    model = tiny_causal_lm("llama")
    runs = []
    for policy_seed in (0, 1):
        torch.manual_seed(policy_seed)
        np.random.seed(policy_seed)
        drawn = sample(model, [[5, 6, 7]], n=4, max_new_tokens=6, stop_ids=[1], seed=policy_seed)
        runs.append((drawn.tokens, reviewer.label(replies, replies, gold_a, gold_b, stream=2)))
    assert runs[0][0] != runs[1][0]  # the policy's draws differ with its seed ...
    assert np.array_equal(runs[0][1].a_preferred, runs[1][1].a_preferred)  # ... the labels do not
    assert np.array_equal(runs[0][1].flipped, runs[1][1].flipped)
    other_seed = SimulatedReviewer(beta=1.0, epsilon=0.25, seed=8).label(replies, replies, gold_a, gold_b, 2)
    other_stream = reviewer.label(replies, replies, gold_a, gold_b, stream=3)
    assert not np.array_equal(other_seed.flipped, runs[0][1].flipped)
    assert not np.array_equal(other_stream.flipped, runs[0][1].flipped)


def test_shortcut_bias_on_hand_written_replies():
    replies = ["I can't help with that.", "Maybe it is two words or so.", "Sure: the answer is 4."]
    # words: 5, 7, 5; refuses: 1, 0, 0; hedges: 0, 1, 0
    np.testing.assert_array_equal(shortcut_bias(replies, [Shortcut("length", -0.5)]), [-2.5, -3.5, -2.5])
    np.testing.assert_array_equal(shortcut_bias(replies, [Shortcut("refusal", 2.0)]), [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(shortcut_bias(replies, [Shortcut("confidence", 1.5)]), [0.0, -1.5, 0.0])
    both = [Shortcut("length", 0.1), Shortcut("refusal", 1.0)]
    np.testing.assert_allclose(shortcut_bias(replies, both), [0.5 + 1.0, 0.7, 0.5])
    np.testing.assert_array_equal(shortcut_bias(replies, []), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="not one of"):
        Shortcut("politeness", 1.0)


def test_shortcut_moves_the_label_probability_by_its_bias():
    reviewer = SimulatedReviewer(beta=2.0, epsilon=0.0, shortcuts=(Shortcut("length", 0.25),))
    labels = reviewer.label(["one two three four"], ["one"], np.array([0.0]), np.array([0.5]))
    # g'(a) = 0 + 0.25 * 4 = 1.0, g'(b) = 0.5 + 0.25 * 1 = 0.75
    assert labels.prob_a[0] == pytest.approx(sigmoid(2.0 * 0.25), rel=1e-12)
    assert (labels.bias_a[0], labels.bias_b[0]) == (1.0, 0.25)


def test_zero_weight_shortcut_equals_the_unbiased_reviewer_exactly():
    rng = np.random.default_rng(1)
    n = 200
    gold_a, gold_b = rng.normal(size=n), rng.normal(size=n)
    replies_a = ["I can't help with that." if i % 3 else "Perhaps it works, perhaps not." for i in range(n)]
    replies_b = ["word " * (i % 17) for i in range(n)]
    plain = SimulatedReviewer(beta=1.3, epsilon=0.2, seed=5).label(replies_a, replies_b, gold_a, gold_b, 1)
    for kind in ("length", "refusal", "confidence"):
        zero = SimulatedReviewer(beta=1.3, epsilon=0.2, seed=5, shortcuts=(Shortcut(kind, 0.0),))
        got = zero.label(replies_a, replies_b, gold_a, gold_b, 1)
        assert np.array_equal(got.prob_a, plain.prob_a) and np.array_equal(got.a_preferred, plain.a_preferred)
    biased = SimulatedReviewer(beta=1.3, epsilon=0.2, seed=5, shortcuts=(Shortcut("refusal", 3.0),))
    assert not np.array_equal(biased.label(replies_a, replies_b, gold_a, gold_b, 1).prob_a, plain.prob_a)


def test_shortcut_changed_counts_the_labels_the_bias_turned():
    """The labels a shortcut changed are those where the biased and the unbiased reviewer, with the same
    seed and stream (the same draws), disagree; none without the bias, none at weight 0."""
    rng = np.random.default_rng(2)
    n = 300
    gold_a, gold_b = rng.normal(size=n), rng.normal(size=n)
    replies_a = ["I can't help with that." if i % 4 == 0 else "Sure, here it is." for i in range(n)]
    replies_b = ["I can't help with that." if i % 4 == 1 else "Sure, it is done." for i in range(n)]
    replies_a[1::4] = ["I'm sorry, I can't do that."] * len(replies_a[1::4])  # both refuse: equal biases
    plain = SimulatedReviewer(beta=1.0, epsilon=0.25, seed=9).label(replies_a, replies_b, gold_a, gold_b, 3)
    assert not plain.shortcut_changed.any()
    zero = SimulatedReviewer(beta=1.0, epsilon=0.25, seed=9, shortcuts=(Shortcut("refusal", 0.0),))
    assert not zero.label(replies_a, replies_b, gold_a, gold_b, 3).shortcut_changed.any()
    biased = SimulatedReviewer(beta=1.0, epsilon=0.25, seed=9, shortcuts=(Shortcut("refusal", 2.0),))
    got = biased.label(replies_a, replies_b, gold_a, gold_b, 3)
    expected = got.a_preferred != plain.a_preferred
    assert np.array_equal(got.shortcut_changed, expected) and expected.any()
    refusing = np.arange(n) % 4 == 0  # a refuses, b does not; where both refuse or neither, the biases cancel
    assert not got.shortcut_changed[~refusing].any() and (got.bias_a[1::4] == got.bias_b[1::4]).all()
    assert (got.bias_a[1::4] == 2.0).all()
    # a changed label went the bias's way: toward the refusing reply a
    assert got.a_preferred[got.shortcut_changed & ~got.flipped].all()
    assert not got.a_preferred[got.shortcut_changed & got.flipped].any()


def test_reviewer_rejects_bad_parameters_and_ragged_input():
    with pytest.raises(ValueError, match="epsilon"):
        SimulatedReviewer(epsilon=0.6)
    with pytest.raises(ValueError, match="beta"):
        SimulatedReviewer(beta=-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        SimulatedReviewer().label(["a"], ["b", "c"], np.zeros(1), np.zeros(1))


def test_label_likelihood_by_hand():
    # β = 1, ε = 0.1: Δ = 0 -> 0.1 + 0.8 · 1/2 = 0.5; Δ = ln 3 -> σ = 3/4 -> 0.1 + 0.8 · 3/4 = 0.7
    delta = np.array([0.0, math.log(3.0)])
    np.testing.assert_allclose(label_prob(delta, 1.0, 0.1), [0.5, 0.7])
    ll = label_log_likelihood(delta, np.array([True, False]), 1.0, 0.1)
    assert ll == pytest.approx(math.log(0.5) + math.log(0.3))


def test_fit_reviewer_recovers_a_simulated_reviewers_beta_and_epsilon():
    """Labels of a reviewer with β = 2, ε = 0.2 on 20,000 pairs; over 5 seeds the fit's spread was
    about 0.1 in β and 0.005 in ε, so the bounds below are about 4 standard deviations."""
    rng = np.random.default_rng(0)
    n = 20_000
    delta = 1.5 * rng.normal(size=n)
    labels = SimulatedReviewer(beta=2.0, epsilon=0.2, seed=0).label(["x"] * n, ["y"] * n, delta, np.zeros(n))
    fit = fit_reviewer(delta, labels.a_preferred)
    assert abs(fit.beta - 2.0) < 0.4 and abs(fit.epsilon - 0.2) < 0.025
    assert fit.log_likelihood >= label_log_likelihood(
        delta, labels.a_preferred, 2.0, 0.2
    )  # it is the maximum
    coin = fit_reviewer(delta, rng.random(n) < 0.5)  # labels that ignore the gold difference
    assert coin.beta < 0.1 or coin.epsilon > 0.45
    with pytest.raises(ValueError):
        fit_reviewer(np.zeros(2), np.zeros(3, dtype=bool))
