"""Report sections of the neuron analysis, built only from files in the run directory.

Each section reads its files and returns None when they are absent, so the report shows what ran:

- the overlap of helpful_top and harmless_top against chance, and where the shared neurons sit;
- the ablation sections (heatmaps against layer- and magnitude-matched controls, the p-sweep, the
  cross-effects, the shared neurons' influence and the double dissociation) are in
  `rmtension.ablation.report` and listed here.

The paper's four claims, one sentence each, are in the report's summary of findings
(`rmtension.report.findings`). The neuron stage places this section in the report's Neurons part (`rmtension.neurons.stage.sections`).
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
import pandas as pd

from rmtension.report.figures import (
    CHANCE_COLOUR,
    DOUBLE_WIDTH,
    PALETTE,
    new_figure,
    save,
)
from rmtension.stats.pvalues import fmt_p, nearest_p
from rmtension.neurons.config import claim_settings
from rmtension.report.section import Section
from rmtension.run.runio import read_json

SETS = ["helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only"]
SET_COLOURS = dict(zip(SETS, [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[5], PALETTE[4]]))


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
    first = int(read_json(run_dir / "neurons" / "sets.json").get("first_layer", 0))
    ax2.set_xticks(layers, [str(first + i) for i in layers])
    ax2.set_xlabel("layer (the analysed blocks)" if first else "layer")
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
