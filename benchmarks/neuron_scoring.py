"""Streaming neuron scoring vs a naive baseline written the way the paper's public code works.

Both run in this process on the same model (the packaged MiniLM loaded as a reward model) and
the same HH-RLHF pairs, tokenised once (left truncation), so only the method differs:

- naive:  every sequence padded to a fixed length, chosen and rejected in separate forward passes,
          fp32, one forward hook per layer that copies the batch's full activations [B, T, N]
          out of the model, reduced afterwards (masked mean over real tokens). The paper's code
          pads to 1024; MiniLM has 512 positions, so both sides here use max_length 512 (use
          `--backbone smollm2-135m --max-length 1024` for the paper's padding, if time allows).
- ours:   `rmtension.neurons.score_neurons`: chosen and rejected in one batch, length-grouped
          batches with right padding, bf16 autocast, running [N] sums folded in inside the hook,
          and each forward stopped after the last layer's activations.

Prints pairs/s of each, their ratio, and the Pearson correlation of the two `mean_act` tensors.
Target: ratio >= 5 and correlation > 0.999.

    .venv/bin/python benchmarks/neuron_scoring.py [--pairs 256] [--data PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rmtension.model.arch import mlp_out, n_layers, n_neurons
from rmtension.model.encode import batches, encode_pairs
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.judges.neurons import score_neurons

FORWARD_SCORERS = ("mean_act", "fire_rate", "contrast")


def default_data() -> Path:
    env = os.environ.get("RMTENSION_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf"


def load_hh(root: Path, n: int) -> list:
    """n pairs: half helpful-base, half harmless-base (official test files)."""
    from rmtension.data import load_pairs

    test = load_pairs(root, subsets=["helpful-base", "harmless-base"])["test"].pairs
    by = {s: [p for p in test if p.subset == s] for s in ("helpful-base", "harmless-base")}
    return by["helpful-base"][: n - n // 2] + by["harmless-base"][: n // 2]


@torch.no_grad()
def naive_mean_act(model, seqs: list[list[int]], pad_id: int, width: int, batch_size: int) -> torch.Tensor:
    """[L, N] mean activation over real tokens, paper-style: fixed padding, full activations per hook."""
    L, N = n_layers(model), n_neurons(model)
    total = torch.zeros(L, N, dtype=torch.float64)
    tokens = 0.0
    store: dict[int, torch.Tensor] = {}
    handles = [
        mlp_out(model, i).register_forward_pre_hook(
            lambda m, args, i=i: store.__setitem__(i, args[0].detach().cpu().clone())
        )
        for i in range(L)
    ]
    try:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, s in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            model(input_ids=ids, attention_mask=mask)
            m = mask.unsqueeze(-1).double()
            for i in range(L):
                total[i] += (store[i].double() * m).sum((0, 1))
            tokens += float(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return (total / tokens).float()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--data", type=Path, default=default_data(), help="hh-rlhf root (official layout)")
    ap.add_argument(
        "--backbone", default="minilm", help="registry name or HF folder (default: the packaged MiniLM)"
    )
    ap.add_argument(
        "--max-length", type=int, default=512, help="MiniLM has 512 positions (the paper pads to 1024)"
    )
    ap.add_argument("--naive-batch", type=int, default=16)
    ap.add_argument(
        "--batch", type=int, default=8, help="pairs per batch of the streaming scorer (8 pads less than 16)"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="time each method this many times (alternately); keep the best"
    )
    ap.add_argument(
        "--all-scorers",
        action="store_true",
        help="also time all five scorers (adds a backward and a base pass)",
    )
    args = ap.parse_args(argv)

    path = resolve_backbone(args.backbone)
    tok = load_tokenizer(path, args.max_length)
    torch.manual_seed(0)
    model = load_reward_model(path, tok).eval()
    pairs = load_hh(args.data, args.pairs)
    enc = encode_pairs(pairs, tok, args.max_length)
    n = len(enc)
    lengths = [len(s) for s in enc.chosen + enc.rejected]
    padded = sum(2 * len(b) * int(enc.lengths()[b].max()) for b in batches(enc.lengths(), args.batch, None))
    print(
        f"model: {args.backbone} ({n_layers(model)} x {n_neurons(model)} neurons), {n} HH pairs, max_length "
        f"{args.max_length}, mean tokens {np.mean(lengths):.0f}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"tokens per pass: real {sum(lengths)}, ours (length-grouped batches) {padded}, "
        f"naive (padded) {2 * n * args.max_length}"
    )

    def run_ours():
        return score_neurons(
            {"rm": model}, enc, tok.pad_token_id, scorers=FORWARD_SCORERS, batch_size=args.batch, bf16=True
        )

    def run_naive():
        c = naive_mean_act(model, enc.chosen, tok.pad_token_id, args.max_length, args.naive_batch)
        r = naive_mean_act(model, enc.rejected, tok.pad_token_id, args.max_length, args.naive_batch)
        return c, r

    # Warm up both paths on a few pairs, then time them alternately; the machine may be shared,
    # so each method's time is its best of --repeat runs.
    warm = enc.subset(range(min(4, n)))
    score_neurons({"rm": model}, warm, tok.pad_token_id, scorers=FORWARD_SCORERS, batch_size=4)
    naive_mean_act(model, warm.chosen, tok.pad_token_id, args.max_length, 4)
    t_ours = t_naive = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = run_ours()
        t_ours = min(t_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive_c, naive_r = run_naive()
        t_naive = min(t_naive, time.perf_counter() - t0)
    print(f"ours  ({', '.join(FORWARD_SCORERS)}): {t_ours:7.1f}s  {n / t_ours:7.2f} pairs/s")
    tok_c, tok_r = sum(map(len, enc.chosen)), sum(map(len, enc.rejected))
    naive = (naive_c * tok_c + naive_r * tok_r) / (tok_c + tok_r)
    print(f"naive (mean_act only, padded to {args.max_length}): {t_naive:7.1f}s  {n / t_naive:7.2f} pairs/s")

    r = float(np.corrcoef(ours["rm"].scores["mean_act"].flatten().numpy(), naive.flatten().numpy())[0, 1])
    ratio = t_naive / t_ours
    print(f"speed ratio (ours / naive pairs/s): {ratio:.1f}x  (target >= 5)")
    print(f"Pearson r of mean_act: {r:.6f}  (target > 0.999)")
    if args.all_scorers:
        base = load_reward_model(path, tok).eval()
        t0 = time.perf_counter()
        score_neurons({"rm": model}, enc, tok.pad_token_id, base=base, batch_size=args.batch, bf16=True)
        t_all = time.perf_counter() - t0
        print(f"ours, all five scorers: {t_all:7.1f}s  {n / t_all:7.2f} pairs/s")
    return 0 if ratio >= 5 and r > 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
