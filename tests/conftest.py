from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
        pytest.skip("shared data (RMTENSION_DATA or ../shared/data) not available")
    return d


@pytest.fixture(scope="session")
def hh_root(shared_data: Path) -> Path:
    return shared_data / "hh-rlhf"
