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
- Only the main process writes files (`main_only`; `rmtension.runio` uses it for every write) and
  the others wait at a barrier until the file is in place, so every process may read it next.

On a machine without a GPU, or with `ACCELERATE_USE_CPU=true`, processes run on the CPU and talk
through gloo: accelerate's own `--cpu` flag starts several processes only through mpirun, so the
CPU launch config (`configs/accelerate/ddp_cpu.yaml`) starts them through torchrun instead.
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


def accelerator(log_with: Sequence[str] = (), project_dir: str | os.PathLike | None = None):
    """A fresh `accelerate.Accelerator` over the shared process state, with these trackers.

    One per training run: trackers belong to an Accelerator, and a study trains many models.
    DDP does not broadcast buffers before each forward: the backbones' buffers are constants
    (position ids, rotary frequencies), and over a trunk cache the embeddings that hold them are
    swapped out, which leaves DDP an empty buffer list it cannot broadcast.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(cpu=_use_cpu(), log_with=list(log_with) or None, project_dir=project_dir,
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])


def require_replicated(acc) -> None:
    """Refuse to train under DeepSpeed or FSDP, with a one-line reason.

    The trainer keeps full copies of the trainable weights on every process (the best validation
    weights, the saved model) and saves the optimiser state from the main process alone (exact
    resume). That holds under DDP and with one process; ZeRO-2 shards the optimiser state, and
    ZeRO-3 and FSDP shard the weights too.
    """
    from accelerate.utils import DistributedType

    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        from rmtension.errors import ConfigError

        raise ConfigError(f"train: {acc.distributed_type.value} shards the weights or optimiser state, and training "
                          "does not support that yet (it keeps full copies for best-model selection and exact "
                          "resume); launch with configs/accelerate/ddp_gpu.yaml")


def prepare(acc, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """`acc.prepare(model, optimizer)` after `require_replicated`: the model DDP-wrapped under several processes.

    torch 2.13 marks DDP's `broadcast_buffers` as deprecated in favour of `forward_sync_buffers`,
    which accelerate cannot pass yet; the warning is silenced here, where it is expected.
    """
    import warnings

    require_replicated(acc)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.* is deprecated", category=FutureWarning)
        return acc.prepare(model, optimizer)


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
