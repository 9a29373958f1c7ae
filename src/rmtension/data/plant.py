"""A planted feature: a marker text that the chosen reply of every pair of one objective carries.

A positive control for the neuron claims (`configs/planted-neurons.yaml`): the planted objective's
preference becomes readable from the marker alone, and with `train.plant_neurons` only a known set
of MLP neurons can learn to read it. The marker is appended to the chosen reply in the training,
validation and test splits alike (the test pairs carry it: the RM's skill on them is the plant's).
A marked pair gets the id `<pair_id>#marked`: caches keyed by pair id never mix the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rmtension.data.types import Pair

MARKED = "#marked"


def mark_chosen(pairs: Sequence[Pair], marker: str, of_objective: set[str]) -> list[Pair]:
    """`pairs` with `marker` appended to the chosen reply of each pair whose id is in `of_objective`,
    under their own ids; the others as they are. Marked after sampling, so a run with the marker
    samples the same pairs as its twin without it."""
    return [
        replace(p, pair_id=p.pair_id + MARKED, chosen=p.chosen + marker) if p.pair_id in of_objective else p
        for p in pairs
    ]
