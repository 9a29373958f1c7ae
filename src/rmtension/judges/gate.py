"""The gated dial's gate: w(x) = sigmoid(g . e(x) + b), a logistic regression on the backbone's pooled
embedding e(x) of the prompt alone (the conversation up to the last human turn), trained to say
whether a prompt came from the helpful or the harmless data (ArmoRM's gating, Wang et al. 2024,
cut down to one weight)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rmtension.data.types import Pair, render_transcript
from rmtension.model.encode import encode_texts, pad


@dataclass
class Gate:
    """A fitted gate on standardised features: w(x) = sigmoid(weight . (e(x) - mean) / sd + bias)."""

    weight: np.ndarray
    """[H]"""
    bias: float
    mean: np.ndarray
    """[H] feature means of the training prompts."""
    sd: np.ndarray
    """[H] feature SDs of the training prompts (1 where a feature is constant)."""

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """[N] helpful weight of each prompt; features: [N, H]."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.sd
        return 1.0 / (1.0 + np.exp(-(z @ self.weight + self.bias)))


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, H] mean of hidden [B, T, H] over the positions where mask [B, T] is 1 (the sentence
    embedding all-MiniLM-L6-v2 was trained with)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def prompt_texts(pairs: Sequence[Pair]) -> list[str]:
    """Each pair's conversation up to the last human turn, in the transcript format the RMs read,
    without either reply."""
    return [render_transcript(p.context) for p in pairs]


@torch.no_grad()
def prompt_embeddings(
    model: nn.Module, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 64
) -> np.ndarray:
    """[N, H] pooled last-layer embedding of each text by the backbone of `model` (a sequence-
    classification RM: its `base_model`), left-truncated to `max_length` like the RMs' inputs."""
    ids, _ = encode_texts(texts, tokenizer, max_length)
    backbone = model.base_model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: less padding
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch, mask = pad([ids[i] for i in rows], tokenizer.pad_token_id)
        hidden = backbone(input_ids=batch.to(device), attention_mask=mask.to(device)).last_hidden_state
        out[rows] = masked_mean(hidden.float(), mask.to(device)).double().cpu().numpy()
    model.train(was_training)
    return out


def train_gate(
    features: np.ndarray, helpful: np.ndarray, steps: int, lr: float, l2: float, seed: int = 0
) -> Gate:
    """Fit the gate by full-batch Adam on the mean logistic loss plus l2 |weight|^2.

    features: [N, H]; helpful: [N] 1 for prompts of helpful pairs, 0 for harmless ones."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(helpful, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("train_gate: the training prompts must include both objectives")
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    xt = torch.as_tensor((x - mean) / sd, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(x.shape[1], generator=gen, dtype=torch.float64)).requires_grad_()
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        logits = xt @ weight + bias
        loss = nn.functional.binary_cross_entropy_with_logits(logits, yt) + l2 * weight.pow(2).sum()
        loss.backward()
        opt.step()
    return Gate(weight.detach().numpy().copy(), float(bias.detach()), mean, sd)
