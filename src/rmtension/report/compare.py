"""`rmtension compare RUN_A RUN_B ... --out DIR`: several runs side by side in one report.

For runs that differ in backbone (MiniLM vs SmolLM2), mix ratio, data size or anything else: the
setting of each run, accuracy of every RM on every test set, interference, calibration, and every
claim's verdict with its headline numbers. Reads only the run directories (each needs
`tension.json`) and writes `report.md`, `report.html`, `tables/*.csv` and `figures/*` under DIR.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rmtension.errors import RmtensionError
from rmtension.report.figures import CHANCE_COLOUR, COLUMN_WIDTH, DOUBLE_WIDTH, PALETTE, new_figure, save
from rmtension.report.core import calibration_cis, ordered_tests, read_config
from rmtension.report.provenance import versions_table
from rmtension.report.section import Section, prune_figures, write_document
from rmtension.run.runio import read_json
from rmtension.stats.finding import Finding

RMS = ("helpful", "harmless", "mixed")


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Short unique names: the folder name, with its parent where two runs share a name, then an index."""
    labels = [p.name for p in run_dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.name}" for p in run_dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def check_runs(run_dirs: list[Path]) -> None:
    if len(run_dirs) < 2:
        raise RmtensionError("compare: give at least two run directories")
    for d in run_dirs:
        if not (d / "tension.json").is_file():
            raise RmtensionError(f"{d}: no tension.json (not a finished study run directory)")


def _setting(run_dir: Path) -> dict:
    cfg = read_config(run_dir)
    data, model, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    mode = data.get("mixed_mode", "matched")
    stages = [k for k in ("neurons", "ablation", "bon", "rl") if isinstance(cfg.get(k), dict)]
    return {
        "config name": cfg.get("name", ""),
        "backbone": model.get("backbone", ""),
        "mixed": f"{mode} ({data.get('mixed_ratio', 0.5):g})" if mode == "ratio" else mode,
        "train pairs cap": data.get("max_train_pairs") or "all",
        "trainable": train.get("trainable", ""),
        "seeds": len(train.get("seeds", [])),
        "analyses": ", ".join(stages) or "none",
    }


def flatten(cfg: dict, prefix: str = "") -> dict[str, object]:
    """Nested config -> {"train.lr": 2e-4, ...}; a section that is absent or null reads as None."""
    out: dict[str, object] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(runs: dict[str, Path]) -> pd.DataFrame:
    """One row per config key whose value differs between the runs (run names excluded), one column per run."""
    flat = {label: flatten(read_config(d)) for label, d in runs.items()}
    keys = sorted({k for f in flat.values() for k in f} - {"name"})
    rows = [
        {"key": k, **{label: f.get(k, "(absent)") for label, f in flat.items()}}
        for k in keys
        if len({repr(f.get(k, "(absent)")) for f in flat.values()}) > 1
    ]
    return pd.DataFrame(rows, columns=["key", *runs]).astype(str)


def section_runs(runs: dict[str, Path]) -> Section:
    s = Section("Runs", "runs")
    s.paragraphs.append(
        "The runs compared, with the settings that most often differ between them, then every "
        "config key whose value differs. Source: each run's `config.yaml`; the full configs are "
        "in each run's own report."
    )
    s.tables.append(
        ("Runs and settings", pd.DataFrame([{"run": label, **_setting(d)} for label, d in runs.items()]))
    )
    diff = config_differences(runs)
    if len(diff):
        s.tables.append(("Config keys that differ between the runs", diff))
    else:
        s.paragraphs.append("The runs' resolved configs are identical apart from their names.")
    return s


def _ci_text(d: dict, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    mean = d.get("mean", d.get("mixed_minus_best_single"))
    return f"{mean:{f}} [{d['ci95'][0]:{f}}, {d['ci95'][1]:{f}}]"


def section_accuracy(runs: dict[str, Path], tables: dict[str, dict], out: Path) -> Section:
    tests = ordered_tests({t for tb in tables.values() for by in tb["accuracy"].values() for t in by})
    s = Section("Accuracy side by side", "accuracy")
    s.paragraphs.append("Pairwise accuracy, mean over seeds [95% CI]. Source: each run's `tension.json`.")
    rows = [
        {
            "RM": rm,
            "test set": t,
            **{
                label: _ci_text(tb["accuracy"][rm][t]) if t in tb["accuracy"].get(rm, {}) else ""
                for label, tb in tables.items()
            },
        }
        for rm in RMS
        for t in tests
    ]
    s.tables.append(("Accuracy per RM and test set, one column per run", pd.DataFrame(rows)))
    fig, axes = new_figure(
        DOUBLE_WIDTH if len(tests) > 1 else COLUMN_WIDTH, 2.6, ncols=len(tests), sharey=True, squeeze=False
    )
    width = 0.8 / len(tables)
    for ax, t in zip(axes[0], tests):
        for i, (label, tb) in enumerate(tables.items()):
            cells = [
                (j, tb["accuracy"][rm][t]) for j, rm in enumerate(RMS) if t in tb["accuracy"].get(rm, {})
            ]
            means = [c["mean"] for _, c in cells]
            err = [[c["mean"] - c["ci95"][0] for _, c in cells], [c["ci95"][1] - c["mean"] for _, c in cells]]
            ax.bar(
                [j + i * width for j, _ in cells],
                means,
                width,
                yerr=err,
                capsize=2,
                color=PALETTE[i % len(PALETTE)],
                label=label,
            )
        ax.axhline(0.5, color=CHANCE_COLOUR, lw=0.8, ls="--")
        ax.set_xticks(
            [j + width * (len(tables) - 1) / 2 for j in range(len(RMS))], [f"{rm} RM" for rm in RMS]
        )
        ax.set_title(f"{t} test set")
    axes[0][0].set_ylabel("pairwise accuracy")
    fig.legend(
        *axes[0][0].get_legend_handles_labels(),
        frameon=False,
        loc="outside lower center",
        ncols=min(4, len(tables)),
    )
    s.figures.append(
        (
            "Accuracy of each RM per run, with 95% CIs; dashed line: chance. Source: each run's `tension.json`.",
            save(fig, out, "compare_accuracy"),
        )
    )
    return s


def section_interference(tables: dict[str, dict], out: Path) -> Section:
    tests = ordered_tests({t for tb in tables.values() for t in tb["interference"]})
    s = Section("Interference side by side", "interference")
    s.paragraphs.append(
        "Interference = accuracy(mixed) − max(accuracy(helpful RM), accuracy(harmless RM)) [95% paired "
        "bootstrap CI]; below 0: the mixed RM is worse than the best single-objective RM. "
        "Source: each run's `tension.json`."
    )
    s.tables.append(
        (
            "Interference per test set, one column per run",
            pd.DataFrame(
                [
                    {
                        "test set": t,
                        **{
                            label: _ci_text(tb["interference"][t], signed=True)
                            if t in tb["interference"]
                            else ""
                            for label, tb in tables.items()
                        },
                    }
                    for t in tests
                ]
            ),
        )
    )
    fig, ax = new_figure(COLUMN_WIDTH, 2.4)
    step = 0.6 / max(1, len(tables) - 1) if len(tables) > 1 else 0
    for i, (label, tb) in enumerate(tables.items()):
        cells = [(j, tb["interference"][t]) for j, t in enumerate(tests) if t in tb["interference"]]
        ax.errorbar(
            [j - 0.3 + i * step for j, _ in cells],
            [d["mixed_minus_best_single"] for _, d in cells],
            yerr=[
                [d["mixed_minus_best_single"] - d["ci95"][0] for _, d in cells],
                [d["ci95"][1] - d["mixed_minus_best_single"] for _, d in cells],
            ],
            fmt="o",
            ms=3,
            capsize=2,
            color=PALETTE[i % len(PALETTE)],
            label=label,
        )
    ax.axhline(0, color=CHANCE_COLOUR, lw=0.8)
    ax.set_xticks(range(len(tests)), [f"{t} test" for t in tests])
    ax.set_xlim(-0.6, len(tests) - 0.4)
    ax.set_ylabel("mixed − best single")
    ax.legend(frameon=False)
    s.figures.append(
        (
            "Interference per run with 95% CIs. Source: each run's `tension.json`.",
            save(fig, out, "compare_interference"),
        )
    )
    return s


def section_calibration(runs: dict[str, Path], tables: dict[str, dict]) -> Section:
    s = Section("Calibration side by side", "calibration")
    s.paragraphs.append(
        "Expected calibration error [95% bootstrap CI over test pairs]. Sources: each run's "
        "`tension.json` and `eval/`."
    )
    cis = {label: calibration_cis(d) for label, d in runs.items()}
    tests = ordered_tests({t for tb in tables.values() for by in tb["calibration"].values() for t in by})
    keys = [
        (rm, t)
        for rm in RMS
        for t in tests
        if any(t in tb["calibration"].get(rm, {}) for tb in tables.values())
    ]
    rows = []
    for rm, t in keys:
        row = {"RM": rm, "test set": t}
        for label, tb in tables.items():
            d = tb["calibration"].get(rm, {}).get(t)
            ci = cis[label].get((rm, t))
            row[label] = (
                "" if d is None else f"{d['ece']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            )
        rows.append(row)
    s.tables.append(("ECE per RM and test set, one column per run", pd.DataFrame(rows)))
    return s


def section_claims(runs: dict[str, Path], findings: Callable[[Path], list[Finding]]) -> Section:
    """Each claim's verdict per run; `findings(run_dir)` recomputes a run's findings from its files
    (the stages' finding functions, `rmtension.study.findings`)."""
    per_run = {label: findings(d) for label, d in runs.items()}
    first = next(iter(per_run.values()))
    s = Section("Claims side by side", "claims")
    s.paragraphs.append(
        "Each claim's verdict in each run, with its headline numbers (the full sentences are in each "
        "run's own report). Sources: each run's files named in its summary of findings."
    )
    s.tables.append(
        (
            "Verdict per claim and run",
            pd.DataFrame(
                [
                    {
                        "paper": f.paper,
                        "claim": f.claim,
                        **{label: fs[i].verdict for label, fs in per_run.items()},
                    }
                    for i, f in enumerate(first)
                ]
            ),
        )
    )
    s.tables.append(
        (
            "Headline numbers per claim and run",
            pd.DataFrame(
                [
                    {"claim": f.claim, **{label: fs[i].key for label, fs in per_run.items()}}
                    for i, f in enumerate(first)
                ]
            ),
        )
    )
    return s


def section_sources(runs: dict[str, Path]) -> Section:
    s = Section("Provenance", "provenance")
    s.paragraphs.append(
        "The runs' `tension.json` files by content hash, so each column above can be traced to its run."
    )
    rows = [
        {
            "run": label,
            "directory": str(d),
            "tension.json sha256": hashlib.sha256((d / "tension.json").read_bytes()).hexdigest()[:16],
            "report": "report.html" if (d / "report.html").exists() else "",
        }
        for label, d in runs.items()
    ]
    s.tables.append(("Runs compared", pd.DataFrame(rows)))
    s.tables.append(("Versions used to write this comparison", versions_table()))
    return s


def compare_runs(
    run_dirs: list[str | Path], out: str | Path, findings: Callable[[Path], list[Finding]]
) -> Path:
    """Write the side-by-side report of `run_dirs` under `out`; returns its report.html. `findings`:
    computes a run's findings from its files (`rmtension.study.findings`)."""
    dirs = [Path(d).resolve() for d in run_dirs]
    check_runs(dirs)
    out = Path(out)
    if out.resolve() in dirs:
        raise RmtensionError(f"{out}: the output folder must not be one of the runs")
    out.mkdir(parents=True, exist_ok=True)
    runs = dict(zip(run_labels(dirs), dirs))
    tables = {label: read_json(d / "tension.json") for label, d in runs.items()}
    (out / "figures" / "index.json").unlink(missing_ok=True)
    sections = [
        section_runs(runs),
        section_accuracy(runs, tables, out),
        section_interference(tables, out),
        section_calibration(runs, tables),
        section_claims(runs, findings),
        section_sources(runs),
    ]
    prune_figures(out, {p.stem for s in sections for _, p in s.figures})
    return write_document(out, f"rmtension comparison: {', '.join(runs)}", sections)
