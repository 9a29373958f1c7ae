"""mixed_worse read from a tension table built on constructed scores: the seed-level hull, Monte Carlo and
length-controlled notes, and the verdict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from rmtension.config import EvalConfig
from rmtension.tension.claims import mixed_worse
from rmtension.tension.table import TestSetInfo as SetInfo
from rmtension.tension.table import tension_table


def _frames(acc: float, rng: np.random.Generator, n: int = 300) -> list[pd.DataFrame]:
    out = []
    for _ in range(3):
        won = rng.random(n) < acc
        out.append(
            pd.DataFrame(
                {
                    "pair_id": [f"p{i}" for i in range(n)],
                    "subset": "s",
                    "r_chosen": won * 1.0,
                    "r_rejected": 1.0 - won,
                }
            )
        )
    return out


def _run(tmp_path, accs: dict[str, float]):
    rng = np.random.default_rng(0)
    tests = ("helpful", "harmless")
    scores = {rm: {t: _frames(a, rng) for t in tests} for rm, a in accs.items()}
    lengths = np.stack([rng.integers(1, 50, 300), rng.integers(1, 50, 300)], axis=1)
    info = {t: SetInfo([f"p{i}" for i in range(300)], lengths, lengths) for t in tests}
    table = tension_table(scores, EvalConfig(bootstrap=1000), info=info)
    run = tmp_path / "run"
    run.mkdir()
    (run / "tension.json").write_text(json.dumps(table))
    (run / "config.yaml").write_text(yaml.safe_dump({"eval": {"bootstrap": 1000}, "train": {}}))
    return run, table


def test_mixed_worse_reads_the_hull_and_states_the_length_control(tmp_path):
    run, table = _run(tmp_path, {"helpful": 0.75, "harmless": 0.7, "mixed": 0.5})
    f = mixed_worse(run)
    assert f.verdict == "supported"
    for ts in ("helpful", "harmless"):
        d = table["interference"][ts]
        boot, seed = d["ci95"], d["seed_t"]["ci95"]
        assert f.ci95[ts] == pytest.approx([-max(boot[1], seed[1]), -min(boot[0], seed[0])])
        assert "length_controlled" in d and "length_prior" in d
    assert "Length-controlled" in f.evidence and "of which length explains" in f.evidence
    assert "Monte Carlo SE" in f.evidence


def test_equal_rms_are_not_worse(tmp_path):
    run, _ = _run(tmp_path, {"helpful": 0.7, "harmless": 0.7, "mixed": 0.7})
    assert mixed_worse(run).verdict in ("not supported", "inconclusive")
