"""The RL stage: one RLOO run per objective and seed against pm_train, evaluated on held-out prompts.

Outputs (under the run directory):
    rl/<objective>/seed<k>.csv          one row per RL step (training batch): step, kl (exact), sqrt_kl,
                                        reward_train_pm, reward_test_pm, reward_other_objective,
                                        reward_helpful_rm, reward_harmless_rm (z-units), kl_sample, loss
    rl/<objective>/seed<k>_eval.csv     one row per held-out completion at each evaluation: step, prompt,
                                        sample, kl, every judge's reward (z-units)
    rl/<objective>/seed<k>_timing.csv   wall clock per step and of the evaluations (kept apart: the
                                        results are deterministic on CPU)
    rl/prompts.json                     the training and the evaluation prompts (disjoint prompt groups)
    rl.csv, rl_eval.csv                 every run's rows, with objective and seed
    rl.json                             per objective: the held-out trend with its CI, forms, the gap and
                                        the seeds (`rmtension.rl.summary`)

Rewards are z-scores of each judge over the initial policy's best-of-n samples (or, without them,
over the first scored batch: the initial policy's held-out evaluation), the scale RL optimises.

Bai et al. (2022), sec. 4: reward is roughly linear in sqrt(KL), and a PM trained on half the data
rates the optimised policy above a PM trained on the other half.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.errors import ConfigError
from rmtension.config import config_hash
from rmtension.judges.study_judges import pm_dir
from rmtension.policy.prompts import RULE, prompts_to_json, rl_prompts, trained_groups
from rmtension.run import interrupt
from rmtension.run.runio import inside, stage_complete, write_csv, write_json, write_manifest
from rmtension.rl.claims import sqrt_kl, train_test_gap
from rmtension.rl.report import section_rl
from rmtension.report.section import Section, in_part
from rmtension.stats.finding import Finding
from rmtension.judges.study_judges import score_hash
from rmtension.policy.config import OTHER
from rmtension.judges.study_judges import judge_hashes, sample_hash
from rmtension.judges.panel import JudgePanel
from rmtension.policy.sampling import build_prompt_ids, decode_responses, open_policy
from rmtension.rl.heldout import HeldOut
from rmtension.rl.loop import run_rloo
from rmtension.run.log import device, log
from rmtension.rl.summary import rl_summary
from rmtension.run.progress import stage_bar


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
    panel, contexts: Sequence, decode: Callable, objective: str, norm: dict[str, tuple[float, float]]
) -> Callable:
    """The RL score function: z-scored judge rewards, plus `other_objective` (NaN for mixed).

    z-scores use `norm` (judge -> (mean, sd)); a judge missing from it is added from the first batch
    scored, in place, so scorers that share one `norm` share one scale.
    """

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


def prompt_sets(prep) -> tuple[list[dict], list[dict]]:
    """(training, evaluation) prompts of RL: disjoint prompt groups that no RM or PM saw."""
    ctx, cfg = prep.ctx, prep.ctx.cfg
    objectives = cfg.bon.prompt_objectives if cfg.bon is not None else ["helpful", "harmless"]
    train, evaluation = rl_prompts(
        ctx.bundle.test_sets,
        objectives,
        cfg.rl.n_prompts,
        cfg.rl.eval_prompts,
        cfg.policy.seed,
        trained_groups(ctx.bundle.splits),
    )
    if len(evaluation) < 2 or not train:
        raise ConfigError(
            f"rl: the test splits of {objectives} hold {len(evaluation)} evaluation and {len(train)} training "
            "prompt groups unseen in training; need at least 2 and 1 (lower rl.eval_prompts)"
        )
    return train, evaluation


def rl_hash(prep, objective: str, seed: int) -> str:
    cfg = prep.ctx.cfg
    hashes = judge_hashes(prep)
    # the reward scale: the best-of-n samples under RL's own judges (a judge added to best-of-n alone,
    # such as two_head's heads, leaves it unchanged)
    own = [f"pm_train_{objective}", f"pm_test_{objective}", "rm_helpful", "rm_harmless"]
    scale = config_hash(sample_hash(cfg), {j: hashes[j] for j in own}, cfg.model.max_length)
    norm = scale if bon_scores_ready(prep) else "first batch"
    run = cfg.rl.model_copy(update={"objectives": [], "seeds": [], "bootstrap": 0, "block": None})
    return config_hash(
        cfg.data,
        cfg.policy,
        run,
        objective,
        seed,
        norm,
        RULE,
        hashes[f"pm_train_{objective}"],
        hashes[f"pm_test_{objective}"],
        hashes["rm_helpful"],
        hashes["rm_harmless"],
        cfg.model.max_length,
        "rl",
    )


def run_paths(run_dir: Path, objective: str, seed: int) -> dict[str, Path]:
    return {
        kind: inside(run_dir, "rl", objective, f"seed{seed}{kind}.csv") for kind in ("", "_eval", "_timing")
    }


STEP_COLUMNS = [
    "objective",
    "seed",
    "step",
    "kl",
    "sqrt_kl",
    "reward_train_pm",
    "reward_test_pm",
    "reward_other_objective",
]
TIMING = ["sample_s", "score_s", "step_s"]


def stage_rl_run(prep, objective: str, seed: int, bar) -> None:
    """One RL run: RLOO against pm_train of `objective` with RL seed `seed`, evaluated on held-out prompts.
    `bar`: the stage's progress bar, advanced by each step; its postfix shows the step's KL and rewards."""

    ctx, cfg = prep.ctx, prep.ctx.cfg
    stage, h = f"rl/{objective}/seed{seed}", rl_hash(prep, objective, seed)
    if stage_complete(ctx.run_dir, stage, h):
        return
    rl, pc = cfg.rl, cfg.policy
    train, evaluation = prompt_sets(prep)
    policy = open_policy(pc, cfg.model.cache_dir, precision="fp32", device=str(device()))
    ids = [build_prompt_ids(policy.tokenizer, p["context"], rl.max_prompt_tokens) for p in train]
    eval_ids = [build_prompt_ids(policy.tokenizer, p["context"], rl.max_prompt_tokens) for p in evaluation]
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
    norm = dict(stats) if stats else {}
    decode = lambda t: decode_responses(policy.tokenizer, t)  # noqa: E731
    score = make_scorer(panel, [p["context"] for p in train], decode, objective, norm)
    held = HeldOut(
        eval_ids,
        make_scorer(panel, [p["context"] for p in evaluation], decode, objective, norm),
        rl.eval_k,
        rl.eval_every,
    )
    log(
        f"RL (RLOO) against pm_train of {objective}, seed {seed}: {rl.steps} steps x {rl.prompts_per_step} prompts "
        f"x k={rl.k}; held-out evaluation of {len(evaluation)} prompts x {rl.eval_k} every {rl.eval_every} steps"
    )

    def on_step(row: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(
            f"{objective}/seed{seed} KL {row['kl']:.3f} r_train {row['reward_train_pm']:+.3f} "
            f"r_test {row['reward_test_pm']:+.3f}",
            refresh=False,
        )
        interrupt.check(f"during RL on {objective} (no checkpoint: the run restarts)")

    run = run_rloo(policy.model, ids, score, rl, pc, policy.stop_ids, policy.pad_id, on_step, seed, held)
    frame = pd.DataFrame(run.steps)
    frame["objective"], frame["seed"], frame["sqrt_kl"] = objective, seed, np.sqrt(frame["kl"].clip(lower=0))
    frame["normalisation"] = "bon samples" if stats else "first batch"
    frame = frame[STEP_COLUMNS + [c for c in frame.columns if c not in STEP_COLUMNS and c not in TIMING]]
    evals = pd.DataFrame(run.evals)
    evals.insert(0, "seed", seed)
    evals.insert(0, "objective", objective)
    last = evals[evals["step"] == rl.steps]
    log(
        f"  held-out after {rl.steps} steps: KL {last['kl'].mean():.3f}  r_train {last['reward_train_pm'].mean():+.3f}  "
        f"r_test {last['reward_test_pm'].mean():+.3f}  (evaluations {run.eval_s:.0f}s)"
    )
    timing = pd.DataFrame(run.steps)[["step", *TIMING]]
    timing["eval_s_total"] = run.eval_s
    paths = run_paths(ctx.run_dir, objective, seed)
    outputs = [
        write_csv(paths[""], frame),
        write_csv(paths["_eval"], evals),
        write_csv(paths["_timing"], timing),
    ]
    write_manifest(ctx.run_dir, stage, h, outputs)


def stage_rl(prep) -> None:
    ctx, cfg = prep.ctx, prep.ctx.cfg
    rl = cfg.rl
    runs = [(o, s) for o in rl.objectives for s in rl.seeds]
    hashes = {(o, s): rl_hash(prep, o, s) for o, s in runs}
    h = config_hash(*hashes.values(), rl.bootstrap, rl.block, "rl summary")
    if stage_complete(ctx.run_dir, "rl", h):
        return
    todo = [(o, s) for (o, s), rh in hashes.items() if not stage_complete(ctx.run_dir, f"rl/{o}/seed{s}", rh)]
    with stage_bar("rl", len(todo) * rl.steps, "step") as bar:
        for objective, seed in todo:
            stage_rl_run(prep, objective, seed, bar)
            interrupt.check(f"after RL on {objective} (seed {seed})")
    steps = pd.concat([pd.read_csv(run_paths(ctx.run_dir, o, s)[""]) for o, s in runs], ignore_index=True)
    evals = pd.concat(
        [pd.read_csv(run_paths(ctx.run_dir, o, s)["_eval"]) for o, s in runs], ignore_index=True
    )
    train, evaluation = prompt_sets(prep)
    outputs = [
        write_csv(ctx.run_dir / "rl.csv", steps),
        write_csv(ctx.run_dir / "rl_eval.csv", evals),
        write_json(
            inside(ctx.run_dir, "rl", "prompts.json"),
            {"rule": RULE, "train": prompts_to_json(train), "eval": prompts_to_json(evaluation)},
        ),
        write_json(
            ctx.run_dir / "rl.json",
            rl_summary(steps, evals, rl.objectives, rl.bootstrap, rl.block, cfg.policy.seed),
        ),
    ]
    write_manifest(ctx.run_dir, "rl", h, outputs)


run = stage_rl
"""The stage contract (`rmtension.study.STAGES`): `run(prep)`, `sections(run_dir)`, `findings(run_dir)`.
sqrt_kl and train_test_gap span best-of-n and RL, so they are the later stage's: they read `bon_fit.json`
and `rl.json`."""


def sections(run_dir: Path) -> list[Section]:
    return in_part("optimisation", section_rl(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return [sqrt_kl(run_dir), train_test_gap(run_dir)]
