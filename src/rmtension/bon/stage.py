"""The best-of-n stage: sample N responses per held-out prompt once, score them with every judge,
then analyse them (`rmtension.bon.analysis`: curves, fits, the gap, the frontier).

Prompts: test-split conversations from prompt groups that no RM or PM trained or validated on, one
per group (`rmtension.policy.prompts`).

Judges (columns of `bon/samples.parquet`, raw RM outputs):
    pm_train_<o>, pm_test_<o>   the PM-halves models of objective o
    rm_<o>                      the study's RM of objective o (first seed), for helpful, harmless, mixed
    rm_two_head_<h>             two_head's head h (first seed), when the combine stage trains it

Three sub-stages with their own manifests, so changing the analysis never re-samples:
`bon/sample` (bon/generations.parquet, bon/prompts.json), `bon/score` (bon/samples.parquet) and
`bon` (bon.csv, bon_fit.json, frontier.csv, bon/examples.json).
"""

from __future__ import annotations

from pathlib import Path

import time

import pandas as pd

from rmtension.errors import ConfigError
from rmtension.policy.prompts import (
    prompts_from_json,
    prompts_to_json,
    select_prompts,
    trained_groups,
)
from rmtension.judges.study_judges import judge_paths, sample_hash, score_hash
from rmtension.run.runio import read_json, stage_complete, write_json, write_manifest
from rmtension.bon.claims import tradeoff
from rmtension.bon.report import section_bon, section_examples, section_frontier
from rmtension.report.section import Section, in_part
from rmtension.stats.finding import Finding
from rmtension.policy.sampling import build_prompt_ids, decode_responses, open_policy
from rmtension.run.log import device, log
from rmtension.run.progress import stage_bar
from rmtension.judges.panel import JudgePanel
import io
from rmtension.run.runio import atomic_write_bytes
from rmtension.bon.analysis import stage_bon_analysis


def stage_bon_sample(prep) -> None:
    ctx, cfg = prep.ctx, prep.ctx.cfg
    h = sample_hash(cfg)
    if stage_complete(ctx.run_dir, "bon/sample", h):
        return
    pc, b = cfg.policy, cfg.bon
    exclude = trained_groups(ctx.bundle.splits)
    prompts = select_prompts(ctx.bundle.test_sets, b.prompt_objectives, b.n_prompts, pc.seed, exclude)
    if len(prompts) < min(2, b.n_prompts) or len(prompts) < b.n_prompts // 2:
        raise ConfigError(
            f"bon.n_prompts={b.n_prompts}: the test splits of {b.prompt_objectives} hold only "
            f"{len(prompts)} prompt groups unseen in training that end in a user turn"
        )
    policy = open_policy(pc, cfg.model.cache_dir, device=str(device()))
    ids = [build_prompt_ids(policy.tokenizer, p["context"], pc.max_prompt_tokens) for p in prompts]
    log(f"best-of-n: sampling {b.n_samples} responses for each of {len(prompts)} prompts ({pc.backbone})")
    t0 = time.perf_counter()
    with stage_bar("best-of-n sampling", len(ids) * b.n_samples, "response") as bar:
        drawn = policy.sample(ids, pc, b.n_samples, pc.seed, lambda done, _: bar.update(done - bar.n))
    secs = time.perf_counter() - t0
    log(
        f"  {drawn.n_tokens()} tokens in {secs:.0f}s ({drawn.n_tokens() / secs:.0f} tokens/s), "
        f"{drawn.finished.mean():.0%} stopped at end-of-turn"
    )
    frame = pd.DataFrame(
        {
            "prompt_id": [prompts[i]["prompt_id"] for i in drawn.prompt_index],
            "objective": [prompts[i]["objective"] for i in drawn.prompt_index],
            "prompt": drawn.prompt_index,
            "sample": drawn.sample_index,
            "response": decode_responses(policy.tokenizer, drawn.tokens),
            "n_tokens": [len(t) for t in drawn.tokens],
            "finished": drawn.finished,
        }
    )
    _write_parquet(frame, ctx.run_dir / "bon" / "generations.parquet")
    write_json(
        ctx.run_dir / "bon" / "prompts.json",
        {
            "prompts": prompts_to_json(prompts),
            "prompt_tokens": list(map(len, ids)),
            "sampling_s": secs,
            "tokens_per_s": drawn.n_tokens() / secs,
        },
    )
    write_manifest(ctx.run_dir, "bon/sample", h, ["bon/generations.parquet", "bon/prompts.json"])


def stage_bon_score(prep) -> None:
    ctx, cfg = prep.ctx, prep.ctx.cfg
    h = score_hash(prep)
    if stage_complete(ctx.run_dir, "bon/score", h):
        return
    frame = pd.read_parquet(ctx.run_dir / "bon" / "generations.parquet")
    prompts = prompts_from_json(read_json(ctx.run_dir / "bon" / "prompts.json")["prompts"])
    panel = JudgePanel(
        judge_paths(prep),
        prep.tokenizer,
        cfg.model.max_length,
        cfg.train.trainable,
        cfg.train.bf16,
        cfg.bon.score_batch_size,
        device(),
    )
    t0 = time.perf_counter()
    scores = panel.score([prompts[i]["context"] for i in frame["prompt"]], list(frame["response"]))
    log(
        f"best-of-n: scored {len(frame)} responses with {len(scores)} judges in {time.perf_counter() - t0:.0f}s"
        f"{' (one shared trunk pass)' if panel.shared else ''}"
    )
    for name, values in scores.items():
        frame[name] = values
    _write_parquet(frame, ctx.run_dir / "bon" / "samples.parquet")
    write_manifest(ctx.run_dir, "bon/score", h, ["bon/samples.parquet"])


def _write_parquet(frame: pd.DataFrame, path) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def stage_bon(prep) -> None:
    """Sample once, score with every judge, then curves, fits, frontier and examples."""

    stage_bon_sample(prep)
    stage_bon_score(prep)
    stage_bon_analysis(prep, score_hash(prep))


run = stage_bon
"""The stage contract (`rmtension.study.STAGES`): `run(prep)`, `sections(run_dir)`, `findings(run_dir)`."""


def sections(run_dir: Path) -> list[Section]:
    return in_part("optimisation", section_bon(run_dir), section_frontier(run_dir), section_examples(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return [tradeoff(run_dir)]
