"""Extra training pairs (`data.extra_train`), e.g. a bench export, added to training only.

Each file is read by the same loader and rules as the main data: a malformed row stops the study
with one line naming the file, the line and the reason (or, under `data.lenient`, is skipped and
counted). A pair joins its entry's `objective`, or, where that is unset, the objective its row's
`bench.mode` names: `helpful` -> helpful, `red_team` -> harmless (a red-team export already prefers
the less harmful reply, as Bai et al.'s harmlessness data does). It joins that objective's training
pairs, the mixed RM's, and the objective's dilution control's (which train on exactly that
objective's share of mixed), on top of `max_train_pairs`. It never joins a validation or test set:
a pair whose opening prompt's group is in any validation or test split is dropped and counted
(`prompt_in_eval`), as is one that repeats a pair of the main data (`duplicate`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rmtension.config import DataConfig, ExtraTrainConfig
from rmtension.data.formats import load_file
from rmtension.data.types import Pair
from rmtension.errors import DataError

MODE_OBJECTIVE = {"helpful": "helpful", "red_team": "harmless"}
"""A bench task's mode -> the objective its pairs train."""


def extra_subset(index: int, entry: ExtraTrainConfig) -> str:
    """The subset name (and pair-id prefix) of an entry's pairs: `extra<i>-<file stem>`, unique per entry."""
    name = Path(entry.path).name.split(".")[0]
    return f"extra{index}-{name}"


def pair_objective(pair: Pair, entry: ExtraTrainConfig, index: int) -> str:
    """The objective a pair joins: the entry's, else the one its row's `bench.mode` names."""
    if entry.objective is not None:
        return entry.objective
    bench = pair.metadata.get("bench")
    mode = bench.get("mode") if isinstance(bench, dict) else None
    if mode not in MODE_OBJECTIVE:
        raise DataError(
            pair.source,
            pair.line,
            f"the row has no bench.mode of 'helpful' or 'red_team' ({_got(mode)}) and "
            f"data.extra_train[{index}].objective is not set",
        )
    return MODE_OBJECTIVE[mode]


def _got(value: Any) -> str:
    return "none given" if value is None else f"got {str(value)[:20]!r}"


def add_extra_train(splits: dict[str, dict[str, list[Pair]]], cfg: DataConfig) -> list[dict[str, Any]]:
    """Add every `cfg.extra_train` file's pairs to the training splits (in place); their account per file."""
    if not cfg.extra_train:
        return []
    held_out = {
        p.group_key for by in splits.values() for name, ps in by.items() if name != "train" for p in ps
    }
    known = {(p.context, p.chosen, p.rejected) for by in splits.values() for ps in by.values() for p in ps}
    additions: dict[str, list[Pair]] = {}
    account = []
    for index, entry in enumerate(cfg.extra_train):
        subset = extra_subset(index, entry)
        loaded = load_file(entry.path, fmt=entry.format, subset=subset, split="train", lenient=cfg.lenient)
        drops, added = Counter(loaded.drops), Counter()
        for pair in loaded.pairs:
            objective = pair_objective(pair, entry, index)
            key = (pair.context, pair.chosen, pair.rejected)
            if pair.group_key in held_out:
                drops["prompt_in_eval"] += 1
                continue
            if key in known:
                drops["duplicate"] += 1
                continue
            known.add(key)
            added[objective] += 1
            for target in (objective, "mixed", f"{objective}_half"):
                additions.setdefault(target, []).append(pair)
        account.append(
            {
                "path": entry.path,
                "sha256": entry.sha256,
                "format": entry.format,
                "subset": subset,
                "pairs": dict(sorted(added.items())),
                "drops": dict(sorted(drops.items())),
                "skipped": loaded.skipped,
                "flags": loaded.flags,
            }
        )
    for target, pairs in additions.items():
        if target in splits:
            splits[target]["train"] = splits[target]["train"] + pairs
    return account
