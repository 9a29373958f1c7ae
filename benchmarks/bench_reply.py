"""Reply latency of the comparison bench: time to the first token and to two complete replies.

The bench shows a reviewer two replies to the conversation so far. This times that on the packaged
SmolLM2-135M-Instruct in fp32, after an HH conversation of about --prompt-tokens tokens (the first
`helpful-base/test` conversation whose chat-formatted prompt is within 15% of it), both replies
exactly --new-tokens long (stop ids off in ours, `min_new_tokens` in `generate`), the same sampling
settings in every method:

  * ours: `rmtension.policy.stream.stream_pair` with one policy: the conversation prefilled once,
    both replies two rows of one batched decode, text deltas streamed as they become certain, decode
    steps on fp16 copies of the weights (the bench's default `source.sampling_weights: fp16`;
    prefill stays exact). These are the targets' numbers;
  * ours, exact weights (`sampling_weights: exact`, what best-of-n and RL sample with);
  * generate + streamer (the baseline of the ratios): what a team would build with transformers,
    `model.generate` in a thread with a `TextIteratorStreamer` read by the caller. The streamer takes
    one sequence only ("TextStreamer only supports batch size 1"), so the two replies are two
    `generate` calls, one after the other (running them in two threads at once would put four
    threads on the machine's two cores). Its first token is taken at the streamer's first `put` of
    a generated token, before it waits for a whole word: the earliest that `generate` could show
    anything;
  * generate, batched (for reference, not streamed): one `generate(num_return_sequences=2)` call,
    which prefills the conversation twice but decodes both replies together.

Methods run interleaved, --repeats times, in one process; each reports its median. To measure an
AVX2-only CPU on a machine that also has AVX-512, cap every kernel library at AVX2:
`ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
FBGEMM_ENABLE_INSTRUCTIONS=AVX2` (FBGEMM runs the fp16 weights; the second line of the output
names the instruction set that PyTorch's own kernels use, and the caps).

    python benchmarks/bench_reply.py [--data PATH/hh-rlhf] [--repeats 5] [--new-tokens 96]
        [--prompt-tokens 300] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch
from transformers import TextIteratorStreamer

from rmtension.bench.task import SourceConfig
from rmtension.policy.config import PolicyConfig
from rmtension.policy.sampling import Policy, build_prompt_ids, open_policy
from rmtension.policy.stream import ReplyDelta, ReplyDone, conversation, stream_pair
from timing_args import add_timing_args, apply_timing_args

clock = time.perf_counter
"""The clock of every timing (--clock)."""
SAMPLING = dict(temperature=0.7, top_p=0.9, top_k=0)
"""One setting for every method: a chat-like temperature and nucleus, no top-k."""


def hh_conversation(path: Path, tokenizer, target: int) -> list[dict]:
    """The first HH conversation (before its final reply) whose chat prompt is within 15% of `target` tokens."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            messages = []
            for chunk in json.loads(line)["chosen"].split("\n\nHuman: ")[1:]:
                human, *assistant = chunk.split("\n\nAssistant: ")
                messages.append({"role": "user", "content": human.strip()})
                messages += [{"role": "assistant", "content": a.strip()} for a in assistant]
            messages = messages[:-1]
            n = len(build_prompt_ids(tokenizer, conversation(messages), 1 << 20))
            if abs(n - target) <= 0.15 * target:
                return messages
    raise SystemExit(f"{path}: no conversation of about {target} tokens")


def time_ours(policy: Policy, messages: list[dict], new_tokens: int, seed: int) -> tuple[float, float]:
    """(seconds to the first text delta, seconds to both replies done) for `stream_pair`."""
    t0 = clock()
    first, lengths = None, []
    for event in stream_pair([policy], messages, max_new_tokens=new_tokens, seed=seed, **SAMPLING):
        if first is None and isinstance(event, ReplyDelta):
            first = clock() - t0
        if isinstance(event, ReplyDone):
            lengths.append(event.n_tokens)
    assert lengths == [new_tokens, new_tokens], lengths
    return first, clock() - t0


class TimedStreamer(TextIteratorStreamer):
    """A `TextIteratorStreamer` that notes when `generate` hands it its first generated token."""

    def put(self, value):
        if not self.next_tokens_are_prompt and self.first_token is None:
            self.first_token = clock()
        super().put(value)

    first_token: float | None = None


def generate_streamed(policy: Policy, ids: torch.Tensor, new_tokens: int, seed: int) -> tuple[float, float]:
    """One reply the transformers way: `generate` in a thread, its text read from the streamer.
    Returns (first token time, end time) on `clock`."""
    streamer = TimedStreamer(policy.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=True,
        pad_token_id=policy.pad_id,
        streamer=streamer,
        **SAMPLING,
    )
    torch.manual_seed(seed)
    worker = threading.Thread(target=policy.model.generate, kwargs=kwargs)
    worker.start()
    text = "".join(streamer)  # what the page would show, piece by piece
    worker.join()
    assert len(policy.tokenizer(text, add_special_tokens=False)["input_ids"]) > 0
    return streamer.first_token, clock()


def time_generate_streamed(
    policy: Policy, ids: torch.Tensor, new_tokens: int, seed: int
) -> tuple[float, float]:
    """(seconds to the first token of reply A, seconds to reply B done): two calls in turn."""
    t0 = clock()
    first, _ = generate_streamed(policy, ids, new_tokens, seed)
    _, end = generate_streamed(policy, ids, new_tokens, seed + 1)
    return first - t0, end - t0


def time_generate_batched(policy: Policy, ids: torch.Tensor, new_tokens: int, seed: int) -> float:
    """Seconds to both replies from one `generate(num_return_sequences=2)` call (no streaming)."""
    torch.manual_seed(seed)
    t0 = clock()
    with torch.inference_mode():
        out = policy.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            num_return_sequences=2,
            pad_token_id=policy.pad_id,
            **SAMPLING,
        )
    assert out.shape == (2, ids.shape[1] + new_tokens), out.shape
    return clock() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("RMTENSION_DATA", "../shared/data/hh-rlhf"))
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs per method; medians count")
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--prompt-tokens", type=int, default=300)
    add_timing_args(ap)
    args = ap.parse_args()
    global clock
    clock = apply_timing_args(args)
    # fp32, as on a CPU without native bf16; stop ids off so both replies run to --new-tokens
    policy = open_policy(PolicyConfig(), precision="fp32")
    ours = dataclasses.replace(policy, stop_ids=[], sampling_weights=SourceConfig().sampling_weights)
    exact = dataclasses.replace(policy, stop_ids=[], sampling_weights="exact")
    messages = hh_conversation(
        Path(args.data) / "helpful-base" / "test.jsonl.gz", policy.tokenizer, args.prompt_tokens
    )
    ids = torch.tensor([build_prompt_ids(policy.tokenizer, conversation(messages), 1 << 20)])
    print(
        f"SmolLM2-135M-Instruct fp32, {torch.get_num_threads()} threads, {args.clock} clock, conversation of {len(messages)} turns "
        f"= {ids.shape[1]} prompt tokens, two replies of {args.new_tokens} tokens, {SAMPLING}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    caps = {
        k: os.environ.get(k, "-")
        for k in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")
    }
    print(f"PyTorch kernels: {torch.backends.cpu.get_cpu_capability()}, {caps}")
    print(f"ours: decode steps on {ours.sampling_weights} weights; ours exact: on the model's own")
    time_ours(ours, messages, 4, 0)  # warm-up: first-call allocations and kernels, for every method
    time_ours(exact, messages, 4, 0)
    time_generate_streamed(policy, ids, 4, 0)
    time_generate_batched(policy, ids, 4, 0)
    runs: dict[str, list] = {"ours": [], "exact": [], "streamed": [], "batched": []}
    for r in range(args.repeats):
        runs["ours"].append(time_ours(ours, messages, args.new_tokens, r))
        runs["exact"].append(time_ours(exact, messages, args.new_tokens, r))
        runs["streamed"].append(time_generate_streamed(policy, ids, args.new_tokens, r))
        runs["batched"].append(time_generate_batched(policy, ids, args.new_tokens, r))
        print(
            f"  run {r}: ours {runs['ours'][-1][0]:.2f}s / {runs['ours'][-1][1]:.2f}s, ours exact "
            f"{runs['exact'][-1][0]:.2f}s / {runs['exact'][-1][1]:.2f}s, generate+streamer "
            f"{runs['streamed'][-1][0]:.2f}s / {runs['streamed'][-1][1]:.2f}s, generate batched "
            f"{runs['batched'][-1]:.2f}s, load average {os.getloadavg()[0]:.2f}"
        )
    first = {k: statistics.median(t[0] for t in runs[k]) for k in ("ours", "exact", "streamed")}
    both = {k: statistics.median(t[1] for t in runs[k]) for k in ("ours", "exact", "streamed")}
    both["batched"] = statistics.median(runs["batched"])
    print(f"medians of {args.repeats}:")
    print(
        f"  ours (stream_pair)            first token {first['ours']:.2f}s, two replies {both['ours']:.2f}s"
    )
    print(
        f"  ours, exact weights           first token {first['exact']:.2f}s, two replies {both['exact']:.2f}s"
    )
    print(
        f"  generate + streamer, 2 calls  first token {first['streamed']:.2f}s, two replies {both['streamed']:.2f}s"
    )
    print(f"  generate batched, 2 sequences (not streamed)  two replies {both['batched']:.2f}s")
    print(
        f"targets: first token < 1 s ({'met' if first['ours'] < 1 else 'MISSED'}), "
        f"two replies < 6 s ({'met' if both['ours'] < 6 else 'MISSED'})"
    )
    print(f"ratio first_token: {first['streamed'] / first['ours']:.2f}")
    print(f"ratio two_replies: {both['streamed'] / both['ours']:.2f}")
    print(f"ratio two_replies_vs_batched_generate: {both['batched'] / both['ours']:.2f}")
    print(f"ratio two_replies_fp16_vs_exact_weights: {both['exact'] / both['ours']:.2f}")
    print(f"ratio two_replies_exact_weights_vs_streamer: {both['streamed'] / both['exact']:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
