"""Tokenise pairs, keeping the end of the conversation, and batch them.

Truncation is from the left: chosen and rejected differ only in the final reply, so the end
is what a reward model must see. Pairs whose difference still falls outside the window are
counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rmtension.data.types import Pair, Turn, render_transcript

Render = Callable[[tuple[Turn, ...], str], str]
"""(context, final reply) -> the text a reward model reads."""


@dataclass
class EncodedPairs:
    """Token ids of chosen and rejected sequences, aligned with `pair_ids`."""

    pair_ids: list[str]
    chosen: list[list[int]]
    rejected: list[list[int]]
    n_truncated: int
    """Pairs where at least one side was cut on the left."""
    n_indistinguishable: int
    """Pairs whose chosen and rejected windows are identical after truncation."""

    def __len__(self) -> int:
        return len(self.pair_ids)

    def lengths(self) -> np.ndarray:
        """[N] max(len(chosen), len(rejected)) per pair."""
        return np.array([max(len(c), len(r)) for c, r in zip(self.chosen, self.rejected)], dtype=np.int64)

    def subset(self, idx: Sequence[int]) -> "EncodedPairs":
        idx = list(idx)
        return EncodedPairs(
            [self.pair_ids[i] for i in idx],
            [self.chosen[i] for i in idx],
            [self.rejected[i] for i in idx],
            self.n_truncated,
            self.n_indistinguishable,
        )


def prepare_tokenizer(tokenizer, max_length: int):
    """Left truncation, right padding, and a pad token even where the tokenizer has none."""
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.model_max_length = max_length
    return tokenizer


def encode_texts(
    texts: Sequence[str], tokenizer, max_length: int, special_tokens: bool = True
) -> tuple[list[list[int]], list[bool]]:
    """Token ids truncated from the left to `max_length`, special tokens included (unless the text
    carries its own, `special_tokens=False`: a chat template's output); and whether each was cut."""
    # verbose=False: no "longer than the specified maximum sequence length" note for the untruncated
    # count, which exists to find exactly those sequences
    kw = dict(add_special_tokens=special_tokens)
    full = tokenizer(list(texts), truncation=False, verbose=False, **kw)["input_ids"]
    cut = tokenizer(list(texts), truncation=True, max_length=max_length, **kw)["input_ids"]
    return cut, [len(f) > max_length for f in full]


def encode_pairs(
    pairs: Sequence[Pair],
    tokenizer,
    max_length: int,
    render: Render = render_transcript,
    special_tokens: bool = True,
) -> EncodedPairs:
    """Encode chosen and rejected of every pair as `render` writes them (default: HH turns; a chat
    template's renderer is `rmtension.judges.template.chat_render`, with `special_tokens=False`)."""
    texts_c = [render(p.context, p.chosen) for p in pairs]
    texts_r = [render(p.context, p.rejected) for p in pairs]
    chosen, cut_c = encode_texts(texts_c, tokenizer, max_length, special_tokens)
    rejected, cut_r = encode_texts(texts_r, tokenizer, max_length, special_tokens)
    n_trunc = sum(a or b for a, b in zip(cut_c, cut_r))
    n_same = sum(c == r for c, r in zip(chosen, rejected))
    return EncodedPairs([p.pair_id for p in pairs], chosen, rejected, n_trunc, n_same)


def reply_lengths(pairs: Sequence[Pair], enc: EncodedPairs, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Reply lengths in tokens of `tokenizer`: ([N, 2] whole replies, [N, 2] the part inside the window).

    Columns are (chosen, rejected). The whole reply is tokenised alone, without special tokens;
    the part the model sees after left truncation is at most its encoded sequence less the
    special tokens (`encode_pairs` keeps the end of the transcript, so the reply is cut last).
    """
    special = tokenizer.num_special_tokens_to_add(pair=False)
    texts = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    ids = (
        tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    whole = np.array([len(x) for x in ids], dtype=np.int64).reshape(2, -1).T
    window = np.array(
        [[len(c) - special, len(r) - special] for c, r in zip(enc.chosen, enc.rejected)], dtype=np.int64
    ).reshape(-1, 2)
    return whole, np.minimum(whole, np.maximum(window, 0))


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right", width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token sequences to one width: ids [B, W] (long) and mask [B, W] (long, 1 on tokens).

    `side`: where the padding goes (`right` for scoring, `left` for generation). `width`: at
    least the longest sequence; default the longest.

    >>> ids, mask = pad([[5, 6], [7]], pad_id=0, side="left")
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max((len(s) for s in seqs), default=0) if width is None else width
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def collate(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence.

    >>> b = collate([[5, 6, 7], [8]], pad_id=0)
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    ids, mask = pad(seqs, pad_id)
    return {"input_ids": ids, "attention_mask": mask}


def collate_pairs(enc: EncodedPairs, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """One forward batch for pairs `idx`: rows [0, B) are chosen, rows [B, 2B) rejected (TRL's chunk(2) layout)."""
    return collate([enc.chosen[i] for i in idx] + [enc.rejected[i] for i in idx], pad_id)


def batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, group_by_length: bool = True
) -> list[list[int]]:
    """Indices in batches. With `group_by_length`, sort within mega-batches of 50 batches, then
    shuffle the batch order, so padding is small but the order is still random."""
    n = len(lengths)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if group_by_length:
        mega = batch_size * 50
        chunks = [order[i : i + mega] for i in range(0, n, mega)]
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks]) if n else order
    out = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    if rng is not None and group_by_length:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def iter_batches(
    enc: EncodedPairs, batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Deterministic length-sorted batches for evaluation and scoring: (pair indices, batch)."""
    for idx in batches(enc.lengths(), batch_size, None, group_by_length=True):
        yield idx, collate_pairs(enc, idx, pad_id)
