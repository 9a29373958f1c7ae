"""Best-of-n picks by the combined judges: the two-head dial at w in {0, 0.5, 1} and the gated
judge, over the responses best-of-n already sampled and scored (`bon/samples.parquet`: its
`rm_two_head_helpful` and `rm_two_head_harmless` columns). Nothing is resampled.

The heads are standardised as in the combine stage (the first seed's mean and SD on the mixed RM's
training pairs, `combine/judge.json`), so a dial value means the same mix as on the frontier; the
gate weighs each best-of-n prompt by its embedding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmtension.judges.dials import dial, standardise
from rmtension.judges.gate import Gate, prompt_embeddings
from rmtension.data.types import Turn, render_transcript
from rmtension.run.runio import read_json
from rmtension.model.backbones import load_reward_model

HEAD_COLUMNS = ("rm_two_head_helpful", "rm_two_head_harmless")
"""The best-of-n judge columns of two_head's heads (first seed)."""
PICK_DIALS = (0.0, 0.5, 1.0)


def read_gate(doc: dict) -> Gate:
    return Gate(np.asarray(doc["weight"]), float(doc["bias"]), np.asarray(doc["mean"]), np.asarray(doc["sd"]))


def combined_selectors(
    run_dir: Path,
    raw: dict[str, np.ndarray],
    contexts: Sequence[Sequence[Turn]],
    embed,
) -> dict[str, np.ndarray]:
    """Selector name -> [P, N] scores to pick by: `two_head_dial w=<w>` and `gated`; {} without
    `combine/judge.json` or the two head columns. raw: judge column -> [P, N] raw scores; contexts:
    the P prompts' conversations; embed(texts) -> [P, H] the gate's features (`prompt_embeddings`)."""
    path = Path(run_dir) / "combine" / "judge.json"
    if not path.exists() or not set(HEAD_COLUMNS) <= set(raw):
        return {}
    doc = read_json(path)
    z_h = standardise(raw[HEAD_COLUMNS[0]], doc["standardisers"]["helpful"])
    z_m = standardise(raw[HEAD_COLUMNS[1]], doc["standardisers"]["harmless"])
    out = {f"two_head_dial w={w:.2f}": dial(z_h, z_m, w) for w in PICK_DIALS}
    if "gate" in doc:
        weights = read_gate(doc["gate"])(embed([render_transcript(tuple(c)) for c in contexts]))  # [P]
        out["gated"] = dial(z_h, z_m, weights[:, None])
    return out


def backbone_embedder(backbone_path: str, tokenizer, max_length: int, batch_size: int, device):
    """embed(texts) -> [N, H] with the untrained backbone, as the combine stage's gate was trained."""

    model = load_reward_model(backbone_path, tokenizer).to(device)
    return lambda texts: prompt_embeddings(model, tokenizer, texts, max_length, batch_size)
