"""The report's provenance section: the resolved config, the command that reruns it, versions and git revision."""

from __future__ import annotations

import html
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from rmtension.report.section import Section
from rmtension.run.runio import read_json


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return (
            rev.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
            if rev.returncode == 0
            else "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions_table() -> pd.DataFrame:
    versions = {}
    for pkg in (
        "rmtension",
        "torch",
        "transformers",
        "accelerate",
        "safetensors",
        "datasets",
        "numpy",
        "pandas",
        "scipy",
        "matplotlib",
        "trl",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return pd.DataFrame(
        [{"package": k, "version": v} for k, v in versions.items()]
        + [
            {"package": "python", "version": platform.python_version()},
            {"package": "git revision", "version": git_revision()},
        ]
    )


def section_provenance(run_dir: Path) -> Section:
    s = Section("Provenance", "provenance")
    s.paragraphs.append(
        "Every number above names the run-directory file it was read from; every table is also in "
        "`tables/` as CSV and every figure in `figures/` as PNG and PDF (`figures/index.json` lists them)."
    )
    s.tables.append(("Versions", versions_table()))
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        s.paragraphs.append(
            "Resolved config (`config.yaml`); rerun with `rmtension study --config config.yaml --out RUN_DIR`:"
        )
        s.paragraphs.append("<pre>" + html.escape(cfg.read_text()) + "</pre>")
    manifests = sorted((run_dir / "manifests").glob("*.json"))
    if manifests:
        s.tables.append(
            (
                "Stage manifests (config hash per stage)",
                pd.DataFrame(
                    [
                        {
                            "stage": m.stem,
                            "config hash": read_json(m)["config_hash"],
                            "files": len(read_json(m)["files"]),
                        }
                        for m in manifests
                    ]
                ),
            )
        )
    return s
