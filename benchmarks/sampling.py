"""Our sampler vs plain `model.generate` on SmolLM2-135M-Instruct: new tokens per second.

Same model, the same 32 HH prompts (chat-formatted, cut to --max-prompt-tokens), the same
64-token budget, the same distribution (temperature 1, no top-k/top-p filter) for both.
`generate` runs at its defaults (fp32 weights, dynamic cache); it is also timed with bf16
weights, so the gain from the decode loop alone is visible next to the gain from bf16.

    python benchmarks/sampling.py [--data PATH/hh-rlhf] [--prompts 32] [--new-tokens 64] [--greedy]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import torch

from rmtension.data.types import Turn
from rmtension.model.backbones import load_tokenizer, resolve_backbone
from rmtension.optimise.policy import build_prompt_ids, left_pad, load_policy, sample, stop_token_ids


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


def time_generate(model, prompts, pad_id, stop, new_tokens, greedy, batch_size):
    """Plain generate, left-padded batches in the given order; returns (new tokens, seconds)."""
    n_tok, t0 = 0, time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[i : i + batch_size], pad_id)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                do_sample=not greedy,
                top_k=0 if not greedy else None,
                pad_token_id=pad_id,
                eos_token_id=stop,
            )
        for row in out[:, ids.shape[1] :].tolist():
            cut = next((j for j, t in enumerate(row) if t in stop), len(row) - 1)
            n_tok += cut + 1
    return n_tok, time.perf_counter() - t0


def time_ours(model, prompts, pad_id, stop, new_tokens, greedy, batch_size):
    t0 = time.perf_counter()
    s = sample(
        model,
        prompts,
        n=1,
        max_new_tokens=new_tokens,
        temperature=0 if greedy else 1.0,
        batch_size=batch_size,
        stop_ids=stop,
        pad_id=pad_id,
        seed=0,
    )
    return s.n_tokens(), time.perf_counter() - t0, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("RMTENSION_DATA", "../shared/data/hh-rlhf"))
    ap.add_argument("--subset", default="helpful-base")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--greedy", action="store_true", help="greedy decoding (identical outputs, same token counts)"
    )
    ap.add_argument("--skip-bf16-generate", action="store_true")
    args = ap.parse_args()

    path = resolve_backbone("smollm2-135m")
    tok = load_tokenizer(path, 2048)
    contexts = hh_contexts(Path(args.data) / args.subset / "test.jsonl.gz", args.prompts)
    prompts = [build_prompt_ids(tok, c, args.max_prompt_tokens) for c in contexts]
    lengths = sorted(len(p) for p in prompts)
    print(
        f"{len(prompts)} prompts, {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
        f"{args.new_tokens} new tokens, {'greedy' if args.greedy else 'sampling T=1'}, "
        f"{torch.get_num_threads()} threads"
    )
    fp32 = load_policy(path, "fp32")
    stop = stop_token_ids(tok, fp32)
    run = dict(
        pad_id=tok.pad_token_id,
        stop=stop,
        new_tokens=args.new_tokens,
        greedy=args.greedy,
        batch_size=args.batch_size,
    )
    time_generate(fp32, prompts[:2], **{**run, "new_tokens": 2})  # warm-up
    n_g, t_g = time_generate(fp32, prompts, **run)
    print(f"generate fp32 (default):  {n_g:5d} tokens in {t_g:6.1f}s = {n_g / t_g:6.1f} tokens/s")
    results = {"generate_fp32": n_g / t_g}
    bf16 = load_policy(path, "bf16")
    if not args.skip_bf16_generate:
        n_gb, t_gb = time_generate(bf16, prompts, **run)
        print(f"generate bf16 weights:    {n_gb:5d} tokens in {t_gb:6.1f}s = {n_gb / t_gb:6.1f} tokens/s")
        results["generate_bf16"] = n_gb / t_gb
    n_o, t_o, s = time_ours(bf16, prompts, **run)
    print(
        f"rmtension.optimise.policy.sample:  {n_o:5d} tokens in {t_o:6.1f}s = {n_o / t_o:6.1f} tokens/s "
        f"({int(s.finished.sum())}/{len(s)} rows stopped at end-of-turn)"
    )
    results["ours_bf16"] = n_o / t_o
    print(f"ratio vs generate (default fp32): {results['ours_bf16'] / results['generate_fp32']:.2f}x")
    if "generate_bf16" in results:
        print(f"ratio vs generate (bf16 weights): {results['ours_bf16'] / results['generate_bf16']:.2f}x")


if __name__ == "__main__":
    main()
