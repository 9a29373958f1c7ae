"""Behaviour-drift measures on hand-written replies."""

import math

import pytest

from rmtension.loop.behaviour import behaviour, distinct_n


def test_distinct_n_by_hand():
    replies = ["the cat sat", "The cat ran"]
    # unigrams: the cat sat the cat ran -> 4 distinct of 6; bigrams: (the cat) x2, (cat sat), (cat ran) -> 3 of 4
    assert distinct_n(replies, 1) == 4 / 6
    assert distinct_n(replies, 2) == 3 / 4
    assert distinct_n(["same reply"] * 5, 2) == 1 / 5
    assert math.isnan(distinct_n(["one"], 2))


def test_behaviour_by_hand():
    replies = [
        "I can't help with that.",  # 5 words, refuses
        "Maybe try the train.",  # 4 words, hedges
        "Take the train at nine.",  # 5 words
        "I'm sorry, but I cannot assist with that.",  # 8 words, refuses
    ]
    b = behaviour(replies)
    assert b.n == 4 and b.mean_words == (5 + 4 + 5 + 8) / 4
    assert b.refusal_rate == 0.5 and b.hedge_rate == 0.25
    assert b.distinct_1 == distinct_n(replies, 1) and 0 < b.distinct_1 < 1
    with pytest.raises(ValueError):
        behaviour([])
