"""One forward of a Llama-family causal LM in plain PyTorch, on the HF module's own weights.

Used by `rmtension.policy.decode.LlamaDecoder` to sample: transformers' Llama, written as pure
tensor functions so that a decode step can keep its KV cache where it wants (preallocated, written
in place) and run fewer, larger kernels:
  * q/k/v and gate/up run as one matmul each, on bf16 weights prepacked in oneDNN's blocked
    layout (`prepack`);
  * attention is two small batched matmuls with the query heads of a key/value group stacked
    (`attend`), because PyTorch's CPU flash-attention kernel is slow for one query: on
    SmolLM2-135M, batch 32, bf16, it took 2.2 ms per layer and step, 45% of HF's decode step.
RMSNorm and RoPE follow transformers' code line by line (statistics in fp32, cos/sin from the
model's own rotary module), so in fp32 the logits match the HF forward to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rmtension.model.precision import bf16_native
from transformers import LlamaForCausalLM

# RoPE types whose frequencies do not depend on the sequence length, so a table computed once serves.
STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """[..., C] -> [..., C], as transformers' LlamaRMSNorm (statistics in fp32, scale in x's dtype)."""
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: x [R, H, T, D], cos/sin [R, 1, T, D] -> [R, H, T, D] (rotate-half layout)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention: q [R, H, T, D], k/v [R, Hk, S, D], bias [R, 1, T, S] (0 or -inf,
    fp32) -> [R, T, H*D].

    Query head h reads key head h // (H / Hk), as transformers' `repeat_kv`. The G = H / Hk query
    heads of a group are stacked into one [G*T, D] matrix, so k and v are never repeated.
    """
    r, h, t, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    g = h // hk
    scores = torch.matmul(q.reshape(r, hk, g * t, d), k.transpose(-1, -2)).float() * d**-0.5
    scores = scores.view(r, hk, g, t, s) + bias[:, :, None]  # [R, Hk, G, T, S]
    probs = scores.softmax(dim=-1).to(q.dtype).view(r, hk, g * t, s)
    out = torch.matmul(probs, v)  # [R, Hk, G*T, D]
    return out.view(r, h, t, d).transpose(1, 2).reshape(r, t, h * d)


@dataclass
class LlamaWeights:
    """A Llama-family HF model's weights for one sampling call: the model's own tensors, except
    q/k/v and gate/up concatenated per layer and, when `packed`, the matrices in oneDNN's layout."""

    embed: torch.Tensor  # [V, C]
    qkv: list[torch.Tensor]  # per layer [(H + 2 Hk) D, C]
    o: list[torch.Tensor]  # [C, H D]
    gate_up: list[torch.Tensor]  # [2 I, C]
    down: list[torch.Tensor]  # [C, I]
    norm_attn: list[torch.Tensor]  # [C]
    norm_mlp: list[torch.Tensor]  # [C]
    norm_out: torch.Tensor  # [C]
    lm_head: torch.Tensor  # [V, C]
    eps: float
    heads: int
    kv_heads: int
    head_dim: int
    rotary: torch.nn.Module  # the model's own RoPE module: cos/sin for any static RoPE type
    packed: bool = False  # qkv, o, gate_up, down and lm_head are in oneDNN's layout (`prepack`)


def prepack(weight: torch.Tensor) -> torch.Tensor | None:
    """[N, K] bf16 CPU weight -> the same weight in oneDNN's blocked layout, for `linear`; None where
    that does not apply. A plain-layout weight is reordered inside every bf16 matmul: prepacking
    measured 48 ms instead of 66 ms for the matmuls of one SmolLM2-135M decode step at batch 32 (one
    thread), with bit-identical results. fp32 keeps F.linear (packed results differ there)."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or not bf16_native("cpu"):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, 32)  # 32: a batch-size hint only
    except (AttributeError, RuntimeError):  # a build without the op
        return None


def linear(x: torch.Tensor, weight: torch.Tensor, packed: bool) -> torch.Tensor:
    """x [..., K], weight [N, K] (plain, or `prepack`ed when `packed`) -> x @ weight.T [..., N]."""
    if not packed:
        return F.linear(x, weight)
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, None, "none", [], "")
    return out.view(*x.shape[:-1], out.shape[-1])


def llama_weights(model, pack: bool = True) -> LlamaWeights | None:
    """The weights of a plain Llama causal LM, or None where the fused step does not apply (another
    family, biases, a length-dependent RoPE, or forward hooks that the fused step would bypass).
    `pack`: prepack bf16 weights where possible (`prepack`)."""

    if not isinstance(model, LlamaForCausalLM):
        return None
    cfg = model.config
    rope_type = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    if (
        cfg.attention_bias
        or cfg.mlp_bias
        or cfg.hidden_act != "silu"
        or rope_type not in STATIC_ROPE
        or model.lm_head.bias is not None
        or hooked
    ):
        return None
    base, layers = model.model, model.model.layers
    att = [layer.self_attn for layer in layers]
    mlp = [layer.mlp for layer in layers]
    qkv = [torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) for a in att]
    gate_up = [torch.cat([m.gate_proj.weight, m.up_proj.weight]) for m in mlp]
    mats = [
        qkv,
        [a.o_proj.weight for a in att],
        gate_up,
        [m.down_proj.weight for m in mlp],
        [model.lm_head.weight],
    ]
    packed = [[prepack(w) for w in ws] for ws in mats] if pack else []
    if packed and all(p is not None for ps in packed for p in ps):
        mats = packed
    return LlamaWeights(
        embed=base.embed_tokens.weight,
        qkv=mats[0],
        o=mats[1],
        gate_up=mats[2],
        down=mats[3],
        norm_attn=[layer.input_layernorm.weight for layer in layers],
        norm_mlp=[layer.post_attention_layernorm.weight for layer in layers],
        norm_out=base.norm.weight,
        lm_head=mats[4][0],
        eps=float(cfg.rms_norm_eps),
        heads=cfg.num_attention_heads,
        kv_heads=cfg.num_key_value_heads,
        head_dim=att[0].head_dim,
        rotary=base.rotary_emb,
        packed=mats is packed,
    )


Attention = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(layer, q [R, H, T, D], k [R, Hk, T, D], v [R, Hk, T, D]) -> [R, T, H*D]; q and k carry RoPE."""


def llama_layers(
    w: LlamaWeights, ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: Attention
) -> torch.Tensor:
    """ids [R, T] -> final hidden states [R, T, C] (before the last norm), as transformers' Llama.

    cos/sin [R, 1, T, D]: RoPE at each token's position. `attention` stores the keys and values
    where its caller keeps them and returns the attention output of each layer.
    """
    r, t = ids.shape
    h, hk, d = w.heads, w.kv_heads, w.head_dim
    x = F.embedding(ids, w.embed)  # [R, T, C]
    for i in range(len(w.qkv)):
        qkv = linear(rms_norm(x, w.norm_attn[i], w.eps), w.qkv[i], w.packed)  # [R, T, (H + 2 Hk) D]
        qk = rope(qkv[..., : (h + hk) * d].view(r, t, h + hk, d).transpose(1, 2), cos, sin)  # q and k at once
        v = qkv[..., (h + hk) * d :].view(r, t, hk, d).transpose(1, 2)  # [R, Hk, T, D]
        x = x + linear(attention(i, qk[:, :h], qk[:, h:], v), w.o[i], w.packed)
        gate, up = linear(rms_norm(x, w.norm_mlp[i], w.eps), w.gate_up[i], w.packed).chunk(2, dim=-1)
        x = x + linear(F.silu(gate) * up, w.down[i], w.packed)
    return x


def llama_logits(w: LlamaWeights, hidden: torch.Tensor) -> torch.Tensor:
    """[..., C] final hidden states -> [..., V] logits (final RMSNorm, LM head)."""
    return linear(rms_norm(hidden, w.norm_out, w.eps), w.lm_head, w.packed)
