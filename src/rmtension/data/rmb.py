"""RMB pairwise rows (Zhou et al. 2024, "RMB: comprehensively benchmarking reward models").

Each `Pairwise_set/**/*.json` file is a JSON array of
`{"pair_uid", "conversation_input": [{"role", "content", ...}], "chosen": {"llm_name", "answer"},
"reject": {...}, "category_path"}`. The subset comes from the folder: files under `Helpfulness`
are `rmb-helpful`, under `Harmlessness` `rmb-harmless`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmtension.data.reader import ParsedRow, RowError, json_type, require_key, require_object, require_str
from rmtension.data.types import Turn
from rmtension.errors import DataError

SUBSET_FOLDERS = {"Helpfulness": "rmb-helpful", "Harmlessness": "rmb-harmless"}
ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


def subset_of(path: Path) -> str:
    """`rmb-helpful` / `rmb-harmless` from the folder names in the path."""
    found = {SUBSET_FOLDERS[p] for p in path.parts if p in SUBSET_FOLDERS}
    if len(found) != 1:
        raise DataError(
            path,
            None,
            f"cannot tell the RMB subset: the path needs exactly one folder named "
            f"{' or '.join(SUBSET_FOLDERS)}",
        )
    return found.pop()


def file_id(path: Path) -> str:
    """The file's path below its subset folder, without suffix (`Chat/Casual Conversation`).

    Used in `pair_id`, so ids do not depend on which parent folder the user pointed at.
    """
    parts = path.with_suffix("").parts
    start = max(i for i, part in enumerate(parts) if part in SUBSET_FOLDERS) + 1
    return "/".join(parts[start:])


def discover(root: str | Path) -> list[tuple[Path, str]]:
    """(file, subset) for every pairwise file under `root` (a folder or one `.json` file), sorted."""
    root = Path(root)
    if root.is_file():
        return [(root, subset_of(root))]
    if not root.is_dir():
        raise DataError(root, None, "RMB path is neither a folder nor a .json file")
    # RMB's Best-of-N files share the folder names but not the row format; only pairwise rows load.
    files = sorted(p for p in root.rglob("*.json") if "BoN_set" not in p.parts)
    if not files:
        raise DataError(
            root,
            None,
            "no .json files under the RMB folder (expected Pairwise_set/Helpfulness/**.json, "
            "Pairwise_set/Harmlessness/**.json)",
        )
    return [(p, subset_of(p)) for p in files]


def parse_messages(value: Any, key: str) -> tuple[Turn, ...]:
    """A list of `{role, content}` messages (extra keys such as `language` are ignored)."""
    if not isinstance(value, list):
        raise RowError("wrong_type", f"key {key!r} must be an array of messages, got {json_type(value)}")
    if not value:
        raise RowError("empty_string", f"key {key!r} is an empty array")
    turns = []
    for i, msg in enumerate(value):
        msg = require_object(msg, f"{key}[{i}]")
        role = require_str(msg, "role", f"{key}[{i}]")
        if role not in ROLES:
            raise RowError(
                "unknown_role", f"{key}[{i}] has role {role[:20]!r} (expected one of {', '.join(ROLES)})"
            )
        turns.append(Turn(ROLES[role], require_str(msg, "content", f"{key}[{i}]", allow_empty=True)))
    return tuple(turns)


def parse_row(row: Any) -> ParsedRow:
    """One RMB pairwise row; `pair_uid`, `category_path` and the model names go to metadata."""
    row = require_object(row)
    context = parse_messages(require_key(row, "conversation_input"), "conversation_input")
    if context[-1].role != "user":
        raise RowError("turn_order", "conversation_input must end with a user message")
    answers, models = {}, {}
    for side in ("chosen", "reject"):
        obj = require_object(require_key(row, side), f"key {side!r}")
        answers[side] = require_str(obj, "answer", side)
        models[side] = obj.get("llm_name")
    meta = {k: v for k, v in row.items() if k not in ("conversation_input", "chosen", "reject")}
    meta.update(chosen_llm=models["chosen"], rejected_llm=models["reject"])
    return ParsedRow(context, answers["chosen"], answers["reject"], metadata=meta)
