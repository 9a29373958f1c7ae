"""The summary's verdict table and its forest plot, both drawn from `Finding` fields alone.

The table has one row per claim: claim, verdict, effect [CI] (each part), margin and the detectable
effect. The forest plot (`figures/findings_forest`) draws every part's effect and 95% CI against its
claim's ± margin band, one row per part (the length-controlled estimate hollow just below the raw one),
so a reader sees what was decided and by how much. Effects
are in each claim's own units (accuracy, SD of the margin, Jaccard, ...), so every claim has its own
panel and x axis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.report.figures import CHANCE_COLOUR, DOUBLE_WIDTH, PALETTE, new_figure, save
from rmtension.stats.finding import Finding, lc_text
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED

VERDICT_COLOURS = {SUPPORTED: PALETTE[0], NOT_SUPPORTED: PALETTE[1], INCONCLUSIVE: PALETTE[7]}
"""Okabe-Ito: blue supported, vermillion not supported, black otherwise (the label says it in words too)."""


def verdict_table(fs: list[Finding]) -> pd.DataFrame:
    """One row per claim: claim, verdict, raw effect [CI] of each part, the length-controlled one beside it
    (where the claim has one), which of the two the verdict read, margin, detectable effect."""
    rows = []
    for f in fs:
        parts = f.parts()
        rows.append(
            {
                "claim": f.claim,
                "id": f.id,
                "verdict": f.verdict,
                "effect [95% CI]": "; ".join(
                    (f"{p}: " if len(parts) > 1 else "") + f"{e:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
                    for p, e, ci in parts
                )
                or "–",
                "length-controlled [95% CI]": _controlled(f),
                "decided on": f.decided_on,
                "margin": "–"
                if f.min_effect is None
                else f"±{f.min_effect:g}" + (" (post hoc)" if f.numbers.get("margin_post_hoc") else ""),
                "detectable effect": "–"
                if f.min_detectable_effect is None or not parts
                else f"{f.min_detectable_effect:.3f}",
            }
        )
    return pd.DataFrame(rows)


def _controlled(f: Finding) -> str:
    """The length-controlled estimate of each part, in the raw effect's units and direction; "–" when none."""
    if not f.length_controlled:
        return "–"
    many = len(f.length_controlled) > 1
    return "; ".join((f"{p}: " if many else "") + lc_text(d) for p, d in f.length_controlled.items())


def forest_plot(fs: list[Finding], run_dir: Path) -> Path | None:
    """`figures/findings_forest`: every decided claim's parts (effect, CI) against its ± margin band;
    None when no claim has a number."""
    shown = [f for f in fs if f.parts()]
    if not shown:
        return None
    heights = [len(f.parts()) + 1.2 for f in shown]
    fig, axes = new_figure(
        DOUBLE_WIDTH,
        round(0.6 + 0.17 * sum(heights), 1),  # a round height: figures/index.json records it to 0.01 in
        nrows=len(shown),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, f in zip(axes[:, 0], shown):
        _panel(ax, f)
    axes[-1, 0].set_xlabel("effect in the claim's own units (shaded: ± margin; dashed: 0)")
    return save(fig, run_dir, "findings_forest")


def _panel(ax, f: Finding) -> None:
    parts = f.parts()
    colour = VERDICT_COLOURS.get(f.verdict, PALETTE[7])
    if f.min_effect is not None:
        ax.axvspan(-f.min_effect, f.min_effect, color=CHANCE_COLOUR, alpha=0.25, lw=0)
    ax.axvline(0, color=CHANCE_COLOUR, lw=0.8, ls="--")
    lc = f.length_controlled or {}
    for i, (p, e, ci) in enumerate(parts):
        ax.errorbar(e, -i, xerr=[[e - ci[0]], [ci[1] - e]], fmt="o", ms=3, capsize=2, lw=1, color=colour)
        d = lc.get(p)
        if d and d["estimable"]:  # the length-controlled estimate, hollow, just below the raw one
            x, (lo, hi) = d["estimate"], d["ci95"]
            ax.errorbar(
                x,
                -i - 0.3,
                xerr=[[x - lo], [hi - x]],
                fmt="o",
                ms=3,
                mfc="none",
                capsize=2,
                lw=0.8,
                color=colour,
            )
    ax.set_yticks([-i for i in range(len(parts))], [_short(p) for p, _, _ in parts])
    ax.set_ylim(-len(parts) + 0.4, 0.6)
    ax.set_title(f"{f.id}: {f.verdict}", loc="left", fontsize=7)
    ax.tick_params(axis="y", length=0)


def _short(label: str, width: int = 38) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"
