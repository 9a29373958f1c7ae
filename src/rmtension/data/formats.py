"""The format registry (keyed by `DataConfig.format`) and the loader every format shares.

A format is a row parser plus a way to find files. The loader applies the same rules to all:
a malformed row stops the load with a `DataError` naming file, line and reason (or, with
`lenient`, is skipped and counted by reason); a readable pair that cannot be used for training
is dropped and counted (`context_mismatch`, `identical_replies`, `duplicate`). Nothing is lost
without a count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rmtension.data import hh, jsonl, rmb, xstest
from rmtension.data.reader import ParsedRow, Record, RowError, is_json_array, iter_records
from rmtension.data.types import Pair
from rmtension.errors import DataError

MAX_MESSAGE_CHARS = 1_000_000
"""Default limit on one message: HH messages stay under 20k characters; a megabyte is a broken row."""
SPLITS = ("train", "test")
# Official test rows are read first, so a pair that is also in train is dropped from train:
# the official test set stays whole and no duplicate leaks from train into it.
READ_ORDER = ("test", "train")
FATAL = {"hub_unavailable"}
"""Row-error kinds that stop even a lenient load: skipping them would leave no data at all."""


@dataclass(frozen=True)
class Format:
    """One entry of the registry."""

    name: str
    parse_row: Callable[[Any], ParsedRow] | None
    """Decoded JSON value -> `ParsedRow`; raises `RowError` for a malformed row. None for `xstest`,
    whose pairs are built across rows (`rmtension.data.xstest`)."""
    layout: Literal["splits", "rmb", "xstest"]
    """`splits`: `<root>/<subset>/{train,test}.jsonl[.gz]`; `rmb`: `**/*.json`, subset from the folder;
    `xstest`: `xstest_prompts.csv` and `model_completions/*.csv`."""
    doc: str


FORMATS: dict[str, Format] = {
    "hh": Format("hh", hh.parse_row, "splits", "Anthropic HH-RLHF transcripts {chosen, rejected}"),
    "jsonl": Format("jsonl", jsonl.parse_row, "splits", "TRL preference rows {prompt?, chosen, rejected}"),
    "rmb": Format("rmb", rmb.parse_row, "rmb", "RMB pairwise JSON arrays"),
    "xstest": Format("xstest", None, "xstest", "XSTest v2 prompts and human-labelled completions (CSV)"),
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(name, None, f"unknown data format (known: {', '.join(FORMATS)})")
    return FORMATS[name]


@dataclass
class LoadResult:
    """The pairs of one load and an account of every row that did not become a pair."""

    pairs: list[Pair] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    """Readable rows left out, by reason: context_mismatch, identical_replies, duplicate."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Malformed rows skipped under `lenient`, by reason (malformed_json, missing_key, ...)."""
    files: list[str] = field(default_factory=list)
    flags: dict[str, int] = field(default_factory=dict)
    """Kept pairs with something worth knowing (empty_reply, trailing_human_turn, ...), by flag."""
    per_file: dict[str, dict[str, Any]] = field(default_factory=dict)
    """source -> {"subset", "pairs", "drops", "skipped"}: the same counts, file by file."""

    def merge(self, other: "LoadResult") -> "LoadResult":
        """A new result holding both (counts added)."""
        add = lambda a, b: dict(Counter(a) + Counter(b))  # noqa: E731
        return LoadResult(
            self.pairs + other.pairs,
            add(self.drops, other.drops),
            add(self.skipped, other.skipped),
            self.files + other.files,
            add(self.flags, other.flags),
            {**self.per_file, **other.per_file},
        )


class _Loader:
    """Turns records into pairs with one duplicate set across every file of a load."""

    def __init__(self, fmt: Format, lenient: bool, max_message_chars: int):
        self.fmt, self.lenient, self.max_chars = fmt, lenient, max_message_chars
        self.seen: set[tuple] = set()

    def add(
        self, records: Iterable[Record], result: LoadResult, *, source: str, subset: str, id_prefix: str
    ) -> None:
        """Parse `records` from `source` into `result`; `pair_id` is `f"{id_prefix}/{line}"`."""
        result.files.append(source)
        # In a JSON array "line" is the element number; say so, or `S6.json:2` reads as a text line.
        element = "array element {}: " if is_json_array(source) else ""
        drops, skipped, flags = Counter(), Counter(), Counter(result.flags)
        n_before = len(result.pairs)
        for line, value in records:
            try:
                if isinstance(value, RowError):
                    raise value
                parsed = self.fmt.parse_row(value)
                self._check(parsed)
            except RowError as e:
                if not self.lenient or e.kind in FATAL:
                    where = element.format(line) if element and value is not e and line is not None else ""
                    raise DataError(source, line, where + e.reason) from None
                skipped[e.kind] += 1
                continue
            reason = self._drop_reason(parsed)
            if reason:
                drops[reason] += 1
                continue
            row_flags = parsed.flags + (("empty_reply",) if not (parsed.chosen and parsed.rejected) else ())
            flags.update(row_flags)
            result.pairs.append(
                Pair(
                    f"{id_prefix}/{line}",
                    parsed.context,
                    parsed.chosen,
                    parsed.rejected,
                    subset,
                    source,
                    line or 0,
                    parsed.metadata,
                )
            )
        result.drops = dict(Counter(result.drops) + drops)
        result.skipped = dict(Counter(result.skipped) + skipped)
        result.flags = dict(flags)
        result.per_file[source] = {
            "subset": subset,
            "pairs": len(result.pairs) - n_before,
            "drops": dict(drops),
            "skipped": dict(skipped),
        }

    def _check(self, parsed: ParsedRow) -> None:
        """Rules every format shares: bounded message size, and a user turn to group by."""
        messages = [("context", i, t.content) for i, t in enumerate(parsed.context, 1)]
        messages += [("chosen", None, parsed.chosen), ("rejected", None, parsed.rejected)]
        for where, i, text in messages:
            if len(text) > self.max_chars:
                turn = f"turn {i} of the context" if i else f"the {where} reply"
                raise RowError(
                    "message_too_long",
                    f"{turn} has {len(text):,} characters, over the limit of "
                    f"{self.max_chars:,} (max_message_chars)",
                )
        if not any(t.role == "user" for t in parsed.context):
            # Splits group pairs by their first user turn; without one, every such row would share a group.
            raise RowError("no_user_turn", "the context has no user turn")

    def _drop_reason(self, parsed: ParsedRow) -> str | None:
        if parsed.rejected_context is not None and parsed.rejected_context != parsed.context:
            return "context_mismatch"
        if parsed.chosen == parsed.rejected:
            return "identical_replies"
        key = (parsed.context, parsed.chosen, parsed.rejected)
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        return None


def load_file(
    path: str | Path,
    *,
    fmt: str = "hh",
    subset: str | None = None,
    split: str = "test",
    lenient: bool = False,
    max_message_chars: int = MAX_MESSAGE_CHARS,
) -> LoadResult:
    """One file of any format, e.g. a sample that does not follow the official layout.

    `subset` defaults to the file's folder name; pair ids are `f"{subset}/{split}/{line}"`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such file")
    subset = subset or path.parent.name
    result = LoadResult()
    _Loader(get_format(fmt), lenient, max_message_chars).add(
        iter_records(path), result, source=str(path), subset=subset, id_prefix=f"{subset}/{split}"
    )
    return result


def load_pairs(
    root: str | Path,
    *,
    fmt: str = "hh",
    subsets: Iterable[str] | None = None,
    lenient: bool = False,
    max_message_chars: int = MAX_MESSAGE_CHARS,
) -> dict[str, LoadResult]:
    """Every file under `root`, keyed by the split found ("train", "test").

    `hh`/`jsonl`: `root` is a folder in the official layout `<root>/<subset>/{train,test}.jsonl[.gz]`;
    `subsets=None` takes every subset folder with a split file. `rmb`: `root` is an RMB folder or
    file; everything is "test". Duplicates are found across all files of the call.
    """
    form = get_format(fmt)
    if form.layout == "xstest":
        return {"test": xstest_result(xstest.load_xstest(root, lenient))}
    loader = _Loader(form, lenient, max_message_chars)
    if form.layout == "rmb":
        found = _rmb_files(root, subsets)
    else:
        found = discover_layout(root, subsets)
    out: dict[str, LoadResult] = {}
    for split in sorted(found, key=_read_rank):
        result = out.setdefault(split, LoadResult())
        for path, subset, id_prefix in found[split]:
            loader.add(iter_records(path), result, source=str(path), subset=subset, id_prefix=id_prefix)
    return {s: out[s] for s in sorted(out, key=SPLITS.index)}


def load_rmb(
    path: str | Path, *, lenient: bool = False, max_message_chars: int = MAX_MESSAGE_CHARS
) -> LoadResult:
    """RMB pairwise pairs (subsets `rmb-helpful`, `rmb-harmless`) from a folder or one file."""
    return load_pairs(path, fmt="rmb", lenient=lenient, max_message_chars=max_message_chars)["test"]


def xstest_result(load: xstest.XSTestLoad) -> LoadResult:
    """An XSTest load as a `LoadResult`: both sets' pairs; exclusions count as drops, by reason."""
    per_file: dict[str, dict[str, Any]] = {}
    for pairs in load.pairs.values():
        for pair in pairs:
            for side in ("chosen_file", "rejected_file"):
                c = per_file.setdefault(
                    pair.metadata[side], {"subset": "xstest", "pairs": 0, "drops": {}, "skipped": {}}
                )
                c["pairs"] += side == "chosen_file"
    pairs = [p for name in xstest.SETS for p in load.pairs[name]]
    return LoadResult(pairs, dict(load.excluded), dict(load.skipped), list(load.files), {}, per_file)


def load_hub(
    subsets: Iterable[str], *, lenient: bool = False, max_message_chars: int = MAX_MESSAGE_CHARS, loader=None
) -> dict[str, LoadResult]:
    """HH-RLHF subsets from the hub (`Anthropic/hh-rlhf`), both official splits, like `load_pairs`."""
    load = _Loader(FORMATS["hh"], lenient, max_message_chars)
    out = {s: LoadResult() for s in READ_ORDER}
    for split in READ_ORDER:
        for subset in subsets:
            load.add(
                hh.hub_records(subset, split, loader),
                out[split],
                source=hh.hub_source(subset, split),
                subset=subset,
                id_prefix=f"{subset}/{split}",
            )
    return {s: out[s] for s in SPLITS}


def _read_rank(split: str) -> int:
    return READ_ORDER.index(split) if split in READ_ORDER else len(READ_ORDER)


def discover_layout(
    root: str | Path, subsets: Iterable[str] | None
) -> dict[str, list[tuple[Path, str, str]]]:
    """split -> [(file, subset, pair-id prefix)] in the official layout; errors list expected and found."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            root, None, "data folder does not exist (expected <root>/<subset>/{train,test}.jsonl[.gz])"
        )
    present = sorted(d.name for d in root.iterdir() if d.is_dir())
    wanted = list(subsets) if subsets is not None else [d for d in present if _split_files(root / d)]
    found_text = ", ".join(present) or "no folders"
    if not wanted:
        raise DataError(
            root,
            None,
            f"no subset folder holds train.jsonl[.gz] or test.jsonl[.gz] "
            f"(expected <root>/<subset>/{{train,test}}.jsonl[.gz]; found: {found_text})",
        )
    missing = [s for s in wanted if s not in present]
    if missing:
        raise DataError(
            root,
            None,
            f"missing subset folders: {', '.join(missing)} "
            f"(expected: {', '.join(wanted)}; found: {found_text})",
        )
    found: dict[str, list[tuple[Path, str, str]]] = {}
    for subset in wanted:
        files = _split_files(root / subset)
        if not files:
            have = ", ".join(sorted(p.name for p in (root / subset).iterdir())[:6]) or "nothing"
            raise DataError(root / subset, None, f"no train.jsonl[.gz] or test.jsonl[.gz] (found: {have})")
        for split, path in files.items():
            found.setdefault(split, []).append((path, subset, f"{subset}/{split}"))
    return found


def _split_files(folder: Path) -> dict[str, Path]:
    """{split: file} in one subset folder; both `x.jsonl` and `x.jsonl.gz` is ambiguous."""
    out = {}
    for split in SPLITS:
        hits = [
            folder / f"{split}{ext}"
            for ext in (".jsonl", ".jsonl.gz")
            if (folder / f"{split}{ext}").is_file()
        ]
        if len(hits) > 1:
            raise DataError(folder, None, f"both {hits[0].name} and {hits[1].name}: keep one")
        if hits:
            out[split] = hits[0]
    return out


def _rmb_files(root: str | Path, subsets: Iterable[str] | None) -> dict[str, list[tuple[Path, str, str]]]:
    files = rmb.discover(root)
    if subsets is not None:
        wanted, have = list(subsets), sorted({s for _, s in files})
        missing = [s for s in wanted if s not in have]
        if missing:
            raise DataError(
                root,
                None,
                f"missing RMB subsets: {', '.join(missing)} (expected: {', '.join(wanted)}; "
                f"found: {', '.join(have)})",
            )
        files = [(p, s) for p, s in files if s in wanted]
    # Several files share a subset, so the id names the file: `rmb-harmless/S6/12`.
    return {"test": [(p, s, f"{s}/{rmb.file_id(p)}") for p, s in files]}
