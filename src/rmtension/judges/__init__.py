"""Judges (shared core): any sequence-classification reward model, loaded, prompted and scored as plain
functions (`load`, `template`, `score`); neuron scoring and ablation (`neurons`, `hooks`, `ablate`);
the per-pair score file (`pair_scores`); and the combined judges built from several (`dials`, `gate`,
`combined`). Below the apps (`rmtension.api`, `rmtension judge`) and the study's stages.
"""
