"""The study's audit stage: every trained RM (each view, each seed) on the audit suite.

Outputs: `audit/<rm>/seed<k>.csv` (per pair: pair_id, subset = the label pair, r_chosen = the better
reply's reward, r_rejected = the worse one's, scenario), and `audit.json`: per RM, the accuracy over
seeds and pairs overall, by label pair and by tag, with CIs that resample seeds and scenarios
(`rmtension.audit.stats`), and per label pair the prefer-the-longer-reply baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.audit.config import AuditConfig
from rmtension.audit.stats import audit_breakdown
from rmtension.audit.suite import Suite, load_suite, suite_pairs
from rmtension.config import config_hash
from rmtension.data.types import Pair
from rmtension.errors import ConfigError
from rmtension.judges.load import Judge
from rmtension.model.backbones import load_reward_model
from rmtension.model.encode import EncodedPairs, encode_pairs, reply_lengths
from rmtension.model.forward import PairForward
from rmtension.model.trunk import TrunkCache, trunk_fingerprint
from rmtension.run.prepared import caches_trunk, empty_trunk_cache, study_views, train_hash
from rmtension.stats.bootstrap import correct, length_baselines
from rmtension.run import interrupt
from rmtension.run.log import device, log
from rmtension.audit.report import helpful_refusal_undervalued, section_audit
from rmtension.report.section import Section, in_part
from rmtension.stats.finding import Finding
from rmtension.run.runio import (
    inside,
    sha256_file,
    stage_complete,
    write_csv,
    write_json,
    write_manifest,
)

AUDIT = "audit"


def read_suite(cfg: AuditConfig) -> Suite:
    if not Path(cfg.suite).is_file():
        raise ConfigError(
            f"audit.suite: {cfg.suite} is not a file (a path, absolute or relative to the config)"
        )
    return load_suite(cfg.suite)


def audit_hash(prep, cfg: AuditConfig) -> str:
    """What the audit depends on: every evaluated RM's training hash, the suite's bytes and the settings."""
    study = prep.ctx.cfg
    rms = [(view, train_hash(study, rm, s)) for view, rm, _ in study_views(study) for s in study.train.seeds]
    settings = cfg.model_dump(mode="json", exclude={"suite", "enabled"})
    return config_hash(settings, study.model, rms, sha256_file(cfg.suite))


def suite_trunk(prep, enc: EncodedPairs, cfg: AuditConfig) -> TrunkCache | None:
    """The frozen trunk's states of the suite's pairs, computed once in fp32 for every RM view and seed
    (None when the study trains every block: `caches_trunk`). The audit scores in fp32, so it keeps
    its own cache rather than the study's, which is in `train.bf16`'s precision."""
    if not caches_trunk(prep.ctx.cfg):
        return None
    base, cache = empty_trunk_cache(prep)
    cache.add(base, enc, prep.tokenizer.pad_token_id, cfg.batch_size, bf16=False)
    return cache


def score_rm(
    prep,
    rm: str,
    head: str | None,
    seed: int,
    pairs: list[Pair],
    cfg: AuditConfig,
    enc: EncodedPairs | None = None,
    cache: TrunkCache | None = None,
) -> pd.DataFrame:
    """One trained RM's rewards for the better and the worse reply of every pair (the study's HH format),
    in fp32; over the suite's trunk `cache` where the RM's frozen blocks are the cache's
    (`suite_trunk`), else through the whole model."""
    ctx, tok = prep.ctx, prep.tokenizer
    model = load_reward_model(str(ctx.rm_dir(rm, seed)), tok, head=head).to(device())
    judge = Judge(rm, str(ctx.rm_dir(rm, seed)), model, tok, "hh", max_length=ctx.cfg.model.max_length)
    enc = encode_pairs(pairs, tok, ctx.cfg.model.max_length) if enc is None else enc
    if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
        cache = None  # this RM's trunk moved: run it whole
    with PairForward(judge.model, tok.pad_token_id, bf16=False, cache=cache) as fwd:
        r_c, r_r = fwd.score(enc, cfg.batch_size)
    r_c, r_r = judge.sign * r_c, judge.sign * r_r
    return pd.DataFrame(
        {
            "pair_id": [p.pair_id for p in pairs],
            "subset": [p.subset for p in pairs],
            "r_chosen": r_c,
            "r_rejected": r_r,
            "scenario": [p.metadata["scenario"] for p in pairs],
        }
    )


def summarise(
    pairs: list[Pair],
    frames: dict[str, list[pd.DataFrame]],
    lengths: np.ndarray,
    cfg: AuditConfig,
    suite: Suite,
) -> dict:
    """audit.json from the per-seed score frames of every RM."""
    label_pairs = np.array([p.subset for p in pairs])
    baselines = {
        lp: length_baselines(lengths[label_pairs == lp, 0], lengths[label_pairs == lp, 1])
        for lp in sorted(set(label_pairs))
    }
    out = {
        "suite": {
            "name": suite.name,
            "version": suite.version,
            "file": Path(suite.path).name,
            "sha256": sha256_file(suite.path),
            "n_scenarios": len(suite.scenarios),
            "n_pairs": len(pairs),
        },
        "method": {
            "pairs": "every (better, worse) pair of a scenario's replies with different ranks",
            "correct": "1 when the better reply's reward is higher, 0.5 on a tie, 0 otherwise",
            "ci": f"{cfg.ci:.0%} percentile bootstrap over seeds and scenarios ({cfg.bootstrap} resamples)",
            "baselines": "accuracy of preferring the longer / the shorter reply (tokens of the backbone's tokenizer)",
        },
        "baselines": baselines,
        "rms": {},
    }
    for rm, fs in frames.items():
        c = np.stack([correct(f.r_chosen.to_numpy(), f.r_rejected.to_numpy()) for f in fs])  # [S, N]
        out["rms"][rm] = {**audit_breakdown(pairs, c, cfg.bootstrap, seed=0, level=cfg.ci), "seeds": len(fs)}
    return out


def stage_audit(prep) -> Path:
    """audit/<rm>/seed<k>.csv and audit.json; skipped when its manifest matches."""
    ctx, cfg = prep.ctx, prep.ctx.cfg.audit
    suite = read_suite(cfg)
    h = audit_hash(prep, cfg)
    if stage_complete(ctx.run_dir, AUDIT, h):
        log("audit: up to date")
        return ctx.run_dir / "audit.json"
    pairs = suite_pairs(suite)
    enc = encode_pairs(pairs, prep.tokenizer, ctx.cfg.model.max_length)
    lengths, _ = reply_lengths(pairs, enc, prep.tokenizer)
    cache = suite_trunk(prep, enc, cfg)
    frames: dict[str, list[pd.DataFrame]] = {}
    outputs = []
    log(f"audit: {suite.name}, {len(suite.scenarios)} scenarios, {len(pairs)} pairs")
    for view, rm, head in study_views(ctx.cfg):
        for seed in ctx.seeds:
            frame = score_rm(prep, rm, head, seed, pairs, cfg, enc, cache)
            outputs.append(write_csv(inside(ctx.run_dir, AUDIT, view, f"seed{seed}.csv"), frame))
            frames.setdefault(view, []).append(frame)
            interrupt.check(f"after auditing {view}/seed{seed}")
    outputs.append(write_json(ctx.run_dir / "audit.json", summarise(pairs, frames, lengths, cfg, suite)))
    write_manifest(ctx.run_dir, AUDIT, h, outputs)
    return outputs[-1]


run = stage_audit
"""The stage contract (`rmtension.study.STAGES`): `run(prep)`, `sections(run_dir)`, `findings(run_dir)`."""


def sections(run_dir: Path) -> list[Section]:
    return in_part("audit", section_audit(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return [helpful_refusal_undervalued(run_dir)]
