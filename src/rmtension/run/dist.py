"""Several processes, one code path: the distributed glue over accelerate.

Every stage calls these functions whether it runs in one process or under `accelerate launch`.
With one process they are identities (a shard is everything, a sum across processes is the value
itself, a barrier returns at once), so a single-process run takes exactly the same path.

Conventions, relied on by training, evaluation, neuron scoring and ablation:

- Work is split by `shard`: process r of W takes items r, r + W, r + 2W, ... of a list that every
  process builds identically (batches of a deterministic plan, pairs of a global batch). Batches
  are sorted by length, so striding gives every process a similar amount of work.
- Per-item results come back in their original order with `gather_rows`; running sums are added
  with `sum_across` before any division.
- Only the main process writes files (`main_only`; `rmtension.run.runio` uses it for every write) and
  the others wait at a barrier until the file is in place, so every process may read it next.
- Training may shard the weights (FSDP 2, DeepSpeed ZeRO-3); `rmtension.run.shards` holds the
  parts of sharded parameters and makes them whole.

On a machine without a GPU, or with `ACCELERATE_USE_CPU=true`, processes run on the CPU and talk
through gloo: accelerate's own `--cpu` flag starts several processes only through mpirun, so the
CPU launch config (`configs/accelerate/ddp_cpu.yaml`) starts them through torchrun instead.

Imports inside functions: accelerate loads only when a run uses processes or trackers.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def _use_cpu() -> bool:
    """CPU processes when asked (`ACCELERATE_USE_CPU`) or when there is no GPU to use."""
    flag = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    return flag or not torch.cuda.is_available()


def state():
    """The process-wide `accelerate.PartialState` (created on first use; joins the process group when launched)."""
    from accelerate import PartialState

    return PartialState(cpu=_use_cpu())


def _launched_with(flag: str) -> bool:
    """`accelerate launch` sets ACCELERATE_USE_FSDP / ACCELERATE_USE_DEEPSPEED=true in every process."""
    return os.environ.get(flag, "").strip().lower() == "true"


def _fsdp_requested() -> bool:
    return _launched_with("ACCELERATE_USE_FSDP")


# Under an FSDP launch with CPU-RAM-efficient loading on (the config's
# fsdp_cpu_ram_efficient_loading), transformers loads new weights (a backbone's fresh score head)
# on the meta device in every process but the first, expecting FSDP to broadcast them; rmtension's
# stages load whole models in every process, so it is turned off before any model is loaded.
if _fsdp_requested():
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"


def accelerator(log_with: Sequence[str] = (), project_dir: str | os.PathLike | None = None):
    """A fresh `accelerate.Accelerator` over the shared process state, with these trackers.

    One per training run: trackers belong to an Accelerator, and a study trains many models.
    DDP does not broadcast buffers before each forward: the backbones' buffers are constants
    (position ids, rotary frequencies), and over a trunk cache the embeddings that hold them are
    swapped out, which leaves DDP an empty buffer list it cannot broadcast.

    FSDP on CPU processes: accelerate turns an FSDP launch into FSDP only on accelerators, and
    leaves CPU processes replicated. PyTorch's FSDP 2 shards over gloo as well, so here the
    accelerator is switched to FSDP with the plugin accelerate read from the launch config: the
    CPU run takes the same sharded path as a GPU run (configs/accelerate/fsdp_cpu.yaml, and the
    two-process test). DeepSpeed likewise: accelerate keeps CPU processes off DeepSpeed, which
    runs on the CPU over gloo, so its communication joins the process group and the accelerator is
    switched to DeepSpeed with the plugin read from the config (deepspeed_zero{2,3}_cpu.yaml).
    """
    from accelerate import Accelerator
    from accelerate.utils import (
        DistributedDataParallelKwargs,
        DistributedType,
        FullyShardedDataParallelPlugin,
    )

    acc = Accelerator(
        cpu=_use_cpu(),
        log_with=list(log_with) or None,
        project_dir=project_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    if _fsdp_requested() and acc.distributed_type == DistributedType.MULTI_CPU:
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        _switch(acc, DistributedType.FSDP)
    if _deepspeed_requested() and acc.distributed_type == DistributedType.MULTI_CPU:
        import deepspeed
        from accelerate.utils import DeepSpeedPlugin

        deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)  # joins the gloo group
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision("no")
        plugin.select(_from_accelerator_state=True)
        acc.state.deepspeed_plugins = plugin
        _switch(acc, DistributedType.DEEPSPEED)
    if acc.distributed_type == DistributedType.DEEPSPEED:
        # accelerate's DeepSpeed plugin tells transformers that ZeRO-3 is on, after which every
        # from_pretrained partitions the model it loads; the stages that load models (evaluation,
        # scoring, ablation) work on whole models, and only the trainer's engine partitions.
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    return acc


def _switch(acc, kind) -> None:
    # on both states: every AcceleratorState() copies the process state's type over its own
    state().distributed_type = kind
    acc.state.distributed_type = kind


def _deepspeed_requested() -> bool:
    return _launched_with("ACCELERATE_USE_DEEPSPEED")


def uses_deepspeed(acc) -> bool:
    """True when `acc` trains through DeepSpeed's engine (which steps, clips and checkpoints itself)."""
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED


def prepare(
    acc,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_accum: int = 1,
    max_grad_norm: float = 1.0,
    batch_size: int = 1,
):
    """`acc.prepare(model, optimizer)`, with the settings each engine needs.

    Under several processes the model comes back DDP-wrapped, sharded in place by FSDP 2 (its
    parameters become DTensors, and the optimiser is pointed at them), or inside DeepSpeed's
    engine (under ZeRO-3 its parameters become flat partitions, `p.ds_tensor`). The engine takes
    accumulation and clipping from the training config (`grad_accum`, `max_grad_norm`), whatever
    the DeepSpeed config says; its batch sizes are bookkeeping only, since the trainer splits each
    global batch of `batch_size` pairs itself. torch 2.13 marks DDP's `broadcast_buffers` as
    deprecated in favour of `forward_sync_buffers`, which accelerate cannot pass yet; the warning
    is silenced here, where it is expected.
    """
    import warnings

    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        _fsdp_wrap_classes(acc.state.fsdp_plugin, model)
    if acc.distributed_type == DistributedType.DEEPSPEED:
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["gradient_accumulation_steps"] = grad_accum
        ds["gradient_clipping"] = max_grad_norm
        ds["train_micro_batch_size_per_gpu"] = max(1, batch_size // acc.num_processes)
        ds["train_batch_size"] = ds["train_micro_batch_size_per_gpu"] * grad_accum * acc.num_processes
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*broadcast_buffers.* is deprecated", category=FutureWarning
        )
        return acc.prepare(model, optimizer)


def _fsdp_wrap_classes(plugin, model: torch.nn.Module) -> None:
    """Shard each block of `model` as one unit, except blocks that hold the input embedding.

    The blocks are the config's `fsdp_transformer_layer_cls_to_wrap`, else the model's
    `_no_split_modules`. accelerate then shards the input embedding as a unit of its own, which
    fails when a block already holds it (BERT lists `BertEmbeddings`); such a block is left to
    the root unit. Set per model, since one process may train several backbones.
    """
    asked = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").strip()
    names = asked.split(",") if asked else list(getattr(model, "_no_split_modules", None) or [])
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    holders = {
        type(m).__name__
        for m in model.modules()
        if emb is not None and m is not emb and any(c is emb for c in m.modules())
    }
    plugin.transformer_cls_names_to_wrap = [n.strip() for n in names if n.strip() not in holders]


def device() -> torch.device:
    """This process's device: its GPU when launched on GPUs, else the CPU."""
    return torch.device(state().device)


def rank() -> int:
    return state().process_index


def world_size() -> int:
    return state().num_processes


def is_main() -> bool:
    return state().is_main_process


def barrier() -> None:
    """Wait until every process gets here (returns at once with one process)."""
    state().wait_for_everyone()


def shutdown() -> None:
    """Wait for every process, then tear the process group down (a no-op with one process).

    Without it, the backend's threads can still be running when the interpreter exits, and a
    process may abort with "terminate called without an active exception"."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        barrier()
        tdist.destroy_process_group()


def shard_of(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Process `rank`'s share of `items`: every `world`-th item from position `rank`.

    >>> shard_of(list("abcde"), 0, 2), shard_of(list("abcde"), 1, 2)
    (['a', 'c', 'e'], ['b', 'd'])
    """
    return list(items[rank::world])


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of `items` (all of them with one process)."""
    return shard_of(items, rank(), world_size())


_inside_main_only = threading.local()


def main_only(fn: Callable[..., T], *args, **kwargs) -> T | None:
    """Run `fn` on the main process only; every process returns once it has finished.

    Call it from every process (it ends in a barrier). Other processes get None. Inside `fn`
    (which only the main process runs) a nested `main_only` runs its function directly: a
    barrier there would wait for processes that are already waiting at the outer one.
    """
    if getattr(_inside_main_only, "active", False):
        return fn(*args, **kwargs)
    out = None
    try:
        if is_main():
            _inside_main_only.active = True
            try:
                out = fn(*args, **kwargs)
            finally:
                _inside_main_only.active = False
    finally:
        barrier()
    return out


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (a download, a cache fill); the others after it."""
    with state().main_process_first():
        yield


def print_main(*args, **kwargs) -> None:
    """`print` on the main process only, so launched runs do not repeat every line."""
    if is_main():
        print(*args, **kwargs)


def _on_comm_device(t: torch.Tensor) -> torch.Tensor:
    # NCCL only moves GPU tensors; gloo moves CPU ones. `device()` is the right one for the backend.
    return t.to(device())


def sum_across(t: torch.Tensor) -> torch.Tensor:
    """Elementwise sum of `t` over processes (any shape, same on every process); returned on `t`'s device."""
    if world_size() == 1:
        return t
    from accelerate.utils import reduce

    return reduce(_on_comm_device(t), "sum").to(t.device)


def any_across(flag: bool) -> bool:
    """True on every process when `flag` is true on at least one."""
    return bool(sum_across(torch.tensor([float(flag)], dtype=torch.float64)).item() > 0)


def stack_across(t: torch.Tensor) -> torch.Tensor:
    """[W, *shape]: every process's `t` (same shape and dtype everywhere), in rank order."""
    if world_size() == 1:
        return t.unsqueeze(0)
    from accelerate.utils import gather

    return gather(_on_comm_device(t.unsqueeze(0))).to(t.device)


def gather_rows(idx: Sequence[int], values: torch.Tensor, total: int) -> torch.Tensor:
    """Per-item results from every process, in the original order.

    idx: [n] positions (in 0..total-1) of this process's rows; values: [n, C].
    Returns [total, C] on every process: row i holds the values of the process that owns item i.
    Every item must be owned by exactly one process. Shards of unequal size are padded for the
    collective (positions -1) and the padding is dropped.
    """
    idx_t = torch.as_tensor(list(idx), dtype=torch.long).reshape(-1)
    if values.dim() != 2 or len(values) != len(idx_t):
        raise ValueError(f"gather_rows: values must be [{len(idx_t)}, C], got {list(values.shape)}")
    if world_size() > 1:
        sizes = stack_across(torch.tensor([len(idx_t)], dtype=torch.long)).reshape(-1)
        width = int(sizes.max())
        pad = width - len(idx_t)
        idx_t = torch.cat([idx_t, torch.full((pad,), -1, dtype=torch.long)])
        values = torch.cat([values, values.new_zeros(pad, values.shape[1])])
        idx_t = stack_across(idx_t).reshape(-1)  # [W * width]
        values = stack_across(values).reshape(-1, values.shape[1])  # [W * width, C]
        keep = idx_t >= 0
        idx_t, values = idx_t[keep], values[keep]
    if sorted(idx_t.tolist()) != list(range(total)):
        raise ValueError(f"gather_rows: positions do not cover 0..{total - 1} exactly once")
    out = values.new_zeros(total, values.shape[1])
    out[idx_t] = values
    return out
