"""Sampling from a causal-LM policy: chat-formatted HH prompts and a hand-written batched decode loop.

The loop beats `model.generate` on CPU (`benchmarks/sampling.py`) by
  1. running bf16 *weights* (`load_policy(precision="bf16")`). bf16 autocast re-casts every
     weight matrix on every decode step: measured on SmolLM2-135M, batch 32, 2 cores, one decode
     step takes 410 ms in fp32, 480 ms under autocast and 75 ms with bf16 weights;
  2. a fused decoder for Llama-family models (`rmtension.policy.decode`): a plain-PyTorch
     forward over preallocated KV caches, prompts prefilled packed without padding and their
     shared prefix once, prepacked bf16 weights; other families use the model's own forward;
  3. prefilling each distinct prompt once and copying its KV cache to its n samples;
  4. sorting prompts by length, so batches carry little left padding;
  5. dropping finished rows from the batch (and the KV cache) instead of decoding padding;
  6. computing logits only for the last position and skipping generate's per-step
     logits-processor and stopping-criteria machinery (`torch.inference_mode`, plain loop);
  7. drawing tokens by inverting the CDF rather than with `torch.multinomial` (`next_tokens`).
The token distribution is the model's own softmax, with the same temperature / top-k / top-p
filters as `generate` (`filter_logits` mirrors transformers' warpers). In fp32 and greedy
mode the tokens equal `generate(do_sample=False)` (tests/test_policy.py, tests/test_decode.py).
"""

from __future__ import annotations

from collections.abc import Sequence
import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rmtension.data.types import Turn, render_transcript
from rmtension.model.precision import use_bf16
from rmtension.policy.decode import HFDecoder, LlamaDecoder, make_decoder, weights_used
from rmtension.model.backbones import load_causal_lm
from rmtension.model.backbones import load_tokenizer, resolve_backbone

END_OF_TURN = "<|im_end|>"
"""ChatML end-of-turn marker (SmolLM2, Qwen): a stop token whenever the vocabulary has it."""
TRANSCRIPT_STOP = "\n\nHuman:"
"""Without a chat template the prompt is an HH transcript; the reply ends where the next human turn starts."""


@dataclass
class Sampled:
    """Responses in row order: row r answers prompt `prompt_index[r]` (its `sample_index[r]`-th draw)."""

    prompt_index: np.ndarray
    """[R] index into the prompt list."""
    sample_index: np.ndarray
    """[R] 0..n-1 within the prompt."""
    tokens: list[list[int]]
    """Generated ids; the stop token is included when the row finished."""
    finished: np.ndarray
    """[R] True when the row stopped at end-of-turn rather than at `max_new_tokens`."""

    def __len__(self) -> int:
        return len(self.tokens)

    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


def load_policy(path: str, precision: str = "bf16", trust_remote_code: bool = False):
    """A causal LM in eval mode; `bf16` casts the weights (see the module docstring for why not autocast)."""

    model = load_causal_lm(path, trust_remote_code=trust_remote_code).eval()
    return model.to(torch.bfloat16) if precision == "bf16" else model


@dataclass
class Policy:
    """A loaded policy with what sampling needs besides the weights."""

    model: torch.nn.Module
    tokenizer: object
    stop_ids: list[int]
    pad_id: int
    path: str
    sampling_weights: str = "exact"
    """What decode steps multiply by (`PolicyConfig.sampling_weights`)."""
    draw_bf16: bool = False
    """`draw` samples from a bf16 copy of `model` (set it only where bf16 is native: `use_bf16`)."""
    _bf16: tuple | None = field(default=None, repr=False, compare=False)
    """(the model it copies, the bf16 copy): made once per model object, refreshed on every draw."""

    def sampler(self) -> torch.nn.Module:
        """What `draw` samples from: `model`, or its bf16 copy with `model`'s current weights."""
        if not self.draw_bf16:
            return self.model
        if self._bf16 is None or self._bf16[0] is not self.model:
            self._bf16 = (self.model, copy.deepcopy(self.model).to(torch.bfloat16).eval())
        else:
            with torch.no_grad():
                src = self.model.state_dict()
                for name, t in self._bf16[1].state_dict().items():
                    t.copy_(src[name])
        return self._bf16[1]

    def sample(
        self, prompts: Sequence[Sequence[int]], cfg, n: int, seed: int | None, progress=None
    ) -> Sampled:
        """`n` responses per prompt with the decoding settings of `cfg` (a `PolicyConfig`)."""
        return sample_with(self.model, prompts, cfg, n, seed, self.stop_ids, self.pad_id, progress=progress)

    def draw(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        seed: int | None = 0,
        batch_size: int = 32,
    ) -> Sampled:
        """`n` responses per prompt at `temperature` (0: greedy), no top-k or top-p, on the exact
        weights whatever `sampling_weights` says (what the steering loop measures and trains on), or
        on their bf16 copy with `draw_bf16`."""
        return sample(
            self.sampler(),
            prompts,
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size,
            stop_ids=self.stop_ids,
            pad_id=self.pad_id,
            seed=seed,
        )


def open_policy(
    cfg, cache_dir: str | None = None, precision: str | None = None, device: str = "cpu"
) -> Policy:
    """The policy of a `PolicyConfig`: registry name or HF path, in `precision` (default: the config's);
    bf16 only where the device has native bf16 matmuls (`rmtension.model.precision`), else fp32."""

    path = resolve_backbone(cfg.backbone, cache_dir)
    # build_prompt_ids tokenises whole conversations before cutting them: no length limit here.
    tok = load_tokenizer(path, 1 << 20, cfg.trust_remote_code)
    precision = precision or cfg.precision
    if precision == "bf16" and not use_bf16(True, device):
        precision = "fp32"  # no native bf16 matmul here: bf16 weights would be far slower than fp32
    model = load_policy(path, precision, cfg.trust_remote_code).to(device)
    return Policy(model, tok, stop_token_ids(tok, model), int(tok.pad_token_id), path, cfg.sampling_weights)


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _prompt_ids(tokenizer, context: Sequence[Turn]) -> list[int]:
    if uses_chat_template(tokenizer):
        messages = [{"role": t.role, "content": t.content} for t in context]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(render_transcript(tuple(context)) + "\n\nAssistant:", add_special_tokens=True)[
        "input_ids"
    ]


def build_prompt_ids(tokenizer, context: Sequence[Turn], max_prompt_tokens: int) -> list[int]:
    """Token ids of a conversation ready for the assistant's reply, at most `max_prompt_tokens` long.

    Long conversations lose whole turns from the front (the kept part starts at a user turn, so
    the chat template's system preamble stays intact); a last user turn that alone is too long
    is cut on the left.
    """
    context = list(context)
    starts = [i for i, t in enumerate(context) if t.role == "user"] or [0]
    system = [t for t in context if t.role == "system"]
    for start in starts:
        turns = system + [t for t in context[start:] if t.role != "system"]
        ids = _prompt_ids(tokenizer, turns)
        if len(ids) <= max_prompt_tokens:
            return ids
    return ids[-max_prompt_tokens:]


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-turn ids: the tokenizer's eos, `<|im_end|>` when present, and the model's generation eos."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    if END_OF_TURN in vocab:
        ids.add(int(vocab[END_OF_TURN]))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    for e in [eos] if isinstance(eos, int) else list(eos or []):
        ids.add(int(e))
    return sorted(ids)


def decode_responses(tokenizer, tokens: Sequence[Sequence[int]]) -> list[str]:
    """Response texts without special tokens; transcript-format replies are cut at the next human turn."""
    texts = tokenizer.batch_decode([list(t) for t in tokens], skip_special_tokens=True)
    if not uses_chat_template(tokenizer):
        texts = [t.split(TRANSCRIPT_STOP)[0] for t in texts]
    return [t.strip() for t in texts]


def sort_ascending(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, V] -> (values, order) [B, V], as `torch.sort(x, dim=-1)`.

    On CPU numpy's argsort does it: 1.6 ms instead of 7.4 ms for two rows of SmolLM2's 49k logits (one
    thread), 8% of a streamed reply's decode step. The sorted values are the same, so the nucleus
    filter's cumulative sums are too; only equal logits may come in another order.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.sort(x, dim=-1)
    order = torch.from_numpy(np.argsort(x.detach().numpy(), axis=-1))
    return x.gather(-1, order), order


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """[B, V] -> [B, V] with filtered-out entries at -inf (transformers' TopK then TopP warper).

    top_k = 0 and top_p = 1 leave the logits unchanged.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = sort_ascending(logits)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - top_p
        drop[..., -1] = False  # keep at least the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def invert_cdf(weights: torch.Tensor, u: torch.Tensor, block: int = 256) -> torch.Tensor:
    """weights [B, V] >= 0 (need not sum to 1), u [B] uniform in [0, 1) -> [B] indices, index i
    with probability weights[:, i] / weights.sum(-1): the first i whose float64 CDF exceeds u.

    Two levels, so the float64 cumsum covers one block of `block` entries rather than all V:
    block sums locate the block, a cumsum inside it the index (3.4 ms instead of 10.3 ms of kernel
    time per draw at batch 32 over a 49k vocabulary). A zero weight is never drawn.
    """
    b, v = weights.shape
    n = -(-v // block)
    w = (weights if v == n * block else F.pad(weights, (0, n * block - v))).view(b, n, block)
    sums = w.sum(-1, dtype=torch.float64)  # [B, n]
    cdf = sums.cumsum(-1)
    target = u[:, None].double() * cdf[:, -1:]  # [B, 1]
    j = torch.searchsorted(cdf, target, right=True).clamp(max=n - 1)  # first block whose CDF exceeds it
    rest = target - (cdf.gather(1, j) - sums.gather(1, j))  # what is left inside block j
    inside = w[torch.arange(b, device=w.device), j[:, 0]]  # [B, block]
    k = torch.searchsorted(inside.cumsum(-1, dtype=torch.float64), rest, right=True)
    # rounding may leave `rest` at the block's own total: then its last entry with weight
    last = torch.where(inside > 0, torch.arange(block, device=w.device), -1).amax(-1, keepdim=True)
    return (j * block + torch.minimum(k, last)).squeeze(1)


NUCLEUS_PREFILTER = 256
"""How many of the most likely tokens `next_tokens` looks among for the nucleus on the fast path
(decode steps on fp16 weights): with temperature 0.7 and top-p 0.9 a chat model's nucleus is a few
tokens to a few dozen, so 256 holds it at almost every step, and a step where it does not falls back
to the full sort."""


def nucleus_prefilter(decoder: LlamaDecoder | HFDecoder) -> int:
    """`next_tokens`' prefilter for a decoder's draws: `NUCLEUS_PREFILTER` where its steps use
    compressed weights (the fast path), 0 (the full sort, bit for bit) on exact ones."""
    return NUCLEUS_PREFILTER if weights_used(decoder) != "exact" else 0


def nucleus_among_top(logits: torch.Tensor, top_p: float, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """[B, V] logits -> (ids [B, k], weights [B, k]): the nucleus of `filter_logits(top_p=top_p)`
    found among each row's k most likely tokens, ids in vocabulary order and weights the
    probabilities (0 outside the nucleus); None when some row's k - 1 most likely tokens hold less
    than top_p, so its nucleus may reach past them.

    A token is kept when the tokens more likely than it hold less than top_p, which is the full
    filter's rule (drop while the ascending cumulative sum stays <= 1 - top_p) read from the top.
    The set and its weights equal the full filter's up to float rounding in the sums, so a draw
    with the same uniform picks the same token except within rounding of a boundary.
    """
    k = min(k, logits.shape[-1])
    top, ids = torch.topk(logits, k, dim=-1)  # [B, k], most likely first
    p = (top - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
    before = p.cumsum(-1) - p  # [B, k] mass of the tokens more likely than each
    if bool((before[:, -1] < top_p).any()):
        return None
    order = ids.argsort(-1)  # vocabulary order, as the full vocabulary's CDF runs
    return ids.gather(-1, order), p.masked_fill(before >= top_p, 0.0).gather(-1, order)


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
    prefilter: int = 0,
) -> torch.Tensor:
    """[B, V] logits -> [B] token ids. temperature 0 is greedy (first maximum, as in generate).

    Draws by inverting the CDF (`invert_cdf`) with one uniform per row, which picks token i with
    probability p_i; on CPU it is far faster than `torch.multinomial` over a 49k vocabulary
    (measured 2.4 ms vs 28 ms per draw at batch 32 for a plain float64 cumsum).

    `prefilter` > 0 (top-p only, no top-k) looks for the nucleus among that many most likely tokens
    (`nucleus_among_top`) instead of sorting all V: 0.6 ms instead of 4.1 ms for two rows of
    SmolLM2's 49k logits on one thread. Its sums round differently from the full sort's, so only
    the fast path (fp16 decode-step weights) uses it; the exact path stays bit for bit.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    z = logits if temperature == 1 else logits.float() / temperature
    if prefilter and top_p < 1 and not top_k:
        found = nucleus_among_top(z.float(), top_p, prefilter)
        if found is not None:
            ids, weights = found
            u = torch.rand(len(ids), generator=generator, dtype=torch.float64, device=ids.device)
            return ids.gather(-1, invert_cdf(weights, u)[:, None]).squeeze(1)
    if top_k or top_p < 1:
        z = filter_logits(z.float(), top_k, top_p)
    probs = z.softmax(dim=-1, dtype=torch.float32)
    u = torch.rand(len(probs), generator=generator, dtype=torch.float64, device=probs.device)
    return invert_cdf(probs, u)


def plan_rows(prompt_lengths: Sequence[int], n: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """Batches of (prompt, sample) rows, longest prompts first, a prompt's samples kept together."""
    order = np.argsort(-np.asarray(prompt_lengths), kind="stable")
    rows = [(int(p), j) for p in order for j in range(n)]
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


@torch.inference_mode()
def _decode_batch(
    decoder: LlamaDecoder | HFDecoder,
    prompts: list[list[int]],
    rows: list[tuple[int, int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    stop: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[list[list[int]], list[bool]]:
    """Generate for one batch of rows; each distinct prompt is prefilled once. With a decoder whose
    steps use compressed weights, every draw (the first, from the exact prefill, too) finds the
    nucleus among the most likely tokens (`NUCLEUS_PREFILTER`)."""
    device = stop.device
    prefilter = nucleus_prefilter(decoder)
    slot = {p: i for i, p in enumerate(dict.fromkeys(p for p, _ in rows))}
    expand = torch.tensor([slot[p] for p, _ in rows], device=device)
    logits = decoder.prefill([prompts[p] for p in slot], expand)
    n = len(rows)
    drawn = torch.zeros(n, max_new_tokens, dtype=torch.long, device=device)  # [R, T] per output row
    length = torch.full((n,), max_new_tokens, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    alive = torch.arange(n, device=device)  # batch row -> output row
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        tok = next_tokens(logits, temperature, top_k, top_p, generator, prefilter)
        drawn[alive[~done], step] = tok[~done]
        now = torch.isin(tok, stop) & ~done
        length[alive[now]], finished[alive[now]] = step + 1, True
        done |= now
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if int(done.sum()) >= max(1, len(done) // 8):  # compact: drop finished rows (copying the cache costs)
            keep = (~done).nonzero().squeeze(1)
            decoder.keep(keep)
            alive, tok, done = alive[keep], tok[keep], done[keep]
        logits = decoder.step(tok)
    length[alive[~done]] = step + 1
    tokens = [row[:k] for row, k in zip(drawn.tolist(), length.tolist())]
    return tokens, finished.tolist()


def sample(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 32,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    seed: int | None = 0,
    progress=None,
    fused: bool = True,
    sampling_weights: str = "exact",
) -> Sampled:
    """Draw `n` responses for each prompt (token-id lists, already chat-formatted).

    Rows come back grouped by prompt in prompt order. `seed` makes the draws reproducible for a
    fixed batch plan; `progress(done_rows, total_rows)` is called after each batch. `fused=False`
    forces the generic decoder (`rmtension.policy.decode`) on a model that has the fused one.
    `sampling_weights`: the decode steps' weights (`decode.SAMPLING_WEIGHTS`; `fp16` changes the
    numbers, so nothing a claim reads passes it).
    """
    prompts = [list(p) for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    gen = torch.Generator(device=next(model.parameters()).device)
    if seed is not None:
        gen.manual_seed(seed)
    stop = torch.tensor(sorted(set(stop_ids)) or [-1], device=gen.device)
    was_training = model.training
    model.eval()
    by_row: dict[tuple[int, int], tuple[list[int], bool]] = {}
    plan = plan_rows([len(p) for p in prompts], n, batch_size)
    decoder = make_decoder(
        model,
        max_new_tokens,
        pad_id,
        fused,
        steps=len(plan) * max_new_tokens,
        sampling_weights=sampling_weights,
    )
    for rows in plan:
        toks, fin = _decode_batch(
            decoder,
            prompts,
            rows,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            generator=gen,
        )
        by_row.update({r: (t, f) for r, t, f in zip(rows, toks, fin)})
        if progress is not None:
            progress(len(by_row), len(prompts) * n)
    model.train(was_training)
    keys = [(p, j) for p in range(len(prompts)) for j in range(n)]
    return Sampled(
        prompt_index=np.array([p for p, _ in keys], dtype=np.int64),
        sample_index=np.array([j for _, j in keys], dtype=np.int64),
        tokens=[by_row[k][0] for k in keys],
        finished=np.array([by_row[k][1] for k in keys], dtype=bool),
    )


def sample_with(
    model,
    prompts: Sequence[Sequence[int]],
    cfg,
    n: int,
    seed: int | None,
    stop_ids: Sequence[int],
    pad_id: int,
    max_new_tokens: int | None = None,
    progress=None,
) -> Sampled:
    """`sample` with the decoding settings of `cfg` (a `PolicyConfig`: temperature, top-k, top-p, batch
    size, sampling weights, and `max_new_tokens` unless given), so no caller unpacks them by hand."""
    return sample(
        model,
        prompts,
        n=n,
        max_new_tokens=cfg.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        batch_size=cfg.batch_size,
        stop_ids=stop_ids,
        pad_id=pad_id,
        seed=seed,
        progress=progress,
        sampling_weights=cfg.sampling_weights,
    )
