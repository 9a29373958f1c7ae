"""Reading a user's YAML file (a study config, a bench task, a loop config) as a mapping, with errors
for the user: one line naming the file, the line of a YAML syntax error, and the reason."""

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
