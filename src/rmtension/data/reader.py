"""Read records from `.jsonl`, `.jsonl.gz` and `.json` files, never raising on bad bytes.

Every problem with a record comes back as a `RowError` next to its 1-based line, so the loader
alone decides between stopping (`DataError`) and counting a skip (`lenient`). File-level problems
(empty file, truncated gzip, a `.json` file that is not an array) come back the same way, with
the line where reading stopped or `None`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmtension.data.types import Turn

BOM = b"\xef\xbb\xbf"


class RowError(Exception):
    """One row (or file) that cannot be used. `kind` keys the skip counter; `reason` is the message."""

    def __init__(self, kind: str, reason: str):
        self.kind = kind
        self.reason = " ".join(reason.split())  # DataError messages stay on one line
        super().__init__(self.reason)


Record = tuple[int | None, Any]
"""(1-based line, or None for the whole file; the decoded JSON value, or the `RowError` saying why not)."""


@dataclass
class ParsedRow:
    """What a format parser makes of one row, before the loader checks, dedups and numbers it."""

    context: tuple[Turn, ...]
    chosen: str
    rejected: str
    rejected_context: tuple[Turn, ...] | None = None
    """The rejected side's own context where the format repeats it (HH); None: the same as `context`."""
    metadata: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    """Notes about a kept row (e.g. `trailing_human_turn`), counted in `LoadResult.flags`."""


def is_json_array(path: str | Path) -> bool:
    """`.json[.gz]` files hold one JSON array; anything else is read as JSON Lines."""
    return Path(path).name.endswith((".json", ".json.gz"))


def iter_records(path: str | Path) -> Iterator[Record]:
    """Records of a file: JSON Lines, or the elements of a JSON array numbered from 1."""
    if is_json_array(path):
        yield from _iter_json_array(path)
    else:
        yield from _iter_jsonl(path)


def _open(path: str | Path):
    """Binary handle; gzip by magic bytes rather than by name, so a mislabelled file still reads."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _iter_jsonl(path: str | Path) -> Iterator[Record]:
    n_rows, line_no = 0, 0
    try:
        with _open(path) as f:
            for line_no, raw in enumerate(f, 1):
                if line_no == 1 and raw.startswith(BOM):
                    raw = raw[len(BOM) :]  # Windows editors write a BOM; it is not part of the data
                if not raw.strip():
                    continue  # blank lines hold no row
                n_rows += 1
                yield line_no, decode_json_line(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # gzip raises only when it reaches the damage; the rows before it were yielded already.
        yield (
            line_no + 1,
            RowError(
                "truncated_file",
                f"compressed stream is truncated or corrupt ({e}); rows after line {line_no} are lost",
            ),
        )
        return
    except OSError as e:
        yield None, RowError("unreadable_file", f"cannot read file ({e.strerror or e})")
        return
    if n_rows == 0:
        yield None, RowError("empty_file", "empty file (no rows)")


def decode_json_line(raw: bytes) -> Any:
    """One JSON Lines row from bytes, or a `RowError` (invalid UTF-8, malformed JSON, too deep)."""
    raw = raw.rstrip(b"\r\n")  # so a JSON error's column is on this line, not "column 1 of the next"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RowError(
            "invalid_utf8",
            f"invalid UTF-8 at byte {e.start + 1} of the line ({raw[e.start : e.start + 4]!r})",
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return RowError("malformed_json", f"malformed JSON: {e.msg} (column {e.colno})")
    except (ValueError, RecursionError) as e:  # huge integers, pathological nesting
        return RowError("malformed_json", f"malformed JSON ({type(e).__name__}: {str(e)[:80]})")


def _iter_json_array(path: str | Path) -> Iterator[Record]:
    """A `.json` file holding one array of rows; element i is reported as line i + 1."""
    try:
        with _open(path) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield None, RowError("truncated_file", f"compressed stream is truncated or corrupt ({e})")
        return
    except OSError as e:
        yield None, RowError("unreadable_file", f"cannot read file ({e.strerror or e})")
        return
    data = data[len(BOM) :] if data.startswith(BOM) else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        yield (
            line,
            RowError(
                "invalid_utf8",
                f"invalid UTF-8 at byte {e.start + 1} of the file "
                f"({data[e.start : e.start + 4]!r}); the file cannot be read",
            ),
        )
        return
    if not text.strip():
        yield None, RowError("empty_file", "empty file (no rows)")
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        yield (
            e.lineno,
            RowError(
                "malformed_json", f"malformed JSON: {e.msg} (column {e.colno}); the file cannot be read"
            ),
        )
        return
    except (ValueError, RecursionError) as e:
        yield None, RowError("malformed_json", f"malformed JSON ({type(e).__name__}: {str(e)[:80]})")
        return
    if not isinstance(value, list):
        yield None, RowError("not_an_array", f"expected a JSON array of rows, got {json_type(value)}")
        return
    if not value:
        yield None, RowError("empty_file", "empty file (no rows)")
    for i, row in enumerate(value):
        yield i + 1, row


def require_object(row: Any, what: str = "row") -> dict[str, Any]:
    """The row as a dict, or a `RowError` naming what it was instead."""
    if not isinstance(row, dict):
        raise RowError("wrong_type", f"{what} must be a JSON object, got {json_type(row)}")
    return row


def require_key(row: dict[str, Any], key: str, what: str = "row") -> Any:
    if key not in row:
        have = ", ".join(sorted(map(str, row))[:8]) or "none"
        raise RowError("missing_key", f"{what} has no key {key!r} (keys: {have})")
    return row[key]


def require_str(row: dict[str, Any], key: str, what: str = "row", allow_empty: bool = False) -> str:
    """`row[key]` as a string; missing, non-string and (unless allowed) empty values are errors."""
    value = require_key(row, key, what)
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{what} key {key!r} must be a string, got {json_type(value)}")
    if not allow_empty and not value.strip():
        raise RowError("empty_string", f"{what} key {key!r} is an empty string")
    return value


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
