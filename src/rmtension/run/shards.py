"""The parts of sharded parameters, and whole tensors made from them.

Training may shard the weights: under FSDP 2 parameters become DTensor shards, under DeepSpeed
ZeRO-3 flat partitions (`p.ds_tensor`). The trainer holds this process's part of each parameter
(`local_part`); whole tensors are gathered one at a time onto the main process's CPU to be
written (`whole_on_main`, `full_tensors_on_main`, `gathered_state_dict`) and cut again on load
(`local_part`, `cut_optimizer_state`; under ZeRO-3 `set_param` gathers the one parameter it
writes). While a model is sharded (`is_sharded`) every forward is a collective, so processes
must run the same number of them. Without sharding every function here is an identity or a copy.

Imports inside functions: torch.distributed / DeepSpeed load only under a distributed run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rmtension.run.dist import is_main, rank, stack_across


def _zero3(p: torch.Tensor) -> bool:
    """A parameter partitioned by DeepSpeed ZeRO-3 (its values live in the flat `p.ds_tensor`)."""
    return hasattr(p, "ds_tensor")


def is_sharded(model: torch.nn.Module) -> bool:
    """True when FSDP or ZeRO-3 holds `model`'s weights as shards (every forward is then a collective)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or _zero3(p) for p in model.parameters())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (a collective: every process must call it), else `t` itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def local_part(param: torch.Tensor, whole: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of this process's part of `param`'s value, or of `whole` laid out like `param`.

    The part is the DTensor shard under FSDP, the flat partition under ZeRO-3 (elements
    [r*P, (r+1)*P) of the flattened tensor, zero-padded: DeepSpeed's layout), and the whole
    tensor otherwise. Every process holds the same `whole`, so each cuts its own part without
    communicating.
    """
    if whole is None:
        return (param.ds_tensor if _zero3(param) else param).detach().clone()
    if _zero3(param):
        size = param.ds_tensor.numel()
        flat = whole.detach().reshape(-1)[rank() * size : (rank() + 1) * size]
        return torch.cat([flat, flat.new_zeros(size - len(flat))]).to(
            param.ds_tensor.device, param.ds_tensor.dtype
        )
    return like_param(whole.detach(), param).clone()


def whole_of(param: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """The whole tensor from every process's `part` of `param` (as `local_part` gives); a collective when sharded."""
    if _zero3(param):
        return stack_across(part).reshape(-1)[: param.ds_numel].view(param.ds_shape).clone()
    return full_tensor(part)


def set_param(param: torch.Tensor, part: torch.Tensor) -> None:
    """Write this process's `part` (as `local_part` gives) into `param`; a collective under ZeRO-3."""
    with torch.no_grad():
        if _zero3(param):
            import deepspeed

            value = whole_of(param, part)
            # gathered, written alike on every process, re-partitioned from the main one on exit
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                param.data.copy_(value)
        else:
            param.copy_(part)


def _kept_on_main(whole: torch.Tensor) -> torch.Tensor | None:
    """`whole` moved to the main process's CPU; dropped (None) on the other processes."""
    return whole.detach().cpu() if is_main() else None


def whole_on_main(items: Iterable[tuple[str, torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor] | None:
    """{name: whole tensor} on the main process's CPU from (name, param, part) items; None elsewhere.

    A collective when sharded. One tensor is gathered at a time and the other processes drop
    theirs at once, so only the main process ever holds the whole set, and only in CPU memory.
    """
    out = {name: _kept_on_main(whole_of(param, part)) for name, param, part in items}
    return out if is_main() else None


def gathered_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """`model.state_dict()` with whole tensors on the main process's CPU (None elsewhere); a collective.

    Each tensor's local part is copied only while it is being gathered.
    """
    return whole_on_main((name, t, local_part(t)) for name, t in model.state_dict(keep_vars=True).items())


def full_tensors_on_main(tree):
    """`tree` (nested dicts and lists, e.g. an optimiser state dict) with every FSDP shard made whole,
    on the main process's CPU; None elsewhere. A collective, one tensor at a time."""

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v) for v in x)
        return _kept_on_main(full_tensor(x)) if isinstance(x, torch.Tensor) else x

    out = walk(tree)
    return out if is_main() else None


def like_param(t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Whole tensor `t` laid out like `param`: this process's FSDP shard of it when `param` is a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and not isinstance(t, DTensor):
        return distribute_tensor(t.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return t


def cut_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A whole-tensor optimiser state dict (as `full_tensors_on_main` wrote it) cut to this process's
    shards of the sharded parameters, before `optimizer.load_state_dict`, one tensor at a time."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimiser
    for saved, group in zip(state["param_groups"], inner.param_groups):
        for index, p in zip(saved["params"], group["params"]):
            st = state["state"].get(index, {})
            for key, value in st.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.dim() > 0:
                    st[key] = like_param(value, p)
    return state
