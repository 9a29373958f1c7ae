"""The `neurons` and `ablation` stages of `rmtension study`, as the study lists them.

Kept apart from `neurons.stage` and `neurons.ablation_stage` so that neither imports the other
in a cycle: ablation builds on the scoring stage, and this module on both.
"""

from __future__ import annotations

from collections.abc import Callable

from rmtension.config import StudyConfig
from rmtension.errors import ConfigError
from rmtension.neurons.ablation_stage import run_ablation
from rmtension.neurons.stage import check_ablation_config, run_neuron_scoring


def study_stages(cfg: StudyConfig) -> list[tuple[str, Callable]]:
    """The `neurons` and `ablation` stages of `rmtension study`, in order; an absent or disabled section is left out.

    Each is `(name, fn(prep))` with `prep` a `rmtension.study.Prepared`; both skip when their manifest matches.
    """
    ncfg, acfg = cfg.neurons, cfg.ablation
    stages: list[tuple[str, Callable]] = []
    on = ncfg is not None and ncfg.enabled
    if on:
        stages.append(("neurons", lambda prep: run_neuron_scoring(prep.ctx, ncfg, tokenizer=prep.tokenizer)))
    if acfg is not None and acfg.enabled:
        if not on:
            raise ConfigError(
                "ablation: needs the neuron sets; add a `neurons:` section (with enabled: true)"
            )
        check_ablation_config(ncfg, acfg)
        stages.append(("ablation", lambda prep: run_ablation(prep.ctx, acfg, tokenizer=prep.tokenizer)))
    return stages
