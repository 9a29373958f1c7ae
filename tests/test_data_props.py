"""Property tests: transcripts round-trip, and no input makes a loader raise anything but DataError."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmtension.data import Turn, get_format, load_file, parse_transcript, render_transcript
from rmtension.data.formats import LoadResult
from rmtension.errors import DataError

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MARKERS = ("\n\nHuman:", "\n\nAssistant:")

# Message text, biased towards the characters that matter to the parser: newlines, colons, role names.
pieces = st.sampled_from(
    ["\n", "\n\n", " ", ":", "Human", "Assistant", "Human: ", "x", "é", "\r", "\t", "{", '"']
)
content = (
    st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=8)
    .map("".join)
    .filter(lambda s: not any(m in s for m in MARKERS))
)


@st.composite
def conversations(draw, end_with_user: bool = False) -> tuple[Turn, ...]:
    """Turns that open with a user turn, never have two user turns in a row, and hold an assistant turn."""
    turns = [Turn("user", draw(content))]
    for _ in range(draw(st.integers(0, 5))):
        role = "assistant" if turns[-1].role == "user" else draw(st.sampled_from(["user", "assistant"]))
        turns.append(Turn(role, draw(content)))
    if end_with_user:
        if turns[-1].role == "user":
            return tuple(turns)
        return tuple(turns) + (Turn("user", draw(content)),)
    if not any(t.role == "assistant" for t in turns):
        turns.append(Turn("assistant", draw(content)))
    return tuple(turns)


@SETTINGS
@given(conversations())
def test_render_then_parse_is_identity(turns):
    assert parse_transcript(render_transcript(turns)) == turns


@SETTINGS
@given(conversations(end_with_user=True), content, content)
def test_hh_pair_round_trip(context, chosen, rejected):
    row = {"chosen": render_transcript(context, chosen), "rejected": render_transcript(context, rejected)}
    parsed = get_format("hh").parse_row(row)
    assert (parsed.context, parsed.chosen, parsed.rejected) == (context, chosen, rejected)


# --- fuzzing the three formats -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10) | content,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Transcripts: mostly well-formed (so pairs do come out), some spliced from random markers and text.
valid_transcripts = st.builds(render_transcript, conversations(end_with_user=True), content)
transcripts = st.one_of(
    valid_transcripts,
    st.lists(
        st.one_of(st.sampled_from(["\n\nHuman: ", "\n\nAssistant: ", "Human: "]), content), max_size=6
    ).map("".join),
)
roles = st.sampled_from(["user", "assistant", "system", "robot"])
message = st.one_of(
    st.fixed_dictionaries({"role": roles, "content": content}),
    st.fixed_dictionaries({"role": roles, "content": json_values}),
    json_values,
)
messages = st.one_of(
    st.lists(message, max_size=4),
    json_values,
    conversations().map(lambda ts: [{"role": t.role, "content": t.content} for t in ts]),
)
reply = st.one_of(content, st.builds(lambda c: [{"role": "assistant", "content": c}], content), messages)
answer = st.one_of(st.fixed_dictionaries({"answer": content, "llm_name": st.text(max_size=4)}), json_values)


def with_noise(core: st.SearchStrategy) -> st.SearchStrategy:
    """A row of the format, sometimes with an extra key or (one time in four) a key removed."""

    def mutate(row, extra, drop):
        row = dict(row)
        if drop < len(row):
            row.pop(sorted(row)[drop])
        return row | extra

    return st.builds(
        mutate,
        core,
        st.dictionaries(st.sampled_from(["extra", "id"]), json_values, max_size=1),
        st.integers(0, 11),
    )


def as_messages(turns) -> list[dict]:
    return [{"role": t.role, "content": t.content} for t in turns]


prompts = conversations(end_with_user=True)
hh_pair = st.builds(
    lambda ctx, a, b: {"chosen": render_transcript(ctx, a), "rejected": render_transcript(ctx, b)},
    prompts,
    content,
    content,
)
trl_pair = st.builds(
    lambda ctx, a, b: {
        "prompt": as_messages(ctx),
        "chosen": [{"role": "assistant", "content": a}],
        "rejected": [{"role": "assistant", "content": b}],
    },
    prompts,
    content,
    content,
)
rmb_pair = st.builds(
    lambda ctx, a, b: {
        "conversation_input": as_messages(ctx),
        "chosen": {"answer": a},
        "reject": {"answer": b},
    },
    prompts,
    content,
    content,
)
ROWS = {
    "hh": with_noise(
        st.one_of(hh_pair, st.fixed_dictionaries({"chosen": transcripts, "rejected": transcripts}))
    ),
    "jsonl": with_noise(
        st.one_of(
            hh_pair,
            trl_pair,
            st.fixed_dictionaries(
                {"prompt": st.one_of(content, transcripts, messages), "chosen": reply, "rejected": reply}
            ),
            st.fixed_dictionaries(
                {"chosen": st.one_of(transcripts, messages), "rejected": st.one_of(transcripts, messages)}
            ),
        )
    ),
    "rmb": with_noise(
        st.one_of(
            rmb_pair,
            st.fixed_dictionaries(
                {
                    "pair_uid": st.text(max_size=3),
                    "conversation_input": messages,
                    "chosen": answer,
                    "reject": answer,
                }
            ),
        )
    ),
}


def _load(path: Path, fmt: str, lenient: bool) -> LoadResult | None:
    """LoadResult, or None for a DataError; any other exception fails the test."""
    try:
        return load_file(path, fmt=fmt, subset="fuzz", lenient=lenient)
    except DataError as e:
        assert "\n" not in str(e)
        return None


@pytest.mark.parametrize("fmt", ["hh", "jsonl", "rmb"])
@SETTINGS
@given(data=st.data())
def test_any_rows_give_pairs_or_a_data_error(tmp_path, fmt, data):
    """Strict: pairs or one DataError. Lenient: never an error, and every row is accounted for."""
    batch = data.draw(st.lists(st.one_of(ROWS[fmt], json_values), min_size=1, max_size=4))
    if fmt == "rmb":
        path = tmp_path / "fuzz.json"
        path.write_text(json.dumps(batch), encoding="utf-8")
    else:
        path = tmp_path / "fuzz.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in batch), encoding="utf-8")
    _load(path, fmt, lenient=False)
    r = _load(path, fmt, lenient=True)
    assert r is not None
    assert len(r.pairs) + sum(r.drops.values()) + sum(r.skipped.values()) == len(batch)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json"])
@SETTINGS
@given(data=st.binary(max_size=200))
def test_any_bytes_give_pairs_or_a_data_error(tmp_path, suffix, data):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(gzip.compress(data)[: len(data) + 10] if suffix.endswith(".gz") else data)
    _load(path, "hh", lenient=False)
    assert _load(path, "hh", lenient=True) is not None
