from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from requires import missing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The shared data folder: $RMTENSION_DATA's parent when it points at hh-rlhf, else ../shared/data."""
    env = os.environ.get("RMTENSION_DATA")
    candidates = []
    if env:
        candidates += [Path(env).parent, Path(env)]
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "hh-rlhf").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        missing("shared data (RMTENSION_DATA or ../shared/data) not available")
    return d


@pytest.fixture(scope="session")
def hh_root(shared_data: Path) -> Path:
    return shared_data / "hh-rlhf"


def xstest_overrides() -> list[str]:
    """`data.xstest_path=<shared>/xstest` for the real studies (missing XSTest skips, or fails when required)."""
    d = shared_data_dir()
    if d is None or not (d / "xstest" / "xstest_prompts.csv").is_file():
        missing("the smoke study reads XSTest from the shared data folder (xstest/)")
    return [f"data.xstest_path={d / 'xstest'}"]


@pytest.fixture(scope="session")
def tiny_study_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The tiny study (`studykit.tiny_study`: synthetic HH files, a tiny BERT, two seeds), run once per
    session: (base folder, config path, run directory). Tests that change its files work on a copy."""
    from rmtension.cli import main
    from studykit import tiny_study

    base = tmp_path_factory.mktemp("study")
    cfg = tiny_study(base)
    out = base / "run"
    if main(["study", "--config", str(cfg), "--out", str(out)]) != 0:
        pytest.fail("the tiny study failed")
    return base, cfg, out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The shipped smoke study (configs/smoke.yaml: MiniLM, real HH-RLHF, every stage), run once per session.

    About 5 minutes on 2 CPU cores. The run directory is $RMTENSION_SMOKE_DIR when set (CI keeps it,
    with the report's browser screenshot, as an artifact), else a temporary folder; it starts fresh.
    """
    if not os.environ.get("RMTENSION_DATA"):
        missing("the smoke study needs RMTENSION_DATA (HH-RLHF in the official layout)")
    from rmtension.cli import main

    out = Path(os.environ.get("RMTENSION_SMOKE_DIR") or tmp_path_factory.mktemp("smoke") / "smoke")
    argv = ["study", "--config", str(REPO / "configs" / "smoke.yaml"), "--out", str(out), "--fresh"]
    rc = main(argv + xstest_overrides())
    if rc != 0:
        pytest.fail(f"the smoke study exited with {rc}")
    return out
