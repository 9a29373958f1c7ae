"""What the two-process test runs, once under `accelerate launch` and once as a plain process.

    python tests/distkit.py WORK OUT_JSON

WORK holds `model/`, `base/` and `dropout/` (tiny Llama HF folders, the last with attention
dropout), `bert/` (a tiny BERT without dropout) and `backbone/` (a tiny Llama causal LM, which
has no score head), written by the test. The script trains three
tiny reward models (full fine-tuning with gradient accumulation, and the top block over a cached
trunk for Llama and BERT), evaluates each, checks that a run with dropout resumes exactly, scores every neuron of a fixed model and runs an ablation, then the
main process writes everything to OUT_JSON. The code is the library's, called the same way in
both runs: nothing here depends on the number of processes or on the launch config (DDP or FSDP).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from rmtension.run import dist, interrupt, shards  # noqa: E402
from rmtension.config import TrainConfig  # noqa: E402
from rmtension.errors import ConfigError  # noqa: E402
from rmtension.model.forward import PairForward  # noqa: E402
from rmtension.model.backbones import load_reward_model, load_tokenizer  # noqa: E402
from rmtension.judges.ablate import Condition, run_conditions  # noqa: E402
from rmtension.judges.neurons import SCORERS, score_neurons  # noqa: E402
from rmtension.model.scope import set_trainable  # noqa: E402
from rmtension.trainer.train import train_reward_model  # noqa: E402
from rmtension.model.trunk import TrunkCache, trunk_fingerprint  # noqa: E402
from test_train import synthetic  # noqa: E402


def train_one(work: Path, tok, train, val, name: str, model_dir: str = "model", **kw) -> dict:
    cfg = TrainConfig(
        seeds=[0], epochs=2, batch_size=6, lr=4e-4, eval_every=2, checkpoint_every=4, bf16=False, **kw
    )
    torch.manual_seed(0)
    model = load_reward_model(str(work / model_dir), tok).to(dist.device())
    cache = None
    if cfg.trainable != "all":
        k = set_trainable(model, cfg.trainable)
        cache = TrunkCache(k, trunk_fingerprint(model, k))
        for enc in (train, val):
            cache.add(model, enc, tok.pad_token_id, bf16=False)
    res = train_reward_model(
        model, tok, train, val, cfg, seed=0, out_dir=work / "out" / name, cache=cache, progress=False
    )
    # scored straight after training: under FSDP the model is still sharded, every forward a collective
    r_c, r_r = PairForward(model, tok.pad_token_id, False).score(val, batch_size=4)
    return {
        "loss": res.metrics["loss"],
        "val_accuracy": res.metrics["val_accuracy"],
        "best_step": res.best_step,
        "eval": [r_c.tolist(), r_r.tolist()],
        "sharded": shards.is_sharded(model),
    }


def resumes_exactly(work: Path, tok, train, val, **kw) -> bool:
    """With dropout, a run stopped after its first step and resumed equals an uninterrupted one
    (each process gets its own RNG state back from the checkpoint). `kw`: TrainConfig overrides."""
    name = "dropout" + "".join(f"-{v}" for v in kw.values()).replace(":", "")
    ref = train_one(work, tok, train, val, name, model_dir="dropout", **kw)
    interrupt.request()
    try:
        train_one(work, tok, train, val, f"{name}-resumed", model_dir="dropout", **kw)
        return False  # it should have stopped
    except interrupt.Interrupted:
        pass
    finally:
        interrupt._STOP.clear()
    resumed = train_one(work, tok, train, val, f"{name}-resumed", model_dir="dropout", **kw)
    return resumed == ref and len(ref["loss"]) > 3


def conflict_run(work: Path, tok, train, val) -> dict:
    """Conflict measured at every step of a mixed RM, and a PCGrad run: rows of conflict.csv, losses, scores."""
    import numpy as np
    import pandas as pd

    objectives = np.arange(len(train)) % 2  # alternate helpful / harmless
    out = {}
    for name, pcgrad in (("conflict", False), ("pcgrad", True)):
        cfg = TrainConfig(
            seeds=[0],
            epochs=1,
            batch_size=8,
            lr=4e-4,
            eval_every=2,
            checkpoint_every=4,
            bf16=False,
            conflict_every=1,
        )
        torch.manual_seed(0)
        model = load_reward_model(str(work / "model"), tok).to(dist.device())
        res = train_reward_model(
            model,
            tok,
            train,
            val,
            cfg,
            seed=0,
            out_dir=work / "out" / name,
            progress=False,
            objectives=objectives,
            pcgrad=pcgrad,
        )
        r_c, r_r = PairForward(model, tok.pad_token_id, False).score(val, batch_size=4)
        rows = pd.read_csv(work / "out" / name / "conflict.csv") if dist.is_main() else None
        out[name] = {
            "loss": res.metrics["loss"],
            "metrics": res.metrics["conflict"],
            "eval": [r_c.tolist(), r_r.tolist()],
            "rows": None if rows is None else rows.to_dict(orient="list"),
        }
    return out


def main(work: Path, out: Path) -> None:
    tok = load_tokenizer(str(work / "model"), 64)
    train = synthetic(tok, 41, "train")  # 41 pairs in batches of 6: the last global batch is ragged
    val = synthetic(tok, 15, "val", seed=1)
    result = {
        "world_size": dist.world_size(),
        "distributed_type": str(dist.state().distributed_type),
        "full": train_one(work, tok, train, val, "full", grad_accum=2),
        "top1": train_one(work, tok, train, val, "top1", trainable="top:1"),
        "resumes_exactly": resumes_exactly(work, tok, train, val),
        # over a trunk cache: the engine's checkpoint holds the model cut to its top block
        "resumes_exactly_top1": resumes_exactly(work, tok, train, val, trainable="top:1"),
    }
    btok = load_tokenizer(
        str(work / "bert"), 64
    )  # BERT's buffers live in the embeddings the trunk cache replaces
    result["bert_top1"] = train_one(
        work,
        btok,
        synthetic(btok, 41, "train"),
        synthetic(btok, 15, "val", seed=1),
        "bert_top1",
        model_dir="bert",
        trainable="top:1",
    )

    # gradient conflict and PCGrad on a mixed batch: one process and DDP (FSDP / DeepSpeed refuse them)
    engine = str(dist.state().distributed_type)
    try:
        result["conflict"] = conflict_run(work, tok, train, val)
    except ConfigError as e:  # FSDP and DeepSpeed refuse it before training
        result["conflict"] = {"refused": str(e), "engine": engine}
    result["trained_under"] = str(
        dist.state().distributed_type
    )  # the launch config's engine, once training set it up
    torch.manual_seed(5)  # a backbone without a score head: the head is new, drawn alike in every process
    fresh = load_reward_model(str(work / "backbone"), tok).to(dist.device())
    result["fresh_head"] = (
        dist.stack_across(fresh.score.weight.detach().sum().reshape(1)).reshape(-1).tolist()
    )
    fixed = load_reward_model(str(work / "model"), tok).to(dist.device())
    base = load_reward_model(str(work / "base"), tok).to(dist.device())
    scores = score_neurons({"fixed": fixed}, val, tok.pad_token_id, base, SCORERS, batch_size=4, bf16=False)[
        "fixed"
    ]
    result["scores"] = {k: v.tolist() for k, v in scores.scores.items()}
    result["n_pairs"], result["n_tokens"] = scores.n_pairs, scores.n_tokens

    mask = torch.zeros(scores.scores["mean_act"].shape, dtype=torch.bool)
    mask[1, :8] = True
    clean, margins = run_conditions(
        fixed, val, tok.pad_token_id, {"l1": Condition(mask)}, batch_size=4, bf16=False
    )
    result["ablation"] = [clean.tolist(), margins["l1"].tolist()]
    if dist.is_main():
        out.write_text(json.dumps(result))
    dist.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
