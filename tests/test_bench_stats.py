"""Bench statistics against values worked out by hand from a small fixed set of stored judgments.

The fixture (task `help`, reviewers A, B, C; `v` = signed strength, `L` = reply shown on the left):

    item  A                  B                  C
    i1    reply_1 v+2 L1     reply_1 v+3 L0     reply_1 v+2 L1   <- same reply, seen on different sides
    i2    reply_0 v-1 L0     reply_1 v+1 L0     reply_0 v-2 L1
    i3    tie     v 0 L1     reply_0 v-3 L0
    i4    both_bad v0 L0     both_bad v0 L1     reply_1 v+1 L1
    i5    reply_0 v-1 L1                                           <- one judgment: not pairable

Category counts per item (reply_0, reply_1, tie, both_bad): i1 (0,3,0,0), i2 (2,1,0,0),
i3 (1,0,1,0), i4 (0,1,0,2), i5 (1,0,0,0).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from rmtension.bench.records import Judgment
from rmtension.bench.stats import (
    CHOICES,
    bench_stats,
    choice_counts,
    by_item,
    pairwise_agreement,
    strength_counts,
    task_stats,
)


def judge(item, reviewer, pick, strength, left, seconds, task="help", mode="helpful"):
    """pick: 0 / 1 (a reply), "tie" or "bad"."""
    preferred = pick if pick in (0, 1) else None
    return Judgment(
        item_id=item,
        task=task,
        mode=mode,
        reviewer=reviewer,
        guideline_version="v1",
        left=left,
        preferred=preferred,
        both_bad=pick == "bad",
        strength=strength if preferred is not None else 0,
        seconds=seconds,
    )


FIXTURE = [
    judge("i1", "A", 1, 2, left=1, seconds=10),
    judge("i1", "B", 1, 3, left=0, seconds=20),
    judge("i1", "C", 1, 2, left=1, seconds=30),
    judge("i2", "A", 0, 1, left=0, seconds=40),
    judge("i2", "B", 1, 1, left=0, seconds=50),
    judge("i2", "C", 0, 2, left=1, seconds=60),
    judge("i3", "A", "tie", 0, left=1, seconds=5),
    judge("i3", "B", 0, 3, left=0, seconds=15),
    judge("i4", "A", "bad", 0, left=0, seconds=25),
    judge("i4", "B", "bad", 0, left=1, seconds=35),
    judge("i4", "C", 1, 1, left=1, seconds=45),
    judge("i5", "A", 0, 1, left=1, seconds=55),
]


@pytest.fixture(scope="module")
def stats():
    return task_stats(FIXTURE, n_boot=300, seed=0)


def test_stored_judgments_map_to_the_reliability_matrix():
    """The items x categories matrix the package receives, in canonical reply order."""
    expected = [[0, 3, 0, 0], [2, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 2], [1, 0, 0, 0]]
    assert CHOICES == ("reply_0", "reply_1", "tie", "both_bad")
    np.testing.assert_array_equal(choice_counts(by_item(FIXTURE)), expected)
    # signed strengths -3..3 per item
    signed = strength_counts(by_item(FIXTURE))
    assert signed[0].tolist() == [0, 0, 0, 0, 0, 2, 1]  # i1: +2, +3, +2
    assert signed[1].tolist() == [0, 1, 1, 0, 1, 0, 0]  # i2: -1, +1, -2


def test_nominal_alpha_by_hand(stats):
    # Coincidence matrix o_ck = sum_u (n_uc n_uk - [c=k] n_uc) / (m_u - 1), over pairable items:
    #   i1 (m=3): o11 += (3*3-3)/2 = 3
    #   i2 (m=3): o00 += (2*2-2)/2 = 1; o01 = o10 += 2*1/2 = 1
    #   i3 (m=2): o02 = o20 += 1*1/1 = 1
    #   i4 (m=3): o13 = o31 += 1*2/2 = 1; o33 += (2*2-2)/2 = 1
    #   i5 (m=1): not pairable
    #        r0 r1 tie bad
    # r0   [ 1, 1, 1,  0 ]  n_0 = 3
    # r1   [ 1, 3, 0,  1 ]  n_1 = 5
    # tie  [ 1, 0, 0,  0 ]  n_2 = 1
    # bad  [ 0, 1, 0,  1 ]  n_3 = 2       n = 11
    # D_o = off-diagonal / n = 6/11; D_e = (n^2 - sum n_c^2) / (n(n-1)) = (121 - 39)/110 = 82/110
    # alpha = 1 - D_o/D_e = 1 - (6/11)(110/82) = 1 - 60/82 = 11/41
    assert stats.nominal_alpha.estimate == pytest.approx(11 / 41)
    assert stats.nominal_alpha.n == 5
    assert stats.nominal_alpha.low <= 11 / 41 <= stats.nominal_alpha.high


def test_ordinal_alpha_on_signed_strengths(stats):
    # Coincidences on -3..3 (same rule as above):
    #   i1 {+2,+2,+3}: o(+2,+2) += 1; o(+2,+3) = o(+3,+2) += 1
    #   i2 {-1,+1,-2}: each unordered pair 1*1/2 = 0.5 both ways
    #   i3 {0,-3}:     o(0,-3) = o(-3,0) += 1
    #   i4 {0,0,+1}:   o(0,0) += 1; o(0,+1) = o(+1,0) += 1
    o = {}

    def add(c, k, x):
        o[(c, k)] = o.get((c, k), 0) + x
        if c != k:
            o[(k, c)] = o.get((k, c), 0) + x

    add(2, 2, 1), add(2, 3, 1), add(-1, 1, 0.5), add(-1, -2, 0.5), add(1, -2, 0.5)
    add(0, -3, 1), add(0, 0, 1), add(0, 1, 1)
    values = range(-3, 4)
    n_v = {v: sum(x for (c, _), x in o.items() if c == v) for v in values}
    assert [n_v[v] for v in values] == [1, 1, 1, 3, 2, 2, 1]
    n = sum(n_v.values())

    def delta(c, k):  # Krippendorff's ordinal metric
        lo, hi = min(c, k), max(c, k)
        return (sum(n_v[g] for g in range(lo, hi + 1)) - (n_v[c] + n_v[k]) / 2) ** 2

    d_o = sum(x * delta(c, k) for (c, k), x in o.items()) / n
    d_e = sum(n_v[c] * n_v[k] * delta(c, k) for c in values for k in values) / (n * (n - 1))
    assert stats.ordinal_alpha.estimate == pytest.approx(1 - d_o / d_e)


def test_pairwise_agreement_and_rates(stats):
    # agreeing pairs / pairs: i1 3/3, i2 1/3 (A-C), i3 0/1, i4 1/3 (A-B) -> 5/10
    assert stats.pairwise_agreement == pytest.approx(0.5)
    assert stats.agreeing_pairs_of == 10
    assert stats.tie_rate == pytest.approx(1 / 12)
    assert stats.both_bad_rate == pytest.approx(2 / 12)
    # seconds sorted: 5 10 15 20 25 30 | 35 40 45 50 55 60 -> (30 + 35) / 2
    assert stats.median_seconds == pytest.approx(32.5)
    assert stats.judgments_per_reviewer == {"A": 5, "B": 4, "C": 3}
    assert (stats.judgments, stats.items) == (12, 5)


def test_left_share_with_wilson_interval(stats):
    # picks and whether the picked reply was on the left:
    #   i1 A yes (1 on left), B no (0 on left), C yes; i2 A yes, B no, C no; i3 B yes; i4 C yes; i5 A no
    # -> 5 of 9 picks went left
    k, n = 5, 9
    assert stats.left_share.estimate == pytest.approx(k / n)
    assert stats.left_share.n == n
    # Wilson's interval: the p with (k/n - p)^2 = z^2 p (1 - p) / n, solved as a quadratic in p.
    z = 1.959963984540054
    a, b, c = 1 + z * z / n, -(2 * k / n + z * z / n), (k / n) ** 2
    roots = sorted(
        ((-b - math.sqrt(b * b - 4 * a * c)) / (2 * a), (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
    )
    assert (stats.left_share.low, stats.left_share.high) == pytest.approx(tuple(roots))


def test_leave_one_out_majority_by_hand(stats):
    # A: i1 others {r1,r1} -> r1, agrees; i2 {r1,r0} tie; i3 {r0} -> r0, A said tie: disagrees;
    #    i4 {bad,r1} tie; i5 nobody -> 1 of 2 compared, 3 without a majority
    # B: i1 agrees; i2 {r0,r0} -> r0, B said r1; i3 {tie} -> tie, B said r0; i4 {bad,r1} tie -> 1 of 3, 1
    # C: i1 agrees; i2 {r0,r1} tie; i4 {bad,bad} -> bad, C said r1 -> 1 of 2, 1
    got = {r.reviewer: (r.loo_agreement, r.loo_compared, r.loo_no_majority) for r in stats.reviewers}
    assert got == {"A": (0.5, 2, 3), "B": (pytest.approx(1 / 3), 3, 1), "C": (0.5, 2, 1)}


def test_randomisation_is_undone_before_agreement():
    """Two reviewers pick the same reply on every item but saw it on opposite sides: full agreement.
    Coded by side (left/right) instead, they would disagree on every item (alpha < 0)."""
    js = [
        judge("x1", "A", 1, 2, left=1, seconds=1),  # picked the left card
        judge("x1", "B", 1, 2, left=0, seconds=1),  # picked the right card: the same reply
        judge("x2", "A", 0, 1, left=0, seconds=1),  # left card
        judge("x2", "B", 0, 1, left=1, seconds=1),  # right card
    ]
    s = task_stats(js, n_boot=100)
    assert s.pairwise_agreement == 1.0
    # counts (0,2,0,0) and (2,0,0,0): o00 = o11 = 2, no off-diagonal coincidence -> D_o = 0, alpha = 1
    assert s.nominal_alpha.estimate == pytest.approx(1.0)
    assert s.left_share.estimate == 0.5  # A always left, B always right
    by_side = [replace(j, preferred=1 if j.picked_left else 0) for j in js]
    assert pairwise_agreement(by_item(by_side)) == (0.0, 2)


def test_undefined_alpha_and_the_json_form():
    """No item with two judgments: alpha has no value and no interval (never a made-up number)."""
    js = [judge("a", "A", 1, 1, left=0, seconds=3), judge("b", "B", 0, 2, left=0, seconds=4)]
    s = task_stats(js, n_boot=50)
    assert s.nominal_alpha.estimate is None and s.nominal_alpha.low is None
    assert s.pairwise_agreement is None
    out = bench_stats(FIXTURE + [replace(j, task="other") for j in js], n_boot=50)
    json.dumps(out)  # JSON-able as the CLI prints it
    assert sorted(out["tasks"]) == ["help", "other"]
    assert out["tasks"]["help"]["nominal_alpha"]["estimate"] == pytest.approx(11 / 41)
    with pytest.raises(ValueError, match="one task"):
        task_stats(FIXTURE + [replace(FIXTURE[0], task="other")])
