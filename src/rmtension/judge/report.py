"""The judge comparison report, built from each judge's `results.json` alone.

One self-contained HTML page (and report.md, tables/*.csv, figures/*.png|pdf) through the study's
document writer (`rmtension.report.section`): accuracy with the CI of each set's resampling unit,
the length baselines and the length-controlled accuracy beside every accuracy, calibration, and for
suites the accuracy by label pair and by tag and, per scenario, the pairs each judge got wrong with
both replies. Every reply is untrusted text: tables escape it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.report.figures import CHANCE_COLOUR, COLUMN_WIDTH, DOUBLE_WIDTH, PALETTE, new_figure, save
from rmtension.report.section import Section, write_document
from rmtension.run.runio import read_json


def ci_text(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def lc_text(lc: dict) -> str:
    """The length-controlled accuracy [CI], or why it is not estimable, with the ties dropped."""
    if lc.get("estimate") is None:
        return f"not estimable: {lc['reason']}; {lc['n_ties']} ties"
    return f"{ci_text(lc['estimate'], lc['ci95'])} ({lc['n_ties']} ties dropped)"


def read_results(folders: list[Path]) -> dict[str, dict]:
    """Judge name -> its results.json."""
    out = {}
    for f in folders:
        doc = read_json(Path(f) / "results.json")
        out[doc["judge"]["name"]] = doc
    return out


def section_judges(results: dict[str, dict]) -> Section:
    s = Section("Judges", "judges")
    s.paragraphs.append(
        "Each judge as loaded: prompt format (`hh` turns or the tokenizer's `chat` template), sign (-1: a "
        "cost model, rewards negated so higher is better), head. A judge with a fresh head was loaded from "
        "a backbone without a score head: its rewards are random. Source: `<judge>/results.json`."
    )
    rows = [
        {
            k: str(doc["judge"].get(k))
            for k in ("name", "source", "template", "sign", "head", "architecture", "fresh_head")
        }
        for doc in results.values()
    ]
    s.tables.append(("Judges", pd.DataFrame(rows)))
    return s


def section_accuracy(results: dict[str, dict], out: Path) -> Section:
    s = Section("Accuracy", "accuracy")
    s.paragraphs.append(
        "Pairwise accuracy (1 when the better reply scores higher, 0.5 on a tie) with its 95% percentile "
        "bootstrap CI over the set's unit: test pairs, prompts on XSTest, scenarios on suites. Beside it, the "
        "accuracy of always preferring the longer / the shorter reply (tokenizer tokens) and the "
        "length-controlled accuracy: the mean of the accuracies where the better reply is longer and where "
        "it is shorter, ties dropped, not estimable under 30 pairs in either. Source: `<judge>/results.json`."
    )
    rows = []
    for name, doc in results.items():
        for test, ev in doc["evaluations"].items():
            rows.append(
                {
                    "test set": test,
                    "judge": name,
                    "accuracy [95% CI]": ci_text(ev["accuracy"], ev["ci95"]),
                    "CI unit": ev["unit"],
                    "n pairs": ev["n"],
                    "length-controlled [95% CI]": lc_text(ev["length_controlled"]),
                    "prefer longer": f"{ev['baselines']['longer']:.3f}",
                    "prefer shorter": f"{ev['baselines']['shorter']:.3f}",
                    "mean margin": f"{ev['mean_margin']:.3f}",
                    "ECE": f"{ev['calibration']['ece']:.3f}",
                }
            )
    s.tables.append(("Accuracy, length baselines and length-controlled accuracy", pd.DataFrame(rows)))
    sub = [
        {"test set": t, "judge": n, "subset": k, "accuracy": f"{v['accuracy']:.3f}", "n": v["n"]}
        for n, doc in results.items()
        for t, ev in doc["evaluations"].items()
        for k, v in ev["per_subset"].items()
    ]
    s.tables.append(("Accuracy per subset", pd.DataFrame(sub)))
    s.figures.append(
        (
            "Accuracy per test set and judge with 95% CIs; crosses: the prefer-the-longer-reply baseline; "
            "dashed line: chance. Source: `<judge>/results.json`.",
            accuracy_figure(results, out),
        )
    )
    return s


def accuracy_figure(results: dict[str, dict], out: Path) -> Path:
    tests = list(dict.fromkeys(t for doc in results.values() for t in doc["evaluations"]))
    fig, ax = new_figure(DOUBLE_WIDTH if len(tests) > 2 else COLUMN_WIDTH, 2.6)
    width = 0.8 / len(results)
    for i, (name, doc) in enumerate(results.items()):
        xs, acc, lo, hi, longer = [], [], [], [], []
        for j, t in enumerate(tests):
            ev = doc["evaluations"].get(t)
            if ev is None:
                continue
            xs.append(j + i * width)
            acc.append(ev["accuracy"])
            lo.append(ev["accuracy"] - ev["ci95"][0])
            hi.append(ev["ci95"][1] - ev["accuracy"])
            longer.append(ev["baselines"]["longer"])
        colour = PALETTE[i % len(PALETTE)]
        ax.bar(xs, acc, width, yerr=[lo, hi], capsize=2, color=colour, label=name)
        ax.plot(xs, longer, "x", color="black", ms=4)
    ax.axhline(0.5, color=CHANCE_COLOUR, lw=0.8, ls="--")
    ax.set_xticks(
        [j + width * (len(results) - 1) / 2 for j in range(len(tests))], tests, rotation=20, ha="right"
    )
    ax.set_ylabel("pairwise accuracy")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, loc="lower left", fontsize=7)
    return save(fig, out, "judge_accuracy")


def section_calibration(results: dict[str, dict], out: Path) -> Section:
    s = Section("Calibration", "calibration")
    s.paragraphs.append(
        "Predicted P(better preferred) = sigmoid(r_better − r_worse); expected calibration error over 10 "
        "equal-width bins, each pair counted in both orientations. Source: `<judge>/results.json`."
    )
    rows = [
        {"judge": n, **{t: f"{ev['calibration']['ece']:.3f}" for t, ev in doc["evaluations"].items()}}
        for n, doc in results.items()
    ]
    s.tables.append(("Expected calibration error", pd.DataFrame(rows)))
    fig, ax = new_figure(COLUMN_WIDTH, 2.8)
    ax.plot([0, 1], [0, 1], color=CHANCE_COLOUR, lw=0.8, ls="--")
    for i, (n, doc) in enumerate(results.items()):
        for k, (t, ev) in enumerate(doc["evaluations"].items()):
            pts = ev["calibration"]["points"]
            ax.plot(
                [p["predicted"] for p in pts],
                [p["observed"] for p in pts],
                marker="os^v"[k % 4],
                ms=2.5,
                lw=1,
                color=PALETTE[i % len(PALETTE)],
                label=f"{n}, {t}",
            )
    ax.set_xlabel("predicted P(better preferred)")
    ax.set_ylabel("observed frequency")
    ax.legend(frameon=False, loc="upper left", fontsize=7)
    s.figures.append(("Reliability diagram per judge and test set.", save(fig, out, "judge_calibration")))
    return s


def _breakdown_table(results: dict[str, dict], test: str, key: str, label: str) -> pd.DataFrame:
    groups = list(
        dict.fromkeys(
            g
            for doc in results.values()
            if test in doc["evaluations"]
            for g in doc["evaluations"][test]["audit"][key]
        )
    )
    rows = []
    for g in groups:
        row = {label: g}
        for n, doc in results.items():
            audit = doc["evaluations"].get(test, {}).get("audit", {})
            d = audit.get(key, {}).get(g)
            longer = audit.get("baselines", {}).get(g) if key == "by_label_pair" else None
            row[n] = (
                ""
                if d is None
                else f"{ci_text(d['accuracy'], d['ci95'])} ({d['n_pairs']} pairs, {d['n_scenarios']} scenarios"
                + (f"; prefer longer {longer['longer']:.3f})" if longer else ")")
            )
        rows.append(row)
    return pd.DataFrame(rows)


def section_suite(results: dict[str, dict], test: str, index: int) -> Section:
    s = Section(f"Suite {test.partition(':')[2]}", f"suite-{index}")
    s.paragraphs.append(
        "Every (better, worse) pair of a scenario's ranked replies is one comparison; equal ranks make no pair. "
        "Accuracy [95% CI]; the CI draws whole scenarios with replacement. Source: `<judge>/results.json`."
    )
    s.tables.append(
        (
            "Accuracy by label pair (better > worse), with the prefer-the-longer-reply baseline",
            _breakdown_table(results, test, "by_label_pair", "labels"),
        )
    )
    s.tables.append(("Accuracy by tag", _breakdown_table(results, test, "by_tag", "tag")))
    for n, doc in results.items():
        ev = doc["evaluations"].get(test)
        if ev is None:
            continue
        wrong = ev["audit"]["wrong"]
        sub = Section(f"Pairs {n} got wrong", f"suite-{index}-wrong-{len(s.subsections)}")
        if not wrong:
            sub.paragraphs.append(f"{n} ranked every pair of this suite correctly.")
        rows = [
            {
                "scenario": scen,
                "labels (better > worse)": w["labels"],
                "better reply": w["better"],
                "worse reply": w["worse"],
                "reward better": f"{w['r_better']:.3f}",
                "reward worse": f"{w['r_worse']:.3f}",
            }
            for scen, items in wrong.items()
            for w in items
        ]
        if rows:
            sub.paragraphs.append(f"{len(rows)} of {ev['n']} pairs, in {len(wrong)} scenarios.")
            sub.tables.append((f"Wrong pairs of {n}, per scenario, with both replies", pd.DataFrame(rows)))
        s.subsections.append(sub)
    return s


def write_judge_report(out: str | Path, folders: list[Path]) -> Path:
    """report.html / report.md comparing the judges whose results lie in `folders`."""
    out = Path(out)
    results = read_results(folders)
    sections = [section_judges(results), section_accuracy(results, out), section_calibration(results, out)]
    tests = dict.fromkeys(
        t for doc in results.values() for t, ev in doc["evaluations"].items() if ev.get("audit")
    )
    sections += [section_suite(results, t, i) for i, t in enumerate(tests)]
    return write_document(out, "Judge comparison", sections)
