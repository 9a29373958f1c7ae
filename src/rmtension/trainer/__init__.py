"""The reward-model trainer (shared core): the training loop, its losses, checkpoints and gradient-conflict hooks.

The train stage trains the study's RMs with it; the PM halves and the combine stage's trained RMs use it too."""
