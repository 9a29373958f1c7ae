"""Report sections of the optimisation stages, built only from `bon.csv`, `bon_fit.json`,
`frontier.csv`, `bon/examples.json`, `rl.csv` and `rl.json` (nothing is recomputed here).

Verdicts: the sqrt(KL) relation counts as observed when the fit of pm_train's curve has a
positive slope and R^2 >= `R2_OBSERVED`; the train/test gap counts as observed when its bootstrap
CI at the largest n (best-of-n) or its mean +- 2 SE over the last quarter of the steps (RL) lies
above zero.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

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
from rmtension.run.runio import read_json

R2_OBSERVED = 0.9
"""R^2 of reward ~ a + b sqrt(KL) above which the sqrt(KL) relation counts as observed."""
CURVES = {
    "reward_train_pm": ("pm_train (selects)", "-", "o"),
    "reward_test_pm": ("pm_test (held-out half)", "--", "s"),
    "reward_other_objective": ("other objective's RM", ":", "^"),
}
LABELS = {
    **{k: v[0] for k, v in CURVES.items()},
    "reward_helpful_rm": "study helpful RM",
    "reward_harmless_rm": "study harmless RM",
}
KL_LABEL = "sqrt(KL_bon), KL_bon = log n - (n-1)/n (an upper bound)"


def sqrt_kl_sentence(where: str, objective: str, fit: dict) -> str:
    seen = fit["slope"] > 0 and fit["r2"] >= R2_OBSERVED
    return (
        f"{where}, {objective}: the sqrt(KL) relation was {'observed' if seen else 'not observed'}: pm_train reward "
        f"≈ {fit['intercept']:+.3f} {fit['slope']:+.3f}·sqrt(KL) with R² = {fit['r2']:.3f} "
        f"(criterion: slope > 0 and R² ≥ {R2_OBSERVED})."
    )


def bon_gap_sentence(objective: str, gap: dict) -> str:
    lo, hi, mean, n = gap["ci_low"][-1], gap["ci_high"][-1], gap["gap"][-1], gap["n"][-1]
    level = f"{gap['level']:.0%}"
    if lo > 0:
        onset = f"; its CI first excludes 0 at n = {gap['onset_n']}" if gap["onset_n"] is not None else ""
        return (
            f"Best-of-n, {objective}: the train/test gap was observed: at n = {n} pm_train rates its pick "
            f"{mean:+.3f} z above pm_test does ({level} CI [{lo:+.3f}, {hi:+.3f}]){onset}."
        )
    return (
        f"Best-of-n, {objective}: the train/test gap was not observed: at n = {n} pm_train − pm_test = "
        f"{mean:+.3f} z ({level} CI [{lo:+.3f}, {hi:+.3f}])."
    )


def section_bon(run_dir: Path):
    if not (run_dir / "bon.csv").exists() or not (run_dir / "bon_fit.json").exists():
        return None
    table, fits = pd.read_csv(run_dir / "bon.csv"), read_json(run_dir / "bon_fit.json")
    s = Section("Best-of-n against a learned judge", "bon")
    s.paragraphs.append(
        "N responses per held-out prompt are sampled once from the policy; for each n the expected reward of the "
        "sample that pm_train ranks best among n is computed exactly over all n-subsets (no regeneration). "
        "pm_train and pm_test are trained with the study's recipe on disjoint, prompt-grouped halves of the "
        "objective's training pairs (Bai et al. 2022, sec. 4.3). Rewards are z-scores of each judge over all samples. "
        f"{fits['kl']}. Sources: `bon.csv`, `bon_fit.json`, `bon/samples.parquet`."
    )
    objectives = list(dict.fromkeys(table["objective"]))
    fig, axes = new_figure(
        DOUBLE_WIDTH if len(objectives) > 1 else COLUMN_WIDTH,
        2.9,
        ncols=len(objectives),
        squeeze=False,
        sharey=True,
    )
    rows = []
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
        fit = f["sqrt_kl"]["reward_train_pm"]
        d = np.linspace(0, t["sqrt_kl"].max(), 50)
        ax.plot(
            d,
            fit["intercept"] + fit["slope"] * d,
            color=CHANCE_COLOUR,
            lw=0.7,
            label="a + b·sqrt(KL) fit (pm_train)",
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
        s.paragraphs.append(sqrt_kl_sentence("Best-of-n", o, fit))
        s.paragraphs.append(bon_gap_sentence(o, f["gap"]))
        for col, fit_c in f["sqrt_kl"].items():
            rows.append(
                {
                    "objective": o,
                    "curve": LABELS.get(col, col),
                    "intercept": f"{fit_c['intercept']:+.3f}",
                    "slope": f"{fit_c['slope']:+.3f}",
                    "R²": f"{fit_c['r2']:.3f}",
                }
            )
        rows.append(
            {
                "objective": o,
                "curve": "pm_test, Gao et al. d(α − βd)",
                "intercept": "0",
                "slope": f"α={g['alpha']:+.3f}, β={g['beta']:+.3f}",
                "R²": f"{g['r2']:.3f}",
                "peak n": "never" if not np.isfinite(g["peak_n"]) else f"{g['peak_n']:.0f}",
            }
        )
    axes[0][0].set_ylabel("reward of the pick (z)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}  # every curve kind, once
    fig.legend(handles.values(), handles.keys(), frameon=False, loc="outside lower center", ncols=3)
    s.figures.append(
        (
            "Best-of-n: reward of pm_train's pick under pm_train, pm_test and the other objective's RM, "
            "against sqrt(KL_bon) (an upper bound on the KL, Beirami et al. 2024).",
            save(fig, run_dir, "bon"),
        )
    )
    s.tables.append(
        ("Fits of reward against sqrt(KL) (source: `bon_fit.json`)", pd.DataFrame(rows).fillna(""))
    )
    return s


def section_rl(run_dir: Path):
    if not (run_dir / "rl.csv").exists():
        return None
    frame = pd.read_csv(run_dir / "rl.csv")
    summary = read_json(run_dir / "rl.json") if (run_dir / "rl.json").exists() else {}
    s = Section("RL against pm_train", "rl")
    s.paragraphs.append(
        "RLOO (Ahmadian et al. 2024) with a KL penalty to the initial policy, optimising pm_train; each step logs the "
        "sampled batch's KL (sum over tokens of log π − log π_ref) and its reward under pm_train, pm_test and the other "
        "objective's RM (z-units of the initial policy's samples). Sources: `rl.csv`, `rl.json`."
    )
    objectives = list(dict.fromkeys(frame["objective"]))
    fig, axes = new_figure(DOUBLE_WIDTH, 2.8, ncols=2)
    for o in objectives:
        t = frame[frame["objective"] == o]
        c = RM_COLOURS.get(o)
        for col, (label, ls, marker) in CURVES.items():
            if np.isfinite(t[col]).all():
                axes[0].plot(
                    t["sqrt_kl"], t[col], ls=ls, marker=marker, ms=2, lw=0.8, color=c, label=f"{o}: {label}"
                )
        axes[1].plot(t["step"], t["kl"], color=c, lw=1, label=o)
        sm = summary.get(o)
        if sm and "reward_train_pm" in sm["sqrt_kl"]:
            s.paragraphs.append(sqrt_kl_sentence("RL", o, sm["sqrt_kl"]["reward_train_pm"]))
            gap, se = sm["final_gap"], sm["final_gap_se"]
            seen = np.isfinite(se) and gap - 2 * se > 0
            spread = f"± {2 * se:.3f} z (mean ± 2 SE)" if np.isfinite(se) else "z (one step: no interval)"
            s.paragraphs.append(
                f"RL, {o}: the train/test gap was {'observed' if seen else 'not observed'}: over the last quarter of "
                f"the steps (KL ≈ {sm['final_kl']:.3f}) pm_train − pm_test = {gap:+.3f} {spread}."
            )
    axes[0].set_xlabel("sqrt(KL) to the initial policy (sampled batch)")
    axes[0].set_ylabel("reward (z)")
    fig.legend(*axes[0].get_legend_handles_labels(), frameon=False, loc="outside lower center", ncols=3)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("KL to the initial policy")
    axes[1].legend(frameon=False)
    s.figures.append(
        (
            "RL curves: reward under each judge against sqrt(KL), and KL over the steps.",
            save(fig, run_dir, "rl"),
        )
    )
    last = frame.groupby("objective", sort=False).tail(1)
    s.tables.append(
        (
            "Last step per objective",
            last[
                ["objective", "step", "kl", "reward_train_pm", "reward_test_pm", "reward_other_objective"]
            ].round(3),
        )
    )
    return s


def section_frontier(run_dir: Path):
    if not (run_dir / "frontier.csv").exists():
        return None
    f = pd.read_csv(run_dir / "frontier.csv")
    w, judges = f[f["kind"] == "weighted"], f[f["kind"] == "judge"]
    s = Section("Helpful-harmless frontier", "frontier")
    s.paragraphs.append(
        f"Best-of-{int(w['n'].iloc[0])} selecting by w·z(helpful RM) + (1 − w)·z(harmless RM) for w in [0, 1], read by the "
        "study's helpful and harmless RMs (first seed); markers show where selecting by a single judge lands "
        "(w = 1 and w = 0 are the helpful and harmless RMs themselves). Source: `frontier.csv`."
    )
    fig, ax = new_figure(COLUMN_WIDTH, 3.4)
    ax.plot(w["helpful"], w["harmless"], color="black", lw=1, marker=".", ms=3, label="weighted selector")
    for i, (_, r) in enumerate(judges.iterrows()):
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
    ax.set_xlabel("helpful RM reward (z)")
    ax.set_ylabel("harmless RM reward (z)")
    fig.legend(frameon=False, loc="outside lower center", ncols=2)
    s.figures.append(
        (
            "The helpful-vs-harmless frontier that best-of-n reaches, with single-judge selections.",
            save(fig, run_dir, "frontier"),
        )
    )
    s.tables.append(("Frontier and single-judge points (z-units)", f.round(3)))
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


SECTIONS: list[Callable[[Path], object]] = [section_bon, section_rl, section_frontier, section_examples]
