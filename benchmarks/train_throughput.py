"""rmtension's reward-model trainer vs TRL's `RewardTrainer` on CPU: pairs/s and val accuracy.

Both train MiniLM (the packaged all-MiniLM-L6-v2) with a freshly seeded score head on the same
512 real HH training pairs (helpful objective, the study's grouped split), max length 256,
one epoch, batch 16, the same learning rate, in this one process, one after the other. Both get
the very same token ids (truncated from the left; TRL would otherwise drop long pairs), and
both are scored on the same validation pairs by the same code.

TRL runs at its RewardConfig defaults, which include gradient checkpointing; `--trl-no-checkpointing`
turns that off (a memory saving that costs TRL a second forward pass).

Runs (dropout off in both: TRL's default `disable_dropout=True`, rmtension's `disable_dropout`):
  1. full fine-tuning: TRL (its defaults: fp32, random batches) vs rmtension (bf16 autocast,
     length-grouped batches);
  2. `top:2`: TRL with the same lower layers frozen vs rmtension with the frozen trunk cached
     (the cache build is included in rmtension's time).

    python benchmarks/train_throughput.py [--data PATH/hh-rlhf] [--pairs 512] [--val 256]

Wall time of the training call is what is timed (TRL's includes its data preparation,
rmtension's the trunk-cache build and the save). Neither validates inside the timed call (TRL runs
with eval_strategy="no"); both final models are scored on the validation pairs afterwards.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rmtension.config import DataConfig, TrainConfig
from rmtension.data import build_dataset
from rmtension.model.encode import EncodedPairs, encode_pairs
from rmtension.model.forward import PairForward
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.scope import set_trainable
from rmtension.rm.train import train_reward_model
from rmtension.model.trunk import TrunkCache, trunk_fingerprint

LR = 5e-5
BATCH = 16


def accuracy(model, tok, val: EncodedPairs) -> float:
    with PairForward(model, tok.pad_token_id, bf16=False) as fwd:
        r_c, r_r = fwd.score(val, 32)
    return float(np.mean(r_c > r_r))


def fresh_model(path: str, tok, trainable: str):
    torch.manual_seed(0)  # the same score-head initialisation for both trainers
    model = load_reward_model(path, tok)
    k = set_trainable(model, trainable)
    return model, k


def run_trl(
    path: str, tok, train: EncodedPairs, val: EncodedPairs, trainable: str, checkpointing: bool = True
) -> tuple[float, float]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, _ = fresh_model(path, tok, trainable)
    ds = Dataset.from_dict({"chosen_ids": train.chosen, "rejected_ids": train.rejected})
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(
            output_dir=out,
            use_cpu=True,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            learning_rate=LR,
            max_length=256,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_steps=10,
            disable_tqdm=True,
            seed=0,
            bf16=False,
            dataloader_num_workers=0,
            gradient_checkpointing=checkpointing,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    model.eval()
    return len(train) / seconds, accuracy(model, tok, val)


def run_ours(path: str, tok, train: EncodedPairs, val: EncodedPairs, trainable: str) -> tuple[float, float]:
    model, k = fresh_model(path, tok, trainable)
    # disable_dropout: TRL's RewardConfig turns dropout off by default; the same here.
    cfg = TrainConfig(
        epochs=1,
        batch_size=BATCH,
        lr=LR,
        trainable=trainable,
        bf16=True,
        eval_every=10_000,
        checkpoint_every=10_000,
        seeds=[0],
        disable_dropout=True,
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        cache = None
        if trainable != "all":
            cache = TrunkCache(k, trunk_fingerprint(model, k))
            cache.add(model, train, tok.pad_token_id, 32, True)
        # Like TRL's run (eval_strategy="no"), no validation inside the timed call: the final model is
        # kept, and both are scored on `val` afterwards, outside the timer.
        train_reward_model(model, tok, train, None, cfg, 0, out, cache=cache, progress=False)
        seconds = time.perf_counter() - t0
    model.eval()
    return len(train) / seconds, accuracy(model, tok, val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("RMTENSION_DATA"), help="HH-RLHF root (official layout)")
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--only", choices=["full", "top2"], default=None)
    ap.add_argument(
        "--trl-no-checkpointing",
        action="store_true",
        help="run TRL without gradient checkpointing (its RewardConfig turns it on by default)",
    )
    args = ap.parse_args()
    if not args.data or not Path(args.data).is_dir():
        raise SystemExit("error: pass --data PATH/hh-rlhf or set RMTENSION_DATA")
    bundle = build_dataset(DataConfig(path=args.data, hub=False), args.data)
    path = resolve_backbone("minilm")
    tok = load_tokenizer(path, 256)
    train = encode_pairs(bundle.splits["helpful"]["train"][: args.pairs], tok, 256)
    val = encode_pairs(bundle.splits["helpful"]["val"][: args.val], tok, 256)
    print(
        f"MiniLM, {len(train)} HH helpful train pairs, {len(val)} val pairs, max length 256, 1 epoch, "
        f"batch {BATCH}, lr {LR}, {torch.get_num_threads()} threads, "
        f"TRL gradient checkpointing {'off' if args.trl_no_checkpointing else 'on (its default)'}"
    )
    runs = [("full", "all"), ("top2", "top:2")]
    for name, trainable in runs:
        if args.only and args.only != name:
            continue
        trl_ps, trl_acc = run_trl(path, tok, train, val, trainable, not args.trl_no_checkpointing)
        our_ps, our_acc = run_ours(path, tok, train, val, trainable)
        label = (
            "full fine-tuning"
            if name == "full"
            else "top:2 (TRL: same layers frozen; rmtension: trunk cached)"
        )
        print(f"\n{label}")
        print(f"  TRL RewardTrainer   {trl_ps:7.2f} pairs/s   val accuracy {trl_acc:.3f}")
        print(f"  rmtension           {our_ps:7.2f} pairs/s   val accuracy {our_acc:.3f}")
        print(
            f"  throughput ratio    {our_ps / trl_ps:7.2f}x   accuracy difference {100 * (our_acc - trl_acc):+.1f} points"
        )


if __name__ == "__main__":
    main()
