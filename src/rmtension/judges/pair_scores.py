"""The per-pair score file every evaluated RM writes (`eval/<rm>/seed<k>/<test>.csv`): one row per
pair, `pair_id, subset, r_chosen, r_rejected`. The eval stage writes it; the tension table, the
combine stage and anyone else read it back through `read_scores`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.errors import ArtifactError


def scores_frame(pair_ids: list[str], subsets: list[str], r_c: np.ndarray, r_r: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"pair_id": pair_ids, "subset": subsets, "r_chosen": r_c, "r_rejected": r_r})


def read_scores(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except Exception as e:
        raise ArtifactError(f"{path}: unreadable score file ({e})") from None
    if (
        list(frame.columns[:4]) != ["pair_id", "subset", "r_chosen", "r_rejected"]
        or frame[["r_chosen", "r_rejected"]].isna().any().any()
    ):
        raise ArtifactError(f"{path}: truncated or malformed score file")
    return frame
