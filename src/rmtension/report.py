"""`report.md` and a self-contained `report.html` (inline CSS and images), built only from run-directory files.

Each section is a function that reads the files it needs and returns None when they are absent,
so the report grows with the stages that ran. Every number names the file it came from.
"""

from __future__ import annotations

import html
import json
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

from rmtension.figures import COLUMN_WIDTH, RM_COLOURS, inline_png, new_figure, plt, save
from rmtension.runio import atomic_write_text, read_json, write_csv


@dataclass
class Section:
    title: str
    anchor: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    """(caption, table); each is also saved as `tables/<anchor>_<i>.csv`."""
    figures: list[tuple[str, Path]] = field(default_factory=list)
    """(caption, PNG path under figures/)."""


def _fmt_acc(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['sd']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def section_tension(run_dir: Path) -> Section | None:
    path = run_dir / "tension.json"
    if not path.exists():
        return None
    t = read_json(path)
    tests = sorted({ts for by in t["accuracy"].values() for ts in by})
    rows = [{"RM": rm, **{ts: _fmt_acc(by[ts]) for ts in tests if ts in by}} for rm, by in t["accuracy"].items()]
    s = Section("Tension table", "tension")
    s.paragraphs.append("Pairwise accuracy, mean ± sd over seeds [95% CI from a bootstrap over test pairs and seeds]. "
                        f"Source: `tension.json`. Method: {t['method']['ci']}.")
    s.tables.append(("Accuracy of each RM on each test set", pd.DataFrame(rows)))
    inter = [{"test set": ts, "mixed − best single": f"{d['mixed_minus_best_single']:+.3f}",
              "95% CI": f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]", "best single RM": d["best_single"],
              "verdict": _interference_verdict(d)} for ts, d in t["interference"].items()]
    sub_rows = [{"RM": rm, "test set": ts, "subset": sub, "pairs": d["n"], "accuracy": f"{d['accuracy']:.3f}",
                 "mean margin (whole test set)": f"{by[ts]['mean_margin']:+.3f}"}
                for rm, by in t["accuracy"].items() for ts in tests if ts in by for sub, d in by[ts].get("per_subset", {}).items()]
    if sub_rows:
        s.tables.append(("Per-subset accuracy, mean over seeds", pd.DataFrame(sub_rows)))
    if inter:
        s.tables.append(("Interference = accuracy(mixed) − max(accuracy(helpful RM), accuracy(harmless RM))", pd.DataFrame(inter)))
    fig, ax = new_figure()
    width = 0.8 / max(1, len(t["accuracy"]))
    for i, (rm, by) in enumerate(t["accuracy"].items()):
        xs = [j + i * width for j in range(len(tests))]
        means = [by[ts]["mean"] for ts in tests]
        err = [[by[ts]["mean"] - by[ts]["ci95"][0] for ts in tests], [by[ts]["ci95"][1] - by[ts]["mean"] for ts in tests]]
        ax.bar(xs, means, width, yerr=err, label=f"{rm} RM", color=RM_COLOURS.get(rm), capsize=2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks([j + width * (len(t["accuracy"]) - 1) / 2 for j in range(len(tests))], tests, rotation=15)
    ax.set_ylabel("pairwise accuracy")
    ax.set_ylim(0.4, max(0.8, max(by[ts]["ci95"][1] for by in t["accuracy"].values() for ts in by) + 0.02))
    ax.legend(frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    s.figures.append(("Accuracy with 95% CIs; dashed line: chance.", save(fig, run_dir, "tension")))
    return s


def _interference_verdict(d: dict) -> str:
    lo, hi = d["ci95"]
    if hi < 0:
        return "mixed RM worse than the best single-objective RM"
    if lo > 0:
        return "mixed RM better than the best single-objective RM"
    return "no significant difference"


def section_calibration(run_dir: Path) -> Section | None:
    path = run_dir / "tension.json"
    if not path.exists():
        return None
    cal = read_json(path)["calibration"]
    s = Section("Calibration", "calibration")
    s.paragraphs.append("Bai et al. (2022) report well-calibrated preference models. Predicted P(chosen preferred) = "
                        "sigmoid(r_chosen − r_rejected), pooled over seeds; ECE over 10 bins. Source: `tension.json`.")
    s.tables.append(("Expected calibration error", pd.DataFrame(
        [{"RM": rm, **{ts: f"{d['ece']:.3f}" for ts, d in by.items()}} for rm, by in cal.items()])))
    fig, ax = new_figure(height=2.6)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for rm, by in cal.items():
        for ts, d in by.items():
            if ts != rm and not (rm == "mixed"):
                continue
            pts = d["points"]
            ax.plot([p["predicted"] for p in pts], [p["observed"] for p in pts], marker="o", ms=2.5, lw=1,
                    color=RM_COLOURS.get(rm), ls="-" if ts == "helpful" else ":", label=f"{rm} RM on {ts} (ECE {d['ece']:.3f})")
    ax.set_xlabel("predicted P(chosen preferred)")
    ax.set_ylabel("observed frequency")
    ax.legend(frameon=False, fontsize=6)
    s.figures.append(("Reliability diagram (own-objective test sets; the mixed RM on both).", save(fig, run_dir, "calibration")))
    return s


def section_training(run_dir: Path) -> Section | None:
    metrics = sorted((run_dir / "rm").glob("*/seed*/metrics.json"))
    if not metrics:
        return None
    s = Section("Training curves", "training")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, 2.4), constrained_layout=True)
    rows = []
    for path in metrics:
        m = json.loads(path.read_text())
        rm, seed = path.parent.parent.name, path.parent.name
        c = RM_COLOURS.get(rm)
        loss = m["loss"]
        ax1.plot([x for x, _ in loss], pd.Series([y for _, y in loss]).rolling(10, min_periods=1).mean(), color=c, lw=0.8, alpha=0.8)
        ax2.plot([x for x, _ in m["val_accuracy"]], [y for _, y in m["val_accuracy"]], color=c, lw=0.8, marker=".", ms=2)
        rows.append({"RM": rm, "seed": seed, "train pairs": m["n_train"], "steps": m["steps"], "best step": m["best_step"],
                     "best val acc": f"{m['best_val_accuracy']:.3f}", "pairs/s": f"{m['pairs_per_s']:.1f}",
                     "tokens/s": f"{m['tokens_per_s']:.0f}", "peak MB": f"{m['peak_memory_mb']:.0f}"})
    ax1.set_xlabel("optimiser step"); ax1.set_ylabel("BT loss (rolling mean)")
    ax2.set_xlabel("optimiser step"); ax2.set_ylabel("validation accuracy")
    for rm, c in RM_COLOURS.items():
        ax2.plot([], [], color=c, label=f"{rm} RM")
    ax2.legend(frameon=False)
    s.figures.append(("Training loss and validation accuracy per RM and seed.", save(fig, run_dir, "training")))
    s.tables.append(("Per-run training metrics (source: `rm/<objective>/seed<k>/metrics.json`)", pd.DataFrame(rows)))
    s.paragraphs.append("The model is selected on the validation split only; test sets are never used for selection.")
    return s


def section_data(run_dir: Path) -> Section | None:
    path = run_dir / "data" / "summary.json"
    if not path.exists():
        return None
    summary = read_json(path)
    s = Section("Data", "data")
    s.paragraphs.append("Source: `data/summary.json`, split manifest `data/splits.json`, truncation `data/truncation.json`.")
    s.paragraphs.append("<pre>" + html.escape(json.dumps(summary, indent=1)[:6000]) + "</pre>")
    trunc = run_dir / "data" / "truncation.json"
    if trunc.exists():
        t = read_json(trunc)
        s.tables.append((f"Left truncation at {t['max_length']} tokens", pd.DataFrame(
            [{"set": k, **v} for k, v in t["sets"].items()])))
    return s


def _git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "") if rev.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def section_provenance(run_dir: Path) -> Section:
    s = Section("Provenance", "provenance")
    versions = {}
    for pkg in ("rmtension", "torch", "transformers", "accelerate", "safetensors", "datasets", "numpy", "pandas", "scipy", "trl"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    s.tables.append(("Versions", pd.DataFrame([{"package": k, "version": v} for k, v in versions.items()] +
                                             [{"package": "python", "version": platform.python_version()},
                                              {"package": "git revision", "version": _git_revision()}])))
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        s.paragraphs.append("Resolved config (`config.yaml`); rerun with `rmtension study --config config.yaml --out RUN_DIR`:")
        s.paragraphs.append("<pre>" + html.escape(cfg.read_text()) + "</pre>")
    manifests = sorted((run_dir / "manifests").glob("*.json"))
    if manifests:
        s.tables.append(("Stage manifests (config hash per stage)", pd.DataFrame(
            [{"stage": m.stem, "config hash": read_json(m)["config_hash"], "files": len(read_json(m)["files"])} for m in manifests])))
    return s


SECTIONS: list[Callable[[Path], Section | None]] = [section_tension, section_calibration, section_training, section_data]


SECTION_MODULES = ("rmtension.neurons.report", "rmtension.optimise_report")
"""Modules whose `SECTIONS` list report sections of the analyses (neurons, ablation, best-of-n, RL)."""


def all_sections() -> list[Callable[[Path], Section | None]]:
    import importlib

    return SECTIONS + [f for mod in SECTION_MODULES for f in importlib.import_module(mod).SECTIONS]


def build_sections(run_dir: Path) -> list[Section]:
    sections = [s for s in (f(run_dir) for f in all_sections()) if s is not None]
    sections.append(section_provenance(run_dir))
    return sections


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .55em;text-align:left}
th{background:#f3f3f3}caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em;max-height:24em}nav a{margin-right:.8em}"""


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and tables/*.csv from the files in `run_dir`."""
    run_dir = Path(run_dir)
    sections = build_sections(run_dir)
    md, body = ["# rmtension report", ""], []
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    for s in sections:
        md += [f"## {s.title}", ""]
        body.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        for p in s.paragraphs:
            md += [p.replace("<pre>", "```\n").replace("</pre>", "\n```") if p.startswith("<pre>") else p, ""]
            body.append(p if p.startswith("<pre>") else f"<p>{_inline_md(p)}</p>")
        for i, (caption, table) in enumerate(s.tables):
            write_csv(run_dir / "tables" / f"{s.anchor}_{i}.csv", table)
            md += [f"**{caption}** (`tables/{s.anchor}_{i}.csv`)", "", table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False), ""]
            body.append(_html_table(table, caption))
        for caption, png in s.figures:
            rel = png.relative_to(run_dir)
            md += [f"![{caption}]({rel})", "", f"*{caption}* (`{rel}`, PDF beside it)", ""]
            body.append(f'<figure><img src="{inline_png(png)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)} '
                        f"(<code>{rel}</code>)</figcaption></figure>")
        body.append("</section>")
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>rmtension report</title><style>{CSS}</style></head>"
            f"<body><h1>rmtension report</h1><nav>{nav}</nav>{''.join(body)}</body></html>")
    return atomic_write_text(run_dir / "report.html", page)


def _html_table(table: pd.DataFrame, caption: str) -> str:
    raw = table.to_html(index=False, border=0, escape=True)
    cut = raw.index(">") + 1
    return raw[:cut] + f"<caption>{html.escape(caption)}</caption>" + raw[cut:]


def _inline_md(text: str) -> str:
    import re

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False
