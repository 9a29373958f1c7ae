"""Our sampler vs `model.generate` on SmolLM2-135M-Instruct: new tokens per second, at several batch sizes.

For each batch size B: one batch of B rows, the first --prompts HH test prompts (chat-formatted, cut
to --max-prompt-tokens) with B / --prompts samples each, as best-of-n and RL batch their samples
(`generate` gets each prompt repeated, as `num_return_sequences` does; with --distinct-prompts, the
first B prompts once each instead). Every method has the same --new-tokens budget and the same
distribution (temperature 1, no top-k/top-p filter); tokens are counted up to and including each
row's stop token. The target baseline
is `generate` with bf16 weights and a static KV cache (`cache_implementation="static"`, no
`torch.compile`: transformers compiles only on accelerators). At the first batch size the other
baselines run too: `generate` at its defaults (fp32, dynamic cache), `generate` with bf16 weights
and a dynamic cache, and our sampler with its generic decoder (`fused=False`), which shows what the
fused Llama step gives. Methods run interleaved, --repeats times, and each keeps its fastest run,
so a load change on a shared machine hits all of them alike.

Without native bf16 matmuls (`rmtension.model.precision.bf16_native`) every method runs fp32
weights and the ratios are against fp32 `generate`, as the output says: `ratio
sampling_vs_generate_fp32_static` is then the main row. With native bf16 the first batch size also
runs that fp32 row (ours in fp32 against `generate` fp32 with a static cache), so both machines
print it.

Every machine also runs, at the first batch size, our fp32 sampler with fp16 decode-step weights
(`policy.sampling_weights: fp16`, which changes the numbers: `--weights-error` measures by how much,
beside int8 weights) and prints its ratios to fp32 `generate` with a static cache and to our exact
fp32 sampler. FBGEMM runs those weights; cap it with `FBGEMM_ENABLE_INSTRUCTIONS=AVX2` beside the
other libraries to measure an AVX2-only CPU.

    python benchmarks/sampling.py [--data PATH/hh-rlhf] [--batch-sizes 32,64,128] [--new-tokens 64]
        [--repeats 2] [--greedy] [--levers] [--weights-error] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from rmtension.data.types import Turn
from rmtension.model.backbones import load_tokenizer, resolve_backbone
from rmtension.model.precision import bf16_native
from rmtension.policy import decode
from rmtension.policy.decode import LlamaDecoder, left_pad
from rmtension.policy.llama_step import COMPRESSED, compress, llama_weights
from rmtension.policy.sampling import build_prompt_ids, load_policy, next_tokens, sample, stop_token_ids
from timing_args import add_timing_args, apply_timing_args


LEVERS = {
    "prepacked_weights": {"PREPACK_STEPS": 10**9},
    "cache_groups": {"GROUP_COST": 10**9},
    "shared_prefix": {"MIN_SHARED_PREFIX": 10**9},
}
"""--levers: each runs ours with one lever of `rmtension.policy.decode` turned off."""


@contextlib.contextmanager
def lever_off(settings: dict[str, int]) -> Iterator[None]:
    saved = {k: getattr(decode, k) for k in settings}
    try:
        for k, v in settings.items():
            setattr(decode, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(decode, k, v)


def hh_contexts(path: Path, k: int) -> list[tuple[Turn, ...]]:
    """The conversation before the final reply, from the first k rows of an HH test file."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["chosen"]
            turns = []
            for chunk in text.split("\n\nHuman: ")[1:]:
                human, *assistant = chunk.split("\n\nAssistant: ")
                turns.append(Turn("user", human.strip()))
                turns += [Turn("assistant", a.strip()) for a in assistant]
            out.append(tuple(turns[:-1]))
            if len(out) == k:
                break
    return out


def count_to_stop(rows: list[list[int]], stop: list[int]) -> int:
    """New tokens up to and including each row's first stop token (all of a row that never stops)."""
    return sum(next((j + 1 for j, t in enumerate(row) if t in stop), len(row)) for row in rows)


def run_generate(model, prompts, pad_id, stop, new_tokens, greedy, static, n=1) -> int:
    """One left-padded batch (each prompt n times) through `model.generate`; returns the new tokens
    to each row's stop."""
    ids, mask = left_pad([p for p in prompts for _ in range(n)], pad_id)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            do_sample=not greedy,
            top_k=0 if not greedy else None,
            pad_token_id=pad_id,
            eos_token_id=stop,
            cache_implementation="static" if static else None,
        )
    return count_to_stop(out[:, ids.shape[1] :].tolist(), stop)


def run_ours(
    model, prompts, pad_id, stop, new_tokens, greedy, fused, n=1, off: dict | None = None, weights="exact"
) -> int:
    """Our sampler on the same batch (with the `LEVERS` settings `off`, decode steps on `weights`);
    returns its new tokens."""
    with lever_off(off or {}):
        s = sample(
            model,
            prompts,
            n=n,
            max_new_tokens=new_tokens,
            temperature=0 if greedy else 1.0,
            batch_size=len(prompts) * n,
            stop_ids=stop,
            pad_id=pad_id,
            seed=0,
            fused=fused,
            sampling_weights=weights,
        )
    return s.n_tokens()


@torch.inference_mode()
def weights_error(model, prompts: list[list[int]], new_tokens: int, seed: int = 0) -> None:
    """How compressed decode-step weights (`llama_step.compress`) move log-probs: draw `new_tokens`
    per prompt from the exact model (temperature 1), then feed the same tokens through decoders whose
    steps use fp16 or int8 weights (prefill stays exact, as in `sampling_weights: fp16`). Prints, over
    every decode-step position, max and mean |delta log p| of the drawn tokens, the share of positions
    where the most likely token is the same, and the mean total-variation distance."""
    exact = llama_weights(model, pack=False)
    rows = torch.arange(len(prompts))
    generator = torch.Generator().manual_seed(seed)
    dec = LlamaDecoder(exact, new_tokens)
    logits, drawn, ref = dec.prefill(prompts, rows), [], []
    for j in range(new_tokens):
        drawn.append(next_tokens(logits, 1.0, 0, 1.0, generator))
        ref.append(logits.log_softmax(-1))
        logits = dec.step(drawn[-1]) if j < new_tokens - 1 else logits
    for kind in COMPRESSED:
        dec = LlamaDecoder(exact, new_tokens, step_weights=compress(exact, kind))
        logits, got = dec.prefill(prompts, rows), []
        for j in range(new_tokens):
            got.append(logits.log_softmax(-1))
            logits = dec.step(drawn[j]) if j < new_tokens - 1 else logits
        ours, theirs = torch.stack(got[1:]), torch.stack(ref[1:])  # [T-1, R, V]: the decode steps
        tok = torch.stack(drawn[1:])[..., None]
        delta = (ours.gather(-1, tok) - theirs.gather(-1, tok)).abs()
        agree = (ours.argmax(-1) == theirs.argmax(-1)).double().mean()
        tv = (ours.exp() - theirs.exp()).abs().sum(-1).mean() / 2
        print(
            f"  {kind} decode-step weights: |delta log p| of drawn tokens max {delta.max():.4f}, mean "
            f"{delta.mean():.5f}; same most likely token {agree:.3f}; mean TV {tv:.5f} "
            f"({delta.numel()} positions)"
        )


def race(
    methods: dict[str, Callable[[], int]], repeats: int, clock: Callable[[], float]
) -> dict[str, tuple[int, float]]:
    """Run the methods interleaved `repeats` times: name -> (tokens, seconds) of its fastest run."""
    best: dict[str, tuple[int, float]] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = clock()
            n = fn()
            secs = clock() - t0
            if name not in best or n / secs > best[name][0] / best[name][1]:
                best[name] = (n, secs)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("RMTENSION_DATA", "../shared/data/hh-rlhf"))
    ap.add_argument("--subset", default="helpful-base")
    ap.add_argument(
        "--batch-sizes", default="32,64,128", help="comma-separated; the first gets every baseline"
    )
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per method; the fastest counts")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding (identical tokens, equal work)")
    ap.add_argument(
        "--levers", action="store_true", help="at the first batch size, also ours with each lever off"
    )
    ap.add_argument(
        "--weights-error",
        action="store_true",
        help="only measure how fp16 / int8 decode-step weights move log-probs (first --prompts prompts)",
    )
    ap.add_argument(
        "--prompts", type=int, default=32, help="distinct prompts; batch B holds B / prompts samples each"
    )
    ap.add_argument(
        "--distinct-prompts", action="store_true", help="batch B holds the first B prompts once each"
    )
    add_timing_args(ap)
    args = ap.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    clock = apply_timing_args(args)

    path = resolve_backbone("smollm2-135m")
    tok = load_tokenizer(path, 2048)
    if not args.distinct_prompts and any(b % args.prompts for b in sizes):
        ap.error(f"every batch size must be a multiple of --prompts {args.prompts}")
    contexts = hh_contexts(Path(args.data) / args.subset / "test.jsonl.gz", max(sizes))
    all_prompts = [build_prompt_ids(tok, c, args.max_prompt_tokens) for c in contexts]
    native = bf16_native("cpu")
    prec = "bf16" if native else "fp32"
    print(
        f"{torch.get_num_threads()} threads, {args.clock} clock, {args.new_tokens} new tokens, "
        f"{'greedy' if args.greedy else 'sampling T=1'}, load average {os.getloadavg()[0]:.2f}"
    )
    if not native:
        print("no native bf16 matmul on this CPU: bf16 baselines skipped, every method runs fp32 weights")
    fp32 = load_policy(path, "fp32")
    if args.weights_error:
        print(f"log-prob change, fp32 model, {args.prompts} prompts x {args.new_tokens} tokens:")
        return weights_error(fp32, all_prompts[: args.prompts], args.new_tokens)
    low = load_policy(path, "bf16") if native else fp32
    stop = stop_token_ids(tok, fp32)
    common = dict(pad_id=tok.pad_token_id, stop=stop, new_tokens=args.new_tokens, greedy=args.greedy)
    run_generate(low, all_prompts[:2], **{**common, "new_tokens": 2}, static=True)  # warm-up
    run_ours(low, all_prompts[:2], **{**common, "new_tokens": 2}, fused=True)
    for b in sizes:
        n = 1 if args.distinct_prompts else b // args.prompts
        prompts = all_prompts[: b // n]
        run = dict(common, n=n)
        lengths = sorted(len(p) for p in prompts)
        methods = {
            f"generate {prec} static cache": lambda: run_generate(low, prompts, **run, static=True),
            "ours (fused decoder)": lambda: run_ours(low, prompts, **run, fused=True),
        }
        if b == sizes[0]:
            methods["ours (generic decoder)"] = lambda: run_ours(low, prompts, **run, fused=False)
            if native:
                methods["generate bf16 dynamic cache"] = lambda: run_generate(
                    low, prompts, **run, static=False
                )
            methods["generate fp32 (default)"] = lambda: run_generate(fp32, prompts, **run, static=False)
            if native:  # the fp32 row: what a CPU without native bf16 runs (there the main row is fp32)
                methods["generate fp32 static cache"] = lambda: run_generate(
                    fp32, prompts, **run, static=True
                )
                methods["ours fp32 (fused decoder)"] = lambda: run_ours(fp32, prompts, **run, fused=True)
            methods["ours fp32, fp16 step weights"] = lambda: run_ours(
                fp32, prompts, **run, fused=True, weights="fp16"
            )
            for lever, off in LEVERS.items() if args.levers else []:
                methods[f"ours without {lever}"] = lambda off=off: run_ours(
                    low, prompts, **run, fused=True, off=off
                )
        print(
            f"\nbatch {b}: {len(prompts)} prompts x {n} samples, prompts of {lengths[0]}-{lengths[-1]} tokens "
            f"(median {lengths[len(lengths) // 2]}), load average {os.getloadavg()[0]:.2f}"
        )
        best = race(methods, args.repeats, clock)
        rate = {name: n / secs for name, (n, secs) in best.items()}
        for name, (n, secs) in best.items():
            print(f"  {name:30s} {n:6d} tokens in {secs:6.1f}s = {rate[name]:7.1f} tokens/s")
        suffix = "" if b == 32 else f"_b{b}"
        ours = rate["ours (fused decoder)"]
        print(
            f"ratio sampling_vs_generate_{prec}_static{suffix}: {ours / rate[f'generate {prec} static cache']:.2f}"
        )
        if b == sizes[0]:
            if native:
                print(
                    f"ratio sampling_vs_generate_bf16{suffix}: {ours / rate['generate bf16 dynamic cache']:.2f}"
                )
            print(f"ratio sampling_vs_generate_fp32{suffix}: {ours / rate['generate fp32 (default)']:.2f}")
            exact_fp32 = rate["ours fp32 (fused decoder)" if native else "ours (fused decoder)"]
            static_fp32 = rate["generate fp32 static cache"]
            if native:
                print(f"ratio sampling_vs_generate_fp32_static{suffix}: {exact_fp32 / static_fp32:.2f}")
            fast = rate["ours fp32, fp16 step weights"]
            print(f"ratio sampling_fp16_weights_vs_generate_fp32_static{suffix}: {fast / static_fp32:.2f}")
            print(f"ratio fp16_vs_exact_step_weights_fp32{suffix}: {fast / exact_fp32:.2f}")
            print(f"ratio fused_vs_generic_decoder{suffix}: {ours / rate['ours (generic decoder)']:.2f}")
            for lever in LEVERS if args.levers else []:
                print(f"ratio lever_{lever}{suffix}: {ours / rate[f'ours without {lever}']:.2f}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
