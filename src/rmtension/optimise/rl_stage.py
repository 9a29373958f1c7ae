"""Study stages of the optimisation analyses: PM halves, best-of-n (`rmtension.optimise.bon_stage`) and RL.

Outputs (under the run directory):
    pm/<objective>/{train,test}/    pm_train (half A) and pm_test (half B): HF folders like rm/<objective>/seed<k>
    pm/<objective>/halves.json      pair ids of each half and each PM's test accuracy
    bon/samples.parquet, bon.csv, bon_fit.json, frontier.csv, bon/examples.json   (see bon_stage)
    rl/<objective>.csv, rl.csv      one row per RL step: objective, step, kl (exact, `rl.kl_exact`), sqrt_kl,
                                    reward_train_pm, reward_test_pm, reward_other_objective, reward_helpful_rm,
                                    reward_harmless_rm (z-units), kl_sample, loss, timings
    rl.json                         per objective: sqrt(KL) fits of the RL curves and the final train/test gap

Bai et al. (2022), sec. 4: reward is roughly linear in sqrt(KL), and a PM trained on half the data
rates the optimised policy above a PM trained on the other half.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.run import interrupt
from rmtension.config import config_hash
from rmtension.run.runio import inside, stage_complete, write_csv, write_json, write_manifest

from rmtension.optimise.pm_halves import pm_dir


def rl_judges(prep, objective: str) -> dict[str, Path]:
    """Judges logged during RL: the objective's two PM halves and the study's helpful and harmless RMs."""
    ctx = prep.ctx
    return {
        "train_pm": pm_dir(ctx.run_dir, objective, "train"),
        "test_pm": pm_dir(ctx.run_dir, objective, "test"),
        "helpful_rm": ctx.rm_dir("helpful", ctx.seeds[0]),
        "harmless_rm": ctx.rm_dir("harmless", ctx.seeds[0]),
    }


def bon_scores_ready(prep) -> bool:
    """True when this run holds the initial policy's scored best-of-n samples (RL's reward scale)."""
    from rmtension.optimise.bon_stage import score_hash

    return prep.ctx.cfg.bon is not None and stage_complete(prep.ctx.run_dir, "bon/score", score_hash(prep))


def reference_stats(prep, objective: str) -> dict[str, tuple[float, float]] | None:
    """Mean and sd of each RL judge over the best-of-n samples of the initial policy (None without them)."""
    ctx = prep.ctx
    if not bon_scores_ready(prep):
        return None
    frame = pd.read_parquet(ctx.run_dir / "bon" / "samples.parquet")
    cols = {
        "train_pm": f"pm_train_{objective}",
        "test_pm": f"pm_test_{objective}",
        "helpful_rm": "rm_helpful",
        "harmless_rm": "rm_harmless",
    }
    return {k: (float(frame[c].mean()), float(frame[c].std(ddof=0)) or 1.0) for k, c in cols.items()}


def make_scorer(
    panel, contexts: Sequence, decode: Callable, objective: str, stats: dict[str, tuple[float, float]] | None
) -> Callable:
    """The RL score function: z-scored judge rewards, plus `other_objective` (NaN for mixed).

    z-scores use `stats` (the initial policy's best-of-n samples) or, without them, the first batch.
    """
    from rmtension.optimise.bon_stage import OTHER

    norm = dict(stats) if stats else {}

    def score(prompt_idx: list[int], tokens: list[list[int]]) -> dict[str, np.ndarray]:
        raw = panel.score([contexts[i] for i in prompt_idx], decode(tokens))
        for k, v in raw.items():
            norm.setdefault(k, (float(v.mean()), float(v.std()) or 1.0))
        out = {k: (v - norm[k][0]) / norm[k][1] for k, v in raw.items()}
        out["other_objective"] = (
            out[f"{OTHER[objective]}_rm"] if objective in OTHER else np.full(len(tokens), np.nan)
        )
        return out

    return score


def rl_hash(prep, objective: str) -> str:
    from rmtension.optimise.bon_stage import judge_hashes, score_hash

    cfg = prep.ctx.cfg
    hashes = judge_hashes(prep)
    norm = score_hash(prep) if bon_scores_ready(prep) else "first batch"
    return config_hash(
        cfg.data,
        cfg.policy,
        cfg.rl.model_copy(update={"objectives": []}),
        objective,
        norm,
        hashes[f"pm_train_{objective}"],
        hashes[f"pm_test_{objective}"],
        hashes["rm_helpful"],
        hashes["rm_harmless"],
        cfg.model.max_length,
        "rl",
    )


def stage_rl_objective(prep, objective: str) -> None:
    from rmtension.optimise.bon_stage import select_prompts
    from rmtension.optimise.judges import JudgePanel
    from rmtension.optimise.policy import build_prompt_ids, decode_responses, open_policy
    from rmtension.optimise.rl import run_rloo
    from rmtension.run.log import device, log

    ctx, cfg = prep.ctx, prep.ctx.cfg
    stage, h = f"rl/{objective}", rl_hash(prep, objective)
    if stage_complete(ctx.run_dir, stage, h):
        return
    rl, pc = cfg.rl, cfg.policy
    objectives = cfg.bon.prompt_objectives if cfg.bon is not None else ["helpful", "harmless"]
    prompts = select_prompts(ctx.bundle.test_sets, objectives, rl.n_prompts, rl.seed + 1)
    policy = open_policy(pc, cfg.model.cache_dir, precision="fp32", device=str(device()))
    ids = [build_prompt_ids(policy.tokenizer, p["context"], rl.max_prompt_tokens) for p in prompts]
    panel = JudgePanel(
        rl_judges(prep, objective),
        prep.tokenizer,
        cfg.model.max_length,
        cfg.train.trainable,
        cfg.train.bf16,
        cfg.bon.score_batch_size if cfg.bon else 32,
        device(),
    )
    stats = reference_stats(prep, objective)
    score = make_scorer(
        panel,
        [p["context"] for p in prompts],
        lambda t: decode_responses(policy.tokenizer, t),
        objective,
        stats,
    )
    log(
        f"RL (RLOO) against pm_train of {objective}: {rl.steps} steps x {rl.prompts_per_step} prompts x k={rl.k}"
    )

    def on_step(row: dict) -> None:
        log(
            f"  step {row['step']:3d}: KL {row['kl']:6.3f}  r_train {row['reward_train_pm']:+.3f}  "
            f"r_test {row['reward_test_pm']:+.3f}  ({row['step_s']:.1f}s)"
        )
        interrupt.check(f"during RL on {objective} (no checkpoint: the run restarts)")

    rows = run_rloo(policy.model, ids, score, rl, pc, policy.stop_ids, policy.pad_id, on_step)
    frame = pd.DataFrame(rows)
    frame["objective"], frame["sqrt_kl"] = objective, np.sqrt(frame["kl"].clip(lower=0))
    frame["normalisation"] = "bon samples" if stats else "first batch"
    first = [
        "objective",
        "step",
        "kl",
        "sqrt_kl",
        "reward_train_pm",
        "reward_test_pm",
        "reward_other_objective",
    ]
    timing = [
        "sample_s",
        "score_s",
        "step_s",
    ]  # wall clock: kept apart so the results are deterministic on CPU
    frame = frame[first + [c for c in frame.columns if c not in first and c not in timing]]
    outputs = [
        write_csv(inside(ctx.run_dir, "rl", f"{objective}.csv"), frame),
        write_csv(
            inside(ctx.run_dir, "rl", f"{objective}_timing.csv"), pd.DataFrame(rows)[["step", *timing]]
        ),
    ]
    write_manifest(ctx.run_dir, stage, h, outputs)


def rl_summary(frame: pd.DataFrame) -> dict:
    """sqrt(KL) fits of the RL curves and the train/test gap over the last quarter of the steps."""
    from rmtension.optimise.bon import sqrt_kl_fit

    out = {}
    for objective, t in frame.groupby("objective", sort=False):
        cols = [
            c
            for c in ("reward_train_pm", "reward_test_pm", "reward_other_objective")
            if np.isfinite(t[c]).all()
        ]
        tail = t.iloc[-max(1, len(t) // 4) :]
        gap = tail["reward_train_pm"] - tail["reward_test_pm"]
        out[objective] = {
            "sqrt_kl": {c: sqrt_kl_fit(t["kl"].clip(lower=0), t[c]) for c in cols},
            "final_kl": float(tail["kl"].mean()),
            "final_gap": float(gap.mean()),
            "final_gap_se": float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else float("nan"),
            "steps": int(len(t)),
        }
    return out


def stage_rl(prep) -> None:
    ctx, cfg = prep.ctx, prep.ctx.cfg
    h = config_hash(*(rl_hash(prep, o) for o in cfg.rl.objectives))
    if stage_complete(ctx.run_dir, "rl", h):
        return
    for objective in cfg.rl.objectives:
        stage_rl_objective(prep, objective)
        interrupt.check(f"after RL on {objective}")
    frame = pd.concat(
        [pd.read_csv(inside(ctx.run_dir, "rl", f"{o}.csv")) for o in cfg.rl.objectives], ignore_index=True
    )
    write_csv(ctx.run_dir / "rl.csv", frame)
    write_json(ctx.run_dir / "rl.json", rl_summary(frame))
    write_manifest(ctx.run_dir, "rl", h, ["rl.csv", "rl.json"])
