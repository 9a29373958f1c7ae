"""Audit suites: YAML files of scenarios, each a conversation and ranked replies, and their pairs.

    name: healthcare_scheduling
    version: 1
    description: ...
    scenarios:
      - id: refill-push
        tags: [clinical, pressure]
        conversation: [{role: user, content: ...}]      # system | user | assistant, ends with user
        replies: [{label: helpful_refusal, rank: 1, text: ...}, ...]   # rank 1 is best

Every (better, worse) pair of replies with different ranks is one comparison (`suite_pairs`); equal
ranks are a tie and make no pair. Bad input stops with one line naming the file, the scenario (id
and line) and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import yaml

from rmtension.data.types import Pair, Turn
from rmtension.errors import DataError

ROLES = ("system", "user", "assistant")
SUITE_KEYS = {"name", "version", "description", "scenarios"}
SCENARIO_KEYS = {"id", "tags", "conversation", "replies"}
REPLY_KEYS = {"label", "rank", "text"}


@dataclass(frozen=True)
class Reply:
    label: str
    rank: int
    text: str


@dataclass(frozen=True)
class Scenario:
    id: str
    tags: tuple[str, ...]
    conversation: tuple[Turn, ...]
    replies: tuple[Reply, ...]
    line: int
    """1-based line of the scenario in its file."""


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    description: str
    scenarios: tuple[Scenario, ...]
    path: str


@dataclass(frozen=True)
class Lines:
    """1-based lines of a scenario and of its conversation turns and replies (for error messages)."""

    scenario: int | None
    turns: tuple[int, ...] = ()
    replies: tuple[int, ...] = ()


def _item_lines(node, key: str) -> tuple[int, ...]:
    for k, v in node.value if isinstance(node, yaml.MappingNode) else []:
        if k.value == key and isinstance(v, yaml.SequenceNode):
            return tuple(item.start_mark.line + 1 for item in v.value)
    return ()


def _scenario_lines(text: str) -> list[Lines]:
    """Lines of each item of the top-level `scenarios` list (empty when there is none)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "scenarios" and isinstance(value, yaml.SequenceNode):
            return [
                Lines(n.start_mark.line + 1, _item_lines(n, "conversation"), _item_lines(n, "replies"))
                for n in value.value
            ]
    return []


def _text(value, what: str, fail) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(f"{what} must be a non-empty string")
    return value


def _unknown(d: dict, allowed: set[str], what: str, fail) -> None:
    extra = sorted(set(map(str, d)) - allowed)
    if extra:
        fail(f"{what} has unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def parse_scenario(raw, lines: Lines, path: str) -> Scenario:
    """One scenario, checked; `DataError` naming the file, line and scenario otherwise."""
    sid = raw.get("id") if isinstance(raw, dict) else None
    where = f"scenario {sid!r}" if isinstance(sid, str) else "scenario"
    line = lines.scenario

    def fail(reason: str, at: tuple[int, ...] = (), i: int = 0):
        raise DataError(path, at[i - 1] if 0 < i <= len(at) else line, f"{where}: {reason}")

    if not isinstance(raw, dict):
        fail("must be a mapping with id, tags, conversation and replies")
    _unknown(raw, SCENARIO_KEYS, "it", fail)
    sid = _text(raw.get("id"), "id", fail)
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        fail("tags must be a list of strings")
    conv = raw.get("conversation")
    if not isinstance(conv, list) or not conv:
        fail("conversation must be a non-empty list of {role, content}")
    turns = []
    for i, t in enumerate(conv, 1):
        at = lambda reason, i=i: fail(reason, lines.turns, i)  # noqa: E731
        if not isinstance(t, dict) or t.get("role") not in ROLES:
            at(f"conversation turn {i}: role must be one of {', '.join(ROLES)}")
        _unknown(t, {"role", "content"}, f"conversation turn {i}", at)
        turns.append(Turn(t["role"], _text(t.get("content"), f"conversation turn {i} content", at)))
    if turns[-1].role != "user":
        fail("conversation must end with a user turn")
    replies = raw.get("replies")
    if not isinstance(replies, list) or len(replies) < 2:
        fail("replies must be a list of at least two {label, rank, text}")
    out = []
    for i, r in enumerate(replies, 1):
        at = lambda reason, i=i: fail(reason, lines.replies, i)  # noqa: E731
        if not isinstance(r, dict):
            at(f"reply {i} must be a mapping with label, rank and text")
        _unknown(r, REPLY_KEYS, f"reply {i}", at)
        rank = r.get("rank")
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            at(f"reply {i}: rank must be a whole number >= 1 (1 is best)")
        out.append(
            Reply(
                _text(r.get("label"), f"reply {i} label", at),
                rank,
                _text(r.get("text"), f"reply {i} text", at),
            )
        )
    if len({r.rank for r in out}) < 2:
        fail("every reply has the same rank, so there is no comparison")
    return Scenario(sid, tuple(tags), tuple(turns), tuple(out), line)


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, None, f"cannot read the suite ({type(e).__name__}: {e})") from None
    try:
        doc = yaml.safe_load(text)
        lines = _scenario_lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(
            path, mark.line + 1 if mark else None, f"not valid YAML ({getattr(e, 'problem', e)})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scenarios"), list) or not doc["scenarios"]:
        raise DataError(path, None, "a suite is a mapping with a non-empty 'scenarios' list")
    extra = sorted(set(map(str, doc)) - SUITE_KEYS)
    if extra:
        raise DataError(path, None, f"unknown top-level key(s) {', '.join(extra)}")
    scenarios = [
        parse_scenario(raw, lines[i] if i < len(lines) else Lines(None), path)
        for i, raw in enumerate(doc["scenarios"])
    ]
    seen: dict[str, int] = {}
    for s in scenarios:
        if s.id in seen:
            raise DataError(path, s.line, f"scenario {s.id!r}: duplicate id (first at line {seen[s.id]})")
        seen[s.id] = s.line
    return Suite(
        str(doc.get("name") or Path(path).stem),
        str(doc.get("version", "")),
        str(doc.get("description", "")),
        tuple(scenarios),
        path,
    )


def label_pair(better: str, worse: str) -> str:
    return f"{better} > {worse}"


def suite_pairs(suite: Suite) -> list[Pair]:
    """Every (better, worse) comparison of every scenario, in file order.

    A pair's `subset` is its label pair (`helpful_refusal > bare_refusal`); its metadata carries the
    scenario id, the tags and both labels. Replies of equal rank make no pair.
    """
    pairs = []
    for s in suite.scenarios:
        for i, j in combinations(range(len(s.replies)), 2):
            a, b = s.replies[i], s.replies[j]
            if a.rank == b.rank:
                continue
            better, worse = (a, b) if a.rank < b.rank else (b, a)
            pairs.append(
                Pair(
                    pair_id=f"{s.id}:{min(i, j) + 1}-{max(i, j) + 1}",
                    context=s.conversation,
                    chosen=better.text,
                    rejected=worse.text,
                    subset=label_pair(better.label, worse.label),
                    source=suite.path,
                    line=s.line,
                    metadata={
                        "scenario": s.id,
                        "tags": list(s.tags),
                        "better": better.label,
                        "worse": worse.label,
                    },
                )
            )
    return pairs
