"""The audit stage's scoring: every RM through the whole model (the old path) against the suite's frozen
trunk computed once and each RM's trained blocks over it (`rmtension.audit.stage.suite_trunk`).

Both paths run in this process, in float32 as the audit does, on the shipped audit suite's pairs, after
one untimed warm-up forward. Two sources of RMs:

- `--run RUN_DIR`: the trained RMs of a study's run directory, every view and seed of its config, each
  scored by the stage's own `score_rm` (the RM loaded from disk in both paths);
- otherwise `--rms` reward models built here: the packaged MiniLM loaded as an RM, each copy with its
  top `--top` blocks and score head perturbed by seeded noise (so every RM scores differently and the
  frozen blocks below stay the base model's).

Prints the seconds of each path, the largest reward difference and the number of pairs whose order
differs (the paths must agree to 1e-5 with no order changed, else it exits non-zero), and
`ratio audit: <x>` (whole over cached, the trunk's one pass included).

    .venv/bin/python benchmarks/audit.py --run runs/default
    .venv/bin/python benchmarks/audit.py [--rms 30] [--top 1]
"""

from __future__ import annotations

import argparse
import copy
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from rmtension.audit.suite import load_suite, suite_pairs
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import encode_pairs
from rmtension.model.forward import PairForward
from rmtension.model.scope import set_trainable
from rmtension.model.trunk import TrunkCache, trunk_fingerprint

SUITE = "suites/healthcare_scheduling.yaml"


def perturbed(base: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of `base` whose trainable parameters (top blocks and head) carry seeded noise."""
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def from_run(run: Path):
    """(whole, cached) scoring functions over the RMs of a run directory, the stage's own code, and a label."""
    from rmtension.audit.stage import read_suite, score_rm, suite_trunk
    from rmtension.config import load_config
    from rmtension.data.stage import prepare
    from rmtension.run.prepared import study_views

    cfg = load_config(run / "config.yaml", present=("audit",))
    prep = prepare(run, cfg)
    pairs = suite_pairs(read_suite(cfg.audit))
    enc = encode_pairs(pairs, prep.tokenizer, cfg.model.max_length)
    jobs = [(rm, head, seed) for _, rm, head in study_views(cfg) for seed in cfg.train.seeds]

    def score(cache):
        out = []
        for rm, head, seed in jobs:
            f = score_rm(prep, rm, head, seed, pairs, cfg.audit, enc, cache)
            out.append((f.r_chosen.to_numpy(), f.r_rejected.to_numpy()))
        return out

    def whole():
        return score(None)

    def cached():
        cache = suite_trunk(prep, enc, cfg.audit)
        for rm, head, seed in jobs:  # every RM must really run over the cache
            model = load_reward_model(str(prep.ctx.rm_dir(rm, seed)), prep.tokenizer, head=head)
            assert trunk_fingerprint(model, cache.k) == cache.fingerprint, (rm, seed)
        return score(cache)

    warm = lambda: score_rm(prep, *jobs[0][:3], pairs[:2], cfg.audit)  # noqa: E731
    return whole, cached, warm, f"{len(jobs)} RMs of {run} x {len(pairs)} pairs, batch {cfg.audit.batch_size}"


def built(n: int, top: int, batch_size: int, max_length: int):
    """(whole, cached) scoring functions over `n` perturbed copies of the packaged MiniLM, and a label."""
    path = resolve_backbone("minilm")
    tok = load_tokenizer(path, max_length)
    pairs = suite_pairs(load_suite(str(files("rmtension.audit").joinpath(SUITE))))
    enc = encode_pairs(pairs, tok, max_length)
    base = load_reward_model(path, tok).eval()
    k = set_trainable(base, f"top:{top}")
    rms = [perturbed(base, s) for s in range(n)]

    def score(cache):
        out = []
        for m in rms:
            with PairForward(m, tok.pad_token_id, bf16=False, cache=cache) as fwd:
                out.append(fwd.score(enc, batch_size))
        return out

    def cached():
        cache = TrunkCache(k, trunk_fingerprint(base, k))
        cache.add(base, enc, tok.pad_token_id, batch_size, bf16=False)
        assert all(trunk_fingerprint(m, k) == cache.fingerprint for m in rms)
        return score(cache)

    def warm():
        with PairForward(rms[0], tok.pad_token_id, bf16=False) as fwd:
            fwd.score(enc.subset([0, 1]), batch_size)

    return (
        lambda: score(None),
        cached,
        warm,
        f"{n} built RMs (top {top} perturbed) x {len(pairs)} pairs, batch {batch_size}",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run directory whose trained RMs to score")
    ap.add_argument(
        "--rms", type=int, default=30, help="RMs to build (the default study has 10 views x 3 seeds)"
    )
    ap.add_argument("--top", type=int, default=1, help="trained blocks per built RM (the default trains 1)")
    ap.add_argument("--batch-size", type=int, default=16, help="pairs per batch (the audit's default)")
    ap.add_argument("--max-length", type=int, default=192)
    args = ap.parse_args()
    if args.run:
        whole, cached, warm, label = from_run(args.run.resolve())
    else:
        whole, cached, warm, label = built(args.rms, args.top, args.batch_size, args.max_length)
    warm()
    t0 = time.perf_counter()
    a = whole()
    t_whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = cached()
    t_cached = time.perf_counter() - t0
    diff = [np.abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    worst = max(float(d.max()) for d in diff)
    flips = sum(int(((ra[0] > ra[1]) != (rb[0] > rb[1])).sum()) for ra, rb in zip(a, b))
    print(f"{label}, float32, {torch.get_num_threads()} threads")
    print(f"whole model: {t_whole:.1f} s; cached trunk: {t_cached:.1f} s (the trunk's one pass included)")
    print(f"largest reward difference: {worst:.3g}; pairs whose order differs: {flips}")
    if not worst <= 1e-5 or flips:  # `not <=` so that a NaN fails too
        raise SystemExit(
            f"the cached path differs from the whole model ({worst:.3g}, {flips} pairs reordered)"
        )
    print(f"ratio audit: {t_whole / t_cached:.2f}")


if __name__ == "__main__":
    main()
