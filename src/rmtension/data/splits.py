"""Grouped, seeded train/val/test splits, and seeded subsampling.

Pairs that open with the same user prompt form a group (`Pair.group_key`), and a group lands in
one split only, across all subsets at once, so a prompt in helpful-train cannot reappear in
harmless-test. A group's split comes from a hash of (seed, group key) alone, not from a shuffle
of all groups: adding or removing a subset never moves the other groups.

A subset with both official files keeps the official test set and carves val out of its train
file; a subset with only one file is carved into train/val/test by `DataConfig.split`. The
official files themselves share some prompts (HH-RLHF's train and test files do): an official
train pair whose group also occurs in an official test file is removed, and counted in
`SplitResult.dropped` under `train_group_in_official_test` (`data/summary.json`, `split_drops`),
so that no group is in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rmtension.data.types import Pair

SPLIT_NAMES = ("train", "val", "test")


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from the parts (sha256, so the same on every machine and Python)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def bucket(u: float, fractions: Sequence[float]) -> str:
    """`train` / `val` / `test` for a unit number and (train, val, test) fractions."""
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


@dataclass
class SplitResult:
    pairs: dict[str, list[Pair]]
    """split ("train", "val", "test") -> pairs of every subset, in load order."""
    mode: dict[str, str]
    """subset -> "official" (both files) or "carved" (one file, split by fraction)."""
    official_shared_groups: int
    """Prompt groups found in both an official train and an official test file (a leak of the
    official split itself); their train pairs are removed (`dropped`)."""
    dropped: dict[str, int] | None = None
    """reason -> pairs removed: `train_group_in_official_test`."""


def split_pairs(loaded: dict[str, list[Pair]], fractions: Sequence[float], seed: int) -> SplitResult:
    """Assign every pair of `loaded` (file split -> pairs) to train/val/test, grouped by prompt.

    Rules, per pair with group g and bucket b = bucket(hash(seed, g)):
    - official test pairs stay in test; official train pairs go to val when b is val, else train
      (so val is `fractions[1]` of the official train file), unless their group has official test
      pairs: then they are removed (`dropped["train_group_in_official_test"]`);
    - carved pairs go to b, except that a group with official test pairs goes to test and a group
      whose official train pairs stayed in train despite b == test goes to train.
    """
    by_file = {split: {p.subset for p in pairs} for split, pairs in loaded.items()}
    official = by_file.get("train", set()) & by_file.get("test", set())
    subsets = sorted(set().union(*by_file.values())) if by_file else []
    buckets: dict[str, str] = {}

    def b(pair: Pair) -> str:
        g = pair.group_key
        if g not in buckets:
            buckets[g] = bucket(unit_hash(seed, g), fractions)
        return buckets[g]

    test_groups = {p.group_key for p in loaded.get("test", []) if p.subset in official}
    kept_in_train = {p.group_key for p in loaded.get("train", []) if p.subset in official and b(p) == "test"}
    out: dict[str, list[Pair]] = {s: [] for s in SPLIT_NAMES}
    dropped = {"train_group_in_official_test": 0}
    for file_split in ("train", "test"):
        for p in loaded.get(file_split, []):
            if p.subset in official and file_split == "train" and p.group_key in test_groups:
                dropped["train_group_in_official_test"] += 1
                continue
            if p.subset in official:
                dest = "test" if file_split == "test" else ("val" if b(p) == "val" else "train")
            elif p.group_key in test_groups:
                dest = "test"
            elif p.group_key in kept_in_train:
                dest = "train"
            else:
                dest = b(p)
            out[dest].append(p)
    train_groups = {p.group_key for p in loaded.get("train", []) if p.subset in official}
    mode = {s: "official" if s in official else "carved" for s in subsets}
    return SplitResult(out, mode, len(train_groups & test_groups), dropped)


def seeded_order(pairs: Iterable[Pair], seed: int, salt: str = "") -> list[Pair]:
    """Pairs sorted by a hash of (seed, salt, pair_id): a shuffle that does not depend on input order."""
    return sorted(pairs, key=lambda p: unit_hash(seed, salt, p.pair_id))


def take(pairs: Sequence[Pair], n: int | None, seed: int, salt: str = "") -> list[Pair]:
    """The first `n` pairs of `seeded_order`, returned in their original order (all when n is None).

    Nested by construction: with the same seed and salt, `take(x, m)` is a subset of `take(x, n)` for m <= n.
    """
    if n is None or n >= len(pairs):
        return list(pairs)
    chosen = {p.pair_id for p in seeded_order(pairs, seed, salt)[:n]}
    return [p for p in pairs if p.pair_id in chosen]
