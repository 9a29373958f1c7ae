"""The report's "Combining the objectives" section, its `combine_frontier` figure, and the
`combined_keeps_both` finding, all read from `combine/frontier.csv` and `combine/summary.json`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.combine.frontier import TESTS, keeps_both_verdict
from rmtension.report.figures import COLUMN_WIDTH, PALETTE, RM_COLOURS, new_figure, save
from rmtension.stats.finding import COMBINED_KEEPS_BOTH, LENGTH_CONTROLLED, RAW, Finding, lc_part, lc_text
from rmtension.report.section import Section
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_RUN, claim_min_effect, min_detectable_effect
from rmtension.run.runio import read_json

METHOD_COLOURS = {
    "reward_interp": PALETTE[3],
    "two_head_dial": PALETTE[4],
    "weight_interp": PALETTE[5],
    "data_ratio": PALETTE[2],
    "gated": PALETTE[7],
    "gated_mean": PALETTE[7],
}
WHAT = {
    "reward_interp": "w z(helpful RM) + (1 - w) z(harmless RM)",
    "two_head_dial": "the same dial over two_head's helpful and harmless heads",
    "gated": "two_head's heads mixed by the prompt gate w(x)",
    "gated_mean": "the gate replaced by its mean over the training prompts",
    "weight_interp": "one RM with weights lambda theta_helpful + (1 - lambda) theta_harmless",
    "data_ratio": "a mixed RM of the single RMs' training size whose pairs are a share r helpful",
}


def _files(run_dir: Path) -> tuple[pd.DataFrame, dict] | None:
    front, summary = run_dir / "combine" / "frontier.csv", run_dir / "combine" / "summary.json"
    if not (front.exists() and summary.exists()):
        return None
    return pd.read_csv(front), read_json(summary)


def combined_keeps_both(run_dir: Path) -> Finding:
    found = _files(run_dir)
    if found is None:
        why = "Not run in this study (enable `combine:` in the config)."
        return Finding(COMBINED_KEEPS_BOTH, NOT_RUN, why)
    _, summary = found
    doc = summary["keeps_both"]
    m = claim_min_effect(run_dir, COMBINED_KEEPS_BOTH)
    verdict, standing = keeps_both_verdict(doc, m)
    controlled = any("length_controlled" in d[t] for d in doc["methods"].values() for t in TESTS)
    parts, effect, ci95, mde, shown = [], {}, {}, [], {}
    for method, d in doc["methods"].items():
        at = "" if d["dial"] is None else f" at {d['dial']:g}"
        cells = []
        for t in TESTS:
            name = f"{method}/{t}"
            effect[name], ci95[name] = d[t]["estimate"], d[t]["ci"]
            cell = f"{t} {d[t]['estimate']:+.3f} [{d[t]['ci'][0]:+.3f}, {d[t]['ci'][1]:+.3f}]"
            lc = d[t].get("length_controlled")
            if lc is not None:
                shown[name] = lc_part({**lc, "ci95": lc.get("ci")})
                cell += f", length-controlled {lc_text(shown[name])}"
                if lc["estimable"]:
                    mde.append(min_detectable_effect(lc["ci"], doc["level"]))
            else:
                mde.append(min_detectable_effect(d[t]["ci"], doc["level"]))
            cells.append(cell)
        parts.append(f"{method}{at}: {', '.join(cells)} ({standing[method]})")
    mde = mde or [min_detectable_effect(c, doc["level"]) for c in ci95.values()]
    best = doc["best_single"]
    chosen_by = doc.get("best_single_chosen_by", "test point estimate")
    evidence = (
        f"Each method at its dial chosen on validation pairs, minus the best single RM on each HH test set "
        f"({best['helpful']} RM on helpful, {best['harmless']} RM on harmless, chosen by {chosen_by}), paired "
        f"two-level bootstrap, {doc['level']:.1%} CIs (Bonferroni over {len(doc['methods'])} methods), raw"
        + (
            " and length-controlled (which decides; chosen-longer and chosen-shorter pairs weighted equally)"
            if controlled
            else ""
        )
        + f": {'; '.join(parts)}. A method keeps both when both CIs lie above -{m:g}."
    )
    if verdict == INCONCLUSIVE:
        evidence += f" This sample could detect shortfalls of about {max(mde):.3f} (80% power)."
    return Finding(
        COMBINED_KEEPS_BOTH,
        verdict,
        evidence,
        "combine/summary.json, combine/frontier.csv",
        "; ".join(parts),
        effect=effect,
        ci95=ci95,
        min_effect=m,
        min_detectable_effect=max(mde),
        test="non-inferiority on both HH test sets: accuracy minus the best single RM's (chosen on validation), "
        + ("length-controlled, " if controlled else "")
        + "paired two-level bootstrap (seeds and test pairs), each method's dial chosen on validation pairs",
        null=f"a shortfall of {m:g} on either test set",
        length_controlled=shown or None,
        decided_on=LENGTH_CONTROLLED if controlled else RAW,
    )


def section_combine(run_dir: Path) -> Section | None:
    found = _files(run_dir)
    if found is None:
        return None
    front, summary = found
    s = Section("Combining the objectives", "combine")
    methods = [m for m in dict.fromkeys(front["method"]) if not m.startswith("rm:")]
    s.paragraphs.append(
        "Every way of making one judge of the two objectives, on the same HH test pairs: "
        + "; ".join(f"`{m}`, {WHAT.get(m, m)}" for m in methods)
        + f". z(.) standardises each judge on {summary['standardised_on']}. Accuracies are seed means with "
        "two-level bootstrap 95% CIs (seeds, then pairs). Source: `combine/frontier.csv`, `combine/summary.json`."
    )
    f = combined_keeps_both(run_dir)
    s.paragraphs.append(f.statement())
    gate = summary.get("gate")
    if gate:
        acc = gate["accuracy"]
        s.paragraphs.append(
            f"The gate ({gate['features']}, trained on {gate['n_train_prompts']} prompts) tells a test prompt's "
            f"objective with accuracy {acc['all']:.3f} (helpful {acc['helpful']:.3f}, harmless {acc['harmless']:.3f}); "
            f"its mean weight on the helpful head is {gate['mean']:.3f}, the `gated_mean` judge."
        )
    ratio = summary.get("data_ratio")
    if ratio:
        sizes = ratio["training_pairs"]
        s.paragraphs.append(
            "The data-ratio sweep: "
            + ", ".join(f"r = {r} is `{rm}`" for r, rm in ratio["rms"].items())
            + ". "
            + (
                f"Every point trains on {sizes['mixed']} pairs."
                if ratio["ends_matched"]
                else f"Its ends are the single RMs, trained on {sizes['helpful']} helpful and {sizes['harmless']} "
                f"harmless pairs, while its inner points train on {min(sizes['helpful'], sizes['harmless'])}: "
                "the ends are not size-matched."
            )
        )
    hv = summary["hypervolume"]
    rows = []
    for m in methods:
        g = front[front["method"] == m]
        pareto = g.loc[g["pareto"], "dial"].dropna()
        rows.append(
            {
                "method": m,
                "hypervolume above (0.5, 0.5)": round(hv.get(m, float("nan")), 4),
                "Pareto dials": ", ".join(f"{d:g}" for d in pareto) if len(pareto) else "–",
                "selected dial (validation)": _selected(summary, m),
            }
        )
    s.tables.append(("Each method's frontier", pd.DataFrame(rows)))
    s.tables.append(
        ("Every judge's accuracy on the HH test sets, raw and length-controlled [95% CI]", _table(front))
    )
    s.figures.append(
        (
            "Helpful vs harmless test accuracy of every way to combine the objectives, one curve per method "
            "(dial 0 to 1), with the single and mixed RMs as points; bars: 95% CIs.",
            _figure(run_dir, front, methods),
        )
    )
    return s


def _selected(summary: dict, method: str) -> str:
    d = summary["selected_dial"].get(method, "–")
    return "–" if d == "–" else ("no dial" if d is None else f"{d:g}")


def _table(front: pd.DataFrame) -> pd.DataFrame:
    cell = lambda r, t: f"{r[f'seed_mean_acc_{t}']:.3f} [{r[f'ci_{t}_lo']:.3f}, {r[f'ci_{t}_hi']:.3f}]"  # noqa: E731
    rows = []
    for _, r in front.iterrows():
        row = {"method": r["method"], "dial": "" if pd.isna(r["dial"]) else f"{r['dial']:g}"}
        for t in TESTS:
            row[f"{t} test"] = cell(r, t)
            if f"lc_acc_{t}" in front:  # frontier.csv from before the length control has none
                row[f"{t}, length-controlled"] = (
                    "not estimable"
                    if pd.isna(r[f"lc_acc_{t}"])
                    else f"{r[f'lc_acc_{t}']:.3f} [{r[f'lc_ci_{t}_lo']:.3f}, {r[f'lc_ci_{t}_hi']:.3f}]"
                )
        row["Pareto"] = "yes" if r["pareto"] else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _figure(run_dir: Path, front: pd.DataFrame, methods: list[str]) -> Path:
    fig, ax = new_figure(COLUMN_WIDTH, 3.4)
    ax.axvline(0.5, color="#999999", lw=0.6, ls="--")
    ax.axhline(0.5, color="#999999", lw=0.6, ls="--")
    for m in methods:
        g = front[front["method"] == m].sort_values("dial")
        err = [
            [
                g["seed_mean_acc_helpful"] - g["ci_helpful_lo"],
                g["ci_helpful_hi"] - g["seed_mean_acc_helpful"],
            ],
            [
                g["seed_mean_acc_harmless"] - g["ci_harmless_lo"],
                g["ci_harmless_hi"] - g["seed_mean_acc_harmless"],
            ],
        ]
        dialled = g["dial"].notna().any()
        ax.errorbar(
            g["seed_mean_acc_helpful"],
            g["seed_mean_acc_harmless"],
            xerr=err[0],
            yerr=err[1],
            color=METHOD_COLOURS.get(m, PALETTE[6]),
            marker="." if dialled else ("D" if m == "gated" else "d"),
            ms=4 if dialled else 5,
            lw=1 if dialled else 0,
            elinewidth=0.5,
            alpha=0.9,
            label=m,
            mfc="none" if m == "gated_mean" else None,
        )
    for _, r in front[front["method"].str.startswith("rm:")].iterrows():
        name = r["method"][3:]
        ax.errorbar(
            r["seed_mean_acc_helpful"],
            r["seed_mean_acc_harmless"],
            xerr=[
                [r["seed_mean_acc_helpful"] - r["ci_helpful_lo"]],
                [r["ci_helpful_hi"] - r["seed_mean_acc_helpful"]],
            ],
            yerr=[
                [r["seed_mean_acc_harmless"] - r["ci_harmless_lo"]],
                [r["ci_harmless_hi"] - r["seed_mean_acc_harmless"]],
            ],
            color=RM_COLOURS.get(name, PALETTE[7]),
            marker="*",
            ms=8,
            lw=0,
            elinewidth=0.8,
            label=f"{name} RM",
            zorder=3,
        )
    ax.set_xlabel("helpful test accuracy")
    ax.set_ylabel("harmless test accuracy")
    fig.legend(frameon=False, loc="outside lower center", ncols=2)
    return save(fig, run_dir, "combine_frontier")
