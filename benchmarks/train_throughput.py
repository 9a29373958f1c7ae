"""rmtension's reward-model trainer vs TRL's `RewardTrainer` on CPU: pairs/s, val accuracy, share of bf16 peak.

Every run trains MiniLM (the packaged all-MiniLM-L6-v2) with the same freshly seeded score head on
the same real HH training pairs (helpful objective, the study's grouped split), max length 256,
one epoch, batch 16, peak lr 5e-5 after a 10% linear warmup, linear decay, gradient clipping at 1,
dropout off, in this one process. All get the very same token ids (truncated from the left; TRL
would otherwise drop long pairs) and are scored on the same validation pairs by the same code.

Runs with full fine-tuning (`--only top2` or `all` for the `top:2` comparison):
  rmtension        its trainer as the study runs it (bf16 autocast, length-grouped batches)
  trl_default      TRL with bf16=False (fp32) and its other RewardConfig defaults, which include
                   gradient checkpointing
  trl_bf16         TRL with bf16=True (CPU autocast through accelerate), gradient checkpointing on:
                   TRL 1.16's own RewardConfig defaults
  trl_bf16_nockpt  TRL with bf16=True and gradient checkpointing off
(`--baselines` picks some of them.)

    python benchmarks/train_throughput.py [--data PATH/hh-rlhf] [--pairs 512] [--val 256] [--rounds 1]

The machine may be shared, so every round runs each trainer once, in alternating order, and each
ratio is the median over rounds of the ratio within a round; the load average is printed with
every round. What is timed is the training call (TRL's includes its data preparation,
rmtension's the save and, with `top:2`, the trunk-cache build); neither validates inside it.

The share of bf16 peak: the bf16 matmul peak is the best of several 2048x2048 matmuls, measured
before each round; the training step's FLOPs are the matmul FLOPs the model executes on the padded
batches rmtension built (`step_flops`), forward + backward, over the seconds of its training loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rmtension.config import DataConfig, TrainConfig
from rmtension.data import build_dataset
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import EncodedPairs, batches, encode_pairs
from rmtension.model.forward import PairForward
from rmtension.model.scope import set_trainable
from rmtension.model.trunk import TrunkCache, trunk_fingerprint
from rmtension.trainer.train import train_reward_model

LR = 5e-5
BATCH = 16
MAX_LENGTH = 256
WARMUP = 0.1


@dataclass
class Run:
    pairs_per_s: float
    accuracy: float
    cpu_seconds: float  # process CPU time (all threads) of the timed call
    loop_seconds: float | None = None  # rmtension only: its training loop, for the share of peak
    bf16_seen: bool | None = None  # TRL only: whether its Linear layers computed in bf16


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bf16_peak(repeats: int = 5, n: int = 2048) -> float:
    """Best FLOP/s of an n x n x n bf16 matmul on this machine now."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b  # oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def step_flops(config, widths: list[int], rows: list[int], read_first: bool) -> float:
    """Matmul FLOPs of BERT training steps, forward + backward (2x forward), on padded batches.

    widths, rows: the padded width W and row count R (2 x pairs) of every batch. Multiply-adds per
    position and block: Q, K, V, O (4 H^2) and the MLP (2 H I), and Q K^T and P V (2 W H). With
    `read_first` the last block computes Q, O, the MLP and the attention at position 0 only
    (`rmtension.model.readout`). Plus the pooler (H^2) and the score head (H) at position 0.
    Embedding lookups, norms and softmax are not matmuls and are not counted. For one batch this
    equals `torch.utils.flop_counter.FlopCounterMode`'s count with eager attention.
    """
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for w, r in zip(widths, rows):
        full = r * w * (4 * h * h + 2 * h * i + 2 * w * h)
        last = r * (w * 2 * h * h + 2 * h * h + 2 * h * i + 2 * w * h) if read_first else full
        total += 2 * ((n - 1) * full + last + r * (h * h + h))
    return 3 * total


def our_batches(train: EncodedPairs, seed: int = 0) -> tuple[list[int], list[int]]:
    """(padded widths, rows) of the batches rmtension's trainer builds in epoch 0."""
    plan = batches(train.lengths(), BATCH, np.random.default_rng([seed, 0]), True)
    widths = [int(max(max(len(train.chosen[i]), len(train.rejected[i])) for i in idx)) for idx in plan]
    return widths, [2 * len(idx) for idx in plan]


def accuracy(model, tok, val: EncodedPairs) -> float:
    model.eval()
    with PairForward(model, tok.pad_token_id, bf16=False) as fwd:
        r_c, r_r = fwd.score(val, 32)
    return float(np.mean(r_c > r_r))


def fresh_model(path: str, tok, trainable: str):
    torch.manual_seed(0)  # the same score-head initialisation for every run
    model = load_reward_model(path, tok)
    return model, set_trainable(model, trainable)


def run_trl(
    path: str, tok, train: EncodedPairs, val: EncodedPairs, trainable: str, bf16: bool, checkpointing: bool
) -> Run:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, _ = fresh_model(path, tok, trainable)
    seen: set[torch.dtype] = set()
    hook = model.base_model.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda m, i, o: seen.add(o.dtype)
    )
    ds = Dataset.from_dict({"chosen_ids": train.chosen, "rejected_ids": train.rejected})
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(
            output_dir=out,
            use_cpu=True,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            learning_rate=LR,
            warmup_steps=WARMUP,  # a float in [0, 1): a ratio of the steps, as rmtension's warmup_ratio
            max_length=MAX_LENGTH,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",  # its per-step metrics are still computed, as at its defaults
            disable_tqdm=True,
            seed=0,
            bf16=bf16,
            dataloader_num_workers=0,
            gradient_checkpointing=checkpointing,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.train()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    hook.remove()
    return Run(len(train) / seconds, accuracy(model, tok, val), cpu, bf16_seen=torch.bfloat16 in seen)


def run_ours(path: str, tok, train: EncodedPairs, val: EncodedPairs, trainable: str) -> Run:
    model, k = fresh_model(path, tok, trainable)
    # disable_dropout: TRL's RewardConfig turns dropout off by default; the same here.
    cfg = TrainConfig(
        epochs=1,
        batch_size=BATCH,
        lr=LR,
        warmup_ratio=WARMUP,
        trainable=trainable,
        bf16=True,
        eval_every=10_000,
        checkpoint_every=10_000,
        seeds=[0],
        disable_dropout=True,
    )
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        cache = None
        if trainable != "all":
            cache = TrunkCache(k, trunk_fingerprint(model, k))
            cache.add(model, train, tok.pad_token_id, 32, True)
        # Like TRL's run (eval_strategy="no"), no validation inside the timed call: the final model is
        # kept, and both are scored on `val` afterwards, outside the timer.
        result = train_reward_model(model, tok, train, None, cfg, 0, out, cache=cache, progress=False)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Run(len(train) / seconds, accuracy(model, tok, val), cpu, loop_seconds=result.metrics["seconds"])


BASELINES = {  # name -> (bf16, gradient checkpointing)
    "trl_default": (False, True),
    "trl_bf16": (True, True),
    "trl_bf16_nockpt": (True, False),
}
LABELS = {
    "rmtension": "bf16 autocast, length-grouped batches",
    "trl_default": "TRL, bf16=False (fp32), gradient checkpointing",
    "trl_bf16": "TRL, bf16=True, gradient checkpointing",
    "trl_bf16_nockpt": "TRL, bf16=True, no gradient checkpointing",
}


def run_round(r: int, names: list[str], trainable: str, path, tok, train, val) -> dict[str, Run]:
    """Each trainer once; odd rounds in reverse order, so no trainer always runs first."""
    order = ["rmtension", *names]
    out = {}
    for name in order if r % 2 == 0 else order[::-1]:
        if name == "rmtension":
            out[name] = run_ours(path, tok, train, val, trainable)
        else:
            out[name] = run_trl(path, tok, train, val, trainable, *BASELINES[name])
        run = out[name]
        print(
            f"    {name:16s} {run.pairs_per_s:7.2f} pairs/s   {run.cpu_seconds:6.1f} CPU s   load {load_average()}",
            flush=True,
        )
    return out


def report(label: str, rounds: list[dict[str, Run]], names: list[str], suffix: str) -> None:
    print(f"\n{label} (median over {len(rounds)} round(s))")
    for name in ["rmtension", *names]:
        ps = statistics.median(rd[name].pairs_per_s for rd in rounds)
        acc = statistics.median(rd[name].accuracy for rd in rounds)
        note = ""
        if name != "rmtension":
            note = f"   bf16 matmuls seen: {all(rd[name].bf16_seen for rd in rounds)}"
        print(f"  {name:16s} {ps:7.2f} pairs/s   val accuracy {acc:.3f}   ({LABELS[name]}){note}")
    for name in names:
        cpu = [rd[name].cpu_seconds / rd["rmtension"].cpu_seconds for rd in rounds]
        print(
            f"  CPU-time ratio vs {name} (process CPU seconds; less sensitive to load): {statistics.median(cpu):.2f}"
        )
    for name in names:
        ratios = [rd["rmtension"].pairs_per_s / rd[name].pairs_per_s for rd in rounds]
        key = "train" + suffix + "_vs_" + name.replace("nockpt", "no_checkpointing")
        print(f"ratio {key}: {statistics.median(ratios):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("RMTENSION_DATA"), help="HH-RLHF root (official layout)")
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1, help="runs of every trainer, in alternating order")
    ap.add_argument("--only", choices=["full", "top2", "all"], default="full")
    ap.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"comma-separated TRL runs for full fine-tuning, from {', '.join(BASELINES)}",
    )
    args = ap.parse_args()
    import datasets

    datasets.disable_progress_bars()  # TRL's dataset preparation
    if not args.data or not Path(args.data).is_dir():
        raise SystemExit("error: pass --data PATH/hh-rlhf or set RMTENSION_DATA")
    bundle = build_dataset(DataConfig(path=args.data, hub=False), args.data)
    path = resolve_backbone("minilm")
    tok = load_tokenizer(path, MAX_LENGTH)
    train = encode_pairs(bundle.splits["helpful"]["train"][: args.pairs], tok, MAX_LENGTH)
    val = encode_pairs(bundle.splits["helpful"]["val"][: args.val], tok, MAX_LENGTH)
    print(
        f"MiniLM, {len(train)} HH helpful train pairs, {len(val)} val pairs, max length {MAX_LENGTH}, "
        f"1 epoch, batch {BATCH}, lr {LR}, warmup {WARMUP:.0%}, {torch.get_num_threads()} threads, "
        f"{args.rounds} round(s); load average {load_average()}"
    )
    names = [n for n in args.baselines.split(",") if n]
    if unknown := set(names) - set(BASELINES):
        raise SystemExit(f"error: unknown baselines {sorted(unknown)}; choose from {list(BASELINES)}")
    if args.only in ("full", "all"):
        rounds, peaks = [], []
        for r in range(args.rounds):
            peaks.append(bf16_peak())
            print(f"  round {r + 1}: bf16 matmul peak {peaks[-1] / 1e9:.0f} GFLOP/s, load {load_average()}")
            rounds.append(run_round(r, names, "all", path, tok, train, val))
        report("full fine-tuning", rounds, names, "")
        widths, rows = our_batches(train)
        flops = step_flops(fresh_model(path, tok, "all")[0].config, widths, rows, read_first=True)
        padded = sum(w * r for w, r in zip(widths, rows))
        real = sum(len(c) + len(r) for c, r in zip(train.chosen, train.rejected))
        print(
            f"  training step: {flops / 1e12:.2f} TFLOP of matmuls in the epoch, forward + backward, on "
            f"padded batches ({real / padded:.0%} of their tokens are real)"
        )
        fractions = []
        for r, (rd, peak) in enumerate(zip(rounds, peaks)):
            achieved = flops / rd["rmtension"].loop_seconds
            fractions.append(achieved / peak)
            print(
                f"  round {r + 1}: {achieved / 1e9:.0f} GFLOP/s in the training loop, bf16 peak {peak / 1e9:.0f} "
                f"GFLOP/s (best of 5 2048x2048 matmuls): {fractions[-1]:.2f}"
            )
        print(f"fraction of bf16 peak: {statistics.median(fractions):.2f}")
        print(f"ratio train_step_vs_bf16_peak: {statistics.median(fractions):.2f}")
    if args.only in ("top2", "all"):
        rounds = [run_round(r, ["trl_default"], "top:2", path, tok, train, val) for r in range(args.rounds)]
        report(
            "top:2 (TRL: the same layers frozen; rmtension: trunk cached)", rounds, ["trl_default"], "_top2"
        )
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
