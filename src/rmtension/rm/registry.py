"""The one registry of reward-model names a study can train and analyse.

The three objectives' RMs are registered here; a feature that trains another kind of RM (a
control on half the data, a two-head model, PCGrad training) registers its name next to the
code that trains it, and every stage that takes RM names (`neurons.rms`, `ablation.rms`) then
accepts it. Objectives (`rmtension.strict.OBJECTIVES`) are data; RM names are models, each built
from one objective's training pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmtension.strict import CONTROL_DATA, OBJECTIVES


@dataclass(frozen=True)
class RMName:
    name: str
    """The name in tables and under `rm/<name>/seed<k>/`."""
    data: str
    """The objective whose training pairs it learns from."""
    what: str
    """One line for tables and `--help-config`."""


REGISTRY: dict[str, RMName] = {}


def register(name: str, data: str, what: str) -> RMName:
    """Add an RM name; registering the same name twice with different meaning is an error."""
    if data not in OBJECTIVES + CONTROL_DATA:
        raise ValueError(f"RM {name!r}: data must be one of {OBJECTIVES + CONTROL_DATA}, got {data!r}")
    entry = RMName(name, data, what)
    if REGISTRY.get(name, entry) != entry:
        raise ValueError(f"RM name {name!r} is already registered as {REGISTRY[name]}")
    REGISTRY[name] = entry
    return entry


def check_rm_names(names: list[str]) -> list[str]:
    """`names` if every one is registered, else a ValueError that lists the registered names."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown RM name(s) {unknown}; registered: {sorted(REGISTRY)}")
    return names


register("helpful", "helpful", "trained on helpfulness pairs only")
register("harmless", "harmless", "trained on harmlessness pairs only")
register("mixed", "mixed", "trained on both objectives' pairs (data.mix)")
register(
    "helpful_half",
    "helpful_half",
    "control: the helpful pairs of the mixed RM's training set (train.controls)",
)
register(
    "harmless_half",
    "harmless_half",
    "control: the harmless pairs of the mixed RM's training set (train.controls)",
)
register("mixed_pcgrad", "mixed", "the mixed RM's data and seeds, trained with PCGrad (train.pcgrad)")
