"""Two replies to one conversation, streamed token by token: what the comparison bench shows a reviewer.

`stream_pair` yields text deltas of both replies as they are drawn, then each reply's final text,
token ids and sampling settings. It reuses the sampler's pieces (`rmtension.policy.sampling`):
  * one policy: both replies are two rows of ONE batched decode. The conversation is prefilled once
    and its keys and values copied to the second row (the decoders' `prefill` with both rows
    expanded from one prompt), then both rows step together, one forward per token pair;
  * two policies: each prefills and decodes its own row; their steps interleave, so both replies
    grow side by side and the first policy's first token does not wait for the second's prefill.
Rows end at a stop id (eos, `<|im_end|>`), at `max_new_tokens`, or, for a policy without a chat
template, where the transcript's next human turn starts. With the same seed the tokens are those of
`sample(model, [prompt], n=rows, seed=seed)`: the same decoder, generator and draw order.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from rmtension.data.types import Turn
from rmtension.errors import RmtensionError
from rmtension.policy import decode
from rmtension.policy.decode import HFDecoder, LlamaDecoder, make_decoder, weights_used
from rmtension.policy.llama_step import LlamaWeights, llama_weights
from rmtension.policy.sampling import (
    TRANSCRIPT_STOP,
    Policy,
    build_prompt_ids,
    next_tokens,
    nucleus_prefilter,
    uses_chat_template,
)

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ReplyDelta:
    """New text of reply `which` (0 or 1); a reply's deltas concatenate to its `ReplyDone.text`."""

    which: int
    text: str


@dataclass(frozen=True)
class ReplyDone:
    """Reply `which` is complete."""

    which: int
    text: str
    """The reply without special tokens, surrounding whitespace or the transcript's next human turn."""
    token_ids: tuple[int, ...]
    """Every drawn id, the stop id included when the reply stopped at one."""
    finished: bool
    """True when the reply ended at a stop id or stop text rather than at `max_new_tokens`."""
    settings: dict
    """What produced it: model path, dtype, temperature, top_p, top_k, seed, max_new_tokens, and its
    row among the rows of its decode (`row`, `rows`), enough to draw it again."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


ReplyEvent = ReplyDelta | ReplyDone


class ReplyText:
    """Incremental detokeniser of one reply: `push` ids, get the text that has become certain.

    Each call decodes the whole reply (at most a few hundred ids) and returns what is new. Held back
    until a later id settles it: a trailing replacement character (a multi-byte character split
    across tokens), trailing whitespace (the final text is stripped) and a tail that could begin the
    stop text. So the deltas concatenate to exactly `text`, the final reply.
    """

    def __init__(self, tokenizer, stop_text: str | None = None):
        self.tokenizer, self.stop_text = tokenizer, stop_text
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False
        """The stop text has appeared: the reply ends before it."""

    def _visible(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text = text.lstrip()
        if self.stop_text and self.stop_text in text:
            self.stopped = True
            text = text[: text.index(self.stop_text)]
        return text

    def _certain(self, text: str) -> str:
        text = text.rstrip().rstrip("\ufffd")
        for k in range(min(len(self.stop_text or ""), len(text)), 0, -1):
            if text.endswith(self.stop_text[:k]):  # could begin the stop text
                return text[:-k]
        return text

    def _delta(self, text: str) -> str:
        if not text.startswith(self.sent):  # a tokenizer whose decode rewrites earlier text: wait for the end
            return ""
        new, self.sent = text[len(self.sent) :], text
        return new

    def push(self, ids: Sequence[int]) -> str:
        """Append ids; the newly certain text (may be empty)."""
        self.ids.extend(ids)
        visible = self._visible()
        return self._delta(visible.rstrip() if self.stopped else self._certain(visible))

    @property
    def text(self) -> str:
        """The final reply text (after the last `push`)."""
        return self._visible().rstrip()

    def finish(self) -> str:
        """The rest of the text: `text` minus what the deltas already carried."""
        text = self.text
        if not text.startswith(self.sent):
            raise RuntimeError(f"tokenizer rewrote streamed text: {self.sent!r} -> {text!r}")
        rest, self.sent = text[len(self.sent) :], text
        return rest


_FUSED: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, LlamaWeights | None, dict]] = (
    weakref.WeakKeyDictionary()
)


def fused_weights(model: torch.nn.Module, pack: bool) -> LlamaWeights | None:
    """`llama_weights(model, pack)`, kept between calls while the model's parameters stay the same
    tensors with the same contents (their storage and in-place version counters).

    A bench server streams every turn from the same frozen policy; rebuilding the fused weights (q/k/v
    and gate/up concatenated per layer) took 0.16 s of the first token's time on SmolLM2-135M in fp32
    (one thread). A training step bumps the parameters' versions, so a trained model is re-read
    (a write through `.data` does not bump them, and is not seen). The price is that copy, held while
    the model lives: 280 MB for SmolLM2-135M in fp32.
    """
    key = (pack, tuple((p.data_ptr(), p._version) for p in model.parameters()))
    cached = _FUSED.get(model)
    if cached is None or cached[0] != key:
        cached = _FUSED[model] = (key, llama_weights(model, pack), {})
    return cached[1]


def fused_step_weights(model: torch.nn.Module, pack: bool, sampling_weights: str) -> LlamaWeights | None:
    """The decode steps' weights (`decode.step_weights`) beside `fused_weights(model, pack)`, kept with
    it (fp16 copies of SmolLM2-135M: 270 MB more); None for the exact weights."""
    weights = fused_weights(model, pack)
    steps = _FUSED[model][2]
    if weights is not None and sampling_weights not in steps:
        steps[sampling_weights] = decode.step_weights(weights, sampling_weights)
    return steps.get(sampling_weights)


def reply_decoder(policy: Policy, max_new_tokens: int) -> LlamaDecoder | HFDecoder:
    """`make_decoder` for one reply's worth of steps, with the fused weights kept between calls.
    A model with forward hooks gets the generic decoder, as in `make_decoder` (never cached)."""
    model = policy.model
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return make_decoder(model, max_new_tokens, policy.pad_id, steps=max_new_tokens)
    bf16 = next(model.parameters()).dtype == torch.bfloat16  # only bf16 weights are ever prepacked
    pack = bf16 and max_new_tokens >= decode.PREPACK_STEPS
    weights = fused_weights(model, pack)
    if weights is None:
        return HFDecoder(model, policy.pad_id)
    step = fused_step_weights(model, pack, policy.sampling_weights)
    return LlamaDecoder(weights, max_new_tokens, step_weights=step)


class PolicyRows:
    """One policy's batched decode of `rows` replies to one prompt: the prompt is prefilled once,
    its cache copied to every row, and each `draw` steps every live row by one token.

    Draws follow `policy.sample`'s order exactly (one generator, one uniform per live row and step,
    a row dropped from the batch as soon as it ends), so the tokens equal `sample`'s for a seed.
    """

    def __init__(self, policy: Policy, prompt: list[int], rows: int, max_new_tokens: int, seed: int):
        device = next(policy.model.parameters()).device
        self.policy, self.prompt, self.rows = policy, prompt, rows
        self.decoder = reply_decoder(policy, max_new_tokens)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.alive = list(range(rows))  # decoder row -> reply row
        self.tok: torch.Tensor | None = None  # the tokens drawn last, one per live row

    @torch.inference_mode()
    def draw(self, temperature: float, top_k: int, top_p: float) -> list[tuple[int, int]]:
        """(row, token) for every live row: the first call prefills, later ones step."""
        if self.tok is None:
            expand = torch.zeros(self.rows, dtype=torch.long, device=self.generator.device)
            logits = self.decoder.prefill([self.prompt], expand)
        else:
            logits = self.decoder.step(self.tok)
        prefilter = nucleus_prefilter(self.decoder)
        self.tok = next_tokens(logits, temperature, top_k, top_p, self.generator, prefilter)
        return list(zip(self.alive, self.tok.tolist()))

    def end(self, rows: set[int]) -> None:
        """Drop the rows that have ended from the batch (and from the decoder's cache)."""
        keep = [i for i, r in enumerate(self.alive) if r not in rows]
        if len(keep) == len(self.alive) or not keep:
            self.alive = [self.alive[i] for i in keep]
            return
        index = torch.tensor(keep, device=self.tok.device)
        self.decoder.keep(index)
        self.tok, self.alive = self.tok[index], [self.alive[i] for i in keep]


def conversation(messages: Sequence[dict]) -> list[Turn]:
    """Chat messages [{role, content}] -> turns; the conversation must end in a user turn."""
    turns = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise RmtensionError(f"message {i}: needs role in {ROLES} and text content, got {role!r}")
        turns.append(Turn(role, content))
    if not turns or turns[-1].role != "user":
        raise RmtensionError("the conversation must end with a user turn")
    return turns


def reply_settings(policy: Policy, sampling_weights: str = "exact", **sampling) -> dict:
    """The record of what drew a reply (`ReplyDone.settings`); `sampling_weights`: what the decode
    steps multiplied by (`weights_used`)."""
    dtype = str(next(policy.model.parameters()).dtype).removeprefix("torch.")
    return {"model": policy.path, "dtype": dtype, "sampling_weights": sampling_weights, **sampling}


def stream_pair(
    policies: Sequence[Policy],
    messages: Sequence[dict],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int = 0,
    seed: int,
    max_prompt_tokens: int | None = None,
) -> Iterator[ReplyEvent]:
    """Two replies to `messages` (a chat ending in a user turn), streamed: `ReplyDelta`s as text
    becomes certain, then a `ReplyDone` per reply. One policy: two rows of one batched decode (the
    conversation prefilled once). Two policies: reply i from policy i, their steps interleaved; both
    draw with `seed`, so the same policy twice gives the same reply twice.

    `max_prompt_tokens` (default: the model's positions less `max_new_tokens`) drops whole turns from
    the front of a longer conversation (`build_prompt_ids`).
    """
    if len(policies) not in (1, 2):
        raise RmtensionError(f"stream_pair needs one or two policies, got {len(policies)}")
    turns = conversation(messages)
    sampling = dict(
        temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, max_new_tokens=max_new_tokens
    )
    decodes, owner = [], []  # owner[which] = (decode, row)
    for d, policy in enumerate(policies):
        limit = (
            max_prompt_tokens
            or getattr(policy.model.config, "max_position_embeddings", 1 << 20) - max_new_tokens
        )
        rows = 3 - len(policies)
        decodes.append(
            PolicyRows(policy, build_prompt_ids(policy.tokenizer, turns, limit), rows, max_new_tokens, seed)
        )
        owner += [(d, r) for r in range(rows)]
    which_of = {o: w for w, o in enumerate(owner)}
    texts, tokens = [], [[] for _ in owner]
    for d, _ in owner:
        tok = decodes[d].policy.tokenizer
        texts.append(ReplyText(tok, None if uses_chat_template(tok) else TRANSCRIPT_STOP))
    while any(rows.alive for rows in decodes):
        for d, rows in enumerate(decodes):
            if not rows.alive:
                continue
            ended = set()
            for row, token in rows.draw(temperature, top_k, top_p):
                which = which_of[d, row]
                text, ids = texts[which], tokens[which]
                ids.append(token)
                stop = token in rows.policy.stop_ids  # the stop id ends the reply; it is not its text
                delta = "" if stop else text.push([token])
                if delta:
                    yield ReplyDelta(which, delta)
                if stop or text.stopped or len(ids) == max_new_tokens:
                    ended.add(row)
                    rest = text.finish()
                    if rest:
                        yield ReplyDelta(which, rest)
                    settings = reply_settings(
                        rows.policy, weights_used(rows.decoder), **sampling, row=row, rows=rows.rows
                    )
                    yield ReplyDone(which, text.text, tuple(ids), stop or text.stopped, settings)
            rows.end(ended)
