"""Typed preference pairs, shared by every stage."""

from __future__ import annotations

import hashlib
import re
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
    """Every turn before the final assistant reply; usually ends with a user turn (HH-RLHF has a
    few transcripts with two assistant turns in a row, kept as they are)."""
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


class TranscriptError(ValueError):
    """A transcript whose turns cannot be read. `kind` is a short counter key, `reason` the message."""

    def __init__(self, kind: str, reason: str):
        self.kind, self.reason = kind, reason
        super().__init__(reason)


# A role marker opens the text or follows a blank line; one space after the colon belongs to the
# marker (as `render_transcript` writes it), anything more belongs to the message.
_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant): ?")
_ROLES: dict[str, Role] = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> tuple[Turn, ...]:
    """Split an HH-RLHF transcript into turns; the inverse of `render_transcript` (without system turns).

    Raises `TranscriptError` for text before the first `Human:` turn, a transcript that opens with
    an `Assistant:` turn, two `Human:` turns in a row, or no `Assistant:` turn. Two `Assistant:`
    turns in a row are accepted: the official HH-RLHF files contain them.
    """
    parts = _MARKER.split(text)  # [before, role1, content1, role2, content2, ...]
    before = parts[0]
    if before.strip():
        raise TranscriptError(
            "text_before_first_human", f"text before the first Human turn: {_snippet(before)}"
        )
    turns = tuple(Turn(_ROLES[parts[i]], parts[i + 1]) for i in range(1, len(parts), 2))
    if not turns:
        raise TranscriptError("no_turns", "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    if turns[0].role != "user":
        raise TranscriptError(
            "starts_with_assistant", "the transcript opens with an Assistant turn, not a Human turn"
        )
    for i in range(1, len(turns)):
        if turns[i].role == "user" and turns[i - 1].role == "user":
            raise TranscriptError(
                "consecutive_human_turns", f"two Human turns in a row (turns {i} and {i + 1})"
            )
    if not any(t.role == "assistant" for t in turns):
        raise TranscriptError("no_assistant_turn", "no Assistant turn")
    return turns


def _snippet(text: str, width: int = 40) -> str:
    """A short one-line repr of untrusted text for error messages."""
    return repr(text[:width] + ("..." if len(text) > width else ""))
