"""Decoders for `rmtension.policy.sampling.sample`: prefill a batch, then one token per row per step.

Two implementations of one small interface (`prefill`, `step`, `keep`):
  * `LlamaDecoder`, for Llama-family models (SmolLM2): the plain-PyTorch forward of
    `rmtension.policy.llama_step` over KV caches preallocated for the whole generation. A decode
    step writes one cache column in place (HF's DynamicCache concatenates, copying the whole
    cache per layer and step). Prompts are prefilled packed end to end, with no padding.
    Rows are grouped by prompt length (`split_rows`), each group with its own cache, so
    attention does not read long runs of padding columns.
  * `HFDecoder`, for every other model: the model's own forward over transformers' DynamicCache.

Both prefill each distinct prompt once and copy its cache to its samples, compute logits only for
the last position, and drop finished rows on request (`keep`). Weights are read when a decoder is
built, once per `sample` call: RL changes parameter data between calls
(`rmtension.rl.rloo.swapped`, `sync_sampler`), never during one.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rmtension.model.encode import pad
from rmtension.policy.llama_step import (
    COMPRESSED,
    LlamaWeights,
    attend,
    compress,
    llama_layers,
    llama_logits,
    llama_weights,
)
from transformers import DynamicCache

PACK_TOKENS = 4096
"""Prompt tokens per prefill pass: large matmuls, bounded activations ([N, 2 I] in the MLP)."""
MIN_SHARED_PREFIX = 8
"""Prompt tokens that all prompts of a batch must share before the prefix gets its own prefill pass."""
PREPACK_STEPS = 48
"""Decode steps from which a sampling call prepacks its bf16 weights (`llama_step.prepack`): packing
SmolLM2-135M takes 0.25-0.9 s (fresh memory, page faults included) and saves ~15 ms per decode step
(one thread), so an RL step's single 32-token batch samples faster without it."""
SAMPLING_WEIGHTS = ("exact", "fp16")
"""What decode steps multiply by: the model's own weights, or (fp32 models on CPU) fp16 copies
(`llama_step.compress`): a batch-2 step of SmolLM2-135M reads 540 MB of fp32 matrices, and the step
waits for that memory. Prefill always uses the exact weights."""
GROUP_COST = 512
"""What one more cache group costs per decode step, in cache cells (rows x columns) that attention
reads: its ~12 extra small kernels per layer take about as long as reading 512 cells' keys and
values (SmolLM2-135M, one thread: 2.3 us per cell and step over 30 layers, ~1.2 ms per group)."""


def left_pad(seqs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad for generation: ids [B, L] and mask [B, L] (`rmtension.model.encode.pad`)."""
    return pad(seqs, pad_id, side="left")


def positions(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] position ids for a left-padded mask, exactly as generate computes them (pads get 0)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def causal_bias(t: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[1, 1, t, t] fp32 additive causal mask: 0 where query i may read key j (j <= i), else -inf."""
    return torch.full((t, t), float("-inf"), device=device).triu(1)[None, None]


def packs(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive groups of indices whose lengths sum to at most `budget` (a longer one alone)."""
    out: list[list[int]] = []
    total = budget
    for i, n in enumerate(lengths):
        if total + n > budget:
            out.append([])
            total = 0
        out[-1].append(i)
        total += n
    return out


def split_rows(lengths: list[int], new_tokens: int, group_cost: int = GROUP_COST) -> list[tuple[int, int]]:
    """Rows (prompt lengths, in batch order) -> contiguous groups [(start, stop)] that minimise
    sum over groups of rows x (longest prompt + new_tokens) + group_cost: the cache cells that
    attention reads, all prompts of a group padded to its longest, plus a price per group.

    Groups split only where the length changes, so a prompt's consecutive samples share a group.
    Exact dynamic programme over the split points; O(R^2) for R rows.
    """
    n = len(lengths)
    cuts = [0] + [i for i in range(1, n) if lengths[i] != lengths[i - 1]] + [n]
    best = [0.0] + [float("inf")] * (len(cuts) - 1)  # best[j]: rows before cuts[j] grouped
    back = [0] * len(cuts)
    for j in range(1, len(cuts)):
        longest = 0
        for i in range(j - 1, -1, -1):  # the last group is rows cuts[i]..cuts[j]
            longest = max(longest, max(lengths[cuts[i] : cuts[i + 1]]))
            cost = best[i] + (cuts[j] - cuts[i]) * (longest + new_tokens) + group_cost
            if cost < best[j]:
                best[j], back[j] = cost, i
    groups, j = [], len(cuts) - 1
    while j > 0:
        groups.append((cuts[back[j]], cuts[j]))
        j = back[j]
    return groups[::-1]


@dataclass
class KVCache:
    """Keys and values of every layer, preallocated: k, v [L, R, Hk, S, D]."""

    k: torch.Tensor
    v: torch.Tensor

    def select(self, rows: torch.Tensor) -> KVCache:
        """A copy holding only `rows` ([R'] indices), in that order."""
        return KVCache(self.k.index_select(1, rows), self.v.index_select(1, rows))


@dataclass
class Group:
    """Batch rows start..stop-1 and their cache: prompts right-aligned to end at column `width`,
    the reply's token j (from 0) at column width + j (the last drawn token is never fed back)."""

    start: int
    stop: int
    width: int
    cache: KVCache
    bias: torch.Tensor  # [r, 1, 1, S] 0 on the columns a new token may read, -inf elsewhere
    col: int  # the column the next fed token writes


class LlamaDecoder:
    """The fused path: `prefill` the prompts, then `step` one token per row; `keep` drops rows.

    Decode attends over all of a group's cache columns, the future ones masked: slicing the cache
    to the filled columns makes the batched matmuls copy it (measured 2x slower per step).
    `step_weights` (default `weights`): what decode steps use, e.g. `llama_step.compress`ed copies;
    prefill (compute-bound, and the first token's distribution) uses `weights`.
    """

    def __init__(
        self,
        weights: LlamaWeights,
        max_new_tokens: int,
        pack_tokens: int | None = None,
        group_cost: int | None = None,
        step_weights: LlamaWeights | None = None,
    ):
        self.w, self.max_new_tokens = weights, max_new_tokens
        self.step_w = weights if step_weights is None else step_weights
        self.pack_tokens = PACK_TOKENS if pack_tokens is None else pack_tokens
        self.group_cost = GROUP_COST if group_cost is None else group_cost

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[R, T] positions -> cos, sin [R, 1, T, D] in the weights' dtype."""
        cos, sin = self.w.rotary(self.w.embed[:1], pos)
        return cos[:, None], sin[:, None]

    def _group(self, start: int, stop: int, lengths: list[int], device) -> Group:
        w, width = self.w, max(lengths[start:stop])
        size = width + self.max_new_tokens - 1
        shape = (len(w.qkv), stop - start, w.kv_heads, size, w.head_dim)
        cache = KVCache(w.embed.new_zeros(shape), w.embed.new_zeros(shape))  # zeros: masked, never NaN
        col = torch.arange(size, device=device)
        pads = width - torch.tensor(lengths[start:stop], device=device)[:, None]  # [r, 1]
        bias = torch.zeros(stop - start, 1, 1, size, device=device)
        bias.masked_fill_(((col < pads) | (col >= width))[:, None, None], float("-inf"))
        return Group(start, stop, width, cache, bias, width)

    def prefill(self, prompts: list[list[int]], expand: torch.Tensor) -> torch.Tensor:
        """Distinct prompts (token ids) and expand [R] (row -> prompt) -> logits [R, V].

        The prompts' common prefix (chat templates start every prompt with the same system
        preamble: 24 of SmolLM2's HH prompt tokens, 23% of 32 prompts' tokens) runs once. The rest
        of each prompt runs packed end to end in one sequence (up to `pack_tokens` a pass), so the
        matmuls see no padding (a left-padded batch of 32 HH prompts is 2.3x their tokens) and
        large shapes; each prompt attends to the prefix and itself. A prompt's keys and values go
        to the cache row of its first sample, which its other samples copy.
        """
        device = expand.device
        lengths = [len(prompts[u]) for u in expand.tolist()]
        self.groups = [
            self._group(a, b, lengths, device)
            for a, b in split_rows(lengths, self.max_new_tokens, self.group_cost)
        ]
        shared = len(os.path.commonprefix(prompts)) if len(prompts) > 1 else 0
        shared = min(shared, min(len(p) for p in prompts) - 1)  # every prompt keeps a token to predict from
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        prefix = self._prefix(prompts[0][:shared]) if shared else None
        first = [int((expand == u).nonzero()[0]) for u in range(len(prompts))]
        logits = []
        for pack in packs([len(p) - shared for p in prompts], self.pack_tokens):
            ids = torch.tensor([[t for u in pack for t in prompts[u][shared:]]], device=device)  # [1, N]
            pos = torch.cat([torch.arange(shared, len(prompts[u]), device=device) for u in pack])[None]
            spans = [(first[u], len(prompts[u])) for u in pack]
            attention = self._prefill_attention(spans, prefix, shared)
            hidden = llama_layers(self.w, ids, *self._rope(pos), attention)  # [1, N, C]
            ends = torch.tensor([len(prompts[u]) - shared for u in pack], device=device).cumsum(0) - 1
            logits.append(llama_logits(self.w, hidden[0, ends]))
        for r, u in enumerate(expand.tolist()):  # the other samples of a prompt copy its first row
            if r != first[u]:
                g, h, t = self._where(r), self._where(first[u]), lengths[r]
                for a, b in ((g.cache.k, h.cache.k), (g.cache.v, h.cache.v)):
                    a[:, r - g.start, :, g.width - t : g.width] = b[
                        :, first[u] - h.start, :, h.width - t : h.width
                    ]
        self.pos = torch.tensor(lengths, device=device) - 1
        return torch.cat(logits)[expand]

    def _prefix(self, ids: list[int]) -> KVCache:
        """Keys and values [L, 1, Hk, P, D] of the shared prefix of P tokens."""
        w, device, p = self.w, self.w.embed.device, len(ids)
        shape = (len(w.qkv), 1, w.kv_heads, p, w.head_dim)
        cache, mask = KVCache(w.embed.new_empty(shape), w.embed.new_empty(shape)), causal_bias(p, device)

        def attention(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.k[i], cache.v[i] = k, v
            return attend(q, k, v, mask)

        llama_layers(
            w,
            torch.tensor([ids], device=device),
            *self._rope(torch.arange(p, device=device)[None]),
            attention,
        )
        return cache

    def _where(self, row: int) -> Group:
        return next(g for g in self.groups if g.start <= row < g.stop)

    def _prefill_attention(self, spans: list[tuple[int, int]], prefix: KVCache | None, shared: int):
        """Attention over a pack of prompts: span j = (batch row, prompt length), the tokens after
        the `shared` prefix laid end to end. Each prompt's keys and values are written to its cache
        row (prefix, then its own), and its queries attend to that row."""
        device = self.w.embed.device
        # [1, 1, t - shared, t]: the prefix in full, the prompt's own tokens causally
        masks = {t: F.pad(causal_bias(t - shared, device), (shared, 0)) for _, t in spans}
        slots = [(self._where(row), row, t) for row, t in spans]

        def attention(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out, a = [], 0
            for g, row, t in slots:
                own, c0 = t - shared, g.width - t
                keys, values = g.cache.k[i, row - g.start], g.cache.v[i, row - g.start]  # [Hk, S, D]
                if prefix is not None:
                    keys[:, c0 : c0 + shared], values[:, c0 : c0 + shared] = prefix.k[i, 0], prefix.v[i, 0]
                keys[:, c0 + shared : g.width] = k[0, :, a : a + own]
                values[:, c0 + shared : g.width] = v[0, :, a : a + own]
                span = slice(c0, g.width)
                out.append(attend(q[:, :, a : a + own], keys[None, :, span], values[None, :, span], masks[t]))
                a += own
            return torch.cat(out, dim=1)  # [1, N, H*D]

        return attention

    def _decode_attention(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = []
        for g in self.groups:
            rows = slice(g.start, g.stop)
            g.cache.k[i, :, :, g.col] = k[rows, :, 0]
            g.cache.v[i, :, :, g.col] = v[rows, :, 0]
            out.append(attend(q[rows], g.cache.k[i], g.cache.v[i], g.bias))
        return out[0] if len(out) == 1 else torch.cat(out)

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        """tok [R] (the tokens just drawn) -> logits [R, V] for the next ones."""
        self.pos = self.pos + 1
        for g in self.groups:
            g.bias[..., g.col] = 0.0
        hidden = llama_layers(
            self.step_w, tok[:, None], *self._rope(self.pos[:, None]), self._decode_attention
        )
        for g in self.groups:
            g.col += 1
        return llama_logits(self.step_w, hidden[:, -1])

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row not in `rows` ([R'] increasing indices into the current rows)."""
        groups, start = [], 0
        for g in self.groups:
            local = rows[(rows >= g.start) & (rows < g.stop)] - g.start
            if len(local) == 0:
                continue
            if len(local) < g.stop - g.start:
                g.cache, g.bias = g.cache.select(local), g.bias[local]
            g.start, g.stop = start, start + len(local)
            groups.append(g)
            start = g.stop
        self.groups, self.pos = groups, self.pos[rows]


class HFDecoder:
    """The generic path: the model's own forward over transformers' DynamicCache."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id
        accepts = inspect.signature(model.forward).parameters
        self.last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}

    def prefill(self, prompts: list[list[int]], expand: torch.Tensor) -> torch.Tensor:
        """Distinct prompts (token ids), left-padded into one batch, and expand [R] (row -> prompt)
        -> logits [R, V]."""

        ids, mask = (x.to(expand.device) for x in left_pad(prompts, self.pad_id))
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions(mask),
            past_key_values=cache,
            use_cache=True,
            **self.last_only,
        )
        self.cache = out.past_key_values
        if len(expand) != len(ids) or not torch.equal(expand, torch.arange(len(ids), device=ids.device)):
            self.cache.batch_select_indices(expand)  # one prefill per prompt, copied to its samples
        self.mask = mask[expand]
        self.pos = positions(self.mask)[:, -1]
        return out.logits[expand, -1]

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        """tok [R] -> logits [R, V]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        self.pos = self.pos + 1
        out = self.model(
            input_ids=tok[:, None],
            attention_mask=self.mask,
            position_ids=self.pos[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask, self.pos = self.mask[rows], self.pos[rows]


def step_weights(weights: LlamaWeights, sampling_weights: str) -> LlamaWeights | None:
    """The decode steps' weights for a `SAMPLING_WEIGHTS` choice: None (the exact ones) for `exact`,
    or where `fp16` copies do not apply (`llama_step.compress`)."""
    if sampling_weights not in SAMPLING_WEIGHTS:
        raise ValueError(f"sampling_weights must be one of {SAMPLING_WEIGHTS}, got {sampling_weights!r}")
    return None if sampling_weights == "exact" else compress(weights, sampling_weights)


def weights_used(decoder: LlamaDecoder | HFDecoder) -> str:
    """The `SAMPLING_WEIGHTS` choice a decoder's steps really use (`exact` where fp16 copies did not
    apply)."""
    step = getattr(decoder, "step_w", None)
    return step.layout if step is not None and step.layout in COMPRESSED else "exact"


def make_decoder(
    model,
    max_new_tokens: int,
    pad_id: int,
    fused: bool = True,
    steps: int | None = None,
    sampling_weights: str = "exact",
) -> LlamaDecoder | HFDecoder:
    """The fused decoder where the model allows it (and `fused`), else the generic one.

    `steps`: how many decode steps the decoder will run (all batches); its weights are prepacked
    only from `PREPACK_STEPS` on, where the packing pays for itself. `sampling_weights`: the decode
    steps' weights (`SAMPLING_WEIGHTS`; the generic decoder is always exact).
    """
    pack = steps is None or steps >= PREPACK_STEPS
    weights = llama_weights(model, pack) if fused else None
    if weights is None:
        return HFDecoder(model, pad_id)
    return LlamaDecoder(weights, max_new_tokens, step_weights=step_weights(weights, sampling_weights))
