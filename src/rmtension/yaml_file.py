"""Reading a user's YAML file (a study config, a bench task, a loop config) as a mapping, with errors
for the user: one line naming the file, the line of a YAML syntax error, and the reason; and finding
the files and folders such a file names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rmtension.errors import ConfigError


def read_mapping(path: str | Path, what: str, not_a_mapping: str, empty_ok: bool = False) -> dict[str, Any]:
    """The top-level mapping of YAML file `path`. ConfigError "<path>: cannot read <what> (<reason>)"
    when the file cannot be read, "<path>:<line>: invalid YAML (<problem>)" on a syntax error, and
    "<path>: <not_a_mapping>" when the top level is not a mapping (an empty file is {} if `empty_ok`)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {not_a_mapping}")
    return raw


def find_beside(name: str, config_dir: Path | None, package_dir: Path | None = None) -> str:
    """A relative file or folder path as the user meant it: as given (absolute, or relative to the
    working directory), else beside the config file or in its parent folder (`configs/` sits in the
    project root), else under `package_dir`. Unchanged when none exists (the reader then says so in
    one line)."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return name
    folders = [config_dir, config_dir.parent] if config_dir is not None else []
    if package_dir is not None:
        folders.append(package_dir)
    for folder in folders:
        if (folder / path).exists():
            return str((folder / path).resolve())
    return name
