"""Figures for the report: paper-sized (3.3 in wide, one column), Okabe-Ito colours, saved as PNG and PDF."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
RM_COLOURS = {"helpful": PALETTE[0], "harmless": PALETTE[1], "mixed": PALETTE[2]}
COLUMN_WIDTH = 3.3
plt.rcParams.update({
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 200, "pdf.fonttype": 42,
})


def new_figure(width: float = COLUMN_WIDTH, height: float = 2.4):
    return plt.subplots(figsize=(width, height), constrained_layout=True)


def save(fig, run_dir: Path, name: str) -> Path:
    """Save `figures/<name>.png` and `.pdf`; returns the PNG path."""
    out = Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    from rmtension.runio import atomic_write_bytes
    import io

    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext)
        atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
    plt.close(fig)
    return out / f"{name}.png"


def inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
