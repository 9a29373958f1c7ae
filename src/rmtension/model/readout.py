"""Run the last block only where the score head reads.

A BERT reward model (`BertForSequenceClassification`, MiniLM among them) reads its score from
position 0 of the last block's output: pooler(h[:, 0]) -> classifier. Every other position of the
last block feeds nothing. Inside `read_first`, that block runs as

    q = W_q h[:, :1]            [B, 1, H]  (the query at position 0 only)
    k, v = W_k h, W_v h         [B, T, H]  (keys and values at every position, as before)
    a = attention(q, k, v)      [B, 1, H]
    out = LN(W_o a + h[:, :1]) -> MLP -> LN        [B, 1, H]

which is the full block's row 0 exactly: attention is per query, and the projections, the MLP
and the norms are per position. For MiniLM (H = 384, 4H-wide MLP, T about 150) the block costs
about a seventh of a full one, forward and backward. The rewards and gradients equal the full
model's up to float reassociation (tests/test_readout.py).

Only the families and head classes in `HEADS` qualify; `read_first` leaves any other model whole.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rmtension.model.arch import blocks, find_arch, get_path

HEADS = {"bert": ("BertForSequenceClassification",)}
"""Family -> reward-model classes whose head reads position 0 of the last block only."""
PATHS = {"bert": ("attention.self", "attention.output")}
"""Family -> (self-attention, the module after it that adds the residual), from a block."""


def reads_first(model: nn.Module) -> bool:
    """Whether `model`'s score depends on the last block's position 0 only (see `HEADS`)."""
    try:
        family = find_arch(model).family
    except ValueError:
        return False
    # a model cut to no blocks (`train.trainable: head` over a trunk cache) has no last block to cut
    return type(model).__name__ in HEADS.get(family, ()) and len(blocks(model)) > 0


def _first_query_attention(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
    """BertSelfAttention.forward with the query at position 0 only: ([B, 1, H], None)."""
    b, t, _ = hidden_states.shape
    d = self.attention_head_size
    q = self.query(hidden_states[:, :1]).view(b, 1, -1, d).transpose(1, 2)  # [B, heads, 1, d]
    k = self.key(hidden_states).view(b, t, -1, d).transpose(1, 2)  # [B, heads, T, d]
    v = self.value(hidden_states).view(b, t, -1, d).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[2] > 1:
        attention_mask = attention_mask[:, :, :1]  # [B, 1, T, T] -> the query row of position 0
    p = self.dropout.p if self.training else 0.0
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=p, scale=self.scaling)
    return a.transpose(1, 2).reshape(b, 1, -1), None


def _first_rows(module, args):
    """Pre-hook: every [B, T, H] input cut to position 0 (the residual beside the attention output)."""
    return tuple(a[:, :1] if torch.is_tensor(a) and a.dim() == 3 else a for a in args)


@contextlib.contextmanager
def read_first(model: nn.Module, on: bool = True) -> Iterator[bool]:
    """Inside, the last block of `model` runs at position 0 only (module docstring), if `on` and the
    model qualifies (`reads_first`); yields whether it does. Always restored on exit."""
    if not (on and reads_first(model)):
        yield False
        return
    attn_path, out_path = PATHS[find_arch(model).family]
    last = blocks(model)[-1]
    attn = get_path(last, attn_path)
    handle = get_path(last, out_path).register_forward_pre_hook(_first_rows)
    attn.forward = types.MethodType(_first_query_attention, attn)  # an instance attribute, deleted on exit
    try:
        yield True
    finally:
        del attn.forward
        handle.remove()
