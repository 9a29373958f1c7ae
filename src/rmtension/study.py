"""`rmtension study`: data -> training (3 objectives x seeds) -> evaluation -> tension -> report.

Each stage writes its outputs atomically and then a manifest with its config hash and the
content hash of each output. A stage whose manifest matches is skipped, so a changed config
recomputes only what depends on it, and an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rmtension import dist, interrupt
from rmtension.config import OBJECTIVES, StudyConfig, config_hash, dump_config, resolve_data_path
from rmtension.context import StudyContext
from rmtension.encode import EncodedPairs, encode_pairs
from rmtension.runio import atomic_write_text, inside, stage_complete, write_csv, write_json, write_manifest


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


def log(msg: str) -> None:
    dist.print_main(f"[rmtension] {msg}", flush=True)


def device() -> torch.device:
    """This process's device (its own GPU under `accelerate launch`)."""
    return dist.device()


def stage_data(run_dir: Path, cfg: StudyConfig):
    from rmtension.data import build_dataset

    root = resolve_data_path(cfg.data)
    with dist.main_first():  # one hub download, which the other processes then read from the cache
        bundle = build_dataset(cfg.data, root)
    h = config_hash(cfg.data, root)
    if not stage_complete(run_dir, "data", h):
        write_json(run_dir / "data" / "summary.json", bundle.summary)
        write_json(run_dir / "data" / "splits.json", bundle.manifest())
        write_manifest(run_dir, "data", h, ["data/summary.json", "data/splits.json"])
    return bundle, root


def prepare(run_dir: Path, cfg: StudyConfig) -> Prepared:
    from rmtension.models import load_tokenizer, resolve_backbone

    t0 = time.perf_counter()
    bundle, _ = stage_data(run_dir, cfg)
    with dist.main_first():  # one dequantisation into the shared cache
        backbone = resolve_backbone(cfg.model.backbone, cfg.model.cache_dir)
    tok = load_tokenizer(backbone, cfg.model.max_length, cfg.model.trust_remote_code)
    enc = lambda pairs: encode_pairs(pairs, tok, cfg.model.max_length)  # noqa: E731
    train = {o: enc(bundle.splits[o]["train"]) for o in OBJECTIVES}
    val = {o: enc(bundle.splits[o]["val"]) for o in OBJECTIVES}
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
            **{f"train/{o}": train[o] for o in OBJECTIVES},
            **{f"test/{t}": e for t, e in tests.items()},
        }.items()
    }
    write_json(run_dir / "data" / "truncation.json", {"max_length": cfg.model.max_length, "sets": trunc})
    return prep


def train_settings(train) -> dict:
    """The training settings a reward model's weights depend on: all but the seed list and the trackers."""
    return {**train.model_dump(mode="json", exclude={"trackers"}), "seeds": []}


def _train_hash(cfg: StudyConfig, objective: str, seed: int) -> str:
    return config_hash(cfg.data, cfg.model, train_settings(cfg.train), objective, str(seed))


def _trunk_cache(prep: Prepared):
    """Build the shared frozen-trunk cache once, over every pair any RM will see."""
    from rmtension.models import load_reward_model
    from rmtension.train import set_trainable
    from rmtension.trunk import TrunkCache, trunk_fingerprint

    cfg = prep.ctx.cfg
    if prep.cache is not None or cfg.train.trainable == "all" or not cfg.train.cache_trunk:
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
    for name, enc in sets.items():
        cache.add(
            model, enc, prep.tokenizer.pad_token_id, cfg.eval.batch_size, cfg.train.bf16, desc=f"trunk {name}"
        )
        interrupt.check("while caching the trunk")
    prep.cache = cache
    prep.timings["trunk_cache_s"] = time.perf_counter() - t0
    return cache


def stage_train(prep: Prepared) -> None:
    from rmtension.models import load_reward_model
    from rmtension.train import train_reward_model
    from rmtension.trunk import trunk_fingerprint

    ctx, cfg = prep.ctx, prep.ctx.cfg
    for objective in OBJECTIVES:
        for seed in cfg.train.seeds:
            stage, h = f"train/{objective}/seed{seed}", _train_hash(cfg, objective, seed)
            if stage_complete(ctx.run_dir, stage, h):
                continue
            cache = _trunk_cache(prep)
            torch.manual_seed(seed)  # seeds the score head's initialisation
            model = load_reward_model(ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code).to(
                device()
            )
            if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
                raise RuntimeError("backbone trunk differs from the cached trunk")
            out = ctx.rm_dir(objective, seed)
            log(f"training {objective} RM, seed {seed}: {len(prep.train[objective])} pairs")
            res = train_reward_model(
                model,
                prep.tokenizer,
                prep.train[objective],
                prep.val[objective],
                cfg.train,
                seed,
                out,
                cache=cache,
            )
            log(
                f"  best val accuracy {res.best_val_accuracy:.3f} at step {res.best_step}, "
                f"{res.metrics['pairs_per_s']:.1f} pairs/s"
            )
            write_manifest(ctx.run_dir, stage, h, [out])
            interrupt.check("after training " + stage)


def stage_eval(prep: Prepared) -> None:
    from rmtension.evaluate import scores_frame
    from rmtension.forward import PairForward
    from rmtension.models import load_reward_model
    from rmtension.trunk import trunk_fingerprint

    ctx, cfg = prep.ctx, prep.ctx.cfg
    test_ids = {t: e.pair_ids for t, e in prep.tests.items()}
    for objective in OBJECTIVES:
        for seed in cfg.train.seeds:
            stage = f"eval/{objective}/seed{seed}"
            h = config_hash(_train_hash(cfg, objective, seed), test_ids)
            if stage_complete(ctx.run_dir, stage, h):
                continue
            model = load_reward_model(str(ctx.rm_dir(objective, seed)), prep.tokenizer).to(device())
            cache = _trunk_cache(prep)
            if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
                cache = None  # the saved model's trunk moved (trainable=all): run it in full
            outputs = []
            with PairForward(model, prep.tokenizer.pad_token_id, cfg.train.bf16, cache) as fwd:
                for test, enc in prep.tests.items():
                    r_c, r_r = fwd.score(enc, cfg.eval.batch_size)
                    frame = scores_frame(enc.pair_ids, [prep.subsets[p] for p in enc.pair_ids], r_c, r_r)
                    path = inside(ctx.run_dir, "eval", objective, f"seed{seed}", f"{test}.csv")
                    write_csv(path, frame)
                    outputs.append(path)
            write_manifest(ctx.run_dir, stage, h, outputs)
            interrupt.check("after evaluating " + stage)


def stage_tension(prep: Prepared) -> dict:
    from rmtension.evaluate import read_scores, tension_table

    ctx, cfg = prep.ctx, prep.ctx.cfg
    scores = {
        rm: {
            t: [read_scores(inside(ctx.run_dir, "eval", rm, f"seed{s}", f"{t}.csv")) for s in cfg.train.seeds]
            for t in prep.tests
        }
        for rm in OBJECTIVES
    }
    table = tension_table(scores, cfg.eval, seed=cfg.data.split_seed)
    write_json(ctx.run_dir / "tension.json", table)
    write_manifest(ctx.run_dir, "tension", config_hash(cfg, "tension"), ["tension.json"])
    return table


def run_study(cfg: StudyConfig, out: str | Path | None = None) -> Path:
    """Run (or resume) the whole study; returns the run directory."""
    run_dir = Path(out or Path("runs") / cfg.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    torch.manual_seed(0)
    np.random.seed(0)
    t0 = time.perf_counter()
    with interrupt.graceful_sigint():
        prep = prepare(run_dir, cfg)
        stage_train(prep)
        stage_eval(prep)
        table = stage_tension(prep)
        for name, stage_fn in extra_stages(cfg):
            interrupt.check(f"before {name}")
            stage_fn(prep)
        if cfg.report.enabled:
            from rmtension.report import write_report

            write_report(run_dir)
    prep.timings["total_s"] = time.perf_counter() - t0
    print_summary(run_dir, table, prep.timings)
    return run_dir


STAGE_MODULES = ("rmtension.neurons.stages", "rmtension.optimise_stage")
"""Modules whose `study_stages(cfg)` return the analyses that run after the tension table."""


def extra_stages(cfg: StudyConfig) -> list[tuple[str, Callable[[Prepared], object]]]:
    """Stages after the tension table (neurons, ablation, PM halves, best-of-n, RL), in order.

    Each is `(name, fn(prep))`; a stage whose config section is absent is not listed.
    """
    import importlib

    return [stage for mod in STAGE_MODULES for stage in importlib.import_module(mod).study_stages(cfg)]


def print_summary(run_dir: Path, table: dict, timings: dict) -> None:
    log("tension table (accuracy, mean over seeds [95% CI]):")
    tests = sorted({t for by in table["accuracy"].values() for t in by})
    dist.print_main("  " + "RM".ljust(10) + "".join(t.ljust(26) for t in tests))
    for rm, by in table["accuracy"].items():
        cells = [
            f"{by[t]['mean']:.3f} [{by[t]['ci95'][0]:.3f}, {by[t]['ci95'][1]:.3f}]".ljust(26) for t in tests
        ]
        dist.print_main("  " + rm.ljust(10) + "".join(cells))
    for t, d in table["interference"].items():
        dist.print_main(
            f"  interference on {t}: {d['mixed_minus_best_single']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        )
    log(f"done in {timings.get('total_s', 0):.0f}s; run directory: {run_dir}")
    report = run_dir / "report.html"
    if report.exists():
        log(f"report: {report}")
