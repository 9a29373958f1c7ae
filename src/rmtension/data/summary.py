"""A JSON-able account of a load (counts, drops, skips, split sizes) and token-length statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rmtension.data.types import Pair, render_transcript

if TYPE_CHECKING:
    from rmtension.config import DataConfig
    from rmtension.data.formats import LoadResult
    from rmtension.data.objectives import DataBundle
    from rmtension.data.splits import SplitResult

PERCENTILES = (50, 90, 99)


def _add(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


def load_account(loaded: dict[str, "LoadResult"]) -> dict[str, Any]:
    """Drops, skips and flags (totals and per file), and the files read, for a `load_pairs` result."""
    results = list(loaded.values())
    return {
        "files": [f for r in results for f in r.files],
        "drops": _add(r.drops for r in results),
        "skipped": _add(r.skipped for r in results),
        "flags": _add(r.flags for r in results),
        "per_file": {f: c for r in results for f, c in r.per_file.items()},
    }


def build_summary(
    cfg: "DataConfig",
    source: str,
    loaded: dict[str, "LoadResult"],
    split: "SplitResult",
    splits: dict[str, dict[str, list[Pair]]],
    test_sets: dict[str, list[Pair]],
    rmb: "LoadResult | None",
) -> dict[str, Any]:
    """The `DataBundle.summary` written to `data/summary.json`."""
    counts: dict[str, dict[str, int]] = {}
    for name, pairs in split.pairs.items():
        for p in pairs:
            counts.setdefault(p.subset, {"train": 0, "val": 0, "test": 0})[name] += 1
    for subset, c in counts.items():
        c["total"] = c["train"] + c["val"] + c["test"]
    return {
        "source": source,
        "format": cfg.format,
        **load_account(loaded),
        "split_mode": split.mode,
        "split_fractions": list(cfg.split),
        "split_seed": cfg.split_seed,
        "official_shared_groups": split.official_shared_groups,
        "split_drops": dict(split.dropped or {}),
        "counts_per_subset": dict(sorted(counts.items())),
        "mixed_mode": cfg.mixed_mode,
        "mixed_ratio": cfg.mixed_ratio,
        "max_train_pairs": cfg.max_train_pairs,
        "max_eval_pairs": cfg.max_eval_pairs,
        "max_val_pairs": cfg.max_val_pairs,
        "objectives": {o: {s: len(p) for s, p in by.items()} for o, by in splits.items()},
        "mixed_train_subsets": dict(Counter(p.subset for p in splits["mixed"]["train"])),
        "test_sets": {name: len(p) for name, p in test_sets.items()},
        "rmb": None
        if rmb is None
        else {"files": rmb.files, "pairs": len(rmb.pairs), "drops": rmb.drops, "skipped": rmb.skipped},
    }


def length_stats(lengths: Sequence[int]) -> dict[str, int]:
    """p50/p90/p99/max of token lengths (nearest-rank percentiles, so every value is a real length)."""
    if not len(lengths):
        return {f"p{q}": 0 for q in PERCENTILES} | {"max": 0}
    arr = np.asarray(lengths)
    out = {f"p{q}": int(np.percentile(arr, q, method="inverted_cdf")) for q in PERCENTILES}
    return out | {"max": int(arr.max())}


def token_lengths(texts: Sequence[str], tokenizer, batch: int = 512) -> list[int]:
    """Tokens per text, special tokens included, without truncation (batched to bound memory)."""
    out: list[int] = []
    for i in range(0, len(texts), batch):
        # verbose=False: "longer than the maximum sequence length" is what is being measured
        chunk = list(texts[i : i + batch])
        ids = tokenizer(chunk, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        out.extend(len(x) for x in ids)
    return out


def token_stats(pairs: Sequence[Pair], tokenizer, max_length: int | None = None) -> dict[str, dict[str, Any]]:
    """subset -> {"pairs", "chosen": stats, "rejected": stats, "truncated"} of rendered transcripts.

    `truncated` counts pairs where either side is longer than `max_length` (cut from the left
    when encoded, see `rmtension.model.encode`).
    """
    by_subset: dict[str, list[Pair]] = {}
    for p in pairs:
        by_subset.setdefault(p.subset, []).append(p)
    out = {}
    for subset, group in sorted(by_subset.items()):
        len_c = token_lengths([render_transcript(p.context, p.chosen) for p in group], tokenizer)
        len_r = token_lengths([render_transcript(p.context, p.rejected) for p in group], tokenizer)
        entry: dict[str, Any] = {
            "pairs": len(group),
            "chosen": length_stats(len_c),
            "rejected": length_stats(len_r),
        }
        if max_length is not None:
            entry["truncated"] = sum(max(c, r) > max_length for c, r in zip(len_c, len_r))
        out[subset] = entry
    return out


def unique_pairs(bundle: "DataBundle") -> list[Pair]:
    """Every pair of a bundle once (a pair sits in several objectives and in the test sets)."""
    seen: dict[str, Pair] = {}
    for by in bundle.splits.values():
        for pairs in by.values():
            seen.update((p.pair_id, p) for p in pairs)
    for pairs in bundle.test_sets.values():
        seen.update((p.pair_id, p) for p in pairs)
    return list(seen.values())


def summarize(bundle: "DataBundle", tokenizer=None, max_length: int | None = None) -> dict[str, Any]:
    """`bundle.summary`, plus token-length percentiles per subset when a tokenizer is given."""
    out = dict(bundle.summary)
    if tokenizer is not None:
        out["tokens"] = token_stats(unique_pairs(bundle), tokenizer, max_length)
        out["tokens_max_length"] = max_length
    return out
