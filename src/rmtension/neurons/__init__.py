"""Neuron-level analysis of reward models: hooks, scores, sets, overlap, ablation and the paper's claims.

    from rmtension.neurons import run_neuron_scoring, run_ablation, paper_claims
    run_neuron_scoring(ctx, NeuronsConfig())    # neurons/<rm>/scores.safetensors, sets.json, overlap.json
    run_ablation(ctx, AblationConfig())         # ablation.csv, neurons/influence.json, cross_effect.json
    for claim in paper_claims(ctx.run_dir): print(claim.sentence)

Hook points read as paths (`layers.3.mlp.act`); a neuron is (layer, index). See `hooks`.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "AblationConfig": "rmtension.neurons.config",
    "Claim": "rmtension.neurons.claims",
    "Condition": "rmtension.neurons.ablation",
    "NeuronScores": "rmtension.neurons.scorers",
    "NeuronsConfig": "rmtension.neurons.config",
    "SCORERS": "rmtension.neurons.scorers",
    "SET_NAMES": "rmtension.neurons.select",
    "ablate": "rmtension.neurons.hooks",
    "capture": "rmtension.neurons.hooks",
    "compute_overlap": "rmtension.neurons.stage",
    "neuron_hooks": "rmtension.neurons.hooks",
    "neuron_sets": "rmtension.neurons.select",
    "overlap_stats": "rmtension.neurons.overlap",
    "paper_claims": "rmtension.neurons.claims",
    "random_controls": "rmtension.neurons.select",
    "run_ablation": "rmtension.neurons.ablation_stage",
    "run_conditions": "rmtension.neurons.ablation",
    "run_neuron_scoring": "rmtension.neurons.stage",
    "score_models": "rmtension.neurons.stage",
    "score_neurons": "rmtension.neurons.scorers",
    "scorer_agreement": "rmtension.neurons.overlap",
    "select_sets": "rmtension.neurons.stage",
    "top_percent": "rmtension.neurons.select",
}


def __getattr__(name: str):
    """Import on first use, so `rmtension --help` stays fast."""
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rmtension.neurons' has no attribute {name!r}")


__all__ = [
    "SCORERS",
    "SET_NAMES",
    "AblationConfig",
    "Claim",
    "Condition",
    "NeuronScores",
    "NeuronsConfig",
    "ablate",
    "capture",
    "compute_overlap",
    "neuron_hooks",
    "neuron_sets",
    "overlap_stats",
    "paper_claims",
    "random_controls",
    "run_ablation",
    "run_conditions",
    "run_neuron_scoring",
    "score_models",
    "score_neurons",
    "scorer_agreement",
    "select_sets",
    "top_percent",
]
