"""Ablation engine vs a naive path that runs one full forward per ablation condition.

Both run in this process on the same reward model (`--model`: a trained RM folder, else the packaged
MiniLM loaded as an RM with a seeded score head), the same HH-RLHF test pairs (tokenised once,
left truncation) and the same conditions: the five mean_act sets at top `--p`% (scored on other
HH pairs), each with `--draws` layer-matched and `--draws` magnitude-matched random controls, mean
ablation (`rmtension.ablation.plan` does the same in the stage).

- naive:  for each condition, the neurons hooked (`rmtension.judges.hooks.ablate`) and a full
          forward over every batch (`rmtension.model.scoring.score_pairs`): same batches, same precision.
- ours:   `rmtension.judges.ablate.run_conditions`: one clean forward per batch; each condition
          starts after its first ablated block from the clean states (the linear change of that
          block's MLP output), conditions stacked per forward on a GPU, and the last block's MLP
          only at the position the head reads.

Both in float32: the results must agree to 1e-5. Prints conditions/s of each and `ratio ablation: <x>`
(target >= 5). `--bf16-baseline N` also times the naive path on N conditions under bf16 autocast (the
stage's old setting on every CPU) and prints `ratio precision: <x>` (naive bf16 over naive float32) and
`ratio vs bf16 naive: <x>` (naive bf16 over ours): what `ablation.bf16: auto` gains on a CPU without
native bf16. `--stage RUN_DIR` instead times the ablation stage on a run directory (its config's
`ablation:` section plus `--set` overrides) and prints its conditions and seconds.

    .venv/bin/python benchmarks/ablation.py [--pairs 16] [--draws 2] [--bf16-baseline 2]
    .venv/bin/python benchmarks/ablation.py --layers all --model smollm2 --pairs 4 --draws 0
    .venv/bin/python benchmarks/ablation.py --stage runs/default --set ablation.random_draws=2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rmtension.model.arch import n_layers, n_neurons
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import batches, encode_pairs
from rmtension.model.scoring import score_pairs
from rmtension.judges.ablate import Condition, run_conditions
from rmtension.ablation.plan import READ_MEAN, mean_values, set_objective
from rmtension.ablation.controls import controls
from rmtension.judges.hooks import ablate
from rmtension.judges.neurons import score_neurons
from rmtension.judges.select import neuron_sets
from rmtension.judges.layers import model_mask
from rmtension.model.scope import parse_scope


MODELS = {"smollm2": "smollm2-135m"}
"""Short names for `--model`: the packaged SmolLM2-135M (30 blocks), dequantised into RMTENSION_CACHE."""


def default_data() -> Path:
    env = os.environ.get("RMTENSION_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf"


def load_hh(root: Path, n: int, skip: int = 0) -> list:
    """n pairs per objective (helpful-base, harmless-base test files), after the first `skip` of each."""
    from rmtension.data import load_pairs

    test = load_pairs(root, subsets=["helpful-base", "harmless-base"])["test"].pairs
    by = {s: [p for p in test if p.subset == s] for s in ("helpful-base", "harmless-base")}
    return by["helpful-base"][skip : skip + n] + by["harmless-base"][skip : skip + n]


def build(model, tok, root: Path, args) -> dict[str, Condition]:
    """The five sets at top p by mean_act (scored on other pairs) and their random controls, mean ablation."""
    scored = {}
    other = load_hh(root, args.score_pairs, skip=args.pairs)  # disjoint from the test pairs
    for obj, pairs in (("helpful", other[: args.score_pairs]), ("harmless", other[args.score_pairs :])):
        enc = encode_pairs(pairs, tok, args.max_length)
        res = score_neurons(
            {"rm": model}, enc, tok.pad_token_id, scorers=["mean_act"], batch_size=8, bf16=False
        )
        scored[f"mean_act/{obj}"] = res["rm"].scores["mean_act"]
        scored[f"{READ_MEAN}/{obj}"] = res["rm"].scores[READ_MEAN]  # mean ablation's values, as the study's
    layers = n_layers(model)
    first = 0 if args.layers == "all" else layers - parse_scope(args.trainable, layers)
    scored = {k: v[first:] for k, v in scored.items()}  # the analysed blocks, as the neuron stage keeps them
    doc = {"first_layer": first}
    sets = neuron_sets(scored["mean_act/helpful"], scored["mean_act/harmless"], args.p)
    conds = {}
    for name, mask in sets.items():
        values = mean_values(scored, set_objective(name))
        whole = model_mask(doc, values, layers)
        conds[name] = Condition(model_mask(doc, mask, layers), whole)
        for kind in ("layer", "magnitude"):
            for d, m in enumerate(controls(kind, mask, args.draws, 7, values.abs())):
                conds[f"{name}|{kind}{d}"] = Condition(model_mask(doc, m, layers), whole)
    per_layer = {name: model_mask(doc, mask, layers).sum(1).tolist() for name, mask in sets.items()}
    print(
        f"sets at top {args.p:g}% by mean_act of blocks {first}..{layers - 1} "
        f"(neurons.layers={args.layers}, train.trainable={args.trainable}), neurons per layer: {per_layer}"
    )
    return conds


def naive(model, enc, pad_id, conds, batch_size, bf16) -> dict[str, np.ndarray]:
    out = {}
    for key, c in conds.items():
        with ablate(model, c.mask, c.values):
            r_c, r_r = score_pairs(model, enc, pad_id, batch_size, bf16)
        out[key] = r_c - r_r
    return out


def stage(run_dir: Path, overrides: list[str]) -> int:
    from rmtension.ablation.plan import build_conditions
    from rmtension.ablation.run import run_ablation
    from rmtension.neurons.cli import build_context, load_stage_configs
    from rmtension.judges.neuron_sets import load_sets, read_scores

    study, _, acfg = load_stage_configs(run_dir, overrides)
    ctx = build_context(run_dir, study)
    doc, scores = load_sets(run_dir), read_scores(run_dir)
    layers = doc["first_layer"] + doc["shape"][0] if "first_layer" in doc else doc["shape"][0]
    for rm in doc["rms"]:
        if acfg.rms is None or doc["rms"][rm]["objective"] in acfg.rms:
            conds, plan = build_conditions(doc, scores[rm][0], rm, acfg, acfg.ps or doc["ps"], layers)
            print(
                f"{rm}: {len(conds)} conditions ({len(plan)} sets x modes x p), {acfg.max_test_pairs} pairs per test set"
            )
    t0 = time.perf_counter()
    run_ablation(ctx, acfg, force=True)
    print(f"ablation stage: {time.perf_counter() - t0:.0f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16, help="test pairs per objective")
    ap.add_argument("--score-pairs", type=int, default=16, help="scoring pairs per objective (mean_act)")
    ap.add_argument("--draws", type=int, default=2, help="random draws per control kind")
    ap.add_argument("--p", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=32, help="pairs per forward batch (both paths)")
    ap.add_argument("--stack", type=int, default=None, help="conditions per forward (default: by device)")
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument(
        "--layers",
        choices=["trained", "all"],
        default="trained",
        help="neurons.layers of the sets (default: trained)",
    )
    ap.add_argument(
        "--trainable", default="top:1", help="train.trainable behind --layers trained (default study's)"
    )
    ap.add_argument(
        "--model", default="minilm", help="RM folder, a backbone registry name, or smollm2 (SmolLM2-135M)"
    )
    ap.add_argument("--data", type=Path, default=default_data(), help="hh-rlhf root (official layout)")
    ap.add_argument("--bf16-baseline", type=int, default=0, help="conditions to time naive bf16 on")
    ap.add_argument("--repeat", type=int, default=1, help="time each path this many times; keep the best")
    ap.add_argument("--stage", type=Path, help="time the ablation stage on this run directory instead")
    ap.add_argument("--set", action="append", default=[], help="config override for --stage (key=value)")
    args = ap.parse_args(argv)
    if args.stage:
        return stage(args.stage, args.set)

    path = resolve_backbone(MODELS.get(args.model, args.model))
    tok = load_tokenizer(path, args.max_length)
    torch.manual_seed(0)
    model = load_reward_model(path, tok).eval()
    enc = encode_pairs(load_hh(args.data, args.pairs), tok, args.max_length)
    print(
        f"model: {args.model} ({n_layers(model)} x {n_neurons(model)} neurons), {len(enc)} test pairs, "
        f"max_length {args.max_length}, torch threads {torch.get_num_threads()}"
    )
    real = sum(len(c) + len(r) for c, r in zip(enc.chosen, enc.rejected))
    padded = sum(
        2 * len(idx) * int(enc.lengths()[idx].max()) for idx in batches(enc.lengths(), args.batch, None)
    )
    print(f"tokens / padded positions in the naive path's batches: {real / padded:.2f}")
    conds = build(model, tok, args.data, args)
    n = len(conds)
    pad = tok.pad_token_id
    run_conditions(model, enc.subset(range(2)), pad, dict(list(conds.items())[:2]), 2, False)  # warm-up
    # Wall time and this process's CPU time: on a shared machine the CPU time is the steadier measure of work.
    clock = lambda: (time.perf_counter(), time.process_time())  # noqa: E731
    t_ours = t_naive = t_clean = (float("inf"), float("inf"))
    for _ in range(args.repeat):  # alternately; each method keeps its best
        t0 = clock()
        _, ours = run_conditions(model, enc, pad, conds, args.batch, False, stack=args.stack)
        t_ours = tuple(min(b, x - y) for b, x, y in zip(t_ours, clock(), t0))
        t0 = clock()
        slow = naive(model, enc, pad, conds, args.batch, False)
        t_naive = tuple(min(b, x - y) for b, x, y in zip(t_naive, clock(), t0))
        t0 = clock()  # the clean margins, which run_conditions returns and an effect needs
        score_pairs(model, enc, pad, args.batch, False)
        t_clean = tuple(min(b, x - y) for b, x, y in zip(t_clean, clock(), t0))
    diff = max(float(np.abs(ours[k] - slow[k]).max()) for k in conds)
    for name, t in (
        ("naive (one full forward per condition, float32)", t_naive),
        (f"ours  (run_conditions, float32, stack {args.stack or 'auto'})", t_ours),
    ):
        print(f"{name}: {n} conditions in {t[0]:.1f}s wall ({t[1]:.1f}s CPU), {n / t[0]:.3f} conditions/s")
    print(f"max |ours - naive| over {n} conditions x {len(enc)} pairs: {diff:.2e} (target <= 1e-5)")
    print(f"ratio ablation: {t_naive[0] / t_ours[0]:.2f}")
    print(f"ratio ablation (CPU time): {t_naive[1] / t_ours[1]:.2f}")
    print(  # run_conditions also returns the clean margins; the naive path above does not compute them
        f"ratio ablation (naive plus its clean forward, {t_clean[0]:.1f}s wall): {(t_naive[0] + t_clean[0]) / t_ours[0]:.2f}"
    )
    if args.bf16_baseline:
        some = dict(list(conds.items())[: args.bf16_baseline])
        t0 = clock()
        naive(model, enc, pad, some, args.batch, True)
        t_bf16 = [(x - y) / len(some) for x, y in zip(clock(), t0)]
        print(
            f"naive under bf16 autocast: {t_bf16[0]:.1f}s wall ({t_bf16[1]:.1f}s CPU) per condition ({len(some)} timed)"
        )
        print(
            f"ratio precision: {t_bf16[0] / (t_naive[0] / n):.2f} (CPU time {t_bf16[1] / (t_naive[1] / n):.2f})"
        )
        print(
            f"ratio vs bf16 naive: {t_bf16[0] / (t_ours[0] / n):.2f} (CPU time {t_bf16[1] / (t_ours[1] / n):.2f})"
        )
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
