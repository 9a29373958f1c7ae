"""Figures for the report, sized for a two-column paper and saved as PNG and PDF.

Every figure is one column (3.3 in) or two columns (6.9 in) wide, uses the Okabe-Ito palette
(distinguishable under the common colour-vision deficiencies; Okabe & Ito 2008) and a diverging
ColorBrewer map for signed heatmaps, and has no text below `MIN_FONT_PT`. `save` writes
`figures/<name>.png` (200 dpi) and `figures/<name>.pdf` and records each figure's size and smallest
font in `figures/index.json`, so the names are stable and can be linked from elsewhere.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from rmtension.run.runio import atomic_write_bytes, write_json
import json

# Okabe & Ito (2008): blue, vermillion, bluish green, reddish purple, orange, sky blue, yellow, black.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
RM_COLOURS = {"helpful": PALETTE[0], "harmless": PALETTE[1], "mixed": PALETTE[2]}
CHANCE_COLOUR = "#999999"
DIVERGING_CMAP = "RdBu"
"""ColorBrewer RdBu: safe for red-green colour blindness (it runs red to blue)."""
COLUMN_WIDTH = 3.3
"""One column of a two-column paper, in inches."""
DOUBLE_WIDTH = 6.9
"""Both columns, in inches."""
WIDTHS = (COLUMN_WIDTH, DOUBLE_WIDTH)
DPI = 200
MIN_FONT_PT = 7.0
plt.rcParams.update(
    {
        "font.size": 8,
        "axes.titlesize": 8,
        "axes.labelsize": 8,
        "legend.fontsize": 7,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "savefig.dpi": DPI,
        "pdf.fonttype": 42,
        "svg.hashsalt": "rmtension",
        "image.cmap": "cividis",
    }
)


def new_figure(width: float = COLUMN_WIDTH, height: float = 2.4, **subplots):
    """`plt.subplots` at a paper width (`COLUMN_WIDTH` or `DOUBLE_WIDTH`) with constrained layout."""
    if width not in WIDTHS:
        raise ValueError(
            f"figure width {width} in: use COLUMN_WIDTH ({COLUMN_WIDTH}) or DOUBLE_WIDTH ({DOUBLE_WIDTH})"
        )
    return plt.subplots(figsize=(width, height), constrained_layout=True, **subplots)


def enforce_min_font(fig, minimum: float = MIN_FONT_PT) -> float:
    """Raise every visible text of `fig` to at least `minimum` points; returns the smallest size left."""
    sizes = []
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip():
            if text.get_fontsize() < minimum:
                text.set_fontsize(minimum)
            sizes.append(text.get_fontsize())
    return min(sizes, default=minimum)


def save(fig, run_dir: Path, name: str) -> Path:
    """Save `figures/<name>.png` and `.pdf` (deterministic bytes for the same figure); returns the PNG path."""

    out = Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    width, height = (float(x) for x in fig.get_size_inches())
    if round(width, 2) not in WIDTHS:
        plt.close(fig)
        raise ValueError(
            f"figure {name}: width {width:.2f} in is neither one column ({COLUMN_WIDTH}) nor two ({DOUBLE_WIDTH})"
        )
    smallest = enforce_min_font(fig)
    # No timestamps in the files: the same figure gives the same bytes.
    meta = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None}}
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=DPI, metadata=meta[ext])
        atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
    plt.close(fig)
    index_path = out / "index.json"
    index = _read_index(index_path)
    index[name] = {
        "png": f"figures/{name}.png",
        "pdf": f"figures/{name}.pdf",
        "width_in": round(width, 2),
        "height_in": round(height, 2),
        "dpi": DPI,
        "min_font_pt": smallest,
    }
    write_json(index_path, dict(sorted(index.items())))
    return out / f"{name}.png"


def _read_index(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
