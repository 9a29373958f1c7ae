"""Report sections of the neuron analysis, built only from files in the run directory.

Each section reads its files and returns None when they are absent, so the report shows what ran:

- the overlap of helpful_top and harmless_top against chance, and where the shared neurons sit;
- the ablation heatmap (neuron set x test set) at the claims' top-p;
- the p-sweep: accuracy change against p with the matched random control's band;
- the cross-effects and the per-neuron influence of the shared neurons.

The paper's four claims, one sentence each, are in the report's summary of findings
(`rmtension.report.findings`). `rmtension.report.document` places `SECTIONS` under its Neurons and Ablations headings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import numpy as np
import pandas as pd

from rmtension.report.figures import (
    CHANCE_COLOUR,
    COLUMN_WIDTH,
    DIVERGING_CMAP,
    DOUBLE_WIDTH,
    PALETTE,
    new_figure,
    save,
)
from rmtension.neurons.claims import fmt_p, nearest_p
from rmtension.report.core import ordered_tests, read_config
from rmtension.report.section import Section
from rmtension.run.runio import read_json

SETS = ["helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only"]
SET_COLOURS = dict(zip(SETS, [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[5], PALETTE[4]]))


def claim_settings(run_dir: Path) -> dict:
    """The claim settings saved in config.yaml (defaults where the run has no such section)."""
    from rmtension.neurons.config import AblationConfig, NeuronsConfig

    raw = read_config(run_dir)
    n = NeuronsConfig.model_validate(raw.get("neurons") or {})
    a = AblationConfig.model_validate(raw.get("ablation") or {})
    return {"p": a.claim_p, "scorer": a.scorers[0], "alpha": a.alpha, "rm": n.primary_rm, "ci": a.ci}


def _main_rows(frame: pd.DataFrame, settings: dict) -> tuple[pd.DataFrame, str]:
    """Rows of the primary RM (every seed) for the claims' scorer; all RMs when the primary was not ablated."""
    rows = frame[frame["scorer"] == settings["scorer"]]
    mine = rows[rows["rm"].str.startswith(settings["rm"] + "-")]
    return (mine, f"the {settings['rm']} RM") if not mine.empty else (rows, "all ablated RMs")


def section_overlap(run_dir: Path) -> Section | None:
    path = run_dir / "neurons" / "overlap.json"
    if not path.exists():
        return None
    overlap = read_json(path)
    st = claim_settings(run_dir)
    s = Section("Shared neurons: overlap of the helpful and harmless sets", "neuron-overlap")
    rows = [
        {
            "scorer": scorer,
            "top p (%)": p,
            "RM": o.get("rm", ""),
            "n helpful": o["n_helpful"],
            "n harmless": o["n_harmless"],
            "n shared": o["n_shared"],
            "expected shared": f"{o.get('expected_shared', np.nan):.1f}",
            "Jaccard": f"{o['jaccard']:.3f}",
            "Jaccard by chance": f"{o['jaccard_random']:.3f}",
            "hypergeometric p": fmt_p(o["p_value"]),
            **_null_cells(o),
            "cross-model Jaccard": f"{o['cross_model']['jaccard']:.3f}" if "cross_model" in o else "",
        }
        for scorer, by_p in overlap.items()
        for p, o in by_p.items()
    ]
    s.paragraphs.append(
        "helpful_top and harmless_top are the top-p% neurons of one RM scored on helpful and on harmless training "
        "pairs. Chance: two random sets of the same sizes (hypergeometric null; per layer when the sets were chosen "
        "per layer), a floor only: mean_act and fire_rate rank neurons by how active they are on any text, so two "
        "samples of one objective overlap far above it. Sampling noise: the permutation null re-splits the pooled "
        "helpful and harmless pairs at random into two pseudo-objectives of the same sizes (mean Jaccard, 2.5 and "
        "97.5 percentiles; p: how often a re-split overlaps as little as the real split); split half: two disjoint "
        "halves of one objective's pairs (mean of both objectives). Base: each set against the base backbone's "
        "top-p set on the pooled pairs. Cross-model: the helpful RM's helpful_top against the harmless RM's "
        "harmless_top. Source: `neurons/overlap.json` (`rmtension.neurons.nulls`)."
    )
    s.tables.append(("Overlap per scorer and top-p (source: `neurons/overlap.json`)", pd.DataFrame(rows)))
    scorer = st["scorer"] if st["scorer"] in overlap else next(iter(overlap))
    s.figures.append(
        (
            f"Left: Jaccard of helpful_top and harmless_top by `{scorer}` against random neuron sets "
            "(grey) and against re-splits of the pooled scoring pairs into two pseudo-objectives (bars: "
            f"2.5-97.5 percentiles). Right: neurons per layer at top-{float(nearest_p(overlap[scorer], st['p'])):g}%. "
            "Source: `neurons/overlap.json`.",
            _overlap_figure(run_dir, overlap[scorer], st["p"]),
        )
    )
    agree = run_dir / "neurons" / "scorer_agreement.json"
    if agree.exists():
        table = _agreement_table(read_json(agree))
        if table is not None:
            s.tables.append(
                (
                    "Do mean_act and attribution pick the same neurons? Spearman within each layer (mean over "
                    "layers) and Jaccard of their top-p sets, with the Jaccard of random sets of the same per-layer "
                    "sizes in brackets (source: `neurons/scorer_agreement.json`)",
                    table,
                )
            )
    return s


def _null_cells(o: dict) -> dict:
    """The table cells of the nulls drawn from the scoring pairs (empty where overlap.json has none)."""
    perm, half, base = o.get("jaccard_permutation"), o.get("jaccard_split_half"), o.get("jaccard_base", {})
    if not perm:
        return {"permutation null": "", "permutation p": "", "split half": "", "base backbone": ""}
    return {
        "permutation null": f"{perm['mean']:.3f} [{perm['p2_5']:.3f}, {perm['p97_5']:.3f}]",
        "permutation p": fmt_p(perm["p_value"]),
        "split half": f"{half['mean']:.3f}",
        "base backbone": f"{base['mean']:.3f}" if "mean" in base else "",
    }


def _overlap_figure(run_dir: Path, by_p: dict, p: float) -> Path:
    fig, (ax1, ax2) = new_figure(DOUBLE_WIDTH, 2.4, ncols=2)
    keys = sorted(by_p, key=float)
    x = np.arange(len(keys))
    perm = [by_p[k].get("jaccard_permutation") for k in keys]
    nulls = all(perm)  # three bars per p: observed, random sets, re-split pairs
    w = 0.27 if nulls else 0.4
    ax1.bar(
        x - (w if nulls else w / 2), [by_p[k]["jaccard"] for k in keys], w, color=PALETTE[2], label="observed"
    )
    chance = [by_p[k]["jaccard_random"] for k in keys]
    ax1.bar(x + (0 if nulls else w / 2), chance, w, color=CHANCE_COLOUR, label="random sets")
    top = [max(by_p[k]["jaccard"], by_p[k]["jaccard_random"]) for k in keys]
    if nulls:  # the sampling-noise null: mean and its 2.5-97.5 percentiles
        means = np.array([q["mean"] for q in perm])
        err = np.array([[q["mean"] - q["p2_5"] for q in perm], [q["p97_5"] - q["mean"] for q in perm]])
        err = np.clip(np.nan_to_num(err), 0, None)  # rounding (all draws equal) or no draws at all
        ax1.bar(x + w, means, w, yerr=err, color=PALETTE[3], capsize=2, label="re-split pairs")
        top = [max(t, np.nan_to_num(q["p97_5"])) for t, q in zip(top, perm)]
    ax1.set_xticks(x, [f"{k}%" for k in keys])
    ax1.set_xlabel("top p")
    ax1.set_ylabel("Jaccard(helpful_top, harmless_top)")
    ax1.set_ylim(0, 1.35 * max(0.01, max(top)))
    ax1.legend(frameon=False, ncols=3, loc="upper center", fontsize=7)
    per_layer = by_p[min(keys, key=lambda k: abs(float(k) - p))]["per_layer"]
    layers = np.arange(len(per_layer["helpful"]))
    w = 0.27
    for i, (name, colour) in enumerate(
        (("helpful", PALETTE[0]), ("harmless", PALETTE[1]), ("shared", PALETTE[2]))
    ):
        ax2.bar(
            layers + (i - 1) * w,
            per_layer[name],
            w,
            color=colour,
            label=name if name == "shared" else f"{name}_top",
        )
    ax2.set_xticks(layers)
    ax2.set_xlabel("layer")
    ax2.set_ylabel("neurons")
    ax2.legend(frameon=False)
    return save(fig, run_dir, "neuron_overlap")


def _agreement_table(agree: dict) -> pd.DataFrame | None:
    pairs = agree.get("mean_act_vs_attribution")
    if not pairs:
        return None
    rows = []
    for rm, by_obj in pairs.items():
        for obj, a in by_obj.items():
            rows.append(
                {
                    "RM": rm,
                    "scored on": obj,
                    "Spearman within layers": f"{a['spearman']:.3f}",
                    **{
                        f"top-{p}% Jaccard": f"{j:.3f}"
                        + (
                            f" ({a['top_jaccard_chance'][p]:.3f})"
                            if p in a.get("top_jaccard_chance", {})
                            else ""
                        )
                        for p, j in a["top_jaccard"].items()
                    },
                }
            )
    return pd.DataFrame(rows)


def _load_ablation(run_dir: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame, str] | None:
    """`ablation.csv`, the run's neuron settings, and the rows of the RMs the report headlines (None: no file)."""
    path = run_dir / "ablation.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    st = claim_settings(run_dir)
    rows, who = _main_rows(frame, st)
    return frame, st, rows, who


def section_ablation(run_dir: Path) -> Section | None:
    loaded = _load_ablation(run_dir)
    if loaded is None:
        return None
    frame, st, rows, who = loaded
    if rows.empty:
        return None
    s = Section("Ablating the neuron sets", "neuron-ablation")
    s.paragraphs.append(
        f"Accuracy change of {who} when a neuron set is ablated, against the unablated model (delta vs base) and "
        "against random sets with the same number of neurons in every layer (delta vs random; p: exact McNemar test "
        "on per-pair correctness against random draw 0). Seeds are averaged; the p-value is the largest over seeds. "
        "Source: `ablation.csv`."
    )
    p = float(nearest_p(rows["p"].unique(), st["p"]))
    for mode in sorted(rows["mode"].unique()):
        at = rows[(rows["p"] == p) & (rows["mode"] == mode) & rows["neuron_set"].isin(SETS)]
        if at.empty:
            continue
        grid = (
            at.groupby(["neuron_set", "test_set"])
            .agg(
                delta_vs_base=("delta_vs_base", "mean"),
                delta_vs_random=("delta_vs_random", "mean"),
                p_value=("p_value", "max"),
                n_neurons=("n_neurons", "mean"),
            )
            .reset_index()
        )
        s.figures.append(
            (
                f"Accuracy change vs random control, top-{p:g}% by `{st['scorer']}`, {mode} ablation "
                "(cells: delta vs random, p-value). Source: `ablation.csv`.",
                _heatmap(run_dir, grid, f"ablation_heatmap_{mode}"),
            )
        )
        s.tables.append(
            (
                f"{mode} ablation at top-{p:g}% (source: `ablation.csv`)",
                pd.DataFrame(
                    [
                        {
                            "set": r.neuron_set,
                            "test set": r.test_set,
                            "neurons": f"{r.n_neurons:.0f}",
                            "delta vs base": f"{r.delta_vs_base:+.3f}",
                            "delta vs random": f"{r.delta_vs_random:+.3f}",
                            "McNemar p": fmt_p(r.p_value),
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
    val = np.full((len(sets), len(tests)), np.nan)
    pv = np.full_like(val, np.nan)
    for r in grid.itertuples():
        i, j = sets.index(r.neuron_set), tests.index(r.test_set)
        val[i, j], pv[i, j] = r.delta_vs_random, r.p_value
    fig, ax = new_figure(height=0.35 * len(sets) + 1.0)
    lim = max(0.01, float(np.nanmax(np.abs(val))) if np.isfinite(val).any() else 0.01)
    im = ax.imshow(val, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(sets)):
        for j in range(len(tests)):
            if np.isfinite(val[i, j]):
                ax.text(
                    j,
                    i,
                    f"{val[i, j]:+.3f}\np={fmt_p(pv[i, j], 1)}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(val[i, j]) > 0.6 * lim else "black",
                )
    ax.set_xticks(range(len(tests)), [f"{t} test" for t in tests])
    ax.set_yticks(range(len(sets)), sets)
    fig.colorbar(im, ax=ax, label="accuracy change vs random")
    return save(fig, run_dir, name)


def section_sweep(run_dir: Path) -> Section | None:
    loaded = _load_ablation(run_dir)
    if loaded is None:
        return None
    frame, st, rows, who = loaded
    rows = rows[rows["mode"] == "zero"] if (rows["mode"] == "zero").any() else rows
    if rows.empty or rows["p"].nunique() < 2:
        return None
    clean = (
        frame[(frame["neuron_set"] == "none") & frame["rm"].isin(set(rows["rm"]))]
        .groupby("test_set")["accuracy"]
        .mean()
    )
    s = Section("Ablation across top-p", "neuron-sweep")
    s.paragraphs.append(
        f"Accuracy change of {who} against the unablated model as the ablated set grows (scorer `{st['scorer']}`, "
        f"{rows['mode'].iloc[0]} ablation). Shaded: the matched random control, from the lowest to the highest "
        "of its draws and its bootstrap CI. Source: `ablation.csv`."
    )
    tests = ordered_tests(rows["test_set"].unique())
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
            rnd = (
                rows[(rows["neuron_set"] == "random:" + name) & (rows["test_set"] == test)]
                .groupby("p")
                .mean(numeric_only=True)
            )
            if own.empty:
                continue
            c = SET_COLOURS[name]
            ax.plot(own.index, own["delta_vs_base"], marker="o", ms=3, color=c, label=name)
            if not rnd.empty:
                lo = np.minimum(own["random_min"].reindex(rnd.index) - clean.get(test, np.nan), rnd["ci_lo"])
                hi = np.maximum(own["random_max"].reindex(rnd.index) - clean.get(test, np.nan), rnd["ci_hi"])
                ax.fill_between(rnd.index, lo, hi, color=c, alpha=0.15, lw=0)
                ax.plot(rnd.index, rnd["delta_vs_base"], color=c, ls=":", lw=1, label=f"random ({name})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ps = sorted(rows["p"].unique())
        ax.set_xticks(ps, [f"{q:g}" for q in ps])
        ax.minorticks_off()
        low, high = ax.get_ylim()
        if high - low < 0.02:  # no effect anywhere: show a readable accuracy scale, not float noise
            ax.set_ylim(-0.02, 0.02)
        ax.set_xlabel("top p (%)")
        ax.set_title(f"{test} test set")
    axes[0][0].set_ylabel("accuracy change vs unablated")
    axes[0][0].legend(frameon=False)
    s.figures.append(
        (
            "Accuracy change against top-p; dotted line and band: matched random controls. "
            "Source: `ablation.csv`.",
            save(fig, run_dir, "ablation_sweep"),
        )
    )
    return s


def section_cross(run_dir: Path) -> Section | None:
    cross_path, infl_path = run_dir / "neurons" / "cross_effect.json", run_dir / "neurons" / "influence.json"
    if not cross_path.exists():
        return None
    st = claim_settings(run_dir)
    records = [
        r for r in read_json(cross_path) if r["scorer"] == st["scorer"] and r["mode"] == "zero"
    ] or read_json(cross_path)
    if not records:
        return None
    p = float(nearest_p({r["p"] for r in records}, st["p"]))
    s = Section("Cross-effects and the influence of shared neurons", "neuron-cross")
    rows = [
        {
            "RM": r["rm"],
            "ablated set": name,
            "test set": test,
            "neurons": f"{e['n_neurons']:.0f}",
            "delta vs base": f"{e['delta_vs_base']:+.3f} [{e['ci_lo']:+.3f}, {e['ci_hi']:+.3f}]",
            "delta vs random": f"{e['delta_vs_random']:+.3f}",
            "McNemar p": fmt_p(e["p_value"]),
        }
        for r in records
        if r["p"] == p
        for name, by in r["matrix"].items()
        for test, e in by.items()
    ]
    s.paragraphs.append(
        f"Cross-effect matrix at top-{p:g}% by `{records[0]['scorer']}`, {records[0]['mode']} ablation: ablating "
        "one objective's neurons (rows) and measuring both test sets. Brackets: bootstrap CI of the change vs base. "
        "Source: `neurons/cross_effect.json`."
    )
    s.tables.append(("Cross-effect matrix (source: `neurons/cross_effect.json`)", pd.DataFrame(rows)))
    if infl_path.exists():
        infl = read_json(infl_path)
        comps = [
            {
                "RM": r["rm"],
                "test set": c["test_set"],
                "shared vs": c["other"],
                "own objective": c["own"],
                "per-neuron drop, shared minus other": f"{c['per_neuron']['diff']:+.5f} "
                f"[{c['per_neuron']['ci'][0]:+.5f}, {c['per_neuron']['ci'][1]:+.5f}]",
                "size-matched drop difference": (
                    f"{c['matched']['diff']:+.3f} [{c['matched']['ci'][0]:+.3f}, "
                    f"{c['matched']['ci'][1]:+.3f}], p={fmt_p(c['matched']['p_value'])}"
                )
                if "matched" in c
                else "",
            }
            for r in infl["records"]
            if r["scorer"] == records[0]["scorer"] and r["mode"] == records[0]["mode"] and r["p"] == p
            for c in r["comparisons"]
        ]
        if comps:
            s.tables.append(
                (
                    f"Influence of the shared neurons ({round(100 * infl.get('ci', 0.95))}% paired bootstrap "
                    "CIs; positive: shared neurons hurt more; source: `neurons/influence.json`)",
                    pd.DataFrame(comps),
                )
            )
    return s


SECTIONS: list[Callable[[Path], Section | None]] = [
    section_overlap,
    section_ablation,
    section_sweep,
    section_cross,
]
