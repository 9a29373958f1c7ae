"""The seed-level random-effects interval with a t quantile (`rmtension.stats.seeds`), by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rmtension.stats.seeds import pairs_only_replicates, seed_t_interval


def test_seeds_alone_use_t_with_seeds_minus_one_df():
    # per-seed 0.5, 0.6, 0.7: s^2 = 0.01, var of the mean 0.01 / 3, df 2, t_{2, 0.975} = 4.303
    out = seed_t_interval(0.6, 0.0, [np.array([0.5, 0.6, 0.7])])
    se = np.sqrt(0.01 / 3)
    assert out["df"] == pytest.approx(2.0) and out["se"] == pytest.approx(se)
    assert out["ci95"] == pytest.approx([0.6 - 4.3027 * se, 0.6 + 4.3027 * se], abs=1e-4)


def test_welch_satterthwaite_by_hand():
    # pair variance 0.0004; two RMs with s^2 0.0009 and 0.0036 over 3 seeds each: terms 0.0003 and 0.0012
    # var = 0.0019, df = 0.0019^2 / (0.0003^2 / 2 + 0.0012^2 / 2) = 3.61e-6 / 7.65e-7 = 4.719
    a, b = np.array([0.57, 0.60, 0.63]), np.array([0.44, 0.50, 0.56])
    assert np.var(a, ddof=1) == pytest.approx(0.0009) and np.var(b, ddof=1) == pytest.approx(0.0036)
    out = seed_t_interval(0.1, 0.0004, [a, b])
    assert out["df"] == pytest.approx(0.0019**2 / (0.0003**2 / 2 + 0.0012**2 / 2))
    q = stats.t.ppf(0.975, out["df"])
    assert out["ci95"] == pytest.approx([0.1 - q * np.sqrt(0.0019), 0.1 + q * np.sqrt(0.0019)])
    # one seed: the pair part alone, with the normal quantile
    one = seed_t_interval(0.1, 0.0004, [np.array([0.6])])
    assert one["df"] == float("inf") and one["ci95"] == pytest.approx(
        [0.1 - 1.959964 * 0.02, 0.1 + 1.959964 * 0.02], abs=1e-6
    )


def test_pairs_only_replicates_by_hand():
    per_seed = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # [S=2, N=3]
    weights = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])  # replicate 0 draws pair 0 twice and pair 1
    # replicate 0: seed means 2/3 and 0, mean 1/3; replicate 1: both seeds 1
    assert pairs_only_replicates(per_seed, weights) == pytest.approx([1 / 3, 1.0])


def test_tension_table_carries_the_seed_t_interval():
    import pandas as pd

    from rmtension.config import EvalConfig
    from rmtension.tension.table import tension_table

    rng = np.random.default_rng(2)

    def frames(p):
        out = []
        for _ in range(3):
            won = rng.random(300) < p
            out.append(
                pd.DataFrame(
                    {
                        "pair_id": [f"p{i}" for i in range(300)],
                        "subset": "s",
                        "r_chosen": won * 1.0,
                        "r_rejected": 1.0 - won,
                    }
                )
            )
        return out

    t = tension_table(
        {rm: {"h": frames(p)} for rm, p in (("helpful", 0.7), ("harmless", 0.6), ("mixed", 0.6))},
        EvalConfig(bootstrap=300),
    )
    acc = t["accuracy"]["mixed"]["h"]
    st = acc["seed_t"]
    assert st["ci95"][0] < acc["mean"] < st["ci95"][1] and st["df"] >= 2
    inter = t["interference"]["h"]["seed_t"]
    assert inter["ci95"][0] < t["interference"]["h"]["mixed_minus_best_single"] < inter["ci95"][1]
