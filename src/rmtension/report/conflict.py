"""Report section "Where the objectives conflict", and its two claims.

`pcgrad_reduces_interference`: mixed_pcgrad − mixed accuracy on the HH test sets (paired bootstrap,
`tension.json["pcgrad"]`). `conflict_tracks_shared_neurons`: the rank correlation, over the
measured transformer blocks, between a block's conflict (− its mean cosine, `conflict.json`) and
the share of its neurons in the shared set (`neurons/sets.json`); "not run" with fewer than 3 blocks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from rmtension.neurons.claims import nearest_p
from rmtension.neurons.report import claim_settings
from rmtension.report.figures import CHANCE_COLOUR, COLUMN_WIDTH, PALETTE, new_figure, save
from rmtension.report.finding import Finding
from rmtension.report.section import Section
from rmtension.report.verdicts import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED, equivalence_verdict
from rmtension.report.verdicts import claim_min_effect, min_detectable_effect
from rmtension.run.runio import read_json

HH = ("helpful", "harmless")
OURS = "rmtension"


def pcgrad_reduces_interference(run_dir: Path) -> Finding:
    claim = "projecting conflicting gradients (PCGrad) reduces interference"
    path = run_dir / "tension.json"
    pc = read_json(path).get("pcgrad", {}) if path.exists() else {}
    pc = {t: d for t, d in pc.items() if t in HH}
    if not pc:
        why = "Not run in this study (set `train.pcgrad: true` to train `mixed_pcgrad`)."
        return Finding(OURS, claim, NOT_RUN, why, "", id="pcgrad_reduces_interference")
    m = claim_min_effect(run_dir, "pcgrad_reduces_interference")
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
        OURS,
        claim,
        verdict,
        evidence,
        "tension.json",
        "; ".join(parts),
        id="pcgrad_reduces_interference",
        effect={t: d["estimate"] for t, d in pc.items()},
        ci95={t: d["ci95"] for t, d in pc.items()},
        min_effect=m,
        min_detectable_effect=mde,
        test="accuracy of mixed_pcgrad minus the mixed RM on each HH test set, paired bootstrap over test "
        "pairs (seeds resampled per RM)",
        null="no difference (0), judged by the equivalence rule",
    )


def shared_share(run_dir: Path, rm: str = "mixed") -> dict[str, float] | None:
    """Share of each block's neurons in the `shared` set of the first seed of `rm`, by the claims' scorer
    at the p nearest the claims' (`neurons.report.claim_settings`)."""
    path = run_dir / "neurons" / "sets.json"
    if not path.exists():
        return None
    doc = read_json(path)
    st = claim_settings(run_dir)
    key = next((k for k in doc["sets"] if k.startswith(f"{rm}-seed")), None)
    if key is None or st["scorer"] not in doc["sets"][key]:
        return None
    by_p = doc["sets"][key][st["scorer"]]
    p = nearest_p(list(by_p), st["p"])
    n, first = doc["shape"][1], int(doc.get("first_layer", 0))
    return {f"layers.{first + i}": c / n for i, c in enumerate(by_p[p]["shared"]["per_layer"])}


def spearman_ci(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, list[float]]:
    """Spearman's rho and a Fisher-z CI with the Fieller et al. (1957) SE 1.06 / sqrt(n - 3); [-1, 1] for n <= 3."""
    rho = float(stats.spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0
    n = len(x)
    if n <= 3:
        return rho, [-1.0, 1.0]
    z, half = (
        math.atanh(max(min(rho, 0.999999), -0.999999)),
        stats.norm.ppf((1 + level) / 2) * 1.06 / math.sqrt(n - 3),
    )
    return rho, [math.tanh(z - half), math.tanh(z + half)]


def conflict_tracks_shared_neurons(run_dir: Path) -> Finding:
    claim = "blocks where the objectives' gradients conflict more hold more shared neurons"
    cid = "conflict_tracks_shared_neurons"
    path = run_dir / "conflict.json"
    share = shared_share(run_dir)
    if not path.exists() or share is None or "mixed" not in read_json(path)["rms"]:
        why = "Not run in this study (needs `train.conflict_every` and `neurons:` with mean_act)."
        return Finding(OURS, claim, NOT_RUN, why, "", id=cid)
    blocks = {b: d for b, d in read_json(path)["rms"]["mixed"]["blocks"].items() if b in share}
    if len(blocks) < 3:
        why = (
            f"Not run: conflict is measured on {len(blocks)} transformer block(s) (the trainable ones); a rank "
            "correlation needs at least 3 (train more blocks, e.g. `train.trainable: top:4` in configs/extended.yaml)."
        )
        return Finding(OURS, claim, NOT_RUN, why, "conflict.json", id=cid)
    names = sorted(blocks, key=lambda b: int(b.split(".")[1]))
    conflict = np.array([-blocks[b]["mean_cosine"] for b in names])
    shared = np.array([share[b] for b in names])
    rho, ci = spearman_ci(conflict, shared)
    m = claim_min_effect(run_dir, cid)
    verdict = equivalence_verdict(ci, m)
    evidence = (
        f"Spearman correlation over {len(names)} blocks between conflict (− mean cosine, `conflict.json`) and the "
        f"share of the block's neurons in the mixed RM's shared set (`neurons/sets.json`): {rho:+.2f} "
        f"[{ci[0]:+.2f}, {ci[1]:+.2f}]. Judged against ±{m:g}."
    )
    return Finding(
        OURS,
        claim,
        verdict,
        evidence,
        "conflict.json, neurons/sets.json",
        f"rho {rho:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]",
        id=cid,
        effect={"rho": rho},
        ci95={"rho": ci},
        min_effect=m,
        min_detectable_effect=min_detectable_effect(ci),
        test="Spearman correlation over the trained blocks, Fisher-z CI",
        null="no correlation (0), judged by the equivalence rule",
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
    for f in (conflict_tracks_shared_neurons(run_dir), pcgrad_reduces_interference(run_dir)):
        s.paragraphs.append(f"{f.claim[0].upper() + f.claim[1:]}: **{f.verdict}**. {f.evidence}")
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
