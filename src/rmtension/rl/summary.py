"""rl.json: the RL trend, its forms and the train/test gap, from the held-out evaluations (`rl_eval.csv`).

Units: each judge's reward over the pooled within-prompt SD of the initial policy's held-out
completions (step 0, every seed), the best-of-n units. x: sqrt of the mean exact KL of the evaluated
completions to the initial policy.

trend: the slope of pm_train's held-out reward over sqrt(KL), fitted over every evaluation of every
seed together; trend_ci95 from a residual moving-block bootstrap over the evaluations of each seed
(`rmtension.stats.fits.block_bootstrap_slope`; with under 3 evaluations per seed, a bootstrap over
the held-out prompts instead, `ci_method`). by_seed: the same per seed; seed_spread: how far
the seeds' trends lie apart. gap: at the last evaluation against step 0 on the same prompts, pm_train's
gain minus pm_test's, with its regression-to-the-mean share and the excess (`fits.gap_beyond_rtm`),
CIs over the held-out prompts (seeds averaged within a prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rmtension.stats import fits
from rmtension.stats.best_of_n import gao_fit

CURVES = ("reward_train_pm", "reward_test_pm", "reward_other_objective")
TREND = "reward_train_pm"
UNITS = (
    "reward over the pooled within-prompt SD of the initial policy's held-out completions; x = sqrt(mean KL)"
)


def within_sd(first: pd.DataFrame, col: str) -> float:
    """Pooled within-(seed, prompt) SD of `col` over the step-0 evaluation rows."""
    centred = first[col] - first.groupby(["seed", "prompt"])[col].transform("mean")
    dof = len(first) - first.groupby(["seed", "prompt"]).ngroups
    sd = float(np.sqrt((centred**2).sum() / dof)) if dof > 0 else 0.0
    return sd if sd > 0 else 1.0


def eval_curve(ev: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per seed and evaluation step: sqrt(mean KL), mean KL and the mean of `col`."""
    g = ev.groupby(["seed", "step"], sort=True).agg(kl=("kl", "mean"), y=(col, "mean")).reset_index()
    g["sqrt_kl"] = np.sqrt(g["kl"].clip(lower=0))
    return g


def gap_pieces(ev: pd.DataFrame, a: str, b: str) -> dict[str, np.ndarray]:
    """The sums `fits.gap_beyond_rtm` needs, for the last evaluation against step 0 (one "n").

    e_a, e_b: [1, P] per-prompt gains (last step - step 0, seeds averaged) of the raw columns; ss_a,
    ss_b, sp: [P] within-(seed, prompt) sums of squares and cross-products at step 0.
    """
    first = ev[ev["step"] == ev["step"].min()]
    last = ev[ev["step"] == ev["step"].max()]
    keys = ["seed", "prompt"]
    ca = first[a] - first.groupby(keys)[a].transform("mean")
    cb = first[b] - first.groupby(keys)[b].transform("mean")
    by_prompt = pd.DataFrame({"prompt": first["prompt"], "ss_a": ca**2, "ss_b": cb**2, "sp": ca * cb})
    sums = by_prompt.groupby("prompt").sum().sort_index()
    gain = (last.groupby(keys)[[a, b]].mean() - first.groupby(keys)[[a, b]].mean()).groupby("prompt").mean()
    gain = gain.reindex(sums.index)
    n_seeds, k = first["seed"].nunique(), int(first.groupby(keys).size().iloc[0])
    return {
        "e_a": gain[a].to_numpy()[None],
        "e_b": gain[b].to_numpy()[None],
        "ss_a": sums["ss_a"].to_numpy(),
        "ss_b": sums["ss_b"].to_numpy(),
        "sp": sums["sp"].to_numpy(),
        "dof": float(n_seeds * (k - 1)),
    }


def heldout_gap(ev: pd.DataFrame, n_boot: int, rng: np.random.Generator, level: float) -> dict:
    g = fits.gap_beyond_rtm(gap_pieces(ev, "reward_train_pm", "reward_test_pm"), [0], n_boot, rng, level)
    g["step"] = int(ev["step"].max())
    g.pop("n")
    g.pop("onset_n")
    return {k: (v[0] if isinstance(v, list) else v) for k, v in g.items()}


def prompt_bootstrap_slope(
    ev: pd.DataFrame, col: str, sd: float, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_boot] pooled slopes of y over sqrt(KL) with the held-out prompts resampled (the same prompts at
    every evaluation and seed), KL re-averaged too: the fallback when a run has too few evaluations
    for blocks. It holds the sampling noise of the evaluation only, not the drift of the policy."""
    per = ev.groupby(["seed", "step", "prompt"], sort=True)[["kl", col]].mean()
    shape = [per.index.get_level_values(k).nunique() for k in ("seed", "step", "prompt")]
    kl = per["kl"].to_numpy().reshape(shape)  # [S, M, P]
    y = per[col].to_numpy().reshape(shape) / sd
    idx = rng.integers(0, shape[2], size=(n_boot, shape[2]))
    x = np.sqrt(kl[:, :, idx].mean(axis=-1).clip(min=0)).reshape(-1, n_boot)  # [S M, B]
    yb = y[:, :, idx].mean(axis=-1).reshape(-1, n_boot)
    dx, dy = x - x.mean(axis=0), yb - yb.mean(axis=0)
    den = (dx**2).sum(axis=0)
    return np.divide((dx * dy).sum(axis=0), den, out=np.full(n_boot, np.nan), where=den > 0)


def _ci(reps: np.ndarray, level: float) -> list[float]:
    reps = reps[np.isfinite(reps)]
    return [float(v) for v in fits.percentile_ci(reps, level)] if len(reps) else [float("nan")] * 2


def curve_summary(
    ev: pd.DataFrame, col: str, sd: float, n_boot: int, block: int | None, level: float, seed: int
) -> dict:
    """Forms (sqrt(KL) vs KL, AIC), the pooled slope over sqrt(KL) with its CI, per seed too.

    CI: residual moving-block bootstrap over each seed's evaluations (`ci_method` "blocks"); with
    fewer than 3 evaluations per seed, the prompt bootstrap instead ("prompts").
    """
    c = eval_curve(ev, col)
    c["y"] = c["y"] / sd
    runs = [t for _, t in c.groupby("seed", sort=True)]
    xs, ys = [t["sqrt_kl"].to_numpy() for t in runs], [t["y"].to_numpy() for t in runs]
    fit, reps = fits.block_bootstrap_slope(xs, ys, n_boot, np.random.default_rng([seed, 2]), block)
    method = "blocks" if reps is not None else "prompts"
    by_seed = {}
    for t, x, y in zip(runs, xs, ys):
        s = int(t["seed"].iloc[0])
        f, r = fits.block_bootstrap_slope([x], [y], n_boot, np.random.default_rng([seed, 3, s]), block)
        if r is None:
            r = prompt_bootstrap_slope(
                ev[ev["seed"] == s], col, sd, n_boot, np.random.default_rng([seed, 5, s])
            )
        by_seed[str(s)] = {"slope": f["slope"], "ci95": _ci(r, level)}
    if reps is None:
        reps = prompt_bootstrap_slope(ev, col, sd, n_boot, np.random.default_rng([seed, 5]))
    pooled_kl = np.concatenate(xs) ** 2
    gao = gao_fit(pooled_kl, np.concatenate([y - y[0] for y in ys]))  # gains from step 0
    gao.pop("peak_n")  # the n of best-of-n with that KL: meaningless for RL
    return {
        **fits.compare_forms({"sqrt_kl": np.concatenate(xs), "kl": pooled_kl}, np.concatenate(ys)),
        "slope": fit["slope"],
        "intercept": fit["intercept"],
        "slope_ci95": _ci(reps, level),
        "ci_method": method,
        "by_seed": by_seed,
        "gao": gao,
    }


def objective_summary(
    steps: pd.DataFrame, ev: pd.DataFrame, n_boot: int, block: int | None, level: float, seed: int
) -> dict:
    first = ev[ev["step"] == ev["step"].min()]
    cols = [c for c in CURVES if c in ev and np.isfinite(ev[c]).all()]
    sds = {c: within_sd(first, c) for c in cols}
    curves = {c: curve_summary(ev, c, sds[c], n_boot, block, level, seed) for c in cols}
    seeds = sorted(int(s) for s in ev["seed"].unique())
    final = ev[ev["step"] == ev["step"].max()].groupby("seed")["kl"].mean()
    by_seed = {}
    for s in seeds:
        one = ev[ev["seed"] == s]
        by_seed[str(s)] = {
            "trend": curves[TREND]["by_seed"][str(s)]["slope"],
            "trend_ci95": curves[TREND]["by_seed"][str(s)]["ci95"],
            "final_kl": float(final.loc[s]),
            "gap": heldout_gap(one, n_boot, np.random.default_rng([seed, 4, s]), level),
        }
    trends = np.array([b["trend"] for b in by_seed.values()])
    m = int(ev.groupby("seed")["step"].nunique().min())
    return {
        "steps": int(steps.groupby("seed")["step"].nunique().max()),
        "seeds": seeds,
        "eval_steps": sorted(int(s) for s in ev["step"].unique()),
        "eval_prompts": int(ev["prompt"].nunique()),
        "eval_k": int(first.groupby(["seed", "prompt"]).size().iloc[0]),
        "units": UNITS,
        "trend_judge": TREND,
        "trend_x": "sqrt(KL)",
        "trend": curves[TREND]["slope"],
        "trend_ci95": curves[TREND]["slope_ci95"],
        "block": fits.block_length(m, block),
        "within_sd": sds,
        "curves": curves,
        "gap": heldout_gap(ev, n_boot, np.random.default_rng([seed, 4]), level),
        "final_kl": float(final.mean()),
        "by_seed": by_seed,
        "seed_spread": {
            "n_seeds": len(seeds),
            "trend_sd": float(trends.std(ddof=1)) if len(trends) > 1 else float("nan"),
            "trend_min": float(trends.min()),
            "trend_max": float(trends.max()),
        },
    }


def rl_summary(
    steps: pd.DataFrame,
    evals: pd.DataFrame,
    objectives: Sequence[str],
    n_boot: int,
    block: int | None,
    seed: int,
) -> dict:
    """rl.json: objective -> `objective_summary` (95% intervals)."""
    return {
        o: objective_summary(
            steps[steps["objective"] == o], evals[evals["objective"] == o], n_boot, block, 0.95, seed
        )
        for o in objectives
    }
