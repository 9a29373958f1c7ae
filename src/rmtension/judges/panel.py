"""A panel of reward models that scores policy responses, sharing one pass through the frozen trunk.

Every RM of a study starts from the same backbone and trains only its top K blocks, so the lower
blocks are the same in all of them: a transcript goes through them once, and each judge runs
only its own top K blocks on the result (`rmtension.model.trunk.cut_trunk`). When the judges' trunks
differ (`train.trainable=all`), each judge runs in full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from rmtension.data.types import Turn, render_transcript
from rmtension.model.encode import collate, encode_texts
from rmtension.model.scoring import autocast
from rmtension.model.arch import n_layers
from rmtension.model.scope import parse_scope
from rmtension.model.trunk import compute_trunk, cut_trunk, trunk_fingerprint
from rmtension.model.backbones import load_reward_model


class JudgePanel:
    """Named reward models scoring (context, response) transcripts in the HH format every RM reads."""

    def __init__(
        self,
        paths: Mapping[str, str | Path | tuple[str | Path, str]],
        tokenizer,
        max_length: int,
        trainable: str,
        bf16: bool = True,
        batch_size: int = 32,
        device: torch.device | str = "cpu",
    ):
        if not paths:
            raise ValueError("a judge panel needs at least one reward model")
        self.tokenizer, self.max_length, self.bf16, self.batch_size = tokenizer, max_length, bf16, batch_size
        self.device = torch.device(device)
        self.models = {}
        for name, p in paths.items():  # a folder, or (folder, head) for one head of a multi-head RM
            folder, head = p if isinstance(p, tuple) else (p, None)
            self.models[name] = load_reward_model(str(folder), tokenizer, head=head).to(self.device).eval()
        first = next(iter(self.models.values()))
        self.k = parse_scope(trainable, n_layers(first))
        prints = {trunk_fingerprint(m, self.k) for m in self.models.values()}
        self.shared = self.k < n_layers(first) and len(prints) == 1
        """True when one trunk pass serves every judge."""

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def score_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """judge name -> [N] rewards of full transcripts (left-truncated to `max_length`)."""
        ids, _ = encode_texts(texts, self.tokenizer, self.max_length)
        out = {name: np.zeros(len(ids)) for name in self.models}
        order = np.argsort([-len(s) for s in ids], kind="stable")  # length-sorted batches: little padding
        pad = self.tokenizer.pad_token_id
        with torch.no_grad():
            for start in range(0, len(ids), self.batch_size):
                idx = order[start : start + self.batch_size]
                seqs = [ids[i] for i in idx]
                batch = {k: v.to(self.device) for k, v in collate(seqs, pad).items()}
                states = self._trunk(seqs, batch) if self.shared else None
                for name, model in self.models.items():
                    out[name][idx] = self._forward(model, batch, states)
        return out

    def score(self, contexts: Sequence[Sequence[Turn]], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """judge name -> [N] rewards of each response as the final assistant turn after its context."""
        return self.score_texts([render_transcript(tuple(c), r) for c, r in zip(contexts, responses)])

    def _trunk(self, seqs: list[list[int]], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, H] input of block L - K for the right-padded batch."""
        model = next(iter(self.models.values()))
        per_seq = compute_trunk(model, seqs, self.k, self.tokenizer.pad_token_id, len(seqs), self.bf16)
        states = per_seq[0].new_zeros(len(seqs), batch["input_ids"].shape[1], per_seq[0].shape[-1])
        for row, s in enumerate(per_seq):
            states[row, : s.shape[0]] = s
        return states.to(self.device)

    def _forward(self, model, batch: dict[str, torch.Tensor], states: torch.Tensor | None) -> np.ndarray:
        with autocast(self.bf16, self.device):
            if states is None:
                return model(**batch).logits.squeeze(-1).float().cpu().numpy()
            with cut_trunk(model, self.k) as inputs:
                for stand_in in inputs:
                    stand_in.value = states
                return model(**batch).logits.squeeze(-1).float().cpu().numpy()
