"""Report sections of the best-of-n stage, built only from `bon.csv`, `bon_fit.json`, `frontier.csv`
and `bon/examples.json`; nothing is recomputed (RL's are in `rmtension.rl.report`).

Each curve's verdict sentence applies the rules of `rmtension.rl.claims` with the run's
`claims.min_effect`, as the summary of findings does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.report.curves import (
    CURVES,
    KL_LABEL,
    forms_rows,
    forms_sentence,
    gao_row,
    gap_sentence,
    ci_text,
)
from rmtension.report.figures import (
    CHANCE_COLOUR,
    COLUMN_WIDTH,
    DOUBLE_WIDTH,
    PALETTE,
    RM_COLOURS,
    new_figure,
    save,
)
from rmtension.report.section import Section
from rmtension.stats.verdicts import claim_min_effect
from rmtension.run.runio import read_json


def section_bon(run_dir: Path):
    if not (run_dir / "bon.csv").exists() or not (run_dir / "bon_fit.json").exists():
        return None
    table, fits = pd.read_csv(run_dir / "bon.csv"), read_json(run_dir / "bon_fit.json")
    s = Section("Best-of-n against a learned judge", "bon")
    if any("heldout_curve" not in f for f in fits["objectives"].values()):
        s.paragraphs.append("`bon_fit.json` predates the held-out analysis: rerun `rmtension bon` to see it.")
        return s
    m_slope, m_gap = claim_min_effect(run_dir, "sqrt_kl"), claim_min_effect(run_dir, "train_test_gap")
    s.paragraphs.append(
        "N responses per held-out prompt (from prompt groups no RM or PM saw) are sampled once from the policy; for "
        "each n the expected reward of the sample that pm_train ranks best among n is computed exactly over all "
        "n-subsets (no regeneration). pm_train and pm_test are trained with the study's recipe on disjoint, "
        "prompt-grouped halves of the objective's training pairs (Bai et al. 2022, sec. 4.3). Rewards are in "
        f"within-prompt SD ({fits['units']}). {fits['kl']}. pm_train's own curve is shown but decides nothing: its "
        "shape follows from its score distribution alone (Gaussian scores give R² = 1.000 against sqrt(KL_bon)); "
        "the held-out curve, pm_test's reward of pm_train's pick, decides. Forms are compared by AIC "
        f"({fits['aic']}). Sources: `bon.csv`, `bon_fit.json`, `bon/samples.parquet`."
    )
    objectives = list(dict.fromkeys(table["objective"]))
    fig, axes = new_figure(
        DOUBLE_WIDTH if len(objectives) > 1 else COLUMN_WIDTH,
        2.9,
        ncols=len(objectives),
        squeeze=False,
        sharey=True,
    )
    form_rows, gao_rows, gap_rows = [], [], []
    for ax, o in zip(axes[0], objectives):
        t, f = table[table["objective"] == o], fits["objectives"][o]
        for col, (label, ls, marker) in CURVES.items():
            if np.isfinite(t[col]).all():
                ax.plot(
                    t["sqrt_kl"],
                    t[col],
                    ls=ls,
                    marker=marker,
                    ms=2.5,
                    lw=1,
                    color=RM_COLOURS.get(o),
                    label=label,
                )
        held = f["curves"][f["heldout_curve"]]
        fit = held["forms"]["sqrt_kl"]
        d = np.linspace(0, t["sqrt_kl"].max(), 50)
        ax.plot(
            d,
            fit["intercept"] + fit["slope"] * d,
            color=CHANCE_COLOUR,
            lw=0.7,
            label="a + b·sqrt(KL) fit (pm_test)",
        )
        g = f["gao_test_pm"]
        ax.plot(
            d,
            d * (g["alpha"] - g["beta"] * d),
            color=CHANCE_COLOUR,
            lw=0.7,
            ls="--",
            label="d(α − βd) fit (pm_test)",
        )
        ax.set_title(f"{o} (n = 1 … {f['n_max']})")
        ax.set_xlabel(KL_LABEL if len(objectives) == 1 else "sqrt(KL_bon) (upper bound)")
        ci = f["slope_ci"][f["heldout_curve"]]
        s.paragraphs.append(forms_sentence(f"Best-of-n, {o}", held, fit["slope"], ci, m_slope))
        s.paragraphs.append(
            gap_sentence(f"Best-of-{f['gap']['n'][-1]}, {o}", f["gap"], m_gap, f["gap_swapped"])
        )
        form_rows += forms_rows(o, f["curves"], f["slope_ci"])
        gao_rows += [gao_row(o, "pm_test (held-out)", g), gao_row(o, "pm_train (selects)", f["gao_train_pm"])]
        for i, n in enumerate(f["gap"]["n"]):
            gp, w = f["gap"], f["gap_swapped"]
            gap_rows.append(
                {
                    "objective": o,
                    "n": n,
                    "gap": f"{gp['gap'][i]:+.3f} {ci_text([gp['gap_ci_low'][i], gp['gap_ci_high'][i]])}",
                    "RTM (1 − ρ̂)·E[z]": f"{gp['rtm'][i]:+.3f}",
                    "excess": f"{gp['excess'][i]:+.3f} {ci_text([gp['excess_ci_low'][i], gp['excess_ci_high'][i]])}",
                    "swapped gap": f"{w['gap'][i]:+.3f}",
                    "swapped excess": f"{w['excess'][i]:+.3f} {ci_text([w['excess_ci_low'][i], w['excess_ci_high'][i]])}",
                    "ρ̂": f"{gp['rho']:.3f}",
                }
            )
    axes[0][0].set_ylabel("reward of the pick (within-prompt SD)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}  # every curve kind, once
    fig.legend(handles.values(), handles.keys(), frameon=False, loc="outside lower center", ncols=3)
    s.figures.append(
        (
            "Best-of-n: reward of pm_train's pick under pm_train, pm_test and the other objective's RM, against "
            "sqrt(KL_bon) (an upper bound on the KL, Beirami et al. 2024); fits of the held-out (pm_test) curve.",
            save(fig, run_dir, "bon"),
        )
    )
    s.tables.append(
        (
            "Functional forms of each best-of-n curve: AIC (lower fits better) (source: `bon_fit.json`)",
            pd.DataFrame(form_rows),
        )
    )
    s.tables.append(
        ("Gao et al. (2023) d(α − βd) fits, d = sqrt(KL_bon), and the peak d*", pd.DataFrame(gao_rows))
    )
    s.tables.append(
        (
            "Train/test gap by n, its regression-to-the-mean expectation and the excess [95% CI over prompts]; "
            "swapped: pm_test selects, pm_train judges",
            pd.DataFrame(gap_rows),
        )
    )
    return s


def section_frontier(run_dir: Path):
    if not (run_dir / "frontier.csv").exists():
        return None
    f = pd.read_csv(run_dir / "frontier.csv")
    w, judges = f[f["kind"] == "weighted"], f[f["kind"] == "judge"]
    s = Section("Helpful-harmless frontier", "frontier")
    held = "judged_by" in f
    s.paragraphs.append(
        f"Best-of-{int(w['n'].iloc[0])} selecting by w·z(pm_train_helpful) + (1 − w)·z(pm_train_harmless) for w in "
        "[0, 1], read by the held-out PMs pm_test_helpful and pm_test_harmless (trained on the other halves, so no "
        "selector judges its own pick); markers show where selecting by a single pm_train or study RM lands. "
        "Source: `frontier.csv`."
        if held
        else "`frontier.csv` predates the held-out frontier (it is read by the selecting RMs): rerun `rmtension bon`."
    )
    fig, ax = new_figure(COLUMN_WIDTH, 3.4)
    ax.plot(w["helpful"], w["harmless"], color="black", lw=1, marker=".", ms=3, label="weighted selector")
    for _, r in judges.iterrows():
        obj = next((o for o in RM_COLOURS if r["selector"].endswith(o)), None)
        marker = "*" if r["selector"].startswith("rm_") else "o" if "pm_train" in r["selector"] else "x"
        ax.scatter(
            r["helpful"],
            r["harmless"],
            s=28,
            marker=marker,
            color=RM_COLOURS.get(obj, PALETTE[7]),
            label=r["selector"],
            zorder=3,
        )
    for i, (_, r) in enumerate(f[f["kind"] == "combined"].iterrows()):  # rmtension.judges.combined
        ax.scatter(
            r["helpful"], r["harmless"], s=26, marker="P" if r["selector"] == "gated" else "D",
            color=PALETTE[3 + i % 3], label=r["selector"], zorder=3,
        )  # fmt: skip
    ax.set_xlabel("held-out helpful PM reward (z)" if held else "helpful RM reward (z)")
    ax.set_ylabel("held-out harmless PM reward (z)" if held else "harmless RM reward (z)")
    fig.legend(frameon=False, loc="outside lower center", ncols=2)
    s.figures.append(
        (
            "The helpful-vs-harmless frontier that best-of-n reaches, read by the held-out PMs, with single-judge selections.",
            save(fig, run_dir, "frontier"),
        )
    )
    s.tables.append(("Frontier and single-judge points (within-prompt z of pm_test)", f.round(3)))
    return s


def _clip(text: str, width: int = 500) -> str:
    text = " ".join(str(text).split())
    return text[:width] + (" …" if len(text) > width else "")


def section_examples(run_dir: Path):
    path = run_dir / "bon" / "examples.json"
    if not path.exists():
        return None
    ex = read_json(path)
    n_max = ex["n_samples"]
    s = Section("What over-optimisation looks like", "bon-examples")
    s.paragraphs.append(
        f"For a few held-out prompts: independent draws from the policy (n = 1) and the responses each pm_train ranks "
        f"highest among all N = {n_max} (the first is its best-of-{n_max} pick), with every judge's z-score. "
        "Source: `bon/examples.json`."
    )
    for item in ex["prompts"]:
        last_user = next((t["content"] for t in reversed(item["context"]) if t["role"] == "user"), "")
        rows = [{"draw": f"n=1 #{i + 1}", **_row(r)} for i, r in enumerate(item["n1"])]
        for o, picks in item["best_of_N"].items():
            rows += [
                {"draw": f"best-of-{n_max} by pm_train_{o} #{i + 1}", **_row(r)} for i, r in enumerate(picks)
            ]
        s.tables.append(
            (f"{item['objective']} prompt {item['prompt_id']}: “{_clip(last_user, 200)}”", pd.DataFrame(rows))
        )
    return s


def _row(r: dict) -> dict:
    scores = {k[2:]: v for k, v in r.items() if k.startswith("z_pm_")}
    return {"response": _clip(r["response"]).replace("|", "/"), **scores}
