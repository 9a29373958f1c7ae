"""How the training loop runs across processes: one explicit strategy object per engine.

`SingleProcess` and `DDP` back-propagate through accelerate (DDP averages gradients across
processes once per optimiser step: `no_sync` on the other micro-batches); `FSDP` shards the weights
in place (FSDP 2) and gathers them again to save; `DeepSpeed` lets the engine divide by
`grad_accum` and step itself, checkpoints through the engine and, under ZeRO-3, gathers the sharded
weights to save. Only single-process and DDP runs take the gradient hooks (conflict measurement,
PCGrad), which read each parameter's whole gradient.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from rmtension.run import dist, shards


class SingleProcess:
    """One process: accelerate's backward, nothing to sync or gather."""

    name = "single process"
    takes_gradient_hooks = True
    """Whether conflict measurement and PCGrad can read whole gradients under this strategy."""

    def __init__(self, acc, runner: nn.Module, model: nn.Module):
        self.acc, self.runner, self.model = acc, runner, model

    def backward(self, loss: torch.Tensor, weight: float, sync: bool, grad_accum: int) -> None:
        """Back-propagate one micro-batch's loss, weighted for the process's shard and the accumulation."""
        with contextlib.nullcontext() if sync else self.acc.no_sync(self.runner):
            self.acc.backward(loss * (weight / grad_accum))

    def checkpoint_engine(self) -> nn.Module | None:
        """The engine that saves its own optimiser state in a checkpoint (DeepSpeed's), else None."""
        return None

    def full_state(self) -> dict | None:
        """The whole weights to save when they are sharded (a collective), else None (the model has them)."""
        return None


class DDP(SingleProcess):
    """Several processes, each with the whole model; gradients are averaged once per optimiser step."""

    name = "DDP"


class FSDP(SingleProcess):
    """FSDP 2: the weights are sharded in place, so every forward is a collective and saving gathers them."""

    name = "FSDP"
    takes_gradient_hooks = False

    def full_state(self) -> dict | None:
        return shards.gathered_state_dict(self.model)


class DeepSpeed(SingleProcess):
    """DeepSpeed's engine: it divides by `grad_accum`, steps where accelerate's count of micro-batches
    says, checkpoints itself, and under ZeRO-3 holds the weights as shards."""

    name = "DeepSpeed"
    takes_gradient_hooks = False

    def backward(self, loss: torch.Tensor, weight: float, sync: bool, grad_accum: int) -> None:
        with self.acc.accumulate(self.runner):
            self.acc.backward(loss * weight)

    def checkpoint_engine(self) -> nn.Module | None:
        return self.runner

    def full_state(self) -> dict | None:
        return shards.gathered_state_dict(self.model) if shards.is_sharded(self.model) else None


def strategy_for(acc, runner: nn.Module, model: nn.Module) -> SingleProcess:
    """The strategy of a prepared model: DeepSpeed's engine, FSDP's shards, DDP, or one process."""
    if dist.uses_deepspeed(acc):
        return DeepSpeed(acc, runner, model)
    if shards.is_sharded(model):
        return FSDP(acc, runner, model)
    return DDP(acc, runner, model) if dist.world_size() > 1 else SingleProcess(acc, runner, model)
