"""Generic preference rows in TRL's dataset formats, one JSON object per line.

Accepted row shapes (other keys go to `Pair.metadata`):

- standard, explicit prompt: `{"prompt": str, "chosen": str, "rejected": str}`. A prompt with
  HH markers (`\\n\\nHuman: ...\\n\\nAssistant:`) is read as a transcript, anything else as one
  user message.
- standard, implicit prompt: `{"chosen": str, "rejected": str}`: two full HH transcripts.
- conversational, explicit prompt: `{"prompt": [{role, content}, ...], "chosen": [{"role":
  "assistant", ...}], "rejected": [...]}`, each completion exactly one assistant message.
- conversational, implicit prompt: `chosen` and `rejected` are full conversations ending in an
  assistant message; everything before it is the context, which both must share.
"""

from __future__ import annotations

import re
from typing import Any

from rmtension.data.hh import pair_from_transcripts, parse_transcript_field
from rmtension.data.reader import ParsedRow, RowError, json_type, require_key, require_object, require_str
from rmtension.data.rmb import parse_messages
from rmtension.data.types import Turn

FIELDS = ("prompt", "chosen", "rejected")
# An HH-style prompt ends with an open `Assistant:` turn for the completion to fill (as in the
# DPO paper's HH preprocessing); that empty turn is not part of the context.
_OPEN_ASSISTANT = re.compile(r"\n\nAssistant: ?$")
_HH_MARKER = re.compile(r"(?:\A|\n\n)(?:Human|Assistant):")


def parse_row(row: Any) -> ParsedRow:
    """One row in any of the four shapes above."""
    row = require_object(row)
    chosen, rejected = require_key(row, "chosen"), require_key(row, "rejected")
    if type(chosen) is not type(rejected) or not isinstance(chosen, (str, list)):
        raise RowError(
            "wrong_type",
            f"'chosen' and 'rejected' must both be strings or both be message arrays, "
            f"got {json_type(chosen)} and {json_type(rejected)}",
        )
    if "prompt" not in row:
        parsed = _implicit_strings(row) if isinstance(chosen, str) else _implicit_messages(chosen, rejected)
    elif isinstance(chosen, str):
        parsed = _explicit_strings(row)
    else:
        parsed = _explicit_messages(row["prompt"], chosen, rejected)
    parsed.metadata = {k: v for k, v in row.items() if k not in FIELDS}
    return parsed


def _implicit_strings(row: dict[str, Any]) -> ParsedRow:
    return pair_from_transcripts(require_str(row, "chosen"), require_str(row, "rejected"))


def _explicit_strings(row: dict[str, Any]) -> ParsedRow:
    prompt = require_str(row, "prompt")
    chosen, rejected = require_str(row, "chosen"), require_str(row, "rejected")
    if not _HH_MARKER.search(prompt):
        return ParsedRow((Turn("user", prompt),), chosen, rejected)
    open_turn = _OPEN_ASSISTANT.search(prompt)
    if open_turn:
        prompt = prompt[: open_turn.start()]
        # `Assistant:` without its space: the completion carries the space that separates them.
        if not open_turn.group().endswith(" "):
            chosen, rejected = _drop_space(chosen), _drop_space(rejected)
    # A placeholder reply makes the prompt a full transcript (a prompt alone has no Assistant turn).
    turns = parse_transcript_field(prompt + "\n\nAssistant: ", "prompt")[:-1]
    return ParsedRow(turns, chosen, rejected)


def _drop_space(text: str) -> str:
    return text[1:] if text.startswith(" ") else text


def _explicit_messages(prompt: Any, chosen: list, rejected: list) -> ParsedRow:
    if not isinstance(prompt, list):
        raise RowError(
            "wrong_type",
            f"'prompt' must be a message array when chosen/rejected are, got {json_type(prompt)}",
        )
    context = parse_messages(prompt, "prompt")
    return ParsedRow(context, _one_reply(chosen, "chosen"), _one_reply(rejected, "rejected"))


def _one_reply(messages: list, key: str) -> str:
    turns = parse_messages(messages, key)
    if len(turns) != 1 or turns[0].role != "assistant":
        roles = ", ".join(t.role for t in turns)
        raise RowError("turn_order", f"{key!r} must hold exactly one assistant message, got [{roles}]")
    return turns[0].content


def _implicit_messages(chosen: list, rejected: list) -> ParsedRow:
    turns_c, turns_r = parse_messages(chosen, "chosen"), parse_messages(rejected, "rejected")
    for key, turns in (("chosen", turns_c), ("rejected", turns_r)):
        if turns[-1].role != "assistant" or len(turns) < 2:
            raise RowError("turn_order", f"{key!r} must be a conversation ending in an assistant message")
    return ParsedRow(turns_c[:-1], turns_c[-1].content, turns_r[-1].content, rejected_context=turns_r[:-1])
