"""The best-of-n stage: sample N responses per held-out prompt once, score them with every judge,
then analyse them (`rmtension.optimise.bon_analysis`: curves, fits, the gap, the frontier).

Prompts: test-split conversations from prompt groups that no RM or PM trained or validated on, one
per group (`rmtension.optimise.prompts`).

Judges (columns of `bon/samples.parquet`, raw RM outputs):
    pm_train_<o>, pm_test_<o>   the PM-halves models of objective o
    rm_<o>                      the study's RM of objective o (first seed), for helpful, harmless, mixed
    rm_two_head_<h>             two_head's head h (first seed), when the combine stage trains it

Three sub-stages with their own manifests, so changing the analysis never re-samples:
`bon/sample` (bon/generations.parquet, bon/prompts.json), `bon/score` (bon/samples.parquet) and
`bon` (bon.csv, bon_fit.json, frontier.csv, bon/examples.json).
"""

from __future__ import annotations

import time

import pandas as pd

from rmtension.config import config_hash
from rmtension.optimise.prompts import (
    RULE,
    prompts_from_json,
    prompts_to_json,
    select_prompts,
    trained_groups,
)
from rmtension.run.runio import read_json, stage_complete, write_json, write_manifest


def judge_paths(prep) -> dict[str, object]:
    """Judge name -> HF folder: every PM half, and the study RM (first seed) of each objective."""
    from rmtension.config import OBJECTIVES
    from rmtension.optimise.pm_halves import pm_dir

    ctx, cfg = prep.ctx, prep.ctx.cfg
    paths = {}
    for o in cfg.pm_halves.objectives:
        paths[f"pm_train_{o}"] = pm_dir(ctx.run_dir, o, "train")
        paths[f"pm_test_{o}"] = pm_dir(ctx.run_dir, o, "test")
    for o in OBJECTIVES:
        paths[f"rm_{o}"] = ctx.rm_dir(o, ctx.seeds[0])
    if two_head_judges(cfg):  # its heads, for the combined judges' picks (`rmtension.combine.picks`)
        for h in ("helpful", "harmless"):
            paths[f"rm_two_head_{h}"] = (ctx.rm_dir("two_head", ctx.seeds[0]), h)
    return paths


def two_head_judges(cfg) -> bool:
    """Whether best-of-n also scores with two_head's heads: the combine stage trains it."""
    return cfg.combine is not None and cfg.combine.two_head


def judge_hashes(prep) -> dict[str, str]:
    """What each judge's weights depend on (the study RMs' train hash, the PM halves' hash)."""
    from rmtension.config import OBJECTIVES
    from rmtension.optimise.pm_halves import pm_hash
    from rmtension.rm.stages import train_hash

    cfg = prep.ctx.cfg
    out = {f"rm_{o}": train_hash(cfg, o, prep.ctx.seeds[0]) for o in OBJECTIVES}
    if two_head_judges(cfg):
        for h in ("helpful", "harmless"):
            out[f"rm_two_head_{h}"] = train_hash(cfg, "two_head", prep.ctx.seeds[0]) + f":{h}"
    for o in cfg.pm_halves.objectives:
        out[f"pm_train_{o}"], out[f"pm_test_{o}"] = pm_hash(cfg, o, "train"), pm_hash(cfg, o, "test")
    return out


def sample_hash(cfg) -> str:
    b = cfg.bon
    return config_hash(
        cfg.data,
        cfg.policy,
        {"n_prompts": b.n_prompts, "n_samples": b.n_samples, "prompt_objectives": b.prompt_objectives},
        RULE,
        "bon/sample",
    )


def score_hash(prep) -> str:
    return config_hash(
        sample_hash(prep.ctx.cfg), judge_hashes(prep), prep.ctx.cfg.model.max_length, "bon/score"
    )


def stage_bon_sample(prep) -> None:
    from rmtension.optimise.policy import build_prompt_ids, decode_responses, open_policy, sample
    from rmtension.run.log import device, log
    from rmtension.run.progress import stage_bar

    ctx, cfg = prep.ctx, prep.ctx.cfg
    h = sample_hash(cfg)
    if stage_complete(ctx.run_dir, "bon/sample", h):
        return
    pc, b = cfg.policy, cfg.bon
    exclude = trained_groups(ctx.bundle.splits)
    prompts = select_prompts(ctx.bundle.test_sets, b.prompt_objectives, b.n_prompts, pc.seed, exclude)
    if len(prompts) < min(2, b.n_prompts) or len(prompts) < b.n_prompts // 2:
        from rmtension.errors import ConfigError

        raise ConfigError(
            f"bon.n_prompts={b.n_prompts}: the test splits of {b.prompt_objectives} hold only "
            f"{len(prompts)} prompt groups unseen in training that end in a user turn"
        )
    policy = open_policy(pc, cfg.model.cache_dir, device=str(device()))
    ids = [build_prompt_ids(policy.tokenizer, p["context"], pc.max_prompt_tokens) for p in prompts]
    log(f"best-of-n: sampling {b.n_samples} responses for each of {len(prompts)} prompts ({pc.backbone})")
    t0 = time.perf_counter()
    with stage_bar("best-of-n sampling", len(ids) * b.n_samples, "response") as bar:
        drawn = sample(
            policy.model,
            ids,
            n=b.n_samples,
            max_new_tokens=pc.max_new_tokens,
            temperature=pc.temperature,
            top_k=pc.top_k,
            top_p=pc.top_p,
            batch_size=pc.batch_size,
            stop_ids=policy.stop_ids,
            pad_id=policy.pad_id,
            seed=pc.seed,
            progress=lambda done, _: bar.update(done - bar.n),
        )
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
    from rmtension.optimise.judges import JudgePanel
    from rmtension.run.log import device, log

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
    import io

    from rmtension.run.runio import atomic_write_bytes

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def stage_bon(prep) -> None:
    """Sample once, score with every judge, then curves, fits, frontier and examples."""
    from rmtension.optimise.bon_analysis import stage_bon_analysis

    stage_bon_sample(prep)
    stage_bon_score(prep)
    stage_bon_analysis(prep, score_hash(prep))
