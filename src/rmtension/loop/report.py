"""The loop's report section, from `loop/loop.json`, `loop/rounds.csv` and `loop/findings.json` only.

Follows the stages' contract (`sections(run_dir)`, `findings(run_dir)`), so any document writer can
take it; `write_loop_report` writes it as its own document (`loop/report/report.html`) with the
report package's writer, which imports nothing of the loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rmtension.report.figures import new_figure, save
from rmtension.report.section import Section, write_document
from rmtension.stats.finding import Finding


def _ci(entry: dict) -> str:
    return f"{entry['mean']:+.3f} [{entry['ci95'][0]:+.3f}, {entry['ci95'][1]:+.3f}]"


def round_table(loop: dict) -> pd.DataFrame:
    rows = []
    for arm, a in loop["arms"].items():
        for r in a["rounds"]:
            rows.append(
                {
                    "arm": arm,
                    "round": r["round"],
                    "KL (nats)": _ci(r["kl"]),
                    "gold": _ci(r["gold"]),
                    "proxy − gold": _ci(r["gap"]),
                    "PM_0 agrees (top 25%)": _ci(r["agree_pm0_top"]),
                    "PM_r agrees (top 25%)": _ci(r["agree_pmr_top"]),
                    "words": _ci(r["words"]),
                    "capability": _ci(r["capability"])
                    if r["capability"]["mean"] == r["capability"]["mean"]
                    else "",
                }
            )
    return pd.DataFrame(rows)


def gold_kl_figure(loop: dict, out_dir: Path) -> Path:
    fig, ax = new_figure()
    for arm, a in loop["arms"].items():
        kl = [r["kl"]["mean"] for r in a["rounds"]]
        gold = [r["gold"]["mean"] for r in a["rounds"]]
        lo = [r["gold"]["ci95"][0] for r in a["rounds"]]
        hi = [r["gold"]["ci95"][1] for r in a["rounds"]]
        ax.plot(kl, gold, marker="o", label=arm)
        ax.fill_between(kl, lo, hi, alpha=0.15)
    ax.set_xlabel("KL(π_r ‖ π_0), nats")
    ax.set_ylabel("gold reward")
    ax.legend(fontsize=7)
    return save(fig, out_dir, "loop_gold_kl")


def findings(run_dir: Path) -> list[Finding]:
    path = Path(run_dir) / "loop" / "findings.json"
    return [Finding(**d) for d in json.loads(path.read_text())["findings"]] if path.exists() else []


def sections(run_dir: Path, figures_dir: Path | None = None) -> list[Section]:
    """The section "The steering loop" (empty list when the loop did not run here)."""
    loop_dir = Path(run_dir) / "loop"
    if not (loop_dir / "loop.json").exists():
        return []
    loop = json.loads((loop_dir / "loop.json").read_text())
    s = Section("The steering loop", "loop", part="loop")
    s.paragraphs.append(
        "Per arm and round: the policy's gold reward and KL to π_0 on held-out prompts, proxy − gold, "
        "PM_0's and PM_r's agreement with gold on the top quartile of fresh pairs, reply length and the "
        "capability score; means with 95% CIs over prompts and seeds (`loop/loop.json`, `loop/rounds.csv`)."
    )
    if loop.get("gold"):
        t = loop["gold"]["test"]
        lc = t["length_controlled"]
        lc_text = f"{lc['estimate']:.3f}" if lc.get("estimable") else f"not estimable ({lc.get('reason')})"
        s.paragraphs.append(
            f"Gold on {t['n']} HH test pairs: accuracy {t['accuracy']:.3f} "
            f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}], length-controlled {lc_text} (`loop/gold.json`)."
        )
    s.tables.append(("Per round (mean [95% CI])", round_table(loop)))
    s.figures.append(
        ("Gold reward against KL, per arm", gold_kl_figure(loop, figures_dir or loop_dir / "report"))
    )
    for f in findings(run_dir):
        s.paragraphs.append(f.statement())
    return [s]


def write_loop_report(run_dir: Path) -> Path:
    out = Path(run_dir) / "loop" / "report"
    return write_document(out, "rmtension: the steering loop", sections(run_dir, out))
