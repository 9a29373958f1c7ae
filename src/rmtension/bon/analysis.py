"""The analysis of best-of-n samples (`bon/samples.parquet`): curves, functional forms, the
train/test gap beyond regression to the mean, the helpful/harmless frontier and examples.

Units: every judge is standardised within prompts (`rmtension.stats.fits.within_prompt_z`), so
every curve starts at 0 for n = 1 and a per-prompt offset between two judges is no gap.

Which curve decides sqrt(KL). The selecting PM's own best-of-n curve is fixed by the shape of its
score distribution alone: for Gaussian scores E[max of n] against sqrt(KL_bon) is a line with
R^2 = 1.000 whatever the PM has learnt (Gumbel 0.981, lognormal 0.909). So the claim is read off the
held-out PM's curve, the reward of pm_train's pick under pm_test (`HELD_OUT`), where over-optimisation
could show. Each curve is fitted as a + b f with f = sqrt(KL_bon), KL_bon and log n, compared by AIC,
with a percentile-bootstrap CI (prompts resampled) of the sqrt(KL) slope.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rmtension.config import config_hash
from rmtension.data.types import Turn
from rmtension.stats import best_of_n as bon, fits
from rmtension.policy.config import OTHER
from rmtension.run.runio import read_json, stage_complete, write_csv, write_json, write_manifest
from rmtension.judges.combined import backbone_embedder, combined_selectors
from rmtension.run.log import device
from rmtension.run.runio import sha256_file

HELD_OUT = "reward_test_pm"
"""The bon.csv curve the sqrt(KL) verdict reads: pm_train selects, pm_test judges."""
SELF = "reward_train_pm"
FORMS = ("sqrt_kl", "kl", "log_n")
"""Functional forms of reward against optimisation compared by AIC: a + b sqrt(KL), a + b KL, a + b log n."""


def curve_forms(ns: Sequence[int]) -> dict[str, np.ndarray]:
    """Each form's regressor at the grid's n: sqrt(KL_bon), KL_bon and log n."""
    kl = bon.kl_bon(np.asarray(ns, dtype=float))
    return {"sqrt_kl": np.sqrt(kl), "kl": kl, "log_n": np.log(np.asarray(ns, dtype=float))}


def score_matrix(frame: pd.DataFrame, column: str) -> np.ndarray:
    """[P, N] scores of one judge, prompts and samples in index order."""
    wide = frame.pivot(index="prompt", columns="sample", values=column).sort_index().sort_index(axis=1)
    return wide.to_numpy(dtype=np.float64)


def z_matrices(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """judge -> [P, N] standardised within prompts."""
    return {j: fits.within_prompt_z(x)[0] for j, x in raw.items()}


def bon_curves(
    z: dict[str, np.ndarray], objectives: Sequence[str], ns: Sequence[int]
) -> tuple[pd.DataFrame, dict]:
    """bon.csv rows for each objective and n, and the per-prompt curves [len(ns), P] of each column."""
    rows, per_prompt = [], {}
    kl = bon.kl_bon(np.asarray(ns, dtype=float))
    nan = np.full_like(z[f"pm_train_{objectives[0]}"], np.nan)
    for o in objectives:
        sel = z[f"pm_train_{o}"]
        judged = {
            SELF: sel,
            HELD_OUT: z[f"pm_test_{o}"],
            "reward_other_objective": z[f"rm_{OTHER[o]}"] if o in OTHER else nan,
            "reward_helpful_rm": z["rm_helpful"],
            "reward_harmless_rm": z["rm_harmless"],
        }
        curves = {k: bon.bon_curve(sel, v, ns) for k, v in judged.items()}  # [len(ns), P] each
        per_prompt[o] = curves
        for i, n in enumerate(ns):
            rows.append(
                {
                    "objective": o,
                    "n": int(n),
                    "kl_bound": float(kl[i]),
                    "sqrt_kl": float(np.sqrt(kl[i])),
                    **{k: float(c[i].mean()) for k, c in curves.items()},
                }
            )
    return pd.DataFrame(rows), per_prompt


def objective_fits(
    raw: dict[str, np.ndarray],
    t: pd.DataFrame,
    o: str,
    ns: Sequence[int],
    n_boot: int,
    level: float,
    seed: int,
) -> dict:
    """bon_fit.json's entry of one objective. t: its bon.csv rows; raw: judge -> [P, N] raw scores."""
    forms = curve_forms(ns)
    train, test = raw[f"pm_train_{o}"], raw[f"pm_test_{o}"]
    pieces = fits.gap_pieces(train, test, ns)
    cols = [c for c in t.columns if c.startswith("reward_") and np.isfinite(t[c]).all()]
    compared = {c: fits.compare_forms(forms, t[c].to_numpy()) for c in cols}
    slope_ci = {}
    for k, (col, e, ss) in enumerate(
        [(SELF, pieces["e_a"], pieces["ss_a"]), (HELD_OUT, pieces["e_b"], pieces["ss_b"])]
    ):
        reps = fits.prompt_bootstrap_slope(
            e, ss, pieces["dof"], forms["sqrt_kl"], n_boot, np.random.default_rng([seed, 1, k])
        )
        slope_ci[col] = [float(x) for x in fits.percentile_ci(reps, level)]
    kl = t["kl_bound"].to_numpy()
    return {
        "heldout_curve": HELD_OUT,
        "curves": compared,
        "slope_ci": slope_ci,
        "sqrt_kl": {
            c: {k: f["forms"]["sqrt_kl"][k] for k in ("intercept", "slope", "r2")}
            for c, f in compared.items()
        },
        "gao_test_pm": bon.gao_fit(kl, t[HELD_OUT]),
        "gao_train_pm": bon.gao_fit(kl, t[SELF]),
        # the same prompt resamples for every objective and for both roles
        "gap": fits.gap_beyond_rtm(pieces, ns, n_boot, np.random.default_rng([seed, 0]), level),
        "gap_swapped": fits.gap_beyond_rtm(
            fits.gap_pieces(test, train, ns), ns, n_boot, np.random.default_rng([seed, 0]), level
        ),
        # the claim's estimate: the excess averaged over both role assignments (`fits.gap_both_roles`)
        "gap_both_roles": fits.gap_both_roles(
            pieces, fits.gap_pieces(test, train, ns), ns, n_boot, np.random.default_rng([seed, 0]), level
        ),
        "n_max": int(ns[-1]),
        "kl_max": float(bon.kl_bon(ns[-1])),
    }


def bon_fits(raw: dict[str, np.ndarray], table: pd.DataFrame, objectives: Sequence[str], ns, cfg) -> dict:
    """bon_fit.json: per objective the forms of every curve, slope CIs, Gao fits and both gaps."""
    return {
        "kl": "KL_bon = log n - (n - 1)/n, an upper bound on KL(best-of-n || policy) (Beirami et al. 2024)",
        "units": "each judge's scores minus the prompt's mean, over the pooled within-prompt SD",
        "aic": "Gaussian least squares: m log(RSS/m) + 2(k + 1), k = 2 coefficients per form, m = points of the curve",
        "gap": (
            "gap = z_select(pick) - z_judge(pick); rtm = (1 - rho) z_select(pick), rho the within-prompt "
            "correlation of the two PMs; excess = gap - rtm. gap_swapped: pm_test selects, pm_train judges. "
            "gap_both_roles: the excess averaged over the two assignments, on the same prompt resamples. "
            "CIs: percentile bootstrap over prompts."
        ),
        "objectives": {
            o: objective_fits(
                raw, table[table["objective"] == o], o, ns, cfg.bon.bootstrap, cfg.bon.ci, cfg.policy.seed
            )
            for o in objectives
        },
    }


FRONTIER_SELECTORS = ("pm_train_helpful", "pm_train_harmless")
FRONTIER_JUDGES = ("pm_test_helpful", "pm_test_harmless")


def frontier_table(
    z: dict[str, np.ndarray], weights: Sequence[float], n: int, combined: dict[str, np.ndarray] | None = None
) -> pd.DataFrame | None:
    """The helpful/harmless frontier of best-of-n, read by the held-out PMs (None without both PM pairs).

    `weighted` rows select by w z(pm_train_helpful) + (1 - w) z(pm_train_harmless); `judge` rows
    select by one pm_train or study RM alone; `combined` rows by a combined judge's [P, N] scores
    (`rmtension.judges.combined`: the two-head dial, the gate). Every row is read by pm_test_helpful and
    pm_test_harmless, trained on the other halves: a selector never judges its own pick.
    """
    if not set(FRONTIER_SELECTORS + FRONTIER_JUDGES) <= set(z):
        return None
    evals = {"helpful": z[FRONTIER_JUDGES[0]], "harmless": z[FRONTIER_JUDGES[1]]}
    tag = {"judged_by": "pm_test"}
    rows = [
        {"kind": "weighted", "selector": f"w={r['w']:.2f}", **r, **tag}
        for r in bon.frontier(z[FRONTIER_SELECTORS[0]], z[FRONTIER_SELECTORS[1]], evals, weights, n)
    ]
    for judge in sorted(j for j in z if j.startswith(("pm_train_", "rm_"))):
        means = {k: float(bon.bon_expectation(z[judge], v, n).mean()) for k, v in evals.items()}
        rows.append({"kind": "judge", "selector": judge, "w": np.nan, "n": int(n), **means, **tag})
    for name, sel in (combined or {}).items():
        means = {k: float(bon.bon_expectation(sel, v, n).mean()) for k, v in evals.items()}
        w = float(name.split("w=")[1]) if "w=" in name else np.nan
        rows.append({"kind": "combined", "selector": name, "w": w, "n": int(n), **means, **tag})
    rows.append(
        {
            "kind": "judge",
            "selector": "none (n=1)",
            "w": np.nan,
            "n": 1,
            **{k: float(v.mean()) for k, v in evals.items()},
            **tag,
        }
    )
    return pd.DataFrame(rows)


def examples(
    frame: pd.DataFrame, z: dict[str, np.ndarray], objectives: Sequence[str], n_prompts: int, k: int
) -> list[dict]:
    """For a few prompts: k responses at n = 1 (the first k draws, i.i.d.) and, per pm_train, its k
    top-ranked of N (the first is the best-of-N pick), with z-scores under pm_train and pm_test."""
    n_p = int(frame["prompt"].max()) + 1
    picks = np.unique(np.linspace(0, n_p - 1, n_prompts).round().astype(int)) if n_prompts else []
    out = []
    for p in picks:
        rows = frame[frame["prompt"] == p].sort_values("sample")
        responses = rows["response"].tolist()

        def show(j: int) -> dict:
            return {
                "response": responses[j],
                **{f"z_{name}": round(float(z[name][p, j]), 3) for name in sorted(z)},
            }

        item = {
            "prompt_id": rows["prompt_id"].iloc[0],
            "objective": rows["objective"].iloc[0],
            "prompt": int(p),
            "n1": [show(j) for j in range(min(k, len(responses)))],
            "best_of_N": {},
        }
        for o in objectives:
            order = np.argsort(-z[f"pm_train_{o}"][p], kind="stable")[:k]
            item["best_of_N"][o] = [show(int(j)) for j in order]
        out.append(item)
    return out


ANALYSIS = "within-prompt z; held-out curve; AIC forms; gap beyond RTM; frontier by pm_test"
"""Part of the analysis hash: a change of method recomputes bon.csv and bon_fit.json."""


def stage_bon_analysis(prep, scored: str) -> None:
    """bon.csv, bon_fit.json, frontier.csv and bon/examples.json; `scored`: the hash of the scored samples."""

    ctx, cfg = prep.ctx, prep.ctx.cfg
    b = cfg.bon
    judge = ctx.run_dir / "combine" / "judge.json"
    picks = sha256_file(judge) if judge.exists() else None  # the combined judges' picks follow it
    h = config_hash(scored, b, cfg.pm_halves.objectives, ANALYSIS, "bon", *([picks] if picks else []))
    if stage_complete(ctx.run_dir, "bon", h):
        return
    frame = pd.read_parquet(ctx.run_dir / "bon" / "samples.parquet")
    raw = {c: score_matrix(frame, c) for c in frame.columns if c.startswith(("pm_train_", "pm_test_", "rm_"))}
    z = z_matrices(raw)
    ns = bon.n_grid(b.n_samples)
    table, _ = bon_curves(z, cfg.pm_halves.objectives, ns)
    prompts = read_json(ctx.run_dir / "bon" / "prompts.json")["prompts"]
    ex = examples(frame, z, cfg.pm_halves.objectives, b.n_example_prompts, b.n_examples)
    for item in ex:
        item["context"] = prompts[item["prompt"]]["context"]
    outputs = [
        write_csv(ctx.run_dir / "bon.csv", table),
        write_json(ctx.run_dir / "bon_fit.json", bon_fits(raw, table, cfg.pm_halves.objectives, ns, cfg)),
        write_json(ctx.run_dir / "bon" / "examples.json", {"n_samples": b.n_samples, "prompts": ex}),
    ]
    contexts = [prompts[p]["context"] for p in sorted(frame["prompt"].unique())]
    embed = lambda texts: backbone_embedder(  # noqa: E731
        ctx.backbone_path, prep.tokenizer, cfg.model.max_length, b.score_batch_size, device()
    )(texts)
    combined = combined_selectors(ctx.run_dir, raw, [[Turn(**t) for t in c] for c in contexts], embed)
    front = frontier_table(z, np.linspace(0, 1, b.frontier_weights), b.frontier_n or b.n_samples, combined)
    if front is not None:
        outputs.append(write_csv(ctx.run_dir / "frontier.csv", front))
    elif (ctx.run_dir / "frontier.csv").exists():
        (ctx.run_dir / "frontier.csv").unlink()  # a stale frontier of another configuration
    write_manifest(ctx.run_dir, "bon", h, outputs)
