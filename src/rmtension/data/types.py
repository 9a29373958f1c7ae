"""Typed preference pairs, shared by every stage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class Pair:
    """One human comparison: a shared context and two candidate final assistant replies.

    `pair_id` is stable across runs (derived from subset, file name and line), so split
    manifests written by one run can be read by another.
    """

    pair_id: str
    context: tuple[Turn, ...]
    """Every turn before the final assistant reply; the last one is a user turn."""
    chosen: str
    rejected: str
    subset: str
    """Source subset, e.g. `helpful-base`, `harmless-base`, `rmb-harmless`."""
    source: str
    """File the row came from (as given, not resolved)."""
    line: int
    """1-based line (JSONL) or element index + 1 (JSON arrays)."""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Extra fields of the row that the format does not interpret."""

    @property
    def group_key(self) -> str:
        """Hash of the first user turn: pairs with the same opening prompt share a split."""
        first = next((t.content for t in self.context if t.role == "user"), "")
        return hashlib.sha1(first.strip().encode("utf-8")).hexdigest()


HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant: "


def render_transcript(context: tuple[Turn, ...] | list[Turn], reply: str | None = None) -> str:
    """Render turns in the HH-RLHF transcript format (`\\n\\nHuman: ...\\n\\nAssistant: ...`).

    System turns are rendered as `Human:` turns' preamble would be ambiguous, so they are
    prefixed to the first human turn. This is the text every reward model in rmtension reads.
    """
    parts: list[str] = []
    system = [t.content for t in context if t.role == "system"]
    prefix = ("\n".join(system) + "\n") if system else ""
    for turn in context:
        if turn.role == "system":
            continue
        if turn.role == "user":
            parts.append(HUMAN + prefix + turn.content)
            prefix = ""
        else:
            parts.append(ASSISTANT + turn.content)
    if reply is not None:
        parts.append(ASSISTANT + reply)
    return "".join(parts)
