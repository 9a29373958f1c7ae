"""The smoke study's report.html in headless Chromium: no console errors, every section, every image
loaded, no request beyond the file itself, and a full-page screenshot that is not blank.

The screenshot is kept as `<run_dir>/report-screenshot.png` (a CI artifact when $RMTENSION_SMOKE_DIR
points the run somewhere kept). CI installs Debian's `chromium` and `chromium-driver` (`.ci/run`);
elsewhere the test skips when they are absent.
"""

from __future__ import annotations

import json

import pytest

from browser import SHOT_SCALE, blankness, chromium_paths, open_page
from rmtension.report.document import PARTS

BROWSER, DRIVER = chromium_paths()


@pytest.mark.real
@pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_smoke_report_renders_in_headless_chromium(smoke_run):
    page = open_page(smoke_run / "report.html")
    shot = smoke_run / "report-screenshot.png"
    shot.write_bytes(page.screenshot)

    assert page.errors == [], page.errors
    expected = (
        [("summary", "Summary of findings")]
        + [(p.anchor, p.title) for p in PARTS]
        + [("provenance", "Provenance")]
    )
    assert page.sections == expected
    figures = json.loads((smoke_run / "figures" / "index.json").read_text())
    # the smoke config runs every stage, so every part has its figures
    for name in (
        "tension",
        "calibration",
        "training",
        "neuron_overlap",
        "ablation_heatmap_zero",
        "ablation_sweep",
        "bon",
        "rl",
        "frontier",
    ):
        assert name in figures, name
    assert len(page.images) == len(figures)
    for img in page.images:
        assert img["complete"] and img["naturalWidth"] > 0, img["alt"]
    assert page.requests == []
    assert page.overflow_x == 0  # wide tables scroll inside their own box

    stats = blankness(page.screenshot)
    assert (
        stats["height"] >= 0.95 * SHOT_SCALE * page.page_height > 1500
    )  # the whole page, not the first screen
    assert stats["colours"] > 64 and stats["non_white"] > 0.02, stats


def test_blankness_tells_a_blank_page_from_a_drawn_one():
    import io

    import numpy as np
    from PIL import Image

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    blank = blankness(png(np.full((300, 200, 3), 255)))
    assert blank["colours"] == 1 and blank["non_white"] == 0
    drawn = np.full((300, 200, 3), 255)
    drawn[50:150, 20:180] = np.random.default_rng(0).integers(0, 255, (100, 160, 3))
    stats = blankness(png(drawn))
    assert stats["colours"] > 64 and stats["non_white"] > 0.2
