"""Config of the study's audit stage (`audit:` in the study YAML)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from rmtension.strict import Strict
from rmtension.yaml_file import find_beside

SHIPPED_SUITE = "suites/healthcare_scheduling.yaml"


class AuditConfig(Strict):
    enabled: bool = True
    """Run every trained RM on the suite in `rmtension study`."""
    suite: str = SHIPPED_SUITE
    """Suite file (`rmtension.audit.suite`). A relative path is looked up in the working directory,
    then beside the config file and its parent folder, then among the suites shipped inside the
    package (`suites/healthcare_scheduling.yaml` is one)."""
    bootstrap: int = Field(2000, ge=100)
    """Bootstrap resamples of the scenario-level CIs."""
    ci: float = Field(0.95, gt=0, lt=1)
    """CI level."""
    batch_size: int = Field(16, ge=1)
    """Pairs per forward."""


PACKAGE_DIR = Path(__file__).resolve().parent
"""Holds `suites/`, shipped as package data, so an installed wheel finds the shipped suite too."""


def find_suite(suite: str, config_dir: Path | None = None) -> str:
    """The suite file (`find_beside`), falling back to the suites shipped in the package."""
    return find_beside(suite, config_dir, PACKAGE_DIR)
