"""Backbones and the forward passes over them: the architecture registry, loading, tokenising,
the frozen-trunk cache and reward scoring."""
