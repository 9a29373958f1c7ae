"""The audit stage's scoring: every RM through the whole model (the old path) against the suite's frozen
trunk computed once and each RM's trained blocks over it (`rmtension.audit.stage.suite_trunk`).

Both run in this process, in float32 as the audit does, on the shipped audit suite's pairs and on `--rms`
reward models: the packaged MiniLM loaded as an RM, each copy with its top `--top` blocks and score head
perturbed by seeded noise (so every RM scores differently, as trained RMs would, and the frozen blocks
below stay the base model's). Prints the seconds of each path, the largest reward difference (the paths
must agree to 1e-5), and `ratio audit: <x>` (whole over cached, the trunk's one pass included).

    .venv/bin/python benchmarks/audit.py [--rms 30] [--top 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from rmtension.audit.suite import load_suite, suite_pairs
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import encode_pairs
from rmtension.model.forward import PairForward
from rmtension.model.scope import set_trainable
from rmtension.model.trunk import TrunkCache, trunk_fingerprint

SUITE = "suites/healthcare_scheduling.yaml"


def perturbed(base: torch.nn.Module, top: int, seed: int) -> torch.nn.Module:
    """A copy of `base` whose trainable parameters (top blocks and head) carry seeded noise."""
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rms", type=int, default=30, help="RMs to score (the default study has 10 views x 3 seeds)"
    )
    ap.add_argument("--top", type=int, default=1, help="trained blocks per RM (the default trains 1)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=192)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    path = resolve_backbone("minilm")
    tok = load_tokenizer(path, args.max_length)
    from importlib.resources import files

    pairs = suite_pairs(load_suite(str(files("rmtension.audit").joinpath(SUITE))))
    enc = encode_pairs(pairs, tok, args.max_length)
    base = load_reward_model(path, tok).eval()
    k = set_trainable(base, f"top:{args.top}")
    rms = [perturbed(base, args.top, s) for s in range(args.rms)]

    t0 = time.perf_counter()
    whole = []
    for m in rms:
        with PairForward(m, tok.pad_token_id, bf16=False) as fwd:
            whole.append(fwd.score(enc, args.batch_size))
    t_whole = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = TrunkCache(k, trunk_fingerprint(base, k))
    cache.add(base, enc, tok.pad_token_id, args.batch_size, bf16=False)
    t_trunk = time.perf_counter() - t0
    cached = []
    for m in rms:
        assert trunk_fingerprint(m, k) == cache.fingerprint
        with PairForward(m, tok.pad_token_id, bf16=False, cache=cache) as fwd:
            cached.append(fwd.score(enc, args.batch_size))
    t_cached = time.perf_counter() - t0

    worst = max(float(np.abs(a - b).max()) for w, c in zip(whole, cached) for a, b in zip(w, c))
    print(
        f"{args.rms} RMs x {len(pairs)} pairs, top {args.top} block(s) trained, float32, {torch.get_num_threads()} threads"
    )
    print(f"whole model: {t_whole:.1f} s; cached trunk: {t_cached:.1f} s ({t_trunk:.1f} s of it the trunk)")
    print(f"largest reward difference: {worst:.3g}")
    if worst > 1e-5:
        raise SystemExit(f"the cached path differs from the whole model by {worst:.3g} (over 1e-5)")
    print(f"ratio audit: {t_whole / t_cached:.2f}")


if __name__ == "__main__":
    main()
