"""Optimising against a judge: the policy, PM halves, best-of-n, RL, their stages, config, CLI and
report sections."""
