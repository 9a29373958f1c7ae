"""Stopping a forward pass early, when only the states at one point are needed.

    with stop_at(model, layer=3) as run:      # hook removed on exit, exception or not
        h = run(**batch)                       # [B, T, H]: the residual stream entering block 3

A hook that has what it needs raises `StopForward`; the runner (or the caller, for hooks
installed through `rmtension.judges.hooks.neuron_hooks`) catches it, so nothing after that
point is computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from rmtension.model.arch import blocks


class StopForward(Exception):
    """Raised by a hook when the rest of the forward is not needed."""


@contextlib.contextmanager
def stop_at(model: nn.Module, layer: int, output: bool = False) -> Iterator[Callable[..., torch.Tensor]]:
    """Yield `run(**inputs) -> [B, T, H]`: the forward up to block `layer` and the states there.

    The states are the block's input, or with `output=True` its output (for the last block,
    whose output has no next block to read it from).
    """
    captured: dict[str, torch.Tensor] = {}

    def pre_hook(module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]
        raise StopForward

    def post_hook(module, args, out):
        captured["h"] = out[0] if isinstance(out, tuple) else out
        raise StopForward

    block = blocks(model)[layer]
    handle = (
        block.register_forward_hook(post_hook)
        if output
        else block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    )

    def run(**inputs) -> torch.Tensor:
        try:
            model(**inputs)
        except StopForward:
            pass
        return captured.pop("h")

    try:
        yield run
    finally:
        handle.remove()
