"""BERT self-attention with one fused QKV projection, and attention in fp32 under CPU autocast.

Inside `fused_attention`, every block's self-attention runs as

    q, k, v = split(h @ [W_q; W_k; W_v]^T + [b_q; b_k; b_v])    [B, T, 3H] -> 3 x [B, heads, T, d]
    a = attention(q, k, v)                                      [B, T, H]

which is the module's own computation: the same weights, one matmul instead of three. Under bf16
autocast each projection's input is cast from the fp32 residual stream to bf16 on its own, and
each cast has a backward; fused, it is cast once, and the matmul is three times wider. On CPU
under autocast the attention itself runs on fp32 q, k, v: PyTorch's CPU flash-attention kernel
runs its backward in bf16 about twice as slowly as in fp32 (measured on an AVX-512 BF16 EPYC,
32 rows, 12 heads, T = 186, head size 32: forward + backward 112 ms in bf16, 66 ms with the
casts to fp32 included), and the attention's matmuls are a small share of the FLOPs (2 T H per
position against 12 H^2), so fp32 there costs little and is more exact.

The projections are called as `F.linear` on their weights, so forward hooks on the query, key and
value modules do not fire inside. A block whose attention already has its own `forward` (the last
block under `rmtension.model.readout.read_first`) is left as it is.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rmtension.model.arch import blocks, find_arch, get_path

SELF_ATTENTION = {"bert": "attention.self"}
"""Family -> path, from a block, of the self-attention module with `query`, `key`, `value` Linears."""
MASKS = ("sdpa", "eager")
"""transformers attention implementations whose masks `F.scaled_dot_product_attention` takes as they
are: boolean (True = attend) under sdpa, additive under eager."""


def fused_linear(x: torch.Tensor, linears: tuple[nn.Linear, ...]) -> torch.Tensor:
    """[..., sum of out_features]: `x` through every Linear of `linears` in one matmul."""
    weight = torch.cat([m.weight for m in linears])
    bias = torch.cat([m.bias for m in linears]) if all(m.bias is not None for m in linears) else None
    return F.linear(x, weight, bias)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, scale: float, dropout: float
) -> torch.Tensor:
    """Scaled dot-product attention of q [B, heads, Tq, d] over k, v [B, heads, T, d]; fp32 inside
    CPU autocast (module docstring); returns [B, heads, Tq, d] in the dtype of `q`."""
    if not (q.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    with torch.autocast("cpu", enabled=False):
        a = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout, scale=scale
        )
    return a.to(q.dtype)


def _fused_self_attention(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
    """BertSelfAttention.forward with one QKV matmul: ([B, T, H], None)."""
    b, t, _ = hidden_states.shape
    qkv = fused_linear(hidden_states, (self.query, self.key, self.value))  # [B, T, 3H]
    dtype = qkv.dtype
    if qkv.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        qkv = qkv.float()  # one cast for q, k and v; `attend` keeps fp32 inputs as they are
    q, k, v = qkv.view(b, t, 3, -1, self.attention_head_size).permute(2, 0, 3, 1, 4)  # [B, heads, T, d] each
    p = self.dropout.p if self.training else 0.0
    a = attend(q, k, v, attention_mask, self.scaling, p)  # [B, heads, T, d]
    # back to [B, T, H] and the projections' dtype in one copy
    return a.transpose(1, 2).to(dtype, memory_format=torch.contiguous_format).reshape(b, t, -1), None


@contextlib.contextmanager
def fused_attention(model: nn.Module, on: bool = True) -> Iterator[bool]:
    """Inside, `model`'s self-attention runs fused (module docstring), if `on` and `model` is of a
    family in `SELF_ATTENTION` with sdpa or eager attention; yields whether it does. Always restored."""
    try:
        family = find_arch(model).family
    except ValueError:
        family = None
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if not (on and family in SELF_ATTENTION and implementation in MASKS):
        yield False
        return
    patched = []
    try:
        for block in blocks(model):
            attn = get_path(block, SELF_ATTENTION[family])
            if "forward" not in vars(attn):  # not already patched (the read-first last block)
                attn.forward = types.MethodType(_fused_self_attention, attn)
                patched.append(attn)
        yield True
    finally:
        for attn in patched:
            del attn.forward
