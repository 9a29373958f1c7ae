"""Reward models: losses, training (with checkpoints), evaluation, statistics and the study's
train / eval / tension stages."""
