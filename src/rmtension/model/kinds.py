"""The one registry of reward-model names a study can train and analyse.

The three objectives' RMs are registered here; a feature that trains another kind of RM (a
control on half the data, a two-head model, PCGrad training) registers its name next to the
code that trains it, and every stage that takes RM names (`neurons.rms`, `ablation.rms`) then
accepts it. Objectives (`rmtension.strict.OBJECTIVES`) are data; RM names are models, each built
from one objective's training pairs.
"""

from __future__ import annotations

import re
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
    heads: tuple[str, ...] = ()
    """A multi-head RM's heads (`rmtension.model.heads`): it trains as one model and is evaluated
    and analysed as one RM per head, `<name>:<head>` (`views`)."""
    pcgrad: bool = False
    """Trains with projected conflicting gradients (`rmtension.trainer.conflict.pcgrad_step`)."""
    ratio: float | None = None
    """A data-ratio RM: the share of its training pairs that are helpful (its data is its own split)."""


REGISTRY: dict[str, RMName] = {}


def register(
    name: str,
    data: str,
    what: str,
    heads: tuple[str, ...] = (),
    pcgrad: bool = False,
    ratio: float | None = None,
) -> RMName:
    """Add an RM name with its training options; registering the same name twice with different
    meaning is an error."""
    if data not in OBJECTIVES + CONTROL_DATA and ratio is None:
        raise ValueError(f"RM {name!r}: data must be one of {OBJECTIVES + CONTROL_DATA}, got {data!r}")
    if ":" in name:
        raise ValueError(f"RM {name!r}: ':' separates an RM from its head")
    entry = RMName(name, data, what, tuple(heads), pcgrad, ratio)
    if REGISTRY.get(name, entry) != entry:
        raise ValueError(f"RM name {name!r} is already registered as {REGISTRY[name]}")
    REGISTRY[name] = entry
    return entry


RATIO = re.compile(r"^mixed_r(0(?:\.\d+)?|1(?:\.0+)?)$")
"""How a config names a data-ratio RM before the combine stage registers it: `mixed_r<r>` (only the
config's name check reads it; the registry entry carries the share)."""


REUSED_RATIOS = {0.0: "harmless", 0.5: "mixed", 1.0: "helpful"}
"""Helpful shares whose RM the study trains anyway: the sweep's ends and middle."""


def ratio_rm(r: float) -> str:
    """Register the data-ratio RM of helpful share r (`mixed_r0.25` for 0.25: a mixed RM of the matched
    size whose training pairs are that share helpful, `rmtension.data.ratios`) and return its name."""
    name = f"mixed_r{r:g}"
    what = f"a mixed RM of the matched size, a share {float(r):g} of its pairs helpful (combine.ratios)"
    register(name, name, what, ratio=float(r))
    return name


def lookup(name: str) -> RMName:
    """The registered RM `name` (a data-ratio RM is registered by `ratio_rm`)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown RM name {name!r}")
    return REGISTRY[name]


def views(name: str) -> list[str]:
    """The RMs a trained model is evaluated as: itself, or `<name>:<head>` for each of its heads."""
    entry = lookup(name)
    return [f"{name}:{h}" for h in entry.heads] if entry.heads else [name]


def split_view(view: str) -> tuple[str, str | None]:
    """`two_head:helpful` -> ("two_head", "helpful"); a one-head RM's name -> (name, None)."""
    name, _, head = view.partition(":")
    return name, head or None


def all_views() -> list[str]:
    """Every name an analysis stage accepts: the one-head RMs and each head of the multi-head ones."""
    return [v for name in REGISTRY for v in views(name)]


def check_rm_names(names: list[str]) -> list[str]:
    """`names` if every one is a registered RM (or a head of one, `views`), else a ValueError that
    lists them."""
    unknown = [n for n in names if n not in all_views() and not RATIO.match(n)]
    if unknown:
        raise ValueError(f"unknown RM name(s) {unknown}; registered: {all_views()} and mixed_r<share>")
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
register(
    "mixed_pcgrad", "mixed", "the mixed RM's data and seeds, trained with PCGrad (train.pcgrad)", pcgrad=True
)
register(
    "two_head",
    "mixed",
    "the mixed RM's data and seeds, one score head per objective (combine.two_head)",
    heads=("helpful", "harmless"),
)
