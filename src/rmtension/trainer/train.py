"""Reward-model training: a plain loop over pairs with exact resume.

Chosen and rejected go through one forward pass; batches are grouped by length and padded
dynamically; with frozen lower layers the trunk comes from a shared `TrunkCache`. The model is
selected on the validation split only.

Under `accelerate launch` the same loop runs in every process: the model and optimiser go through
`Accelerator.prepare` (DDP; FSDP 2 or DeepSpeed ZeRO-3 with sharded weights; DeepSpeed ZeRO-2),
each process takes its shard of every global batch, and the loss is weighted so that the synced
gradient, the loss curve and the validation accuracy equal a single-process run's with the same
`batch_size` (to float rounding; models with dropout draw different masks). Only the main
process writes.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from rmtension.run import dist, interrupt
from rmtension.config import TrainConfig
from rmtension.model.encode import EncodedPairs, batches
from rmtension.errors import ConfigError, TrainingDiverged
from rmtension.model.forward import PairForward
from rmtension.model.heads import pick_heads
from rmtension.trainer.losses import bradley_terry_loss, split_rewards
from rmtension.run.progress import stage_bar
from rmtension.run.runio import write_csv, write_json
from rmtension.run.tracking import MetricsLog
from rmtension.model.scope import restrict_to_neurons, set_trainable
from rmtension.model.trunk import TrunkCache
from rmtension.trainer.checkpoint import Checkpoint, load_trainable, save_hf_folder, trainable_state
from rmtension.trainer.conflict import CSV_COLUMNS, block_names, measure, pcgrad_step
from rmtension.trainer.strategy import SingleProcess, strategy_for
from rmtension.stats.bootstrap import correct


@dataclass
class TrainResult:
    out_dir: Path
    best_step: int
    best_val_accuracy: float | None  # None when trained without validation
    metrics: dict = field(repr=False)


def disable_dropout(model: nn.Module) -> int:
    """Set p = 0 on every `nn.Dropout` of `model`; returns how many there were."""
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in drops:
        m.p = 0.0
    return len(drops)


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step `step`.

    1. Linear warmup from 0 over `warmup` steps.
    2. Then linear or cosine decay to 0 at `total` (or constant).
    """
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress


def trainable_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters by their names in the whole model.

    Take this before `cut_trunk`: inside it the kept blocks are renumbered from 0, so names read
    there would point at the wrong blocks once the model is whole again.
    """
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def train_steps(n_pairs: int, cfg: TrainConfig) -> int:
    """Optimiser steps of a training run on `n_pairs` pairs."""
    return max(1, math.ceil(cfg.epochs * math.ceil(n_pairs / cfg.batch_size) / cfg.grad_accum))


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_reward_model(
    model: nn.Module,
    tokenizer,
    train: EncodedPairs,
    val: EncodedPairs | None,
    cfg: TrainConfig,
    seed: int,
    out_dir: str | Path,
    cache: TrunkCache | None = None,
    resume: bool = True,
    progress: bool = True,
    bar=None,
    objectives: np.ndarray | None = None,
    pcgrad: bool = False,
    resume_key: str | None = None,
    heads: tuple[np.ndarray, np.ndarray | None] | None = None,
    plant_neurons: int | None = None,
) -> TrainResult:
    """Train with the Bradley-Terry loss, keep the best checkpoint on `val`, save an HF folder to `out_dir`.

    With `val=None` there is no validation and the final model is kept.

    `model` must already carry the seeded head initialisation and sit on `dist.device()`. With
    `cache`, `model`'s frozen trunk must be the one the cache was computed from. Writes
    `metrics.json` and, step by step, `metrics.jsonl` (plus `cfg.trackers`).

    `objectives`: [N] objective code of each training pair (`trainer.conflict.HELPFUL`/`HARMLESS`) of a
    mixed RM; with it, `cfg.conflict_every` measures gradient conflict into `conflict.csv`, and
    `pcgrad` trains with projected gradients (`rmtension.trainer.conflict`). `resume_key`: what the
    weights depend on (the study's training hash); a checkpoint written under another key is
    discarded, not resumed.

    `heads`: for a multi-head `model` (`rmtension.model.heads`), the head of every training pair and
    of every validation pair ([N] and [N_val] row indices): each pair trains, and is validated on, only
    its own head.

    `bar`: a progress bar (tqdm) to advance by each optimiser step (the stage's); else `progress` draws one.

    `plant_neurons`: n; only MLP neurons 0..n-1 of the trainable blocks train, the score head frozen
    (`train.plant_neurons`, `rmtension.model.scope.restrict_to_neurons`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _setup(model, train, cfg, out_dir, cache, objectives, pcgrad, heads, plant_neurons)
    torch.manual_seed(seed)
    state, best, ckpt = _start(run, out_dir, resume, resume_key)
    log = MetricsLog(
        out_dir,
        run.acc,
        cfg.trackers,
        f"{out_dir.parent.name}/{out_dir.name}",
        {**cfg.model_dump(mode="json"), "seed": seed},
        state["step"] if state["resumed"] else None,
    )
    del state["resumed"]
    model.train()
    name, own_bar = f"{out_dir.parent.name}/{out_dir.name}", bar is None
    bar = stage_bar(f"train {name}", run.total_steps, "step", show=progress) if own_bar else bar
    bar.update(state["step"])  # a resumed run's steps
    loop = Loop(run, train, val, cfg, seed, ckpt, log, bar, name)
    with log, PairForward(model, tokenizer.pad_token_id, cfg.bf16, cache, runner=run.runner) as fwd:
        best = loop.until_done(fwd, state, best, out_dir)
    if own_bar:
        bar.close()
    return _finish(run, model, tokenizer, train, val, cfg, state, best, ckpt, out_dir)


@dataclass
class Run:
    """What a training run set up before its loop: the model's trainable parameters, the optimiser,
    the strategy across processes, and the step function and hooks the loop calls."""

    k: int
    named: dict[str, nn.Parameter]
    total_steps: int
    n_batches: int
    optimizer: torch.optim.Optimizer
    scheduler: object
    acc: object
    runner: nn.Module
    strategy: SingleProcess
    step: object
    """`step(fwd, train, idx, sync, where, ckpt_dir) -> mean loss`: `PairStep` or `PCGradStep`."""
    conflict: ConflictHook | None
    val_heads: np.ndarray | None
    """The head of every validation pair of a multi-head model, else None."""


def _setup(model, train, cfg, out_dir, cache, objectives, pcgrad, heads, plant_neurons=None) -> Run:
    k = set_trainable(model, cfg.trainable)
    if plant_neurons is not None:
        restrict_to_neurons(model, k, plant_neurons)
    if cfg.disable_dropout:
        disable_dropout(model)
    if cache is not None and cache.k != k:
        raise ValueError(f"trunk cache cut at top {cache.k} blocks, but trainable={cfg.trainable}")
    params = list(trainable_params(model).values())
    n_batches = math.ceil(len(train) / cfg.batch_size)
    total_steps = train_steps(len(train), cfg)
    optimizer, scheduler = _optimiser(params, cfg, total_steps)
    # Under several processes `runner` is the DDP-wrapped model (its backward averages gradients over
    # processes), or under FSDP the model itself, sharded in place: its parameters are new objects,
    # so they are looked up again. The scheduler stays on the plain optimiser, so it steps once per
    # optimiser step.
    acc = dist.accelerator(cfg.trackers, out_dir / "tracking")
    runner, optimizer = dist.prepare(acc, model, optimizer, cfg.grad_accum, cfg.max_grad_norm, cfg.batch_size)
    strategy = strategy_for(acc, runner, model)
    named = trainable_params(model)
    conflict_on = objectives is not None and cfg.conflict_every is not None
    if (conflict_on or pcgrad) and not strategy.takes_gradient_hooks:
        raise ConfigError(
            "train.conflict_every and train.pcgrad run on one process or DDP, not FSDP / DeepSpeed"
        )
    if plant_neurons is not None and not strategy.takes_gradient_hooks:  # its masks are gradient hooks
        raise ConfigError("train.plant_neurons runs on one process or DDP, not FSDP / DeepSpeed")
    if pcgrad and objectives is None:
        raise ValueError("pcgrad needs the objective of every training pair")
    if heads is not None and (conflict_on or pcgrad):
        raise ValueError("a multi-head model trains without conflict measurement or PCGrad")
    blocks_of = block_names(model, list(named)) if conflict_on or pcgrad else []
    params = list(named.values())
    step = (
        PCGradStep(objectives, cfg, params, blocks_of)
        if pcgrad
        else PairStep(strategy, cfg, heads[0] if heads is not None else None)
    )
    conflict = ConflictHook(objectives, cfg, params, blocks_of, total_steps) if conflict_on else None
    val_heads = heads[1] if heads is not None else None
    return Run(
        k,
        named,
        total_steps,
        n_batches,
        optimizer,
        scheduler,
        acc,
        runner,
        strategy,
        step,
        conflict,
        val_heads,
    )


def _start(run: Run, out_dir: Path, resume: bool, resume_key: str | None) -> tuple[dict, dict, Checkpoint]:
    """The loop's state and best weights: fresh, or from the checkpoint of the same configuration."""
    state = {
        "step": 0,
        "loss": [],
        "val": [],
        "best_step": -1,
        "best_val_accuracy": -1.0,
        "seconds": 0.0,
        "pairs_seen": 0,
        "tokens_seen": 0,
        "conflict": [],
        "conflict_skipped": 0,
        "conflict_seconds": 0.0,
    }
    best = trainable_state(run.named)
    ckpt = Checkpoint(out_dir, run.strategy.checkpoint_engine())
    resuming = resume and ckpt.exists()
    if resuming and resume_key is not None and ckpt.key() not in (None, resume_key):
        dist.main_only(shutil.rmtree, ckpt.dir, ignore_errors=True)  # a different configuration's run
        dist.barrier()
        resuming = False
    state["resume_key"] = resume_key
    if resuming:
        fresh = dict(state)
        state, best = ckpt.load(run.named, run.optimizer, run.scheduler)
        state = {**fresh, **state}  # keys added since that checkpoint was written start empty
    state["resumed"] = resuming
    return state, best, ckpt


@dataclass
class Loop:
    """The training loop: optimiser steps of `grad_accum` micro-batches, validation, checkpoints."""

    setup: Run
    train: EncodedPairs
    val: EncodedPairs | None
    cfg: TrainConfig
    seed: int
    ckpt: Checkpoint
    log: MetricsLog
    bar: object
    name: str
    order_epoch: int = -1
    order: list = field(default_factory=list)
    lr: float = 0.0
    """The learning rate of the last optimiser step (read before it stepped)."""

    def until_done(self, fwd: PairForward, state: dict, best: dict, out_dir: Path) -> dict:
        """Train until the last step (or a stop request, after a checkpoint); returns the best weights."""
        r, cfg = self.setup, self.cfg
        t0 = time.perf_counter()
        while state["step"] < r.total_steps:
            losses = self.optimiser_step(fwd, state)
            mean_loss = float(np.mean(losses))
            state["loss"].append([state["step"], mean_loss])
            row = {"step": state["step"], "loss": mean_loss, "lr": self.lr}
            self.bar.update(1)
            self.bar.set_postfix_str(f"{self.name} loss={mean_loss:.3f}", refresh=False)
            if self.val is not None and (
                state["step"] % cfg.eval_every == 0 or state["step"] == r.total_steps
            ):
                best = self.validate(fwd, state, row, best)
            self.log.log(row)
            if dist.any_across(interrupt.stop_requested()):
                interrupt.request()  # every process stops at the same step
            stopping = interrupt.stop_requested() and state["step"] < r.total_steps
            if (state["step"] % cfg.checkpoint_every == 0 and state["step"] < r.total_steps) or stopping:
                state["seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.ckpt.save(r.named, best, r.optimizer, r.scheduler, state)
                interrupt.check(f"during training of {out_dir} at step {state['step']} (checkpoint saved)")
        state["seconds"] += time.perf_counter() - t0
        return best

    def optimiser_step(self, fwd: PairForward, state: dict) -> list[float]:
        """`grad_accum` micro-batches, clipping and one optimiser and scheduler step; their losses."""
        r, cfg = self.setup, self.cfg
        r.optimizer.zero_grad(set_to_none=True)
        losses = []
        for micro in range(cfg.grad_accum):
            idx = self.batch(state["step"] * cfg.grad_accum + micro)
            if micro == 0 and r.conflict is not None:
                r.conflict.before_step(fwd, self.train, idx, state)
            sync = micro == cfg.grad_accum - 1  # DDP averages gradients once per optimiser step
            losses.append(r.step(fwd, self.train, idx, sync, f"step {state['step']}", self.ckpt.dir))
            state["pairs_seen"] += len(idx)
            state["tokens_seen"] += int(
                sum(len(self.train.chosen[i]) + len(self.train.rejected[i]) for i in idx)
            )
        r.acc.clip_grad_norm_(list(r.named.values()), cfg.max_grad_norm)
        self.lr = r.scheduler.get_last_lr()[0]
        r.optimizer.step()
        r.scheduler.step()
        state["step"] += 1
        return losses

    def batch(self, m: int) -> list[int]:
        """The pairs of micro-batch `m`: the data order is a pure function of (seed, epoch)."""
        epoch, b = divmod(m, self.setup.n_batches)
        if epoch != self.order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self.order = batches(self.train.lengths(), self.cfg.batch_size, rng, self.cfg.length_grouping)
            self.order_epoch = epoch
        return self.order[b]

    def validate(self, fwd: PairForward, state: dict, row: dict, best: dict) -> dict:
        """Validation accuracy into `row` and `state`; the best weights so far."""
        row["val_accuracy"] = val_acc = float(
            correct(*own_heads(fwd.score(self.val), self.setup.val_heads)).mean()
        )
        state["val"].append([state["step"], val_acc])
        if val_acc > state["best_val_accuracy"]:
            state["best_val_accuracy"], state["best_step"] = val_acc, state["step"]
            return trainable_state(self.setup.named)
        return best


def _finish(
    run: Run, model, tokenizer, train, val, cfg, state: dict, best: dict, ckpt, out_dir: Path
) -> TrainResult:
    """Keep the best weights, write metrics.json (and conflict.csv), save the HF folder, drop the checkpoint."""
    if val is None:  # the final weights, already in place, are the ones kept
        state["best_step"], state["best_val_accuracy"] = state["step"], None
    else:
        load_trainable(run.named, best)
    metrics = _metrics(state, len(train), 0 if val is None else len(val), run.total_steps, cfg, run.k)
    if run.conflict is not None:
        run.conflict.finish(state, metrics, out_dir)
    if isinstance(run.step, PCGradStep):
        metrics["pcgrad"] = {"scope": cfg.pcgrad_scope}
    # sharded (FSDP, ZeRO-3): the whole weights are gathered (a collective) and only the main process keeps them
    full = run.strategy.full_state()
    dist.main_only(save_hf_folder, model, tokenizer, out_dir, full)
    write_json(out_dir / "metrics.json", metrics)
    dist.main_only(shutil.rmtree, ckpt.dir, ignore_errors=True)
    return TrainResult(out_dir, state["best_step"], state["best_val_accuracy"], metrics)


class ConflictHook:
    """Measures gradient conflict between the objectives at the first micro-batch of every
    `conflict_every`-th optimiser step (and the first and last), into `conflict.csv`."""

    def __init__(self, objectives: np.ndarray, cfg: TrainConfig, params, blocks_of, total_steps: int):
        self.objectives, self.cfg, self.params, self.blocks_of = objectives, cfg, params, blocks_of
        self.total_steps = total_steps

    def before_step(self, fwd: PairForward, train: EncodedPairs, idx: list[int], state: dict) -> None:
        if not _measured(state["step"], self.cfg.conflict_every, self.total_steps):
            return
        t1 = time.perf_counter()
        rows = measure(
            fwd, train, idx, self.objectives, self.cfg, self.params, self.blocks_of, state["step"] + 1
        )
        state["conflict_seconds"] += time.perf_counter() - t1
        if rows is None:
            state["conflict_skipped"] += 1
        else:
            state["conflict"].extend(rows)

    def finish(self, state: dict, metrics: dict, out_dir: Path) -> None:
        frame = pd.DataFrame(state["conflict"], columns=list(CSV_COLUMNS))
        dist.main_only(write_csv, out_dir / "conflict.csv", frame)
        metrics["conflict"] = {
            "every": self.cfg.conflict_every,
            "measured_steps": int(frame["step"].nunique()),
            "skipped_steps": state["conflict_skipped"],
            "seconds": state["conflict_seconds"],
            "share_of_training_time": state["conflict_seconds"] / max(state["seconds"], 1e-9),
            "cost": "two extra forward and backward passes per measured step",
        }


class PCGradStep:
    """One micro-batch with projected gradients (`rmtension.trainer.conflict.pcgrad_step`)."""

    def __init__(self, objectives: np.ndarray, cfg: TrainConfig, params, blocks_of):
        self.objectives, self.cfg, self.params, self.blocks_of = objectives, cfg, params, blocks_of

    def __call__(self, fwd, train, idx, sync: bool, where: str, ckpt_dir: Path) -> float:
        cfg = self.cfg
        loss = pcgrad_step(
            fwd, train, idx, self.objectives, cfg, self.params, self.blocks_of, 1 / cfg.grad_accum
        )
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"{where}: non-finite loss ({loss}); the last good checkpoint in {ckpt_dir} is kept"
            )
        return loss


def own_heads(
    scores: tuple[np.ndarray, np.ndarray], heads: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) rewards [N] of each pair under its own head; `scores`: [N] or [N, K] each
    (`PairForward.score`), `heads`: [N] row indices, or None for a one-head model."""
    if heads is None:
        return scores
    rows = np.arange(len(heads))
    return scores[0][rows, heads], scores[1][rows, heads]


def _measured(step: int, every: int, total: int) -> bool:
    """Whether 0-based optimiser step `step` measures conflict: every `every` steps, and the first and last."""
    return step % every == 0 or step == total - 1


def _optimiser(params: list[nn.Parameter], cfg: TrainConfig, total_steps: int):
    """AdamW and its warmup-then-decay schedule (`lr_lambda`), stepped once per optimiser step.

    In one process AdamW is fused: one pass over each parameter instead of a chain of elementwise
    ops, which matters most for the large embedding matrix (MiniLM: half its 22.7M parameters).
    """
    fused = dist.world_size() == 1 and all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup, total_steps, cfg.schedule)
    )
    return optimizer, scheduler


class PairStep:
    """One micro-batch with the Bradley-Terry loss, back-propagated by the run's strategy."""

    def __init__(self, strategy: SingleProcess, cfg: TrainConfig, heads: np.ndarray | None = None):
        self.strategy, self.cfg, self.heads = strategy, cfg, heads

    def __call__(
        self, fwd: PairForward, train: EncodedPairs, idx: list[int], sync: bool, where: str, ckpt_dir: Path
    ) -> float:
        """Forward and backward of one global batch `idx` (one micro-batch), split over processes.

        Each process takes its shard of the pairs (`dist.shard`). Its mean loss is weighted by
        n_local * W / n before backward, so the gradient DDP averages over the W processes equals the
        gradient of the mean loss over all n pairs, also when shards differ in size. Returns that mean
        loss (the same on every process). A non-finite loss on any process stops every process.
        """
        mine = dist.shard(idx)
        weight = len(mine) * dist.world_size() / len(idx)
        # More processes than pairs: run one pair at weight 0, since DDP needs a backward from every process.
        rows = mine or idx[:1]
        rewards = fwd(train, rows)
        if self.heads is not None:  # [2B, K] -> [2B]: each pair's own head
            rewards = pick_heads(rewards, torch.as_tensor(self.heads[rows]))
        r_c, r_r = split_rewards(rewards)
        loss = bradley_terry_loss(r_c, r_r, self.cfg.margin, self.cfg.center_rewards_coef)
        finite = (
            bool(torch.isfinite(loss)) and bool(torch.isfinite(r_c).all()) and bool(torch.isfinite(r_r).all())
        )
        total, bad = dist.sum_across(
            torch.tensor([loss.item() * len(mine), float(not finite)], dtype=torch.float64)
        ).tolist()
        if bad:
            raise TrainingDiverged(
                f"{where}: non-finite loss or reward (loss={total / len(idx)}); "
                f"the last good checkpoint in {ckpt_dir} is kept"
            )
        self.strategy.backward(loss, weight, sync, self.cfg.grad_accum)
        return total / len(idx)


def _metrics(state: dict, n_train: int, n_val: int, total_steps: int, cfg: TrainConfig, k: int) -> dict:
    secs = max(state["seconds"], 1e-9)
    return {
        "n_train": n_train,
        "n_val": n_val,
        "steps": total_steps,
        "trainable": cfg.trainable,
        "trainable_top_blocks": k,
        "loss": state["loss"],
        "val_accuracy": state["val"],
        "best_step": state["best_step"],
        "best_val_accuracy": state["best_val_accuracy"],
        "seconds": state["seconds"],
        "pairs_per_s": state["pairs_seen"] / secs,
        "tokens_per_s": state["tokens_seen"] / secs,
        "peak_memory_mb": _peak_memory_mb(),
    }


def read_metrics(rm_dir: str | Path) -> dict:
    return json.loads((Path(rm_dir) / "metrics.json").read_text())
