"""Report section "Where the objectives conflict", and its two claims.

`pcgrad_reduces_interference`: mixed_pcgrad − mixed accuracy on the HH test sets (paired bootstrap,
`tension.json["pcgrad"]`). `conflict_tracks_shared_neurons` (decided by the neurons stage, `rmtension.neurons.claims`): the rank correlation, over the
measured transformer blocks, between a block's conflict (− its mean cosine, `conflict.json`) and
the share of its neurons in the shared set (`neurons/sets.json`); "not run" with fewer than 3 blocks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rmtension.judges.neuron_sets import shared_share
from rmtension.report.figures import CHANCE_COLOUR, COLUMN_WIDTH, PALETTE, new_figure, save
from rmtension.stats.finding import (
    LENGTH_CONTROLLED,
    NOT_ESTIMABLE_CI,
    PCGRAD_REDUCES_INTERFERENCE,
    RAW,
    Finding,
    lc_part,
    lc_text,
)
from rmtension.report.section import Section
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED, any_of_parts
from rmtension.stats.verdicts import claim_min_effect, min_detectable_effect
from rmtension.run.runio import read_json

HH = ("helpful", "harmless")


def pcgrad_reduces_interference(run_dir: Path) -> Finding:
    """mixed_pcgrad − mixed on the HH test sets, decided on the length-controlled difference (raw beside it):
    not supported when it hurts on some test set (Holm over the parts, as for support) or is equivalent
    to no change on every one; supported when some part is (Holm); else inconclusive."""
    path = run_dir / "tension.json"
    pc = read_json(path).get("pcgrad", {}) if path.exists() else {}
    pc = {t: d for t, d in pc.items() if t in HH}
    if not pc:
        why = "Not run in this study (set `train.pcgrad: true` to train `mixed_pcgrad`)."
        return Finding(PCGRAD_REDUCES_INTERFERENCE, NOT_RUN, why)
    m = claim_min_effect(run_dir, PCGRAD_REDUCES_INTERFERENCE)
    lc = {t: d.get("length_controlled") for t, d in pc.items()}
    decided_on = LENGTH_CONTROLLED if any(v is not None for v in lc.values()) else RAW
    shown = {t: lc_part(v) for t, v in lc.items()} if decided_on == LENGTH_CONTROLLED else None
    effects = {}
    for t, d in pc.items():
        if shown is None:
            effects[t] = (d["estimate"], d["ci95"], d.get("p_value", 1.0))
        elif shown[t]["estimable"]:
            effects[t] = (shown[t]["estimate"], shown[t]["ci95"], lc[t].get("p_value", 1.0))
        else:
            effects[t] = (0.0, NOT_ESTIMABLE_CI, 1.0)
    helps, by_part, _ = any_of_parts(effects, m)
    hurts, _, _ = any_of_parts({t: (-e, [-ci[1], -ci[0]], p) for t, (e, ci, p) in effects.items()}, m)
    if hurts == SUPPORTED or helps == NOT_SUPPORTED:
        verdict = NOT_SUPPORTED  # it hurts on some HH test set (Holm), or is equivalent to no change on all
    elif helps == SUPPORTED:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    finite = [ci for _, ci, _ in effects.values() if all(math.isfinite(x) for x in ci)]
    mde = max(min_detectable_effect(ci) for ci in (finite or [d["ci95"] for d in pc.values()]))
    parts = [
        f"{t} test {d['estimate']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        + (f", length-controlled {lc_text(shown[t])}" if shown else "")
        for t, d in pc.items()
    ]
    evidence = (
        "Accuracy of mixed_pcgrad minus the mixed RM (same data and seeds; paired bootstrap over test pairs, "
        f"seeds resampled per RM) [95% CI]: {'; '.join(parts)}. "
        + ("Decided on the length-controlled difference; " if shown else "")
        + f"judged against ±{m:g}, Holm over the two test sets in both directions."
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
        test="accuracy of mixed_pcgrad minus the mixed RM on each HH test set"
        + (", length-controlled (chosen-longer and chosen-shorter strata weighted equally)" if shown else "")
        + ", paired bootstrap over test pairs (seeds resampled per RM); Holm over the test sets for 'helps' and "
        "for 'hurts'",
        null="no difference (0), judged by the equivalence rule",
        length_controlled=shown,
        decided_on=decided_on,
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
