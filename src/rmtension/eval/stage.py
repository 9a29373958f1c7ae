"""The eval stage: every RM (each head of a multi-head RM as `<rm>:<head>`) scores every test set,
one per-pair CSV each (`eval/<rm>/seed<k>/<test>.csv`, `rmtension.judges.pair_scores`). The tension
stage reads those files; the eval stage has no report section or claim of its own."""

from __future__ import annotations

from pathlib import Path

from rmtension.config import config_hash
from rmtension.report.section import Section
from rmtension.run import interrupt
from rmtension.run.log import device
from rmtension.run.prepared import Prepared, study_views, train_hash, trunk_cache
from rmtension.run.progress import stage_bar
from rmtension.run.runio import inside, stage_complete, write_csv, write_manifest
from rmtension.stats.finding import Finding
from rmtension.judges.pair_scores import scores_frame
from rmtension.model.forward import PairForward
from rmtension.model.backbones import load_reward_model
from rmtension.model.trunk import trunk_fingerprint


def run(prep: Prepared) -> None:
    """Score every test set with every RM view and seed not evaluated yet."""
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


def sections(run_dir: Path) -> list[Section]:
    return []


def findings(run_dir: Path) -> list[Finding]:
    return []
