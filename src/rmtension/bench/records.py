"""Typed records shared by the bench's storage, statistics and export.

A judgment is stored in canonical reply order: every item has `reply_0` and `reply_1`, and
`left` says which of them the page showed on the left (randomised per item, so position bias
can be measured and undone). `preferred` names the reply the reviewer picked *for the task's
question*: the more helpful reply in `helpful` mode, the more **harmful** one in `red_team` mode.
The export flips red-team picks so that every training pair prefers the less harmful reply,
as Bai et al.'s harmlessness data does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["helpful", "red_team"]
STRENGTHS = {1: "slightly better", 2: "clearly better", 3: "much better"}
"""The symmetric strength scale: a pick of reply 1 at strength s is +s, of reply 0 is -s, a tie 0."""


@dataclass(frozen=True)
class Turn:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Item:
    """One comparison shown to reviewers: a conversation ending in a user turn, two replies."""

    item_id: str
    task: str
    conversation: tuple[Turn, ...]
    reply_0: str
    reply_1: str
    source_0: dict = field(default_factory=dict)
    """Model and sampling settings that produced reply_0 (model path, temperature, top_p, seed, ...)."""
    source_1: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Judgment:
    item_id: str
    task: str
    mode: Mode
    reviewer: str
    guideline_version: str
    left: Literal[0, 1]
    """Which reply (0 or 1) the page showed on the left."""
    preferred: Literal[0, 1] | None
    """The reply picked for the task's question; None for a tie or "both bad"."""
    both_bad: bool
    """The absolute flag beside the relative choice: neither reply is acceptable."""
    strength: Literal[0, 1, 2, 3]
    """0 for a tie or both bad, else 1..3 (STRENGTHS)."""
    seconds: float
    """Time the reviewer spent on the item."""
    note: str = ""
    judgment_id: str = ""

    @property
    def signed_strength(self) -> int:
        """+strength when reply_1 is preferred, -strength when reply_0 is, 0 otherwise."""
        if self.preferred is None:
            return 0
        return self.strength if self.preferred == 1 else -self.strength

    @property
    def picked_left(self) -> bool | None:
        """Whether the pick was the reply shown on the left (None for ties and both bad)."""
        return None if self.preferred is None else self.preferred == self.left
