"""Report section "Where the objectives conflict", and its two claims.

`pcgrad_reduces_interference`: mixed_pcgrad − mixed accuracy on the HH test sets (paired bootstrap,
`tension.json["pcgrad"]`). `conflict_tracks_shared_neurons` (decided by the neurons stage, `rmtension.neurons.claims`): the rank correlation, over the
measured transformer blocks, between a block's conflict (− its mean cosine, `conflict.json`) and
the share of its neurons in the shared set (`neurons/sets.json`); "not run" with fewer than 3 blocks.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.judges.neuron_sets import shared_share
from rmtension.report.figures import CHANCE_COLOUR, COLUMN_WIDTH, PALETTE, new_figure, save
from rmtension.stats.finding import PCGRAD_REDUCES_INTERFERENCE, Finding
from rmtension.report.section import Section
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED, equivalence_verdict
from rmtension.stats.verdicts import claim_min_effect, min_detectable_effect
from rmtension.run.runio import read_json

HH = ("helpful", "harmless")


def pcgrad_reduces_interference(run_dir: Path) -> Finding:
    path = run_dir / "tension.json"
    pc = read_json(path).get("pcgrad", {}) if path.exists() else {}
    pc = {t: d for t, d in pc.items() if t in HH}
    if not pc:
        why = "Not run in this study (set `train.pcgrad: true` to train `mixed_pcgrad`)."
        return Finding(PCGRAD_REDUCES_INTERFERENCE, NOT_RUN, why)
    m = claim_min_effect(run_dir, PCGRAD_REDUCES_INTERFERENCE)
    verdicts = {t: equivalence_verdict(d["ci95"], m) for t, d in pc.items()}
    harmed = any(d["ci95"][1] < 0 for d in pc.values())
    if harmed or all(v == NOT_SUPPORTED for v in verdicts.values()):
        verdict = NOT_SUPPORTED  # it hurts on some HH test set, or is equivalent to no change on all
    elif any(v == SUPPORTED for v in verdicts.values()):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    mde = max(min_detectable_effect(d["ci95"]) for d in pc.values())
    parts = [
        f"{t} test {d['estimate']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" for t, d in pc.items()
    ]
    evidence = (
        "Accuracy of mixed_pcgrad minus the mixed RM (same data and seeds; paired bootstrap over test pairs, "
        f"seeds resampled per RM) [95% CI]: {'; '.join(parts)}. Judged against ±{m:g}."
    )
    if verdict == INCONCLUSIVE:
        evidence += f" This sample could detect differences of about {mde:.3f} (80% power)."
    return Finding(
        PCGRAD_REDUCES_INTERFERENCE,
        verdict,
        evidence,
        "tension.json",
        "; ".join(parts),
        effect={t: d["estimate"] for t, d in pc.items()},
        ci95={t: d["ci95"] for t, d in pc.items()},
        min_effect=m,
        min_detectable_effect=mde,
        test="accuracy of mixed_pcgrad minus the mixed RM on each HH test set, paired bootstrap over test "
        "pairs (seeds resampled per RM)",
        null="no difference (0), judged by the equivalence rule",
    )


def section_conflict(run_dir: Path) -> Section | None:
    path = run_dir / "conflict.json"
    if not path.exists():
        return None
    doc = read_json(path)
    if not doc["rms"]:
        return None
    s = Section("Where the objectives conflict", "conflict")
    s.paragraphs.append(
        "While each mixed-data RM trains, the batch is split by objective every "
        f"{doc['conflict_every']} steps and each part's loss gradient taken separately (Yu et al. 2020): a cosine "
        "below 0 means the harmless loss pulls the block's weights against the helpful loss. Source: "
        "`rm/<rm>/seed<k>/conflict.csv`, aggregated in `conflict.json` (CI: bootstrap over seeds, then steps)."
    )
    share = shared_share(run_dir) or {}
    rows = [
        {
            "RM": rm,
            "block": b,
            "mean cosine [95% CI]": f"{d['mean_cosine']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]",
            "share of steps in conflict": f"{d['share_negative']:.2f}",
            "opposite-sign share": f"{d['opposite_sign_share']:.2f}",
            "shared-neuron share": f"{share[b]:.3f}" if b in share else "–",
        }
        for rm, by in doc["rms"].items()
        for b, d in by["blocks"].items()
    ]
    s.tables.append(("Gradient conflict per block", pd.DataFrame(rows)))
    s.paragraphs.append(pcgrad_reduces_interference(run_dir).statement())
    fig, ax = new_figure(COLUMN_WIDTH, 2.6)
    ax.axhline(0, color=CHANCE_COLOUR, lw=0.8, ls="--")
    for rm in doc["rms"]:
        frames = [pd.read_csv(p) for p in sorted((run_dir / "rm" / rm).glob("seed*/conflict.csv"))]
        if not frames:
            continue
        mean = pd.concat(frames).groupby(["block", "step"])["cosine"].mean().reset_index()
        for i, (block, g) in enumerate(mean.groupby("block", sort=False)):
            ax.plot(
                g["step"],
                g["cosine"],
                lw=1,
                color=PALETTE[i % len(PALETTE)],
                ls="-" if rm == "mixed" else ":",
                label=f"{rm}: {block}",
            )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cosine(∇ helpful, ∇ harmless)")
    ax.legend(frameon=False, fontsize=7, ncols=2)
    s.figures.append(
        (
            "Cosine between the helpful and harmless loss gradients per block over training, mean over seeds "
            "(solid: mixed RM; dotted: mixed_pcgrad). Source: `rm/<rm>/seed<k>/conflict.csv`.",
            save(fig, run_dir, "conflict"),
        )
    )
    return s
