"""The shared kernel of the study's stages: `Prepared` (what the data stage hands every later stage in
one process), the RMs a study trains and the hash each one's weights depend on, and the frozen-trunk
cache they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from rmtension.config import StudyConfig, config_hash
from rmtension.model.backbones import load_reward_model
from rmtension.model.encode import EncodedPairs
from rmtension.model.precision import use_bf16
from rmtension.model.kinds import lookup, ratio_rm, split_view, views
from rmtension.model.scope import set_trainable
from rmtension.model.trunk import TrunkCache, trunk_fingerprint
from rmtension.run import dist, interrupt
from rmtension.run.context import StudyContext
from rmtension.run.log import device, log
from rmtension.run.progress import stage_bar
from rmtension.trainer.conflict import HARMLESS, HELPFUL


@dataclass
class Prepared:
    """Everything later stages share in one process: the context, tokenizer, encodings and trunk cache."""

    ctx: StudyContext
    tokenizer: object
    train: dict[str, EncodedPairs]
    val: dict[str, EncodedPairs]
    tests: dict[str, EncodedPairs]
    subsets: dict[str, str]
    """pair id -> subset, for per-subset breakdowns."""
    cache: object | None = None
    timings: dict[str, float] = field(default_factory=dict)
    force: frozenset[str] = frozenset()
    """Stages that recompute even when their manifest matches (`rmtension ablate`, `neurons score`)."""


MIXED_ONLY = ("conflict_every", "pcgrad", "pcgrad_scope", "controls")
"""Training settings that concern only which extra RMs train (conflict measurement, PCGrad, the dilution
controls): no single-objective RM's weights depend on them."""


def train_settings(train) -> dict:
    """The training settings a single-objective RM's weights depend on: not the seed list, the trackers
    or the mixed-only settings (so switching conflict measurement on retrains no single-objective RM)."""
    return {**train.model_dump(mode="json", exclude={"trackers", *MIXED_ONLY}), "seeds": []}


def train_hash(cfg: StudyConfig, objective: str, seed: int) -> str:
    """Hash of what RM `objective` (a registered name) at `seed` depends on."""
    parts = [cfg.data, cfg.model, train_settings(cfg.train), objective, str(seed)]
    if lookup(objective).data == "mixed" and not lookup(objective).heads:
        extra = {"conflict_every": cfg.train.conflict_every}
        if lookup(objective).pcgrad:
            extra["pcgrad_scope"] = cfg.train.pcgrad_scope
        if any(v is not None for v in extra.values()):  # off: the hash a mixed RM had before these settings
            parts.append(extra)
    return config_hash(*parts)


def study_rms(cfg: StudyConfig) -> list[str]:
    """The RMs the study trains per seed, by registered name: the three objectives, the dilution
    controls (`train.controls`), `mixed_pcgrad` (`train.pcgrad`), `two_head` (`combine.two_head`) and
    the data-ratio RMs `mixed_r<r>` (`data.ratios`)."""
    controls = ["helpful_half", "harmless_half"] if cfg.train.controls else []
    two_head = cfg.combine is not None and cfg.combine.two_head
    extra = (["mixed_pcgrad"] if cfg.train.pcgrad else []) + (["two_head"] if two_head else [])
    ratios = [ratio_rm(r) for r in cfg.combine.trained_ratios()] if cfg.combine is not None else []
    return ["helpful", "harmless", "mixed", *controls, *extra, *ratios]


def study_views(cfg: StudyConfig) -> list[tuple[str, str, str | None]]:
    """(view, trained RM, head) of every RM the study evaluates: each one-head RM as itself, each head
    of a multi-head RM as `<rm>:<head>` (`rmtension.model.kinds.views`)."""
    return [(v, *split_view(v)) for rm in study_rms(cfg) for v in views(rm)]


def pair_heads(prep: Prepared, part: str) -> np.ndarray:
    """[N] head row (`rmtension.model.heads.HEADS`) of each `part` ("train" or "val") pair of the mixed
    RM: the objective whose pairs it is."""
    harmless = {p.pair_id for p in prep.ctx.bundle.splits["harmless"][part]}
    pairs = prep.ctx.bundle.splits["mixed"][part]
    return np.array([HARMLESS if p.pair_id in harmless else HELPFUL for p in pairs], dtype=np.int64)


def pair_objectives(prep: Prepared, data: str) -> np.ndarray | None:
    """[N] objective code of each training pair of a mixed RM (`trainer.conflict.HELPFUL`/`HARMLESS`); None otherwise."""
    if data != "mixed":
        return None
    harmless = {p.pair_id for p in prep.ctx.bundle.splits["harmless_half"]["train"]}  # its harmless share
    pairs = prep.ctx.bundle.splits["mixed"]["train"]
    return np.array([HARMLESS if p.pair_id in harmless else HELPFUL for p in pairs], dtype=np.int64)


def caches_trunk(cfg: StudyConfig) -> bool:
    """Whether the study caches a frozen trunk (`train.cache_trunk`, and some block frozen)."""
    return cfg.train.trainable != "all" and cfg.train.cache_trunk


def empty_trunk_cache(prep: Prepared) -> tuple[nn.Module, TrunkCache]:
    """(the base model with the study's trainable scope set, an empty cache of its frozen trunk): what
    `trunk_cache` and any stage's own cache (the audit's, in fp32) fill."""
    cfg = prep.ctx.cfg
    model = load_reward_model(prep.ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code).to(
        device()
    )
    k = set_trainable(model, cfg.train.trainable)
    return model, TrunkCache(k, trunk_fingerprint(model, k))


def trunk_cache(prep: Prepared):
    """Build the shared frozen-trunk cache once, over every pair any RM will see (None when the study
    caches no trunk: `caches_trunk`)."""
    cfg = prep.ctx.cfg
    if prep.cache is not None or not caches_trunk(cfg):
        return prep.cache
    t0 = time.perf_counter()
    model, cache = empty_trunk_cache(prep)
    k = cache.k
    sets = {
        **{f"train/{o}": e for o, e in prep.train.items()},
        **{f"val/{o}": e for o, e in prep.val.items()},
        **{f"test/{t}": e for t, e in prep.tests.items()},
    }
    unique = len({pid for e in sets.values() for pid in e.pair_ids})
    log(f"caching the frozen trunk for {unique} pairs (top {k} blocks train)")
    with stage_bar("trunk cache", 2 * unique, "seq") as bar:  # chosen and rejected of each pair
        for enc in sets.values():
            cache.add(model, enc, prep.tokenizer.pad_token_id, cfg.eval.batch_size, cfg.train.bf16, bar)
            interrupt.check("while caching the trunk")
    prep.cache = cache
    prep.timings["trunk_cache_s"] = time.perf_counter() - t0
    return cache


def top_cache(prep: Prepared, stage_bf16: bool) -> Callable[[], TrunkCache | None] | None:
    """What gives the trunk cache (built if need be, as for evaluation, and only when the stage runs)
    when the neuron sets lie in the trained blocks above it and the stage computes in the cache's
    precision (`train.bf16`), so the neuron and ablation forwards always start from it: a resumed
    study computes what an uninterrupted one does. A stage in fp32 over a bf16 cache runs whole."""
    cfg, where = prep.ctx.cfg, dist.device()
    same_precision = use_bf16(stage_bf16, where) == use_bf16(cfg.train.bf16, where)
    uses = caches_trunk(cfg) and cfg.neurons.layers == "trained" and same_precision
    return (lambda: trunk_cache(prep)) if uses else None
