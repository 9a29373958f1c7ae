"""Report sections of the ablation stage, built only from files in the run directory.

- the ablation heatmaps (neuron set x test set, one panel per control kind) at the claims' top-p,
  mean ablation first (the claims' headline), zero ablation beside it, with the number of draws;
- the p-sweep: margin change against p with the random controls' bands;
- the cross-effects, the size-matched influence of the shared neurons and the double dissociation.

Effects are margin changes in SDs of the unablated margin on the test set (ablation.csv's `std_*`).
Each section takes the run's claim settings (`rmtension.neurons.report.claim_settings`);
`rmtension.neurons.report` wraps them as sections of the run directory alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.stats.pvalues import fmt_p, nearest_p
from rmtension.report.core import ordered_tests
from rmtension.report.figures import COLUMN_WIDTH, DIVERGING_CMAP, DOUBLE_WIDTH, PALETTE, new_figure, save
from rmtension.report.section import Section
from rmtension.run.runio import read_json

SETS = ["helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only"]
SET_COLOURS = dict(zip(SETS, [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[5], PALETTE[4]]))
KIND_WORDS = {"layer": "layer-matched", "magnitude": "magnitude-matched"}
MODES = ("mean", "zero")  # report order: the claims' headline first
UNIT = "SDs of the unablated margin"


def _ci(x: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _main_rows(frame: pd.DataFrame, settings: dict) -> tuple[pd.DataFrame, str]:
    """Rows of the primary RM (every seed) for the claims' scorer; all RMs when the primary was not ablated."""
    rows = frame[frame["scorer"] == settings["scorer"]]
    mine = rows[rows["rm"].str.startswith(settings["rm"] + "-")]
    return (mine, f"the {settings['rm']} RM") if not mine.empty else (rows, "all ablated RMs")


def _load_ablation(run_dir: Path, st: dict) -> tuple[pd.DataFrame, dict, pd.DataFrame, str] | None:
    """`ablation.csv`, the claim settings `st`, and the rows of the RMs the report headlines (None: no file)."""
    path = run_dir / "ablation.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    if "control" not in frame:  # written before the control kinds existed
        return None
    frame["control"] = frame["control"].fillna("")
    rows, who = _main_rows(frame, st)
    return frame, st, rows, who


def _modes(rows: pd.DataFrame) -> list[str]:
    present = set(rows["mode"]) - {"none"}
    return [m for m in MODES if m in present] + sorted(present - set(MODES))


def draws_sentence(rows: pd.DataFrame, claim_p: float) -> str:
    """How many random draws each control kind had, at the claims' p per mode and at the sweep's other p."""
    sets = rows[rows["neuron_set"].isin(SETS) & (rows["n_draws"] > 0)]
    if sets.empty:
        return "No random controls were drawn."
    parts = []
    for mode in _modes(sets):
        at = sets[(sets["mode"] == mode) & (sets["p"] == claim_p)]
        if not at.empty:
            parts.append(
                f"{'/'.join(str(int(n)) for n in sorted(at['n_draws'].unique()))} at top-{claim_p:g}% ({mode})"
            )
    other = sets[sets["p"] != claim_p]
    if not other.empty:
        parts.append(
            f"{'/'.join(str(int(n)) for n in sorted(other['n_draws'].unique()))} at the sweep's other p"
        )
    kinds = ", ".join(KIND_WORDS.get(k, k) for k in sorted(sets["control"].unique()))
    return f"Random draws per control kind ({kinds}): " + "; ".join(parts) + "."


def section_ablation(run_dir: Path, settings: dict) -> Section | None:
    loaded = _load_ablation(run_dir, settings)
    if loaded is None:
        return None
    _, st, rows, who = loaded
    if rows.empty:
        return None
    s = Section("Ablating the neuron sets", "neuron-ablation")
    p = float(nearest_p(rows["p"].unique(), st["p"]))
    s.paragraphs.append(
        f"Margin change (r_chosen − r_rejected, in {UNIT} on each test set) of {who} when a neuron set is "
        "ablated, against random neurons: layer-matched (as many neurons in every layer) and magnitude-matched "
        "(as many in every layer and mean-|activation| decile). 'vs random' is the set's per-pair margin minus the "
        "per-pair mean over the draws; p: the paired t-test of those same per-pair differences; brackets: 95% "
        "paired bootstrap CIs over test pairs. Mean ablation (each neuron set to its mean activation on its "
        "objective's training pairs) decides the claims; zero ablation is shown beside it. "
        + draws_sentence(rows, p)
        + " Source: `ablation.csv`."
    )
    for mode in _modes(rows):
        at = rows[(rows["p"] == p) & (rows["mode"] == mode) & rows["neuron_set"].isin(SETS)]
        if at.empty:
            continue
        grid = (
            at.groupby(["neuron_set", "test_set", "control"])
            .mean(numeric_only=True)
            .reset_index()
            .assign(
                p_value=lambda g: at.groupby(["neuron_set", "test_set", "control"])["p_value"].max().values
            )
        )
        rank = {
            "neuron_set": {x: i for i, x in enumerate(SETS)},
            "test_set": {t: i for i, t in enumerate(ordered_tests(grid["test_set"].unique()))},
        }
        grid = grid.sort_values(
            ["neuron_set", "test_set", "control"], key=lambda c: c.map(rank[c.name]) if c.name in rank else c
        )
        controlled = grid[grid["n_draws"] > 0]
        if not controlled.empty:
            s.figures.append(
                (
                    f"{mode} ablation at top-{p:g}% by `{st['scorer']}`: margin change against the random controls "
                    f"({UNIT}; cells: change, paired t p). Source: `ablation.csv`.",
                    _heatmap(run_dir, controlled, f"ablation_heatmap_{mode}"),
                )
            )
        s.tables.append(
            (
                f"{mode} ablation at top-{p:g}% ({UNIT}; source: `ablation.csv`)",
                pd.DataFrame(
                    [
                        {
                            "set": r.neuron_set,
                            "test set": r.test_set,
                            "control": KIND_WORDS.get(r.control, "none"),
                            "neurons": f"{r.n_neurons:.0f}",
                            "draws": f"{r.n_draws:.0f}",
                            "vs unablated": _ci(r.std_delta_margin, r.std_ci_lo, r.std_ci_hi),
                            "vs random": _ci(r.std_vs_random, r.std_vs_random_ci_lo, r.std_vs_random_ci_hi)
                            if r.n_draws > 0
                            else "",
                            "paired t p": fmt_p(r.p_value) if r.n_draws > 0 else "",
                            "accuracy change": f"{r.delta_vs_base:+.3f}",
                        }
                        for r in grid.itertuples()
                    ]
                ),
            )
        )
    return s


def _heatmap(run_dir: Path, grid: pd.DataFrame, name: str) -> Path:
    sets = [x for x in SETS if x in set(grid["neuron_set"])]
    tests = ordered_tests(grid["test_set"].unique())
    kinds = [k for k in KIND_WORDS if k in set(grid["control"])]
    fig, axes = new_figure(
        DOUBLE_WIDTH if len(kinds) > 1 else COLUMN_WIDTH,
        0.35 * len(sets) + 1.2,
        ncols=len(kinds),
        squeeze=False,
    )
    val = np.full((len(kinds), len(sets), len(tests)), np.nan)
    pv = np.full_like(val, np.nan)
    draws = {k: int(grid[grid["control"] == k]["n_draws"].max()) for k in kinds}
    for r in grid.itertuples():
        k, i, j = kinds.index(r.control), sets.index(r.neuron_set), tests.index(r.test_set)
        val[k, i, j], pv[k, i, j] = r.std_vs_random, r.p_value
    lim = max(0.01, float(np.nanmax(np.abs(val))) if np.isfinite(val).any() else 0.01)
    for k, ax in enumerate(axes[0]):
        im = ax.imshow(val[k], cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
        for i in range(len(sets)):
            for j in range(len(tests)):
                if np.isfinite(val[k, i, j]):
                    ax.text(
                        j,
                        i,
                        f"{val[k, i, j]:+.3f}\np={fmt_p(pv[k, i, j], 1)}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(val[k, i, j]) > 0.6 * lim else "black",
                    )
        ax.set_xticks(range(len(tests)), [f"{t} test" for t in tests])
        ax.set_yticks(range(len(sets)), sets if k == 0 else [""] * len(sets))
        n = draws[kinds[k]]
        ax.set_title(f"vs {KIND_WORDS[kinds[k]]} ({n} draw{'s' if n != 1 else ''})", fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), label="margin change vs random (SD)")
    return save(fig, run_dir, name)


def section_sweep(run_dir: Path, settings: dict) -> Section | None:
    loaded = _load_ablation(run_dir, settings)
    if loaded is None:
        return None
    _, st, rows, who = loaded
    mode = next((m for m in _modes(rows) if (rows["mode"] == m).any()), None)
    rows = rows[rows["mode"] == mode]
    if rows.empty or rows["p"].nunique() < 2:
        return None
    s = Section("Ablation across top-p", "neuron-sweep")
    kinds = [k for k in KIND_WORDS if k in set(rows["control"])]
    s.paragraphs.append(
        f"Margin change ({UNIT}) of {who} against the unablated model as the ablated set grows (scorer "
        f"`{st['scorer']}`, {mode} ablation). Dotted (layer-matched) and dashed (magnitude-matched): the mean of "
        "the random controls, shaded by its 95% CI. "
        + draws_sentence(rows, float(nearest_p(rows["p"].unique(), st["p"])))
        + " Source: `ablation.csv`."
    )
    tests = ordered_tests(rows[rows["n_draws"] > 0]["test_set"].unique()) or ordered_tests(
        rows["test_set"].unique()
    )
    fig, axes = new_figure(
        DOUBLE_WIDTH if len(tests) > 1 else COLUMN_WIDTH, 2.5, ncols=len(tests), sharey=True, squeeze=False
    )
    for ax, test in zip(axes[0], tests):
        for name in ("helpful_top", "harmless_top"):
            own = (
                rows[(rows["neuron_set"] == name) & (rows["test_set"] == test)]
                .groupby("p")
                .mean(numeric_only=True)
            )
            if own.empty:
                continue
            c = SET_COLOURS[name]
            ax.plot(own.index, own["std_delta_margin"], marker="o", ms=3, color=c, label=name)
            for kind, ls in zip(kinds, (":", "--")):
                rnd = (
                    rows[
                        (rows["neuron_set"] == "random:" + name)
                        & (rows["test_set"] == test)
                        & (rows["control"] == kind)
                    ]
                    .groupby("p")
                    .mean(numeric_only=True)
                )
                if rnd.empty:
                    continue
                ax.fill_between(rnd.index, rnd["std_ci_lo"], rnd["std_ci_hi"], color=c, alpha=0.12, lw=0)
                ax.plot(
                    rnd.index,
                    rnd["std_delta_margin"],
                    color=c,
                    ls=ls,
                    lw=1,
                    label=f"{KIND_WORDS[kind]} ({name})",
                )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ps = sorted(rows["p"].unique())
        ax.set_xticks(ps, [f"{q:g}" for q in ps])
        ax.minorticks_off()
        ax.set_xlabel("top p (%)")
        ax.set_title(f"{test} test set")
    axes[0][0].set_ylabel("margin change (SD)")
    axes[0][0].legend(frameon=False, fontsize=7)
    s.figures.append(
        (
            f"Margin change against top-p ({mode} ablation); dotted and dashed lines with bands: the random "
            "controls. Source: `ablation.csv`.",
            save(fig, run_dir, "ablation_sweep"),
        )
    )
    return s


def section_cross(run_dir: Path, settings: dict) -> Section | None:
    cross_path = run_dir / "neurons" / "cross_effect.json"
    if not cross_path.exists():
        return None
    st = settings
    records = [r for r in read_json(cross_path) if r["scorer"] == st["scorer"]] or read_json(cross_path)
    modes = [m for m in MODES if any(r["mode"] == m for r in records)] or sorted({r["mode"] for r in records})
    if not records or not modes:
        return None
    mode = modes[0]
    records = [r for r in records if r["mode"] == mode]
    p = float(nearest_p({r["p"] for r in records}, st["p"]))
    s = Section("Cross-effects, the influence of shared neurons and the double dissociation", "neuron-cross")
    rows = []
    for r in records:
        if r["p"] != p:
            continue
        for name, by in r["matrix"].items():
            for test, e in by.items():
                row = {
                    "RM": r["rm"],
                    "ablated set": name,
                    "test set": test,
                    "neurons": f"{e['n_neurons']:.0f}",
                    "vs unablated (SD)": _ci(e["std_delta_margin"], *e["std_ci"]),
                }
                for kind, c in e.get("controls", {}).items():
                    row[f"vs {KIND_WORDS.get(kind, kind)} (SD)"] = (
                        _ci(c["std_vs_random"], *c["std_ci"])
                        + f", p={fmt_p(c['p_value'])}, {c['n_draws']} draw{'s' if c['n_draws'] != 1 else ''}"
                    )
                rows.append(row)
    s.paragraphs.append(
        f"At top-{p:g}% by `{records[0]['scorer']}`, {mode} ablation: ablating one objective's neurons (rows) and "
        f"measuring both test sets, in {UNIT} (95% paired bootstrap CIs). Source: `neurons/cross_effect.json`."
    )
    s.tables.append(("Cross-effect matrix (source: `neurons/cross_effect.json`)", pd.DataFrame(rows)))
    infl_path = run_dir / "neurons" / "influence.json"
    if infl_path.exists():
        comps = [
            {
                "RM": r["rm"],
                "test set": c["test_set"],
                "shared vs": c["other"],
                "neurons": f"{c['matched_std']['n_shared']} vs {c['matched_std']['n_other']}",
                "drop of shared minus other (SD)": _ci(c["matched_std"]["diff"], *c["matched_std"]["ci"])
                + f", p={fmt_p(c['matched_std']['p_value'])}",
            }
            for r in read_json(infl_path)["records"]
            if r["scorer"] == records[0]["scorer"] and r["mode"] == mode and r["p"] == p
            for c in r["comparisons"]
            if "matched_std" in c
        ]
        if comps:
            s.tables.append(
                (
                    "Influence of the shared neurons against as many objective-only neurons (size-matched; "
                    f"positive: the shared neurons hurt more; {UNIT}; source: `neurons/influence.json`)",
                    pd.DataFrame(comps),
                )
            )
    dd = _dissociation(run_dir, records[0]["scorer"], mode, p)
    if dd is not None:
        s.paragraphs.append(dd[0])
        s.figures.append(dd[1])
    return s


def _dissociation(run_dir: Path, scorer: str, mode: str, p: float) -> tuple[str, tuple[str, Path]] | None:
    path = run_dir / "neurons" / "dissociation.json"
    if not path.exists():
        return None
    recs = [
        r for r in read_json(path)["records"] if r["scorer"] == scorer and r["mode"] == mode and r["p"] == p
    ]
    if not recs:
        return None
    r = recs[0]
    text = (
        "Double dissociation (`neurons/dissociation.json`): the mean over helpful_only and harmless_only of the set's "
        f"drop on its own objective's test pairs minus its drop on the other's, {UNIT}: "
        + "; ".join(f"{x['rm']} {_ci(x['effect'], *x['ci'])}" for x in recs)
        + " (95% CI, each test set's pairs resampled). Positive: each objective-only set is specific to its objective."
    )
    fig, ax = new_figure(COLUMN_WIDTH, 2.4)
    tests = ("helpful", "harmless")
    for k, name in enumerate(("helpful_only", "harmless_only")):
        ax.bar(
            np.arange(2) + (k - 0.5) * 0.38,
            [r["drops"][name][t] for t in tests],
            0.38,
            color=SET_COLOURS[name],
            label=f"{name} ({r['n_neurons'][name]} neurons)",
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(2), [f"{t} test" for t in tests])
    ax.set_ylabel("margin drop (SD)")
    ax.set_title(f"interaction {_ci(r['effect'], *r['ci'], digits=2)}", fontsize=8)
    ax.legend(frameon=False, fontsize=7)
    caption = (
        f"Margin drop of the objective-only sets on each test set ({r['rm']}, top-{p:g}%, {mode} ablation, {UNIT}). "
        "Source: `neurons/dissociation.json`."
    )
    return text, (caption, save(fig, run_dir, "ablation_dissociation"))
