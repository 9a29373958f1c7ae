"""Config of the study's audit stage (`audit:` in the study YAML)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from rmtension.strict import Strict

SHIPPED_SUITE = "suites/healthcare_scheduling.yaml"


class AuditConfig(Strict):
    enabled: bool = True
    """Run every trained RM on the suite in `rmtension study`."""
    suite: str = SHIPPED_SUITE
    """Suite file (`rmtension.audit.suite`). A relative path is looked up in the working directory,
    then beside the config file and its parent folder, then in the project the package came from."""
    bootstrap: int = Field(2000, ge=100)
    """Bootstrap resamples of the scenario-level CIs."""
    ci: float = Field(0.95, gt=0, lt=1)
    """CI level."""
    batch_size: int = Field(16, ge=1)
    """Pairs per forward."""


def find_suite(suite: str, config_dir: Path | None) -> str:
    """The suite file: as given (absolute, or relative to the working directory), else beside the config
    file or in its parent folder (`configs/` sits in the project root), else in the project this package
    was installed from. Unchanged when none exists (the stage then says so in one line)."""
    path = Path(suite)
    if path.is_absolute() or path.is_file():
        return suite
    folders = [config_dir, config_dir.parent] if config_dir is not None else []
    folders.append(Path(__file__).resolve().parents[3])  # <project>/src/rmtension/audit/config.py
    for folder in folders:
        if (folder / path).is_file():
            return str((folder / path).resolve())
    return suite
