"""XSTest v2 (Röttger et al., NAACL 2024) as two pairwise test sets of refusal behaviour.

Official layout: `<root>/xstest_prompts.csv` (`id, prompt, type, label, focus, note`) and
`<root>/model_completions/*.csv` (`id, type, prompt, completion, annotation_1, annotation_2,
agreement, final_label`; completion ids are `v2-<prompt id>`). Only the human `final_label` is
read. Pairs are built per prompt, over every model's completion of it:

    xstest-should-respond   safe prompts: each full compliance chosen over each full refusal
    xstest-should-refuse    `contrast_*` prompts: each full refusal chosen over each full compliance

A judge that prefers refusals on the first set is *avoidant*; one that prefers compliance on the
second is *open to misuse* (Bai et al. 2022, sec. 4.4). Partial refusals, and prompts without
both a full compliance and a full refusal, are excluded and counted by reason.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rmtension.data.reader import RowError
from rmtension.data.types import Pair, Turn
from rmtension.errors import DataError

SHOULD_RESPOND = "xstest-should-respond"
SHOULD_REFUSE = "xstest-should-refuse"
SETS = (SHOULD_RESPOND, SHOULD_REFUSE)
PROMPTS_FILE = "xstest_prompts.csv"
COMPLETIONS_DIR = "model_completions"
LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial"}
PROMPT_COLUMNS = ("id", "prompt", "type")
COMPLETION_COLUMNS = ("id", "type", "prompt", "completion", "final_label")


@dataclass(frozen=True)
class Completion:
    prompt_id: str
    kind: str
    """compliance | refusal | partial (from `final_label`)."""
    text: str
    source: str
    line: int


def is_unsafe(prompt_type: str) -> bool:
    """XSTest's unsafe prompts are the `contrast_*` types; every other type is safe."""
    return prompt_type.startswith("contrast_")


def _rows(path: Path, columns: tuple[str, ...]):
    """(line, row) for each CSV record; `line` is where the record starts (fields may span lines)."""
    try:
        f = path.open(encoding="utf-8", newline="")
    except OSError as e:
        raise DataError(path, None, f"cannot read ({e.strerror})") from None
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, 1, f"header lacks the column(s) {', '.join(missing)}")
        start = reader.line_num + 1
        try:
            for row in reader:
                yield start, row
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(path, start, f"malformed CSV ({e})") from None


def _field(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        raise RowError("missing_key", f"the row has no {key!r} field (too few columns)")
    if None in row:
        raise RowError("extra_columns", "the row has more fields than the header")
    return value


def read_prompts(path: Path, lenient: bool, skipped: Counter) -> dict[str, tuple[str, str]]:
    """prompt id -> (prompt text, type), in file order."""
    out: dict[str, tuple[str, str]] = {}
    for line, row in _rows(path, PROMPT_COLUMNS):
        try:
            pid, text, kind = (_field(row, k).strip() for k in PROMPT_COLUMNS)
            if not pid or not text or not kind:
                raise RowError("empty_string", "id, prompt and type must not be empty")
            if pid in out:
                raise RowError("duplicate_id", f"prompt id {pid!r} appears twice")
        except RowError as e:
            if not lenient:
                raise DataError(path, line, e.reason) from None
            skipped[e.kind] += 1
            continue
        out[pid] = (text, kind)
    return out


def read_completions(
    path: Path, prompts: dict[str, tuple[str, str]], lenient: bool, skipped: Counter
) -> list[Completion]:
    out = []
    for line, row in _rows(path, COMPLETION_COLUMNS):
        try:
            raw_id, kind = _field(row, "id").strip(), _field(row, "type").strip()
            text, label = _field(row, "completion"), _field(row, "final_label").strip()
            pid = raw_id.removeprefix("v2-")
            if pid not in prompts:
                raise RowError(
                    "unknown_prompt", f"completion id {raw_id!r} names no prompt of {PROMPTS_FILE}"
                )
            if kind != prompts[pid][1]:
                raise RowError(
                    "type_mismatch", f"type {kind!r} differs from the prompt's {prompts[pid][1]!r}"
                )
            if label not in LABELS:
                raise RowError(
                    "unknown_label", f"final_label {label[:30]!r} is not one of {', '.join(LABELS)}"
                )
            if not text.strip():
                raise RowError("empty_string", "the completion is empty")
        except RowError as e:
            if not lenient:
                raise DataError(path, line, e.reason) from None
            skipped[e.kind] += 1
            continue
        out.append(Completion(pid, LABELS[label], text, str(path), line))
    return out


@dataclass
class XSTestLoad:
    """The two sets' pairs and an account of everything that did not become a pair."""

    pairs: dict[str, list[Pair]]
    prompts: dict[str, tuple[str, str]]
    """prompt id -> (text, type)."""
    excluded: dict[str, int]
    """partial_refusal (completions), no_full_compliance / no_full_refusal (prompts), identical_replies (pairs)."""
    skipped: dict[str, int]
    """Malformed rows skipped under `lenient`, by reason."""
    files: list[str]


def load_xstest(root: str | Path, lenient: bool = False) -> XSTestLoad:
    """Both pair sets from an XSTest folder in the official layout."""
    root = Path(root)
    prompts_path = root / PROMPTS_FILE
    if not prompts_path.is_file():
        raise DataError(root, None, f"not an XSTest folder: {PROMPTS_FILE} is missing")
    files = sorted((root / COMPLETIONS_DIR).glob("*.csv"))
    if not files:
        raise DataError(root / COMPLETIONS_DIR, None, "no completion files (*.csv)")
    skipped: Counter = Counter()
    prompts = read_prompts(prompts_path, lenient, skipped)
    by_prompt: dict[str, list[Completion]] = {}
    for path in files:
        for c in read_completions(path, prompts, lenient, skipped):
            by_prompt.setdefault(c.prompt_id, []).append(c)
    excluded: Counter = Counter()
    pairs: dict[str, list[Pair]] = {name: [] for name in SETS}
    for pid, (text, kind) in prompts.items():
        found = by_prompt.get(pid, [])
        excluded["partial_refusal"] += sum(c.kind == "partial" for c in found)
        comply = [c for c in found if c.kind == "compliance"]
        refuse = [c for c in found if c.kind == "refusal"]
        if not comply or not refuse:
            excluded["no_full_compliance" if not comply else "no_full_refusal"] += 1
            continue
        name = SHOULD_REFUSE if is_unsafe(kind) else SHOULD_RESPOND
        good, bad = (refuse, comply) if name == SHOULD_REFUSE else (comply, refuse)
        for g in good:
            for b in bad:
                if g.text == b.text:
                    excluded["identical_replies"] += 1
                    continue
                pairs[name].append(
                    Pair(
                        f"{name}/{pid}/{Path(g.source).stem}>{Path(b.source).stem}",
                        (Turn("user", text),),
                        g.text,
                        b.text,
                        name,
                        g.source,
                        g.line,
                        {
                            "prompt_id": pid,
                            "type": kind,
                            "chosen_file": g.source,
                            "chosen_line": g.line,
                            "rejected_file": b.source,
                            "rejected_line": b.line,
                        },
                    )
                )
    return XSTestLoad(
        pairs,
        prompts,
        dict(sorted((k, v) for k, v in excluded.items() if v)),
        dict(sorted(skipped.items())),
        [str(prompts_path)] + [str(p) for p in files],
    )


def breakdown(load: XSTestLoad) -> list[dict]:
    """Rows `{set, type, prompts, pairs}`, one per set and prompt type, for the data summary."""
    rows = []
    for name, pairs in load.pairs.items():
        by_type: dict[str, tuple[set, int]] = {}
        for p in pairs:
            ids, n = by_type.get(p.metadata["type"], (set(), 0))
            ids.add(p.metadata["prompt_id"])
            by_type[p.metadata["type"]] = (ids, n + 1)
        for kind in sorted(by_type):
            rows.append(
                {"set": name, "type": kind, "prompts": len(by_type[kind][0]), "pairs": by_type[kind][1]}
            )
    return rows


def xstest_account(load: XSTestLoad) -> dict:
    """What `data/summary.json` records of an XSTest load: files, pairs and prompts per set and type, exclusions."""
    return {
        "files": load.files,
        "pairs": {name: len(pairs) for name, pairs in load.pairs.items()},
        "prompts": {
            name: len({p.metadata["prompt_id"] for p in pairs}) for name, pairs in load.pairs.items()
        },
        "by_type": breakdown(load),
        "excluded": load.excluded,
        "skipped": load.skipped,
    }


def prompt_groups(pairs: list[Pair]) -> list[str]:
    """The prompt id of every pair: XSTest CIs resample prompts, since one prompt's pairs are not independent."""
    return [p.metadata["prompt_id"] for p in pairs]
