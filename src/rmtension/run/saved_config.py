"""A run directory's saved `config.yaml` as a plain dict. Light (yaml only), so that a config section
can read a run's settings without loading torch: `rmtension study` fails on bad input in half a second."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_config(run_dir: Path) -> dict:
    """The run's resolved config as a plain dict ({} when absent or unreadable)."""
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def configured(config: dict, key: str) -> bool:
    """Whether the config has section `key` and it is not switched off (`enabled: false`)."""
    section = config.get(key)
    return isinstance(section, dict) and section.get("enabled", True) is not False
