"""Batch items: pairs prepared elsewhere, read into `Item`s for `rmtension bench load-batch`.

Two sources:
- a JSONL file, one pair a line: {"prompt": ..., "reply_a": ..., "reply_b": ...}. The prompt is
  plain text (one user turn), an HH transcript (`\\n\\nHuman: ...`), or TRL's conversational list
  of {"role", "content"}; a reply is text or a one-message list. Optional "id" names the item
  (stored as `TASK:id`, so one file can feed several tasks).
- a run directory's best-of-n samples (`bon/samples.parquet` with `bon/prompts.json`): samples 0
  and 1 of each prompt become one pair.
Every bad line is one error naming the file, the line and the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rmtension.bench.records import Item, Turn
from rmtension.data.types import TranscriptError, parse_transcript
from rmtension.errors import DataError

MAX_TEXT = 20_000


def _prompt_turns(prompt, path: str, line: int) -> tuple[Turn, ...]:
    if isinstance(prompt, str):
        if "\n\nHuman:" in "\n\n" + prompt.lstrip():
            try:
                turns = parse_transcript(prompt if prompt.startswith("\n\n") else "\n\n" + prompt.lstrip())
            except TranscriptError as e:
                raise DataError(path, line, f"prompt: {e}") from None
            return tuple(Turn(t.role, t.content) for t in turns)
        return (Turn("user", prompt),)
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        turns = []
        for m in prompt:
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise DataError(
                    path, line, "prompt messages need a role (system/user/assistant) and text content"
                )
            turns.append(Turn(m["role"], m["content"]))
        return tuple(turns)
    raise DataError(path, line, "prompt must be text or a list of {role, content} messages")


def _reply(value, key: str, path: str, line: int) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, line, f"{key} must be non-empty text (or one {{role, content}} message)")
    if len(value) > MAX_TEXT:
        raise DataError(path, line, f"{key} is longer than {MAX_TEXT} characters")
    return value


def _item_id(task: str, turns, a: str, b: str) -> str:
    blob = json.dumps([task, [(t.role, t.content) for t in turns], a, b], ensure_ascii=False)
    return "b-" + hashlib.sha256(blob.encode()).hexdigest()[:24]


def read_jsonl(path: str | Path, task: str) -> list[Item]:
    path = str(path)
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, None, f"cannot read ({e})") from None
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not {"prompt", "reply_a", "reply_b"} <= row.keys():
            raise DataError(path, n, "needs prompt, reply_a and reply_b")
        turns = _prompt_turns(row["prompt"], path, n)
        if turns[-1].role != "user":
            raise DataError(path, n, "the prompt must end with a user turn")
        a, b = _reply(row["reply_a"], "reply_a", path, n), _reply(row["reply_b"], "reply_b", path, n)
        item_id = _item_id(task, turns, a, b) if row.get("id") is None else f"{task}:{row['id']}"
        if len(str(row.get("id", ""))) > 64:
            raise DataError(path, n, "id is longer than 64 characters")
        out.append(
            Item(item_id, task, turns, a, b, {"source": "batch", "file": Path(path).name, "line": n}, {})
        )
    return out


def read_bon_run(run_dir: str | Path, task: str) -> list[Item]:
    """Samples 0 and 1 of every best-of-n prompt of a run directory."""
    import pandas as pd

    run_dir = Path(run_dir)
    samples, prompts_file = run_dir / "bon" / "samples.parquet", run_dir / "bon" / "prompts.json"
    if not samples.exists() or not prompts_file.exists():
        raise DataError(
            str(run_dir), None, "no bon/samples.parquet and bon/prompts.json (run the bon stage first)"
        )
    frame = pd.read_parquet(samples)
    prompts = json.loads(prompts_file.read_text(encoding="utf-8"))["prompts"]
    out = []
    for index, group in frame[frame["sample"] < 2].groupby("prompt"):
        if len(group) < 2:
            continue
        a, b = (str(group[group["sample"] == s]["response"].iloc[0]) for s in (0, 1))
        turns = tuple(Turn(t["role"], t["content"]) for t in prompts[int(index)]["context"])
        source = {"source": "bon", "run": run_dir.name, "prompt": int(index)}
        out.append(
            Item(
                _item_id(task, turns, a, b),
                task,
                turns,
                a,
                b,
                {**source, "sample": 0},
                {**source, "sample": 1},
            )
        )
    return out


def read_batch(path: str | Path, task: str) -> list[Item]:
    """Items from a JSONL file or a run directory."""
    return read_bon_run(path, task) if Path(path).is_dir() else read_jsonl(path, task)
