"""The tension stage: `tension.json` from the eval stage's per-pair CSVs alone (accuracy per RM and test
set with its two-level bootstrap CI, interference, calibration, length baselines, XSTest), its report
sections (tension table, calibration, avoidant or open to misuse) and its claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmtension.config import config_hash
from rmtension.report.core import section_calibration, section_tension
from rmtension.report.section import Section, in_part
from rmtension.run.prepared import Prepared, study_views
from rmtension.run.runio import inside, write_json, write_manifest
from rmtension.stats.finding import Finding
from rmtension.tension.behaviour import avoidant_vs_misuse, section_avoidant_misuse
from rmtension.tension.claims import calibrated, mixed_worse, negative_transfer, tension_is_length_prior
from rmtension.data.xstest import SETS as XSTEST_SETS
from rmtension.data.xstest import prompt_groups
from rmtension.judges.pair_scores import read_scores
from rmtension.model.encode import reply_lengths
from rmtension.tension.table import TestSetInfo
from rmtension.tension.table import tension_table


def test_set_info(prep: Prepared) -> dict:
    """Reply lengths (length baselines, length-matched pairs) and, for XSTest, prompt groups per test set."""

    out = {}
    for name, enc in prep.tests.items():
        pairs = prep.ctx.bundle.test_sets[name]
        whole, window = reply_lengths(pairs, enc, prep.tokenizer)
        groups = np.array(prompt_groups(pairs)) if name in XSTEST_SETS else None
        out[name] = TestSetInfo(enc.pair_ids, whole, window, groups)
    return out


def run(prep: Prepared) -> dict:
    """Write tension.json (and its manifest) from the per-pair score files; returns the table."""
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


def sections(run_dir: Path) -> list[Section]:
    return [
        *in_part("tension", section_tension(run_dir)),
        *in_part("calibration", section_calibration(run_dir)),
        *in_part("behaviour", section_avoidant_misuse(run_dir)),
    ]


def findings(run_dir: Path) -> list[Finding]:
    return [
        mixed_worse(run_dir),
        negative_transfer(run_dir),
        tension_is_length_prior(run_dir),
        calibrated(run_dir),
        avoidant_vs_misuse(run_dir),
    ]
