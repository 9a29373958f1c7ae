"""The report section of RL, built only from `rl.csv`, `rl_eval.csv` and `rl.json`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.report.curves import CURVES, ci_text, forms_rows, forms_sentence, gao_row, gap_sentence
from rmtension.report.figures import DOUBLE_WIDTH, RM_COLOURS, new_figure, save
from rmtension.report.section import Section
from rmtension.stats.verdicts import claim_min_effect
from rmtension.run.runio import read_json


def _plot_heldout(ax, ev: pd.DataFrame, summary: dict) -> None:
    """Held-out reward (within-prompt SD) of pm_train and pm_test against sqrt(KL), one line per objective and seed."""
    for o, t in ev.groupby("objective", sort=False):
        sds = summary.get(o, {}).get("within_sd", {})
        for j, (seed, r) in enumerate(t.groupby("seed", sort=True)):
            g = r.groupby("step", sort=True).mean(numeric_only=True)
            x = np.sqrt(g["kl"].clip(lower=0))
            for col in ("reward_train_pm", "reward_test_pm"):
                label, ls, marker = CURVES[col]
                ax.plot(
                    x,
                    g[col] / sds.get(col, 1.0),
                    ls=ls,
                    marker=marker,
                    ms=2,
                    lw=0.8,
                    alpha=1.0 if j == 0 else 0.6,
                    color=RM_COLOURS.get(o),
                    label=f"{o}: {label}" if j == 0 else None,
                )


def section_rl(run_dir: Path):
    if not (run_dir / "rl.csv").exists():
        return None
    frame = pd.read_csv(run_dir / "rl.csv")
    summary = read_json(run_dir / "rl.json") if (run_dir / "rl.json").exists() else {}
    s = Section("RL against pm_train", "rl")
    if not (run_dir / "rl_eval.csv").exists() or any("trend_ci95" not in v for v in summary.values()):
        s.paragraphs.append("`rl.json` predates the held-out evaluation: rerun `rmtension rl` to see it.")
        return s
    ev = pd.read_csv(run_dir / "rl_eval.csv")
    m_slope, m_gap = claim_min_effect(run_dir, "sqrt_kl"), claim_min_effect(run_dir, "train_test_gap")
    any_sm = next(iter(summary.values()))
    s.paragraphs.append(
        "RLOO (Ahmadian et al. 2024) with a KL penalty to the initial policy, optimising pm_train, one run per objective "
        f"and seed ({', '.join(map(str, any_sm['seeds']))}). After every few updates (steps {any_sm['eval_steps']}) the "
        f"policy answers {any_sm['eval_prompts']} held-out prompts {any_sm['eval_k']} times each: prompt groups RL never "
        "trains on and no RM or PM saw. Each completion's exact KL to the initial policy and its reward under pm_train, "
        f"pm_test and the other objective's RM are logged; units: {any_sm['units']}. The trend is the slope of "
        "pm_train's held-out reward over sqrt(KL), fitted over every evaluation of every seed, with a 95% CI from a "
        "residual moving-block bootstrap over each seed's evaluations (blocks keep the dependence of consecutive "
        "evaluations of one drifting policy). Sources: `rl.csv` (training batches), `rl_eval.csv`, `rl.json`."
    )
    fig, axes = new_figure(DOUBLE_WIDTH, 2.8, ncols=2)
    _plot_heldout(axes[0], ev, summary)
    seed_rows, form_rows, gao_rows = [], [], []
    for o, t in frame.groupby("objective", sort=False):
        for j, (seed, r) in enumerate(t.groupby("seed", sort=True)):
            axes[1].plot(
                r["step"],
                r["kl"],
                color=RM_COLOURS.get(o),
                lw=1,
                alpha=1.0 if j == 0 else 0.6,
                label=o if j == 0 else None,
            )
        sm = summary.get(o)
        if not sm:
            continue
        trend = sm["curves"][sm["trend_judge"]]
        s.paragraphs.append(forms_sentence(f"RL, {o}", trend, sm["trend"], sm["trend_ci95"], m_slope))
        spread = sm["seed_spread"]
        if spread["n_seeds"] > 1:
            s.paragraphs.append(
                f"RL, {o}: across {spread['n_seeds']} seeds the trend runs from {spread['trend_min']:+.3f} to "
                f"{spread['trend_max']:+.3f} (SD {spread['trend_sd']:.3f}); the CI above is conditional on these seeds."
            )
        if trend.get("ci_method") == "prompts":
            s.paragraphs.append(
                f"RL, {o}: fewer than 3 evaluations per seed, so the trend's CI resamples the held-out prompts instead "
                "of blocks of evaluations: it holds the evaluation's sampling noise, not the policy's drift."
            )
        s.paragraphs.append(gap_sentence(f"RL, {o}, after {sm['gap']['step']} steps", sm["gap"], m_gap))
        form_rows += forms_rows(o, sm["curves"], {c: v["slope_ci95"] for c, v in sm["curves"].items()})
        gao_rows.append(gao_row(o, "pm_train held-out gain", trend["gao"]))
        for seed, b in sm["by_seed"].items():
            g = b["gap"]
            seed_rows.append(
                {
                    "objective": o,
                    "seed": seed,
                    "trend": f"{b['trend']:+.3f} {ci_text(b['trend_ci95'])}",
                    "final KL": f"{b['final_kl']:.3f}",
                    "gap": f"{g['gap']:+.3f}",
                    "RTM": f"{g['rtm']:+.3f}",
                    "excess": f"{g['excess']:+.3f} {ci_text([g['excess_ci_low'], g['excess_ci_high']])}",
                }
            )
        seed_rows.append(
            {
                "objective": o,
                "seed": "all",
                "trend": f"{sm['trend']:+.3f} {ci_text(sm['trend_ci95'])}",
                "final KL": f"{sm['final_kl']:.3f}",
                "gap": f"{sm['gap']['gap']:+.3f}",
                "RTM": f"{sm['gap']['rtm']:+.3f}",
                "excess": f"{sm['gap']['excess']:+.3f} {ci_text([sm['gap']['excess_ci_low'], sm['gap']['excess_ci_high']])}",
            }
        )
    axes[0].set_xlabel("sqrt(KL) to the initial policy (held-out completions)")
    axes[0].set_ylabel("held-out reward (within-prompt SD)")
    fig.legend(*axes[0].get_legend_handles_labels(), frameon=False, loc="outside lower center", ncols=2)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("KL to the initial policy (training batch)")
    axes[1].legend(frameon=False)
    s.figures.append(
        (
            "RL: held-out reward under pm_train (solid) and pm_test (dashed) against sqrt(KL), each seed a line; and the "
            "training batches' KL over the steps.",
            save(fig, run_dir, "rl"),
        )
    )
    s.tables.append(
        (
            "RL trend over sqrt(KL) [95% CI] and the held-out gap, per seed and pooled (source: `rl.json`)",
            pd.DataFrame(seed_rows),
        )
    )
    s.tables.append(
        ("Functional forms of each held-out RL curve: AIC (lower fits better)", pd.DataFrame(form_rows))
    )
    s.tables.append(
        ("Gao et al. (2023) d(α − βd) fit of pm_train's held-out gain from step 0", pd.DataFrame(gao_rows))
    )
    return s
