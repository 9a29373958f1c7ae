"""Exact-resume checkpoints of reward-model training, and the saved HF folder.

A checkpoint is one `step-<n>/` folder under `<rm_dir>/checkpoint/` with the trainable parameters,
the best-so-far parameters, the optimiser, scheduler and RNG states and the loop state; it is
written atomically and the previous step's folder is removed after it. Under FSDP / ZeRO-3 each
process writes its own shard (`accelerate`'s `save_state`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from rmtension.errors import ArtifactError
from rmtension.run import dist, shards
from rmtension.run.runio import (
    load_tensors,
    load_torch_state,
    read_json,
    save_tensors,
    save_torch_state,
    write_json,
)


def trainable_state(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """A copy of this process's part of every trainable parameter (its shard under FSDP or ZeRO-3)."""
    return {n: shards.local_part(p) for n, p in params.items()}


def whole_state(
    params: dict[str, nn.Parameter], parts: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor] | None:
    """Whole tensors from every process's `parts`, on the main process's CPU (None elsewhere); a collective."""
    return shards.whole_on_main((n, params[n], t) for n, t in parts.items())


def parts_of(params: dict[str, nn.Parameter], whole: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This process's parts of whole tensors read from a checkpoint."""
    if set(whole) != set(params):
        raise ArtifactError(
            f"checkpoint holds parameters {sorted(set(whole) ^ set(params))[:3]}... that this model's "
            "trainable set does not match"
        )
    # in the parameters' order, the same on every process (a file's tensors come back in any order)
    return {n: shards.local_part(p, whole[n]) for n, p in params.items()}


def load_trainable(params: dict[str, nn.Parameter], parts: dict[str, torch.Tensor]) -> None:
    """Copy `parts` (as `trainable_state` gives) into `params`."""
    for n, t in parts.items():
        shards.set_param(params[n], t)


class Checkpoint:
    """`<out>/checkpoint/`: trainable params, best params, optimiser, scheduler, RNG and loop state.

    Each checkpoint goes into a new folder `step<N>/`; `state.json`, written last, names the
    folder that is complete, and older folders are removed only after it. A run killed while
    writing resumes from the previous checkpoint, never from a mix of two.

    Whole tensors, gathered one at a time onto the main process's CPU to be written and cut again
    into each process's shard on load: without DeepSpeed a checkpoint resumes under any launch.
    Under DeepSpeed (`engine`) the engine also writes its own partitioned optimiser state (one
    file per process, in `step<N>/deepspeed/`; DeepSpeed loads them with pickle, so resume only
    checkpoints you wrote), and the checkpoint resumes under the same ZeRO stage and number of
    processes only.
    """

    def __init__(self, out_dir: Path, engine=None):
        self.dir = out_dir / "checkpoint"
        self.engine = engine

    def exists(self) -> bool:
        return (self.dir / "state.json").exists()

    def save(self, params: dict[str, nn.Parameter], best, optimizer, scheduler, state: dict) -> None:
        step = self.dir / f"step{state['step']}"
        dist.main_only(step.mkdir, parents=True, exist_ok=True)
        dist.main_only(
            save_tensors, step / "trainable.safetensors", whole_state(params, trainable_state(params))
        )
        dist.main_only(save_tensors, step / "best.safetensors", whole_state(params, best))
        extra = {
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "torch_rng_per_process": dist.stack_across(torch.get_rng_state()),
        }  # [W, S]: each process's dropout RNG
        if self.engine is None:
            extra["optimizer"] = shards.full_tensors_on_main(optimizer.state_dict())
        else:
            self.engine.save_checkpoint(
                str(step / "deepspeed"), tag="engine", save_latest=False, exclude_frozen_parameters=True
            )
            dist.barrier()
        dist.main_only(save_torch_state, step / "optim.pt", extra)
        # written last: it marks the checkpoint complete
        write_json(self.dir / "state.json", {**state, "folder": step.name, "deepspeed": self._launch()})
        dist.main_only(_remove_other_steps, self.dir, step.name)

    def key(self) -> str | None:
        """The `resume_key` the latest checkpoint was written under (None: none recorded)."""
        return read_json(self.dir / "state.json").get("resume_key")

    def _launch(self) -> str | None:
        if self.engine is None:
            return None
        return f"DeepSpeed ZeRO-{self.engine.zero_optimization_stage()} with {dist.world_size()} processes"

    def load(
        self, params: dict[str, nn.Parameter], optimizer, scheduler
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        state = read_json(self.dir / "state.json")
        if "folder" not in state:
            raise ArtifactError(
                f"{self.dir}: a checkpoint in an older layout (no step folder named in state.json); "
                f"delete {self.dir} to train this model again from the start"
            )
        step, launch = self.dir / state.pop("folder"), state.pop("deepspeed", None)
        if launch != self._launch():
            raise ArtifactError(
                f"{step}: this checkpoint was written {'under ' + launch if launch else 'without DeepSpeed'}"
                f"; resume it under the same launch config, or delete {self.dir} to train this model "
                "again from the start"
            )
        load_trainable(params, parts_of(params, load_tensors(step / "trainable.safetensors")))
        best = parts_of(params, load_tensors(step / "best.safetensors"))
        extra = load_torch_state(step / "optim.pt")
        if self.engine is None:
            optimizer.load_state_dict(shards.cut_optimizer_state(optimizer, extra["optimizer"]))
        else:  # the weights came from trainable.safetensors: the engine's module copy (saved cut to the top
            # blocks over a trunk cache, under renumbered names) is not loaded
            self.engine.load_checkpoint(
                str(step / "deepspeed"),
                tag="engine",
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
                custom_load_fn=_keep_module,
            )
        scheduler.load_state_dict(extra["scheduler"])
        per_process = extra.get("torch_rng_per_process")
        same_world = per_process is not None and len(per_process) == dist.world_size()
        # clone: a row of the stacked states is a view, and set_rng_state crashes on views with an offset
        torch.set_rng_state((per_process[dist.rank()] if same_world else extra["torch_rng"]).clone())
        return state, best


def _keep_module(src, dst) -> None:
    """DeepSpeed's module loader, replaced: the module's weights are already in place."""


def _remove_other_steps(folder: Path, keep: str) -> None:
    for old in folder.glob("step*"):
        if old.is_dir() and old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def save_hf_folder(model: nn.Module, tokenizer, out_dir: Path, state_dict: dict | None = None) -> None:
    """Write the HF folder (`state_dict` as its weights, if given) to a temporary folder, then move each file into place."""
    tmp = out_dir / f".final{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)
    tmp.rmdir()
