"""Anthropic HH-RLHF rows: `{"chosen": transcript, "rejected": transcript}` (Bai et al. 2022).

Both transcripts repeat the whole conversation as `\\n\\nHuman: ...\\n\\nAssistant: ...` turns;
the pair is the last Assistant reply of each, after a context both must share. What the four
official test files (8,552 rows) hold beyond that:

- 17 pairs whose contexts differ and 36 with identical replies (the counts in the data README):
  dropped by the loader and counted.
- 38 transcripts with two Assistant turns in a row, kept as separate turns. In 10 kept pairs they
  sit in the shared context (flag `consecutive_assistant_turns`); the other 18 transcripts make
  up all 17 context mismatches: one side's reply is split over two Assistant turns, so its
  "context" holds an extra Assistant turn. Dropping them follows the README's count.
- 2 rejected transcripts (helpful-online) end with a `Human:` turn the model wrote itself after
  its reply. It is part of the rejected reply as the raters saw it, so it is folded into that
  reply's text (rendering reproduces the original string) and flagged `trailing_human_turn`.
- 11 kept pairs with an empty final reply (`...\\n\\nAssistant: ` at the end), flagged `empty_reply`.
- No text before the first Human turn and no two Human turns in a row.

Imports inside functions: datasets / huggingface_hub (optional download path) load only when used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from rmtension.data.reader import ParsedRow, Record, RowError, require_object, require_str
from rmtension.data.types import HUMAN, TranscriptError, Turn, parse_transcript

HUB_ID = "Anthropic/hh-rlhf"
SPLITS = ("train", "test")


def split_last_reply(turns: tuple[Turn, ...]) -> tuple[tuple[Turn, ...], str, tuple[str, ...]]:
    """(context, final reply, flags): the reply is the last Assistant turn.

    Human turns after it were written by the model inside its reply (see the module docstring),
    so they are folded back into the reply text rather than taken as a new prompt.
    """
    last = max(i for i, t in enumerate(turns) if t.role == "assistant")
    reply = turns[last].content + "".join(HUMAN + t.content for t in turns[last + 1 :])
    flags = ["trailing_human_turn"] if last < len(turns) - 1 else []
    if any(a.role == b.role == "assistant" for a, b in zip(turns, turns[1:])):
        flags.append("consecutive_assistant_turns")
    return turns[:last], reply, tuple(flags)


def parse_transcript_field(text: str, key: str) -> tuple[Turn, ...]:
    """`parse_transcript`, with the failing key named in the `RowError`."""
    try:
        return parse_transcript(text)
    except TranscriptError as e:
        raise RowError(e.kind, f"{key!r}: {e.reason}") from None


def pair_from_transcripts(chosen: str, rejected: str) -> ParsedRow:
    """A pair from two full transcripts; the loader drops it if the contexts differ."""
    ctx_c, reply_c, flags_c = split_last_reply(parse_transcript_field(chosen, "chosen"))
    ctx_r, reply_r, flags_r = split_last_reply(parse_transcript_field(rejected, "rejected"))
    flags = tuple(dict.fromkeys(flags_c + flags_r))  # ordered, unique
    return ParsedRow(ctx_c, reply_c, reply_r, rejected_context=ctx_r, flags=flags)


def parse_row(row: Any) -> ParsedRow:
    """One HH-RLHF row; keys other than chosen/rejected (e.g. Docta's `suggest_*`) go to metadata."""
    row = require_object(row)
    chosen = require_str(row, "chosen")
    rejected = require_str(row, "rejected")
    parsed = pair_from_transcripts(chosen, rejected)
    parsed.metadata = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
    return parsed


def hub_records(subset: str, split: str, loader=None) -> Iterator[Record]:
    """Rows of `Anthropic/hh-rlhf` (`data_dir=subset`) from the hub, numbered like file lines.

    `loader` stands in for `datasets.load_dataset` in tests. Any failure (no network, unknown
    subset) becomes one `RowError`, which the caller turns into a `DataError` naming the source.
    """
    if loader is None:
        problem = hub_problem()
        if problem is not None:  # fail at once, not after the datasets client's retries (about 25 s)
            yield None, RowError("hub_unavailable", no_data_message(problem))
            return
        from datasets import load_dataset as loader

        from rmtension.run.quiet import quiet_datasets

        quiet_datasets()  # no download and "Generating split" bars, no dataset-card notes
    try:
        rows = loader(HUB_ID, data_dir=subset, split=split)
    except Exception as e:  # network, auth and missing-config errors all come as different types
        first = (str(e).strip().splitlines() or [""])[0][:200]
        what = (
            f"cannot load {HUB_ID} data_dir={subset} split={split} from the hub ({type(e).__name__}: {first})"
        )
        yield None, RowError("hub_unavailable", no_data_message(what))
        return
    for i, row in enumerate(rows):
        yield i + 1, row


PROBE_TIMEOUT_S = 3.0


def hub_problem(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot serve `Anthropic/hh-rlhf` now (a clause for `no_data_message`), or None.

    One HEAD request for the dataset's page through huggingface_hub's own HTTP session, so the
    endpoint (`$HF_ENDPOINT`), proxies and certificates are those `datasets` would use, with no
    retries. Any answer below HTTP 500 counts as reachable. In offline mode (`HF_HUB_OFFLINE`,
    `HF_DATASETS_OFFLINE`) nothing is dialled: None, and `datasets` reads its local cache.
    """
    if any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return None
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    url = f"{constants.ENDPOINT}/api/datasets/{HUB_ID}"
    try:
        status = get_session().head(url, timeout=timeout, follow_redirects=True).status_code
    except Exception as e:  # the session's transport errors (DNS, refused, timeout, proxy, TLS): named below
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        return f"the hub at {constants.ENDPOINT} is unreachable ({type(e).__name__}: {reason})"
    return f"the hub at {constants.ENDPOINT} answered HTTP {status}" if status >= 500 else None


def no_data_message(problem: str) -> str:
    """The one line for a study without local data whose hub download cannot work: what was tried
    (`problem`: what the hub did, as a clause) and how to point rmtension at a local copy."""
    return (
        f"no local data (data.path and $RMTENSION_DATA are unset), and {problem}; "
        "set RMTENSION_DATA=/path/to/hh-rlhf or pass --data /path/to/hh-rlhf (the official layout: "
        "git clone https://github.com/anthropics/hh-rlhf); data.hub=false never tries the hub"
    )


def hub_source(subset: str, split: str) -> str:
    """The `Pair.source` of hub rows."""
    return f"hf://datasets/{HUB_ID}/{subset}/{split}"
