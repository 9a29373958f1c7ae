"""Which conditions the ablation stage runs for one RM: the sets, their modes and their random controls.

Every (scorer, p, set, mode) is one plan entry: the set's own condition and, per control kind
(`rmtension.ablation.controls`), `draws` random sets (`draws_for`). The five sets at `claim_p` carry
the claims; the size-matched sets `<a>@<b>` (influence) get no controls of their own.

Mean ablation replaces each neuron by its mean activation at the position the score head reads, over
the set's objective's scoring data (`mean_act_read/helpful` for helpful_top and helpful_only,
`mean_act_read/harmless` for the harmless sets, their average for `shared`;
`rmtension.judges.neurons`), never by its mean over all tokens: the head reads one position, and a
token mean written there is an injected off-distribution value, not the neuron's removal. The value
is written at every position of the ablated neurons. A set's random controls use the same values,
and its magnitude-matched controls are binned by the absolute value of the same means.
"""

from __future__ import annotations

import torch

from rmtension.errors import ConfigError
from rmtension.judges.ablate import Condition
from rmtension.stats.pvalues import nearest_p
from rmtension.neurons.config import AblationConfig, p_key
from rmtension.ablation.controls import controls
from rmtension.judges.select import SET_OBJECTIVE, size_matched, stable_seed
from rmtension.judges.layers import model_mask
from rmtension.judges.neuron_sets import set_mask

ONLY = ("helpful_only", "harmless_only")
CLAIM_SETS = ("helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only")
"""Sets whose conditions at `claim_p` carry a claim (identified and cross-effect: the *_top sets;
double dissociation: the *_only sets; influence: shared against the *_only sets)."""
AGAINST_RANDOM = ("helpful_top", "harmless_top")
"""Claim sets whose claims compare them with their random controls (identified, cross-effect): these
get `random_draws`. The double dissociation and the influence compare sets with each other, so the
other claim sets get `sweep_draws` controls, for the tables only."""


def matched_names(other: str) -> tuple[str, str]:
    """Names of the equally large (shared side, other side) sets compared for influence."""
    return f"shared@{other}", f"{other}@shared"


def set_objective(name: str) -> str:
    """Objective whose mean activations replace a set's neurons in mean ablation."""
    return "both" if name.startswith("shared") else SET_OBJECTIVE.get(name.split("@")[0], "both")


READ_MEAN = "mean_act_read"
"""Score key of the mean activation at the read position (`rmtension.judges.neurons`)."""


def mean_values(tensors: dict[str, torch.Tensor], objective: str) -> torch.Tensor:
    """[L, N] replacement values for mean ablation: the mean at the read position (module docstring)."""
    if f"{READ_MEAN}/helpful" not in tensors:
        raise ConfigError(
            "ablation: mean ablation and magnitude-matched controls need the mean activation at the read "
            "position (mean_act_read); add mean_act to neurons.scorers and re-run the neuron stage"
        )
    if objective == "both":
        return (tensors[f"{READ_MEAN}/helpful"] + tensors[f"{READ_MEAN}/harmless"]) / 2
    return tensors[f"{READ_MEAN}/{objective}"]


def draws_for(
    cfg: AblationConfig, p: float, claim_ps: list[float], mode: str, name: str, scorer: str = ""
) -> int:
    """Random draws per control kind: `random_draws` where a claim is decided against the controls
    (`AGAINST_RANDOM` at a claim p, in `claim_mode`), `draws_beside()` in the other mode at a claim p,
    `sweep_draws` elsewhere; none for the size-matched sets and for the positive control's sets
    (they borrow the claim sets' controls, `borrow_controls`)."""
    if "@" in name or (scorer and scorer == cfg.positive_control and scorer != cfg.scorers[0]):
        return 0
    if p not in claim_ps:
        return cfg.sweep_draws
    if mode != cfg.claim_mode:
        return cfg.draws_beside()
    return cfg.random_draws if name in AGAINST_RANDOM else cfg.sweep_draws


def borrow_controls(plan: list[dict], cfg: AblationConfig) -> None:
    """Give each positive-control entry (scorer `cfg.positive_control`) the random controls of the claim
    scorer's entry of the same p, set and mode (the same number of neurons), in place."""
    if cfg.positive_control is None or cfg.positive_control == cfg.scorers[0]:
        return
    claim = {(e["p"], e["set"], e["mode"]): e for e in plan if e["scorer"] == cfg.scorers[0]}
    for e in plan:
        own = claim.get((e["p"], e["set"], e["mode"]))
        if e["scorer"] == cfg.positive_control and own is not None and own["n"] == e["n"]:
            e["controls"] = dict(own["controls"])
            e["controls_of"] = own["key"]


def build_conditions(
    doc: dict, tensors: dict[str, torch.Tensor], rm: str, cfg: AblationConfig, ps: list[float], layers: int
) -> tuple[dict[str, Condition], list[dict]]:
    """Every condition to run for one RM of `layers` blocks, and a plan entry per (scorer, p, set, mode)
    naming its keys. Sets, values and controls live on the analysed blocks (`doc["first_layer"]`..);
    each condition's mask and values are placed in the whole model (`model_mask`).

    A plan entry: scorer, p, set, mode, key (the set's condition), n (neurons), seed, and
    controls {kind: [condition keys of its draws]}.
    """
    conds: dict[str, Condition] = {}
    plan: list[dict] = []

    def condition(mask: torch.Tensor, values: torch.Tensor | None) -> Condition:
        whole = None if values is None else model_mask(doc, values, layers)
        return Condition(model_mask(doc, mask, layers), whole)

    claim_ps = sorted({float(nearest_p(ps, q)) for q in cfg.claim_points()})
    for scorer in cfg.scorers:
        for p in ps:
            names = [n for n in cfg.sets if p in claim_ps or cfg.sweep_sets is None or n in cfg.sweep_sets]
            masks = {name: set_mask(doc, rm, scorer, p, name) for name in names}
            if cfg.influence_matched and "shared" in masks:
                for other in (o for o in ONLY if o in masks):
                    pair = size_matched(
                        masks["shared"], masks[other], stable_seed(cfg.seed, rm, scorer, p_key(p), other)
                    )
                    masks.update(zip(matched_names(other), pair))
            for name, mask in masks.items():
                seed = stable_seed(cfg.seed, rm, scorer, p_key(p), name)
                for mode in cfg.modes:
                    values = None if mode == "zero" else mean_values(tensors, set_objective(name))
                    key = f"{scorer}|{p_key(p)}|{name}|{mode}"
                    conds[key] = condition(mask, values)
                    draws = draws_for(cfg, p, claim_ps, mode, name, scorer)
                    kinds: dict[str, list[str]] = {}
                    for kind in cfg.controls if draws else ():
                        magnitude = (
                            mean_values(tensors, set_objective(name)).abs() if kind == "magnitude" else None
                        )
                        # the same seed in every mode: zero mode's draws are the first of mean mode's
                        drawn = controls(kind, mask, draws, stable_seed(seed, kind), magnitude)
                        kinds[kind] = [f"{key}|{kind}{d}" for d in range(draws)]
                        conds.update((k, condition(m, values)) for k, m in zip(kinds[kind], drawn))
                    plan.append(
                        {
                            "scorer": scorer,
                            "p": p,
                            "set": name,
                            "mode": mode,
                            "key": key,
                            "n": int(mask.sum()),
                            "controls": kinds,
                            "seed": seed,
                        }
                    )
    borrow_controls(plan, cfg)
    return conds, plan
