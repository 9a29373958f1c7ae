"""Avoidant or open to misuse (Bai et al. 2022, sec. 4.4), measured on XSTest.

The claim (`avoidant_vs_misuse` in findings.json) and the report section "Avoidant or open to
misuse": each RM as a point (should-respond accuracy, should-refuse accuracy) with prompt-level
CIs, and what ablating an objective's neurons does to both.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.stats.pvalues import nearest_p
from rmtension.neurons.config import claim_settings
from rmtension.report.figures import CHANCE_COLOUR, COLUMN_WIDTH, RM_COLOURS, new_figure, save
from rmtension.report.section import Section
from rmtension.stats.finding import AVOIDANT_VS_MISUSE, Finding, not_run
from rmtension.stats.finding import fmt_ci as _ci
from rmtension.stats.verdicts import (
    INCONCLUSIVE,
    all_of,
    claim_min_effect,
    equivalence_verdict,
    min_detectable_effect,
    post_hoc_margin,
)
from rmtension.run.runio import read_json


def avoidant_vs_misuse(run_dir: Path) -> Finding:
    """Bai et al.'s trade-off as behaviour, on XSTest: the harmless RM avoids, the helpful RM complies."""
    path = run_dir / "tension.json"
    xs = read_json(path).get("xstest", {}) if path.exists() else {}
    if set(xs) != {"avoidant", "misuse"}:
        f = not_run(
            AVOIDANT_VS_MISUSE, ("train",), run_dir, "tension.json rows xstest-should-respond/-refuse"
        )
        if path.exists():
            f.evidence = "Not run in this study (set `data.xstest_path` to an XSTest folder)."
        return f
    m = claim_min_effect(run_dir, AVOIDANT_VS_MISUSE)
    parts = {k: equivalence_verdict(xs[k]["ci95"], m) for k in ("avoidant", "misuse")}
    verdict = all_of(list(parts.values()))
    mde = max(min_detectable_effect(xs[k]["ci95"]) for k in parts)
    a, b = xs["avoidant"], xs["misuse"]
    evidence = (
        f"Should-respond accuracy (compliance chosen over refusal on safe prompts), helpful RM − harmless RM: "
        f"{a['estimate']:+.3f} {_ci(a)} ({a['n_pairs']} pairs, {a['n_prompts']} prompts); should-refuse accuracy, "
        f"harmless RM − helpful RM: {b['estimate']:+.3f} {_ci(b)} ({b['n_pairs']} pairs, {b['n_prompts']} prompts). "
        f"CIs resample prompts. Both must exceed 0; each is judged against ±{m:g}."
    )
    if verdict == INCONCLUSIVE:
        evidence += f" This sample could detect differences of about {mde:.3f} (80% power)."
    post_hoc = post_hoc_margin(run_dir, AVOIDANT_VS_MISUSE)
    if post_hoc:
        evidence += f" The margin ±{m:g} is post hoc: {post_hoc}."
    return Finding(
        AVOIDANT_VS_MISUSE,
        verdict,
        evidence,
        "tension.json",
        f"avoidant {a['estimate']:+.3f} {_ci(a)}; misuse {b['estimate']:+.3f} {_ci(b)}",
        effect={"avoidant": a["estimate"], "misuse": b["estimate"]},
        ci95={"avoidant": a["ci95"], "misuse": b["ci95"]},
        min_effect=m,
        min_detectable_effect=mde,
        test="accuracy differences between the helpful and harmless RMs on XSTest's should-respond and "
        "should-refuse pairs, two-level bootstrap over seeds and prompts; both must hold",
        null="no difference (0), judged by the equivalence rule",
        numbers={"margin_post_hoc": post_hoc} if post_hoc else {},
    )


RESPOND, REFUSE = "xstest-should-respond", "xstest-should-refuse"


def _cell(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def section_avoidant_misuse(run_dir: Path) -> Section | None:
    """Each RM in (should-respond, should-refuse) accuracy space, the claim, and ablation's effect on both."""
    path = run_dir / "tension.json"
    if not path.exists():
        return None
    t = read_json(path)
    acc = {rm: by for rm, by in t["accuracy"].items() if RESPOND in by and REFUSE in by}
    if not acc:
        return None
    s = Section("Avoidant or open to misuse", "behaviour")
    s.paragraphs.append(
        "Bai et al. (2022) describe the trade-off as behaviour: a harmlessness-trained model becomes avoidant "
        "(it refuses safe requests), a helpfulness-trained one open to misuse (it complies with harmful ones). "
        "XSTest v2 (Röttger et al. 2024) measures both: on safe prompts each fully compliant reply is the "
        "chosen one against each full refusal (should-respond); on the unsafe `contrast_*` prompts the refusal is "
        "chosen (should-refuse); labels are the human `final_label`. 95% CIs resample prompts and seeds. "
        "Source: `tension.json` (rows `xstest-should-respond`, `xstest-should-refuse`)."
    )
    rows = [
        {"RM": rm, "should-respond accuracy": _cell(by[RESPOND]), "should-refuse accuracy": _cell(by[REFUSE])}
        for rm, by in acc.items()
    ]
    base = t.get("baselines", {})
    if RESPOND in base and REFUSE in base:
        rows.append(
            {
                "RM": "prefer the longer reply",
                "should-respond accuracy": f"{base[RESPOND]['longer']:.3f}",
                "should-refuse accuracy": f"{base[REFUSE]['longer']:.3f}",
            }
        )
    s.tables.append(("XSTest accuracy of each RM [95% CI]", pd.DataFrame(rows)))
    f = avoidant_vs_misuse(run_dir)
    s.paragraphs.append(f.statement())
    fig, ax = new_figure(COLUMN_WIDTH, 3.0)
    ax.axvline(0.5, color=CHANCE_COLOUR, lw=0.8, ls="--")
    ax.axhline(0.5, color=CHANCE_COLOUR, lw=0.8, ls="--")
    for rm, by in acc.items():
        x, y = by[RESPOND], by[REFUSE]
        ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=[[x["mean"] - x["ci95"][0]], [x["ci95"][1] - x["mean"]]],
            yerr=[[y["mean"] - y["ci95"][0]], [y["ci95"][1] - y["mean"]]],
            fmt="o",
            ms=4,
            capsize=2,
            color=RM_COLOURS.get(rm, "#000000"),
            label=f"{rm} RM",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.text(0.03, 0.97, "avoidant", va="top", fontsize=7, color="#555555")
    ax.text(0.97, 0.03, "open to misuse", ha="right", fontsize=7, color="#555555")
    ax.set_xlabel("should-respond accuracy (prefers compliance)")
    ax.set_ylabel("should-refuse accuracy (prefers refusal)")
    ax.legend(frameon=False, loc="lower left", fontsize=7)
    s.figures.append(
        (
            "Each RM on XSTest with 95% CIs (prompts and seeds resampled); top left: refuses safe and unsafe "
            "requests alike (avoidant); bottom right: complies with both (open to misuse). Source: `tension.json`.",
            save(fig, run_dir, "avoidant_misuse"),
        )
    )
    ablation = _ablation_shift(run_dir)
    if ablation is not None:
        s.paragraphs.append(ablation[0])
        s.tables.append(("Ablation's effect on the XSTest sets (accuracy change [95% CI])", ablation[1]))
    return s


def _ablation_shift(run_dir: Path) -> tuple[str, pd.DataFrame] | None:
    """Whether ablating an objective's neurons moves an RM along the avoidant-misuse axis (from ablation.csv)."""
    path = run_dir / "ablation.csv"
    if not path.exists():
        return None
    a = pd.read_csv(path)
    a = a[
        a["test_set"].isin([RESPOND, REFUSE])
        & (a["neuron_set"].isin(["helpful_only", "harmless_only", "helpful_top", "harmless_top", "shared"]))
    ]
    if a.empty:
        return None
    p = float(nearest_p(a["p"].unique(), claim_settings(run_dir)["p"]))  # the claims' p
    a = a[a["p"] == p]
    rows, moves = [], []
    for (rm, nset, scorer, mode), g in a.groupby(["rm", "neuron_set", "scorer", "mode"], sort=False):
        by = {r.test_set: r for r in g.itertuples()}
        if RESPOND not in by or REFUSE not in by:
            continue
        cell = lambda r: f"{r.delta_vs_base:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]"  # noqa: E731
        rows.append(
            {
                "RM": rm,
                "set": nset,
                "scorer": scorer,
                "mode": mode,
                "should-respond": cell(by[RESPOND]),
                "should-refuse": cell(by[REFUSE]),
            }
        )
        down_respond, down_refuse = by[RESPOND].ci_hi < 0, by[REFUSE].ci_hi < 0
        up_respond, up_refuse = by[RESPOND].ci_lo > 0, by[REFUSE].ci_lo > 0
        if (down_respond and not down_refuse) or (up_refuse and not up_respond):
            moves.append(f"{nset} in the {rm} RM ({mode}) towards avoidant")
        elif (down_refuse and not down_respond) or (up_respond and not up_refuse):
            moves.append(f"{nset} in the {rm} RM ({mode}) towards open to misuse")
    if not rows:
        return None
    sentence = (
        f"Ablating neuron sets at top-{p:g}% (`ablation.csv`, rows on the XSTest sets; CIs are paired bootstraps over the "
        "ablated pairs): "
        + (
            "; ".join(moves) + "."
            if moves
            else "no ablation moves an RM along the avoidant–misuse axis beyond its CI."
        )
    )
    return sentence, pd.DataFrame(rows)
