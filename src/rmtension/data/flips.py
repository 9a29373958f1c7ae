"""Planted label noise: one objective's labels flipped on a known share of the mixed RM's training pairs;
and shuffled labels (`shuffle_labels`): every RM's training pairs flipped on a seeded coin.

A positive control for the interference claims (`configs/planted.yaml`): the mixed RM learns from
pairs whose chosen and rejected replies are swapped, so it is worse than the single-objective RMs by
construction, while the single RMs, the `_half` controls, validation and test pairs stay as they were.
Which pairs flip is a seeded hash of (split seed, pair id), so a run names them exactly. A flipped
pair gets the id `<pair_id>#flipped`: caches keyed by pair id (the trunk cache) never mix the two.

A planted cue (`add_cue`, `data.cue_share`) gives the flips something to reverse that is not reply
length: on a seeded share of the pairs (every objective, split and RM) the human-chosen reply ends
with one word and the rejected one with another of the same token count, so the sign of the
length difference (the length-controlled strata) is unchanged. Flipping a cued pair swaps the
replies with their words, so the mixed RM learns the cue backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rmtension.data.splits import unit_hash
from rmtension.data.types import Pair

FLIPPED = "#flipped"
CUED = "#cued"
CUE_WORDS = (" alpha", " omega")
"""The words the human-chosen and the rejected reply of a cued pair end with: one token each in the
packaged MiniLM's and SmolLM2's tokenizers, so the replies' length difference in tokens is unchanged."""


def flipped(pair: Pair) -> Pair:
    """The pair with chosen and rejected swapped, under its own id."""
    return replace(pair, pair_id=pair.pair_id + FLIPPED, chosen=pair.rejected, rejected=pair.chosen)


def flip_share(
    pairs: Sequence[Pair], of_objective: set[str], share: float, seed: int
) -> tuple[list[Pair], dict[str, int]]:
    """`pairs` with round(share * k) of the k pairs whose id is in `of_objective` flipped, and the counts.

    The flipped ones are the first of those k in the order of unit_hash(seed, "flip", pair id).
    """
    mine = sorted(
        (p.pair_id for p in pairs if p.pair_id in of_objective), key=lambda i: unit_hash(seed, "flip", i)
    )
    n_flip = round(share * len(mine))
    chosen = set(mine[:n_flip])
    out = [flipped(p) if p.pair_id in chosen else p for p in pairs]
    return out, {"flipped": n_flip, "of": len(mine)}


def shuffle_labels(pairs: Sequence[Pair], seed: int) -> tuple[list[Pair], int]:
    """`pairs` with chosen and rejected swapped where unit_hash(seed, "shuffle", pair id) < 1/2, and the count.

    A coin per pair id, so a pair flips alike in every RM's training set (the mixed RM's and a single
    objective's), and the labels carry no preference to learn: a negative control.
    """
    coin = [unit_hash(seed, "shuffle", p.pair_id) < 0.5 for p in pairs]
    return [flipped(p) if c else p for p, c in zip(pairs, coin)], sum(coin)


def add_cue(pairs: Sequence[Pair], share: float, seed: int) -> tuple[list[Pair], int]:
    """`pairs` with the cue words on those whose id hashes below `share`, and their count.

    The coin is unit_hash(seed, "cue", pair id without `#flipped`), so one underlying pair is cued
    alike in every RM's training set and in the test sets. The human-chosen reply gets
    CUE_WORDS[0]: in a flipped pair that is the one now in `rejected`. A cued pair's id is
    `<pair_id>#cued` (then `#flipped` where flipped), so caches keyed by pair id never mix the two.
    """
    out = []
    for p in pairs:
        base = p.pair_id.removesuffix(FLIPPED)
        if not unit_hash(seed, "cue", base) < share:
            out.append(p)
            continue
        was_flipped = p.pair_id.endswith(FLIPPED)
        good, bad = CUE_WORDS[::-1] if was_flipped else CUE_WORDS
        pid = base + CUED + (FLIPPED if was_flipped else "")
        out.append(replace(p, pair_id=pid, chosen=p.chosen + good, rejected=p.rejected + bad))
    return out, sum(p.pair_id.removesuffix(FLIPPED).endswith(CUED) for p in out)
