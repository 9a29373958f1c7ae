"""The study's reward-model stages: prepare (data, tokenizer, encodings), train, eval and tension.

prep = prepare(run_dir, cfg)   # data/summary.json, splits.json, truncation.json
stage_train(prep)              # rm/<objective>/seed<k>/ (HF folder, metrics.json)
stage_eval(prep)               # eval/<objective>/seed<k>/<test>.csv
stage_tension(prep)            # tension.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rmtension.combine.ratios import add_ratio_splits
from rmtension.config import StudyConfig, config_hash
from rmtension.data.stage import stage_data
from rmtension.model.encode import EncodedPairs, encode_pairs
from rmtension.run import dist, interrupt
from rmtension.rm.registry import lookup, ratio_rm, split_view, views
from rmtension.run.context import StudyContext
from rmtension.run.log import device, log
from rmtension.run.progress import stage_bar
from rmtension.run.runio import inside, stage_complete, write_csv, write_json, write_manifest


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


def prepare(run_dir: Path, cfg: StudyConfig) -> Prepared:
    from rmtension.model.backbones import load_tokenizer, resolve_backbone

    t0 = time.perf_counter()
    bundle, _ = stage_data(run_dir, cfg)
    if cfg.combine is not None:  # the data-ratio sweep's training sets
        add_ratio_splits(bundle.splits, cfg.combine.trained_ratios(), cfg.data.split_seed)
    with dist.main_first():  # one dequantisation into the shared cache
        backbone = resolve_backbone(cfg.model.backbone, cfg.model.cache_dir)
    tok = load_tokenizer(backbone, cfg.model.max_length, cfg.model.trust_remote_code)
    enc = lambda pairs: encode_pairs(pairs, tok, cfg.model.max_length)  # noqa: E731
    train = {o: enc(split["train"]) for o, split in bundle.splits.items()}
    val = {o: enc(split["val"]) for o, split in bundle.splits.items()}
    tests = {name: enc(pairs) for name, pairs in bundle.test_sets.items()}
    subsets = {p.pair_id: p.subset for pairs in bundle.test_sets.values() for p in pairs}
    ctx = StudyContext(run_dir=run_dir, cfg=cfg, bundle=bundle, backbone_path=backbone)
    prep = Prepared(ctx, tok, train, val, tests, subsets)
    prep.timings["prepare_s"] = time.perf_counter() - t0
    trunc = {
        name: {
            "pairs": len(e),
            "truncated": e.n_truncated,
            "difference_outside_window": e.n_indistinguishable,
        }
        for name, e in {
            **{f"train/{o}": e for o, e in train.items()},
            **{f"test/{t}": e for t, e in tests.items()},
        }.items()
    }
    write_json(run_dir / "data" / "truncation.json", {"max_length": cfg.model.max_length, "sets": trunc})
    return prep


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
        if objective == "mixed_pcgrad":
            extra["pcgrad_scope"] = cfg.train.pcgrad_scope
        if any(v is not None for v in extra.values()):  # off: the hash a mixed RM had before these settings
            parts.append(extra)
    return config_hash(*parts)


def study_rms(cfg: StudyConfig) -> list[str]:
    """The RMs the study trains per seed, by registered name: the three objectives, the dilution
    controls (`train.controls`), `mixed_pcgrad` (`train.pcgrad`), `two_head` (`combine.two_head`) and
    the data-ratio RMs `mixed_r<r>` (`combine.ratios`)."""
    controls = ["helpful_half", "harmless_half"] if cfg.train.controls else []
    two_head = cfg.combine is not None and cfg.combine.two_head
    extra = (["mixed_pcgrad"] if cfg.train.pcgrad else []) + (["two_head"] if two_head else [])
    ratios = [ratio_rm(r) for r in cfg.combine.trained_ratios()] if cfg.combine is not None else []
    return ["helpful", "harmless", "mixed", *controls, *extra, *ratios]


def study_views(cfg: StudyConfig) -> list[tuple[str, str, str | None]]:
    """(view, trained RM, head) of every RM the study evaluates: each one-head RM as itself, each head
    of a multi-head RM as `<rm>:<head>` (`rmtension.rm.registry.views`)."""
    return [(v, *split_view(v)) for rm in study_rms(cfg) for v in views(rm)]


def pair_heads(prep: Prepared, part: str) -> np.ndarray:
    """[N] head row (`rmtension.model.heads.HEADS`) of each `part` ("train" or "val") pair of the mixed
    RM: the objective whose pairs it is."""
    from rmtension.rm.conflict import HARMLESS, HELPFUL

    harmless = {p.pair_id for p in prep.ctx.bundle.splits["harmless"][part]}
    pairs = prep.ctx.bundle.splits["mixed"][part]
    return np.array([HARMLESS if p.pair_id in harmless else HELPFUL for p in pairs], dtype=np.int64)


def pair_objectives(prep: Prepared, data: str) -> np.ndarray | None:
    """[N] objective code of each training pair of a mixed RM (`rm.conflict.HELPFUL`/`HARMLESS`); None otherwise."""
    from rmtension.rm.conflict import HARMLESS, HELPFUL

    if data != "mixed":
        return None
    harmless = {p.pair_id for p in prep.ctx.bundle.splits["harmless_half"]["train"]}  # its harmless share
    pairs = prep.ctx.bundle.splits["mixed"]["train"]
    return np.array([HARMLESS if p.pair_id in harmless else HELPFUL for p in pairs], dtype=np.int64)


def caches_trunk(cfg: StudyConfig) -> bool:
    """Whether the study caches a frozen trunk (`train.cache_trunk`, and some block frozen)."""
    return cfg.train.trainable != "all" and cfg.train.cache_trunk


def trunk_cache(prep: Prepared):
    """Build the shared frozen-trunk cache once, over every pair any RM will see (None when the study
    caches no trunk: `caches_trunk`)."""
    from rmtension.model.backbones import load_reward_model
    from rmtension.model.scope import set_trainable
    from rmtension.model.trunk import TrunkCache, trunk_fingerprint

    cfg = prep.ctx.cfg
    if prep.cache is not None or not caches_trunk(cfg):
        return prep.cache
    t0 = time.perf_counter()
    model = load_reward_model(prep.ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code).to(
        device()
    )
    k = set_trainable(model, cfg.train.trainable)
    cache = TrunkCache(k, trunk_fingerprint(model, k))
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


def stage_train(prep: Prepared) -> None:
    from rmtension.model.backbones import load_reward_model
    from rmtension.rm.train import train_reward_model, train_steps
    from rmtension.model.trunk import trunk_fingerprint

    ctx, cfg = prep.ctx, prep.ctx.cfg
    jobs = []  # (objective, seed, stage, hash) not trained yet
    for objective in study_rms(cfg):
        for seed in cfg.train.seeds:
            stage, h = f"train/{objective}/seed{seed}", train_hash(cfg, objective, seed)
            if not stage_complete(ctx.run_dir, stage, h):
                jobs.append((objective, seed, stage, h))
    if not jobs:
        return
    cache = trunk_cache(prep)  # before the bar: building the cache draws its own
    steps = sum(train_steps(len(prep.train[lookup(o).data]), cfg.train) for o, *_ in jobs)
    with stage_bar("train", steps, "step") as bar:
        for objective, seed, stage, h in jobs:
            data = lookup(objective).data
            torch.manual_seed(seed)  # seeds the score head's initialisation
            heads = lookup(objective).heads or None
            model = load_reward_model(
                ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code, heads=heads
            ).to(device())
            if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
                raise RuntimeError("backbone trunk differs from the cached trunk")
            out = ctx.rm_dir(objective, seed)
            log(f"training {objective} RM, seed {seed}: {len(prep.train[data])} pairs")
            res = train_reward_model(
                model,
                prep.tokenizer,
                prep.train[data],
                prep.val[data],
                cfg.train,
                seed,
                out,
                cache=cache,
                bar=bar,
                objectives=None if heads else pair_objectives(prep, data),
                pcgrad=objective == "mixed_pcgrad",
                resume_key=h,
                heads=(pair_heads(prep, "train"), pair_heads(prep, "val")) if heads else None,
            )
            log(
                f"  best val accuracy {res.best_val_accuracy:.3f} at step {res.best_step}, "
                f"{res.metrics['pairs_per_s']:.1f} pairs/s"
            )
            write_manifest(ctx.run_dir, stage, h, [out])
            interrupt.check("after training " + stage)


def stage_eval(prep: Prepared) -> None:
    from rmtension.rm.evaluate import scores_frame
    from rmtension.model.forward import PairForward
    from rmtension.model.backbones import load_reward_model
    from rmtension.model.trunk import trunk_fingerprint

    ctx, cfg = prep.ctx, prep.ctx.cfg
    test_ids = {t: e.pair_ids for t, e in prep.tests.items()}
    jobs = []  # (view, trained RM, head, seed, stage, hash) not evaluated yet
    for view, rm, head in study_views(cfg):
        for seed in cfg.train.seeds:
            stage = f"eval/{view}/seed{seed}"
            h = config_hash(train_hash(cfg, rm, seed), test_ids, *([head] if head else []))
            if not stage_complete(ctx.run_dir, stage, h):
                jobs.append((view, rm, head, seed, stage, h))
    if not jobs:
        return
    shared = trunk_cache(prep)  # before the bar: building the cache draws its own
    with stage_bar("eval", len(jobs) * sum(map(len, prep.tests.values())), "pair") as bar:
        for view, rm, head, seed, stage, h in jobs:
            model = load_reward_model(str(ctx.rm_dir(rm, seed)), prep.tokenizer, head=head).to(device())
            cache = shared
            if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
                cache = None  # the saved model's trunk moved (trainable=all): run it in full
            outputs = []
            with PairForward(model, prep.tokenizer.pad_token_id, cfg.train.bf16, cache) as fwd:
                for test, enc in prep.tests.items():
                    r_c, r_r = fwd.score(enc, cfg.eval.batch_size)
                    frame = scores_frame(enc.pair_ids, [prep.subsets[p] for p in enc.pair_ids], r_c, r_r)
                    path = inside(ctx.run_dir, "eval", view, f"seed{seed}", f"{test}.csv")
                    write_csv(path, frame)
                    outputs.append(path)
                    bar.update(len(enc))
            write_manifest(ctx.run_dir, stage, h, outputs)
            interrupt.check("after evaluating " + stage)


def test_set_info(prep: Prepared) -> dict:
    """Reply lengths (length baselines, length-matched pairs) and, for XSTest, prompt groups per test set."""
    from rmtension.data.xstest import SETS as XSTEST_SETS
    from rmtension.data.xstest import prompt_groups
    from rmtension.model.encode import reply_lengths
    from rmtension.rm.evaluate import TestSetInfo

    out = {}
    for name, enc in prep.tests.items():
        pairs = prep.ctx.bundle.test_sets[name]
        whole, window = reply_lengths(pairs, enc, prep.tokenizer)
        groups = np.array(prompt_groups(pairs)) if name in XSTEST_SETS else None
        out[name] = TestSetInfo(enc.pair_ids, whole, window, groups)
    return out


def stage_tension(prep: Prepared) -> dict:
    from rmtension.rm.evaluate import read_scores, tension_table

    ctx, cfg = prep.ctx, prep.ctx.cfg
    scores = {
        rm: {
            t: [read_scores(inside(ctx.run_dir, "eval", rm, f"seed{s}", f"{t}.csv")) for s in cfg.train.seeds]
            for t in prep.tests
        }
        for rm, _, _ in study_views(cfg)
    }
    table = tension_table(scores, cfg.eval, seed=cfg.data.split_seed, info=test_set_info(prep))
    write_json(ctx.run_dir / "tension.json", table)
    write_manifest(ctx.run_dir, "tension", config_hash(cfg, "tension"), ["tension.json"])
    return table
