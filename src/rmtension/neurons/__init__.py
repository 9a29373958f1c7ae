"""Neuron-level analysis of reward models: hooks, scores, sets, overlap, ablation and the paper's claims.

    from rmtension.neurons.stage import run_neuron_scoring
    from rmtension.ablation.run import run_ablation
    from rmtension.neurons.claims import paper_claims

    run_neuron_scoring(ctx, NeuronsConfig())    # neurons/<rm>/scores.safetensors, sets.json, overlap.json
    run_ablation(ctx, AblationConfig())         # ablation.csv, neurons/influence.json, cross_effect.json
    for finding in paper_claims(ctx.run_dir): print(finding.sentence())

Hook points read as paths (`layers.3.mlp.act`); a neuron is (layer, index). See `hooks`.
"""
