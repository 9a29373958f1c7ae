"""What a test needs from outside the repository: skipped here, a failure where it is required.

With `RMTENSION_REQUIRE_DATA=1` (CI sets it), a test whose real data or packaged model is missing
fails instead of skipping, so a CI run without the data cannot pass silently.
"""

from __future__ import annotations

import os

import pytest


def required() -> bool:
    return os.environ.get("RMTENSION_REQUIRE_DATA", "") == "1"


def missing(reason: str) -> None:
    """Skip the running test with `reason`, or fail it when RMTENSION_REQUIRE_DATA=1."""
    if required():
        pytest.fail(f"RMTENSION_REQUIRE_DATA=1 but {reason}", pytrace=False)
    pytest.skip(reason)
