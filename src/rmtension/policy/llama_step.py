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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rmtension.model.precision import bf16_native
from transformers import LlamaForCausalLM

# RoPE types whose frequencies do not depend on the sequence length, so a table computed once serves.
STATIC_ROPE = ("default", "linear", "llama3", "yarn")
LAYOUTS = ("plain", "onednn", "fp16", "int8")
"""How a `LlamaWeights`' matrices are stored: the model's own tensors (`plain`); bf16 in oneDNN's
blocked layout (`onednn`, `prepack`: the same numbers); or compressed copies of fp32 matrices for
FBGEMM (`compress`: other numbers, for sampling that no claim reads): `fp16` weights with fp32
activations and accumulation, or `int8` weights per output channel with dynamically quantised
activations (measured in `benchmarks/sampling.py --weights-error`, too coarse to offer)."""
COMPRESSED = ("fp16", "int8")


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
    q/k/v and gate/up concatenated per layer and, unless `layout` is `plain`, the matrices stored
    for another kernel (`LAYOUTS`: prepacked for oneDNN, or compressed for FBGEMM)."""

    embed: torch.Tensor  # [V, C]
    # the matrices, [N, K] tensors or FBGEMM's packed objects (`layout`)
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
    layout: str = "plain"
    """How qkv, o, gate_up, down and lm_head are stored (`LAYOUTS`)."""

    @property
    def packed(self) -> bool:
        return self.layout == "onednn"


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


def fbgemm_available() -> bool:
    """FBGEMM's fp16 and int8 linears run here: an x86 build of PyTorch, a CPU with AVX2 or later."""
    return (
        "fbgemm" in torch.backends.quantized.supported_engines
        and torch.backends.cpu.get_cpu_capability()
        in (
            "AVX2",
            "AVX512",
        )
    )


def pack_fp16(weight: torch.Tensor) -> torch.ScriptObject:
    """[N, K] fp32 weight -> FBGEMM's packed fp16 copy (`linear`): each weight rounded to the nearest
    fp16, |w - fl16(w)| <= 2^-11 |w| (plus 2^-25 where |w| < 2^-14, fp16's subnormals)."""
    return torch.ops.quantized.linear_prepack_fp16(weight.detach().float(), None)


def pack_int8(weight: torch.Tensor) -> torch.ScriptObject:
    """[N, K] fp32 weight -> FBGEMM's packed int8 copy: symmetric per output channel, w_nk ~ s_n q_nk
    with s_n = max_k |w_nk| / 127 and q_nk in [-127, 127], so |w_nk - s_n q_nk| <= s_n / 2."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    zero = torch.zeros_like(scale, dtype=torch.long)
    q = torch.quantize_per_channel(w, scale.double(), zero, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, None)


def compress(w: LlamaWeights, kind: str) -> LlamaWeights | None:
    """`w` (plain fp32 matrices) with qkv, o, gate_up, down and lm_head as FBGEMM `kind` copies
    (`COMPRESSED`); the embedding, norms and RoPE are shared. None where that does not apply
    (other dtypes or layouts, no FBGEMM). Halves (fp16) or quarters (int8) the bytes a decode step
    reads, which is what a small-batch step waits for."""
    if kind not in COMPRESSED:
        raise ValueError(f"compress: kind must be one of {COMPRESSED}, got {kind!r}")
    cpu = w.lm_head.device.type == "cpu"
    if w.layout != "plain" or w.lm_head.dtype != torch.float32 or not cpu or not fbgemm_available():
        return None
    pack = pack_fp16 if kind == "fp16" else pack_int8
    return dataclasses.replace(
        w,
        qkv=[pack(m) for m in w.qkv],
        o=[pack(m) for m in w.o],
        gate_up=[pack(m) for m in w.gate_up],
        down=[pack(m) for m in w.down],
        lm_head=pack(w.lm_head),
        layout=kind,
    )


def linear(x: torch.Tensor, weight, layout: str) -> torch.Tensor:
    """x [..., K], weight [N, K] stored as `layout` (`LAYOUTS`) -> x @ weight.T [..., N].

    `fp16`: FBGEMM converts the weights to fp32 inside the kernel and multiplies in fp32. `int8`:
    FBGEMM's dynamic linear, which also rounds x to 7-bit integers with one scale and zero point per
    call (`reduce_range`: no int16 overflow in AVX2's multiply-add), then accumulates in int32."""
    if layout == "plain":
        return F.linear(x, weight)
    flat = x.reshape(-1, x.shape[-1])
    if layout == "fp16":
        out = torch.ops.quantized.linear_dynamic_fp16(flat, weight)
    elif layout == "int8":
        out = torch.ops.quantized.linear_dynamic(flat, weight, True)
    else:
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, None, "none", [], "")
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
    layout = "plain"
    packed = [[prepack(w) for w in ws] for ws in mats] if pack else []
    if packed and all(p is not None for ps in packed for p in ps):
        mats, layout = packed, "onednn"
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
        layout=layout,
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
        qkv = linear(rms_norm(x, w.norm_attn[i], w.eps), w.qkv[i], w.layout)  # [R, T, (H + 2 Hk) D]
        qk = rope(qkv[..., : (h + hk) * d].view(r, t, h + hk, d).transpose(1, 2), cos, sin)  # q and k at once
        v = qkv[..., (h + hk) * d :].view(r, t, hk, d).transpose(1, 2)  # [R, Hk, T, D]
        x = x + linear(attention(i, qk[:, :h], qk[:, h:], v), w.o[i], w.layout)
        gate, up = linear(rms_norm(x, w.norm_mlp[i], w.eps), w.gate_up[i], w.layout).chunk(2, dim=-1)
        x = x + linear(F.silu(gate) * up, w.down[i], w.layout)
    return x


def llama_logits(w: LlamaWeights, hidden: torch.Tensor) -> torch.Tensor:
    """[..., C] final hidden states -> [..., V] logits (final RMSNorm, LM head)."""
    return linear(rms_norm(hidden, w.norm_out, w.eps), w.lm_head, w.layout)
