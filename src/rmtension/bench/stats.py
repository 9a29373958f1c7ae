"""Agreement and bias statistics of stored bench judgments: pure functions over `Judgment` lists.

Everything is computed on the canonical reply order (`reply_0`, `reply_1`), so the left/right
randomisation of the page is undone before reviewers are compared: two reviewers who picked the
same reply agree even when one saw it on the left and the other on the right.

Each judgment is one of four nominal categories (`CHOICES`): reply_0, reply_1, tie, both_bad.
A "both bad" judgment counts as `both_bad` whatever else it records (the absolute flag wins).

- Nominal Krippendorff's alpha over the four categories (the `krippendorff` package, from the
  items x categories count matrix), with a percentile bootstrap CI resampling items.
- Raw pairwise agreement: over every pair of judgments of the same item, the share that name the
  same category (pooled: each pair counts once, so items with more reviewers weigh more).
- Ordinal alpha on the signed strength scale -3..3 (`Judgment.signed_strength`: a pick of reply_1
  at strength s is +s, of reply_0 -s; ties and both-bad judgments sit at 0).
- Position bias: the share of picks (judgments that preferred a reply) that went to the reply
  shown on the left, with a Wilson score interval; 0.5 means no bias.
- Each reviewer's agreement with the leave-one-out majority: for each of their judgments, the
  category most of the *other* reviewers of that item chose. Items where the others tie, or where
  nobody else judged, give no verdict and are counted apart.
- Tie and both-bad rates (shares of all judgments) and the median seconds per judgment.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import krippendorff
import numpy as np
from scipy.stats import norm

from rmtension.bench.records import Judgment

CHOICES = ("reply_0", "reply_1", "tie", "both_bad")
"""The nominal categories of a judgment, in the column order of `choice_counts`."""
SIGNED = tuple(range(-3, 4))
"""The ordinal scale of `Judgment.signed_strength`, in the column order of `strength_counts`."""


def choice(j: Judgment) -> str:
    """The nominal category of a judgment in canonical reply order (one of `CHOICES`)."""
    if j.both_bad:
        return "both_bad"
    if j.preferred is None:
        return "tie"
    return f"reply_{j.preferred}"


def by_item(judgments: Iterable[Judgment]) -> dict[str, list[Judgment]]:
    """item_id -> its judgments, items in first-seen order."""
    out: dict[str, list[Judgment]] = defaultdict(list)
    for j in judgments:
        out[j.item_id].append(j)
    return dict(out)


def choice_counts(items: dict[str, list[Judgment]]) -> np.ndarray:
    """(N items, 4) counts of each category in `CHOICES`: the value_counts form of the reliability matrix."""
    rows = [[sum(choice(j) == c for j in js) for c in CHOICES] for js in items.values()]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(CHOICES))


def strength_counts(items: dict[str, list[Judgment]]) -> np.ndarray:
    """(N items, 7) counts of each signed strength in `SIGNED` (-3..3)."""
    rows = [[sum(j.signed_strength == s for j in js) for s in SIGNED] for js in items.values()]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(SIGNED))


def alpha_from_counts(counts: np.ndarray, level: str, domain: Sequence) -> float | None:
    """Krippendorff's alpha of a (N, V) count matrix; None where it is undefined (no item with two
    judgments, or every pairable judgment in one category, so there is no expected disagreement)."""
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None
    return float(
        krippendorff.alpha(value_counts=counts, value_domain=list(domain), level_of_measurement=level)
    )


@dataclass
class Interval:
    estimate: float | None
    low: float | None
    high: float | None
    method: str
    n: int
    """Units behind the estimate (items for alpha, picks for position bias)."""


def bootstrap_alpha(
    counts: np.ndarray, level: str, domain: Sequence, n_boot: int, ci: float, seed: int
) -> Interval:
    """Alpha with a percentile bootstrap CI over items (rows of `counts`); resamples where alpha is
    undefined are left out of the percentiles."""
    estimate = alpha_from_counts(counts, level, domain)
    n = len(counts)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot if estimate is not None else 0):
        a = alpha_from_counts(counts[rng.integers(0, n, n)], level, domain)
        if a is not None:
            reps.append(a)
    if not reps:
        return Interval(estimate, None, None, "percentile bootstrap over items", n)
    low, high = np.percentile(reps, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return Interval(estimate, float(low), float(high), f"percentile bootstrap over items ({n_boot})", n)


def pairwise_agreement(items: dict[str, list[Judgment]]) -> tuple[float | None, int]:
    """(share of same-item judgment pairs naming the same category, number of pairs)."""
    agree = pairs = 0
    for js in items.values():
        counts = Counter(choice(j) for j in js)
        agree += sum(c * (c - 1) // 2 for c in counts.values())
        pairs += len(js) * (len(js) - 1) // 2
    return (agree / pairs if pairs else None), pairs


def wilson(successes: int, n: int, ci: float = 0.95) -> Interval:
    """Wilson score interval for a binomial share (Wilson 1927)."""
    if n == 0:
        return Interval(None, None, None, "Wilson score", 0)
    z = float(norm.ppf((1 + ci) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), "Wilson score", n)


def left_share(judgments: Sequence[Judgment], ci: float = 0.95) -> Interval:
    """Share of picks that went to the reply shown on the left (ties and both-bad left out)."""
    picks = [j.picked_left for j in judgments if choice(j) in ("reply_0", "reply_1")]
    return wilson(sum(bool(p) for p in picks), len(picks), ci)


def loo_majority(others: Sequence[Judgment]) -> str | None:
    """The category most of `others` chose; None when they tie for the most or are empty."""
    ranked = Counter(choice(j) for j in others).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


@dataclass
class ReviewerStats:
    reviewer: str
    judgments: int
    loo_agreement: float | None
    """Share of this reviewer's judgments that match the other reviewers' majority on the item."""
    loo_compared: int
    """Judgments with a leave-one-out majority to compare with."""
    loo_no_majority: int
    """Judgments whose item had no other reviewer, or whose other reviewers tied."""


def reviewer_stats(items: dict[str, list[Judgment]]) -> list[ReviewerStats]:
    """Per reviewer (sorted by name): judgment count and leave-one-out majority agreement."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # judgments, agreed, compared, none
    for js in items.values():
        for i, j in enumerate(js):
            t = tally[j.reviewer]
            t[0] += 1
            majority = loo_majority(js[:i] + js[i + 1 :])
            if majority is None:
                t[3] += 1
                continue
            t[2] += 1
            t[1] += choice(j) == majority
    return [
        ReviewerStats(name, t[0], (t[1] / t[2]) if t[2] else None, t[2], t[3])
        for name, t in sorted(tally.items())
    ]


@dataclass
class TaskStats:
    task: str
    mode: str
    judgments: int
    items: int
    judgments_per_reviewer: dict[str, int]
    nominal_alpha: Interval
    """Krippendorff's alpha over CHOICES (which reply, tie, both bad), in canonical reply order."""
    pairwise_agreement: float | None
    agreeing_pairs_of: int
    """Same-item judgment pairs behind `pairwise_agreement`."""
    ordinal_alpha: Interval
    """Krippendorff's alpha on the signed strength scale -3..3."""
    left_share: Interval
    """Position bias: the share of picks that went to the left reply (0.5: none)."""
    tie_rate: float
    both_bad_rate: float
    median_seconds: float
    reviewers: list[ReviewerStats] = field(default_factory=list)


def task_stats(
    judgments: Sequence[Judgment], *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> TaskStats:
    """Every statistic of one task's judgments (all of the same task)."""
    tasks = {j.task for j in judgments}
    if len(tasks) != 1:
        raise ValueError(f"task_stats takes one task's judgments, got tasks {sorted(tasks)}")
    items = by_item(judgments)
    cats = Counter(choice(j) for j in judgments)
    agreement, n_pairs = pairwise_agreement(items)
    return TaskStats(
        task=judgments[0].task,
        mode=judgments[0].mode,
        judgments=len(judgments),
        items=len(items),
        judgments_per_reviewer=dict(sorted(Counter(j.reviewer for j in judgments).items())),
        nominal_alpha=bootstrap_alpha(choice_counts(items), "nominal", CHOICES, n_boot, ci, seed),
        pairwise_agreement=agreement,
        agreeing_pairs_of=n_pairs,
        ordinal_alpha=bootstrap_alpha(strength_counts(items), "ordinal", SIGNED, n_boot, ci, seed),
        left_share=left_share(judgments, ci),
        tie_rate=cats["tie"] / len(judgments),
        both_bad_rate=cats["both_bad"] / len(judgments),
        median_seconds=float(statistics.median(j.seconds for j in judgments)),
        reviewers=reviewer_stats(items),
    )


def bench_stats(judgments: Iterable[Judgment], **kwargs) -> dict:
    """JSON-able statistics of every task: {"tasks": {name: TaskStats as a dict}} (tasks sorted)."""
    per_task: dict[str, list[Judgment]] = defaultdict(list)
    for j in judgments:
        per_task[j.task].append(j)
    return {"tasks": {t: asdict(task_stats(js, **kwargs)) for t, js in sorted(per_task.items())}}
