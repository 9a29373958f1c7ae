"""Preference data: formats, loading with counted drops, grouped splits and the three objectives.

from rmtension.data import build_dataset
bundle = build_dataset(cfg.data, root)          # DataBundle
bundle.splits["mixed"]["train"], bundle.test_sets["harmless"], bundle.summary
"""

from rmtension.data.formats import (
    FORMATS,
    MAX_MESSAGE_CHARS,
    Format,
    LoadResult,
    get_format,
    load_file,
    load_hub,
    load_pairs,
    load_rmb,
)
from rmtension.data.objectives import DataBundle, build_dataset, check_no_leak, mixed_sizes
from rmtension.data.splits import seeded_order, split_pairs, take
from rmtension.data.summary import summarize, token_stats
from rmtension.data.types import Pair, TranscriptError, Turn, parse_transcript, render_transcript

__all__ = [
    "FORMATS",
    "MAX_MESSAGE_CHARS",
    "DataBundle",
    "Format",
    "LoadResult",
    "Pair",
    "TranscriptError",
    "Turn",
    "build_dataset",
    "check_no_leak",
    "get_format",
    "load_file",
    "load_hub",
    "load_pairs",
    "load_rmb",
    "mixed_sizes",
    "parse_transcript",
    "render_transcript",
    "seeded_order",
    "split_pairs",
    "summarize",
    "take",
    "token_stats",
]
