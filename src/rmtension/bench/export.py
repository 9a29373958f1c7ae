"""Bench judgments as training pairs: HH transcripts or TRL prompt/chosen/rejected rows.

Pure functions over `Item` and `Judgment` lists; the CLI reads them from storage and writes the file.

- `aggregate="all"`: one pair per judgment that picked a reply.
- `aggregate="majority"`: one pair per item, from the category (`stats.CHOICES`) that more of the
  item's judgments chose than any other. A tie for the most votes (e.g. 1-1 with an even k) is
  excluded as `majority_tie`; a majority for "tie" or "both bad" is excluded as `tie` / `both_bad`.
- Red-team mode: a judgment names the **more harmful** reply, so the pair's `chosen` is the *other*
  reply: every exported pair prefers the less harmful one, as Bai et al.'s harmlessness data does.
  In helpful mode the picked (more helpful) reply is `chosen`. `bench.picked_reply` and
  `bench.chosen_reply` (canonical reply numbers) show the flip in the file itself.
- TRL rows carry `margin` = mean strength of the judgments behind the pair / 3 (slightly 1/3,
  clearly 2/3, much better 1): Llama 2's "small" margins (Touvron et al. 2023, Table 28), read by
  TRL's `RewardTrainer` as `-logsigmoid(r_c - r_r - margin)`.
- HH rows are `{"chosen": transcript, "rejected": transcript}` in `\\n\\nHuman: ...\\n\\nAssistant: ...`
  form, as `data.format: hh` reads them. HH has no system role: system turns are folded into the
  first Human turn (`rmtension.data.types.render_transcript`, the text every reward model here
  reads anyway). A reply the HH format cannot hold (one containing a `\\n\\nAssistant:` marker)
  is excluded as `hh_markers_in_text`; TRL's message lists hold any text.
- Metadata under `bench`: item, task, mode, guideline versions, and per judgment the reviewer, the
  choice, the strength and which side of the pair (`chosen` / `rejected`) the page showed on the
  left. Notes are not exported (free text that may hold personal data).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rmtension.bench.records import Item, Judgment
from rmtension.bench.stats import CHOICES, by_item, choice
from rmtension.data.hh import pair_from_transcripts
from rmtension.data.reader import RowError
from rmtension.data.types import Turn, render_transcript

ExportFormat = Literal["hh", "trl"]
Aggregate = Literal["majority", "all"]
MAX_STRENGTH = 3
REDACTED = "[REDACTED]"
PERSONAL_DATA_WARNING = (
    "warning: this export holds reviewers' names and conversation text, which may include personal "
    "or health data; store it like the bench database, keep it no longer than the study needs "
    "(delete reviewers' or conversations' records with `rmtension bench delete`), and use --redact "
    "to mask the task's redaction patterns"
)


@dataclass
class ExportSummary:
    aggregate: str
    judgments: int
    items: int
    pairs: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    """Units left out, by reason: judgments with `all`, items with `majority`."""
    unjudged_items: int = 0

    def line(self) -> str:
        unit = "items" if self.aggregate == "majority" else "judgments"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())) or "none"
        return (
            f"exported {self.pairs} pairs (aggregate={self.aggregate}) from {self.judgments} judgments on "
            f"{self.items} items; excluded {unit}: {reasons}; items without judgments: {self.unjudged_items}"
        )


def compile_patterns(patterns: Sequence[str]) -> list[re.Pattern]:
    """The task's `redact` regexes, compiled; a bad one raises ValueError naming it."""
    out = []
    for i, p in enumerate(patterns):
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"redact[{i}] {p!r} is not a valid regular expression ({e})") from None
    return out


def redact_text(text: str, patterns: Sequence[re.Pattern]) -> str:
    for p in patterns:
        text = p.sub(REDACTED, text)
    return text


def redact_item(item: Item, patterns: Sequence[re.Pattern]) -> Item:
    """The item with every pattern match in its turns and replies replaced by `REDACTED`."""
    if not patterns:
        return item
    conversation = tuple(type(t)(t.role, redact_text(t.content, patterns)) for t in item.conversation)
    return Item(
        item.item_id,
        item.task,
        conversation,
        redact_text(item.reply_0, patterns),
        redact_text(item.reply_1, patterns),
        item.source_0,
        item.source_1,
    )


def winning_choice(judgments: Sequence[Judgment]) -> str | None:
    """The category more judgments chose than any other; None on a tie for the most."""
    ranked = Counter(choice(j) for j in judgments).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def pair_orientation(picked: int, mode: str) -> int:
    """The canonical reply that becomes `chosen`: the pick in helpful mode, the other one in red-team
    mode (the pick there is the more harmful reply; the pair prefers the less harmful)."""
    return picked if mode == "helpful" else 1 - picked


def judgment_meta(j: Judgment, chosen_reply: int) -> dict[str, Any]:
    return {
        "reviewer": j.reviewer,
        "choice": choice(j),
        "strength": j.strength,
        "left": "chosen" if j.left == chosen_reply else "rejected",
        "guideline_version": j.guideline_version,
    }


def build_row(
    item: Item,
    picked: int,
    support: Sequence[Judgment],
    everyone: Sequence[Judgment],
    fmt: ExportFormat,
    agg: str,
) -> dict[str, Any] | None:
    """One exported row; None when the HH format cannot hold the replies. `support`: the judgments
    behind the pick (their strengths make the margin); `everyone`: all of the item's judgments."""
    mode = everyone[0].mode
    chosen_reply = pair_orientation(picked, mode)
    replies = (item.reply_0, item.reply_1)
    chosen, rejected = replies[chosen_reply], replies[1 - chosen_reply]
    context = tuple(Turn(t.role, t.content) for t in item.conversation)
    meta = {
        "item_id": item.item_id,
        "task": item.task,
        "mode": mode,
        "aggregate": agg,
        "picked_reply": picked,
        "chosen_reply": chosen_reply,
        "guideline_versions": sorted({j.guideline_version for j in everyone}),
        "judgments": [judgment_meta(j, chosen_reply) for j in everyone],
    }
    if fmt == "hh":
        row = {"chosen": render_transcript(context, chosen), "rejected": render_transcript(context, rejected)}
        if not hh_round_trips(row, chosen, rejected):
            return None
        return row | {"bench": meta}
    margin = sum(j.strength for j in support) / (len(support) * MAX_STRENGTH)
    return {
        "prompt": [{"role": t.role, "content": t.content} for t in context],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "margin": margin,
        "bench": meta,
    }


def hh_round_trips(row: dict[str, str], chosen: str, rejected: str) -> bool:
    """Whether `data.format: hh` reads the two replies back unchanged."""
    try:
        parsed = pair_from_transcripts(row["chosen"], row["rejected"])
    except RowError:
        return False
    return (parsed.chosen, parsed.rejected) == (
        chosen,
        rejected,
    ) and parsed.rejected_context == parsed.context


def export_pairs(
    items: Iterable[Item],
    judgments: Iterable[Judgment],
    *,
    fmt: ExportFormat = "hh",
    aggregate: Aggregate = "majority",
    redact: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], ExportSummary]:
    """(rows, summary) for the judged items, in item order; see the module docstring for the rules."""
    patterns = compile_patterns(redact)
    judged = by_item(judgments)
    item_list = [redact_item(i, patterns) for i in items]
    known = {i.item_id for i in item_list}
    summary = ExportSummary(aggregate, sum(map(len, judged.values())), len(item_list))
    excluded: Counter = Counter()
    orphans = [j for i, js in judged.items() if i not in known for j in js]
    if orphans:  # judgments of an item not given: counted, never silently dropped
        excluded["missing_item"] += len(orphans) if aggregate == "all" else len({j.item_id for j in orphans})
    rows: list[dict[str, Any]] = []
    for item in item_list:
        js = judged.get(item.item_id, [])
        if not js:
            summary.unjudged_items += 1
            continue
        if aggregate == "all":
            groups = [(choice(j), [j]) for j in js]
        else:
            win = winning_choice(js)
            groups = [(win or "majority_tie", [j for j in js if choice(j) == win])]
        for category, support in groups:
            if category not in CHOICES[:2]:
                excluded[category] += 1
                continue
            if item.reply_0 == item.reply_1:
                excluded["identical_replies"] += 1
                continue
            row = build_row(
                item,
                CHOICES.index(category),
                support,
                js if aggregate == "majority" else support,
                fmt,
                aggregate,
            )
            if row is None:
                excluded["hh_markers_in_text"] += 1
                continue
            rows.append(row)
    summary.pairs, summary.excluded = len(rows), dict(excluded)
    return rows, summary


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """One JSON object per line, UTF-8, written to a temporary file and renamed (no half-written export)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
