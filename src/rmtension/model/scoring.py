"""Forward passes that turn token ids into rewards."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from rmtension.model.precision import use_bf16
from rmtension.model.encode import EncodedPairs, collate, encode_texts, iter_batches


def autocast(enabled: bool, device: torch.device | str = "cpu"):
    """bf16 autocast on CPU or GPU; a no-op context when disabled or where bf16 is not native
    (`rmtension.model.precision`)."""
    if not use_bf16(enabled, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] scalar rewards for a padded batch."""
    return model(**batch).logits.squeeze(-1).float()


@torch.no_grad()
def score_pairs(
    model, enc: EncodedPairs, pad_id: int, batch_size: int = 32, bf16: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of chosen and rejected, each [N], in the order of `enc`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    r_c = np.zeros(len(enc), dtype=np.float64)
    r_r = np.zeros(len(enc), dtype=np.float64)
    for idx, batch in iter_batches(enc, batch_size, pad_id):
        with autocast(bf16, device):
            r = rewards(model, {k: v.to(device) for k, v in batch.items()}).cpu().numpy()
        r_c[idx], r_r[idx] = r[: len(idx)], r[len(idx) :]
    model.train(was_training)
    return r_c, r_r


@torch.no_grad()
def score_texts(
    model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 32, bf16: bool = True
) -> np.ndarray:
    """[N] rewards of full transcripts (left-truncated to `max_length`)."""
    ids, _ = encode_texts(texts, tokenizer, max_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros(len(ids), dtype=np.float64)
    order = np.argsort([-len(s) for s in ids], kind="stable")
    for start in range(0, len(ids), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([ids[i] for i in idx], tokenizer.pad_token_id)
        with autocast(bf16, device):
            out[idx] = rewards(model, {k: v.to(device) for k, v in batch.items()}).cpu().numpy()
    model.train(was_training)
    return out
