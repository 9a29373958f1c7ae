"""The best-of-n stage: sample N responses per held-out prompt once, score them with every judge,
then compute best-of-n curves, the sqrt(KL) and Gao et al. fits, and the helpful/harmless frontier.

Judges (columns of `bon/samples.parquet`, raw RM outputs):
    pm_train_<o>, pm_test_<o>   the PM-halves models of objective o
    rm_<o>                      the study's RM of objective o (first seed), for helpful, harmless, mixed
Curves and the frontier use z-units: each judge is standardised over all P x N samples, so every
curve starts at 0 for n = 1 and train/test judges share a scale.

Three sub-stages with their own manifests, so changing the analysis never re-samples:
`bon/sample` (bon/generations.parquet, bon/prompts.json), `bon/score` (bon/samples.parquet) and
`bon` (bon.csv, bon_fit.json, frontier.csv, bon/examples.json).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rmtension.optimise import bon
from rmtension.config import config_hash
from rmtension.data.types import Turn
from rmtension.run.runio import read_json, stage_complete, write_csv, write_json, write_manifest

OTHER = {"helpful": "harmless", "harmless": "helpful"}
"""The other objective's RM judges a single-objective PM's pick; the mixed PM has no other objective."""


def select_prompts(test_sets: dict, objectives: Sequence[str], n: int, seed: int) -> list[dict]:
    """n distinct held-out conversation contexts, in equal shares from each objective's test split.

    Returns dicts with `prompt_id` (the pair id), `objective` and `context` (tuple of Turn).
    """
    out: list[dict] = []
    seen: set[tuple] = set()
    rng = np.random.default_rng(seed)
    shares = [n // len(objectives) + (i < n % len(objectives)) for i in range(len(objectives))]
    for objective, share in zip(objectives, shares):
        pairs = test_sets[objective]
        taken = 0
        for i in rng.permutation(len(pairs)):
            p = pairs[int(i)]
            if taken == share:
                break
            if p.context in seen or not p.context or p.context[-1].role != "user":
                continue
            seen.add(p.context)
            out.append({"prompt_id": p.pair_id, "objective": objective, "context": p.context})
            taken += 1
    return out


def prompts_to_json(prompts: list[dict]) -> list[dict]:
    return [{**p, "context": [{"role": t.role, "content": t.content} for t in p["context"]]} for p in prompts]


def prompts_from_json(rows: list[dict]) -> list[dict]:
    return [{**p, "context": tuple(Turn(t["role"], t["content"]) for t in p["context"])} for p in rows]


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
    return paths


def judge_hashes(prep) -> dict[str, str]:
    """What each judge's weights depend on (the study RMs' train hash, the PM halves' hash)."""
    from rmtension.config import OBJECTIVES
    from rmtension.optimise.pm_halves import pm_hash
    from rmtension.rm.stages import train_hash

    cfg = prep.ctx.cfg
    out = {f"rm_{o}": train_hash(cfg, o, prep.ctx.seeds[0]) for o in OBJECTIVES}
    for o in cfg.pm_halves.objectives:
        out[f"pm_train_{o}"], out[f"pm_test_{o}"] = pm_hash(cfg, o, "train"), pm_hash(cfg, o, "test")
    return out


def sample_hash(cfg) -> str:
    b = cfg.bon
    return config_hash(
        cfg.data,
        cfg.policy,
        {"n_prompts": b.n_prompts, "n_samples": b.n_samples, "prompt_objectives": b.prompt_objectives},
        "bon/sample",
    )


def score_hash(prep) -> str:
    return config_hash(
        sample_hash(prep.ctx.cfg), judge_hashes(prep), prep.ctx.cfg.model.max_length, "bon/score"
    )


def stage_bon_sample(prep) -> None:
    from rmtension.optimise.policy import build_prompt_ids, decode_responses, open_policy, sample
    from rmtension.run.log import device, log

    ctx, cfg = prep.ctx, prep.ctx.cfg
    h = sample_hash(cfg)
    if stage_complete(ctx.run_dir, "bon/sample", h):
        return
    pc, b = cfg.policy, cfg.bon
    prompts = select_prompts(ctx.bundle.test_sets, b.prompt_objectives, b.n_prompts, pc.seed)
    if len(prompts) < min(2, b.n_prompts) or len(prompts) < b.n_prompts // 2:
        from rmtension.errors import ConfigError

        raise ConfigError(
            f"bon.n_prompts={b.n_prompts}: the test splits of {b.prompt_objectives} hold only "
            f"{len(prompts)} distinct conversations that end in a user turn"
        )
    policy = open_policy(pc, cfg.model.cache_dir, device=str(device()))
    ids = [build_prompt_ids(policy.tokenizer, p["context"], pc.max_prompt_tokens) for p in prompts]
    log(f"best-of-n: sampling {b.n_samples} responses for each of {len(prompts)} prompts ({pc.backbone})")
    t0 = time.perf_counter()
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


def score_matrix(frame: pd.DataFrame, column: str) -> np.ndarray:
    """[P, N] scores of one judge, prompts and samples in index order."""
    wide = frame.pivot(index="prompt", columns="sample", values=column).sort_index().sort_index(axis=1)
    return wide.to_numpy(dtype=np.float64)


def z_matrices(frame: pd.DataFrame, judges: Sequence[str]) -> dict[str, np.ndarray]:
    """judge -> [P, N] z-scored over all samples."""
    return {j: bon.zscore(score_matrix(frame, j))[0] for j in judges}


def bon_curves(
    z: dict[str, np.ndarray], objectives: Sequence[str], ns: Sequence[int]
) -> tuple[pd.DataFrame, dict]:
    """bon.csv rows for each objective and n, and the per-prompt train/test curves [len(ns), P] for the gap."""
    rows, per_prompt = [], {}
    kl = bon.kl_bon(np.asarray(ns, dtype=float))
    nan = np.full_like(z[f"pm_train_{objectives[0]}"], np.nan)
    for o in objectives:
        sel = z[f"pm_train_{o}"]
        judged = {
            "reward_train_pm": sel,
            "reward_test_pm": z[f"pm_test_{o}"],
            "reward_other_objective": z[f"rm_{OTHER[o]}"] if o in OTHER else nan,
            "reward_helpful_rm": z["rm_helpful"],
            "reward_harmless_rm": z["rm_harmless"],
        }
        curves = {k: bon.bon_curve(sel, v, ns) for k, v in judged.items()}  # [len(ns), P] each
        per_prompt[o] = curves
        for i, n in enumerate(ns):
            rows.append(
                {
                    "objective": o,
                    "n": int(n),
                    "kl_bound": float(kl[i]),
                    "sqrt_kl": float(np.sqrt(kl[i])),
                    **{k: float(c[i].mean()) for k, c in curves.items()},
                }
            )
    return pd.DataFrame(rows), per_prompt


def bon_fits(table: pd.DataFrame, per_prompt: dict, ns: Sequence[int], cfg) -> dict:
    """sqrt(KL) fits of every curve, the Gao et al. fit of the pm_test curve, and the train/test gap onset."""
    out = {
        "kl": "KL_bon = log n - (n - 1)/n, an upper bound on KL(best-of-n || policy) (Beirami et al. 2024)",
        "units": "z-scores of each judge over all samples",
        "objectives": {},
    }
    for o, curves in per_prompt.items():
        t = table[table["objective"] == o]
        fits = {k: bon.sqrt_kl_fit(t["kl_bound"], t[k]) for k in curves if np.isfinite(t[k]).all()}
        rng = np.random.default_rng(cfg.policy.seed)  # the same prompt resamples for every objective
        out["objectives"][o] = {
            "sqrt_kl": fits,
            "gao_test_pm": bon.gao_fit(t["kl_bound"], t["reward_test_pm"]),
            "gao_train_pm": bon.gao_fit(t["kl_bound"], t["reward_train_pm"]),
            "gap": bon.gap_onset(
                curves["reward_train_pm"], curves["reward_test_pm"], ns, cfg.bon.bootstrap, rng, cfg.bon.ci
            ),
            "n_max": int(ns[-1]),
            "kl_max": float(bon.kl_bon(ns[-1])),
        }
    return out


def frontier_table(z: dict[str, np.ndarray], weights: Sequence[float], n: int) -> pd.DataFrame:
    """The helpful/harmless frontier best-of-n reaches under the study RMs, plus where single judges land.

    `weighted` rows select by w * z(rm_helpful) + (1 - w) * z(rm_harmless); `judge` rows select by one
    judge alone (w = 1 and w = 0 are the helpful and harmless RMs). Both are read by the study RMs.
    """
    evals = {"helpful": z["rm_helpful"], "harmless": z["rm_harmless"]}
    rows = [
        {"kind": "weighted", "selector": f"w={r['w']:.2f}", **r}
        for r in bon.frontier(z["rm_helpful"], z["rm_harmless"], evals, weights, n)
    ]
    for judge in sorted(z):
        rows.append(
            {
                "kind": "judge",
                "selector": judge,
                "w": np.nan,
                "n": int(n),
                **{k: float(bon.bon_expectation(z[judge], v, n).mean()) for k, v in evals.items()},
            }
        )
    rows.append(
        {
            "kind": "judge",
            "selector": "none (n=1)",
            "w": np.nan,
            "n": 1,
            **{k: float(v.mean()) for k, v in evals.items()},
        }
    )
    return pd.DataFrame(rows)


def examples(
    frame: pd.DataFrame, z: dict[str, np.ndarray], objectives: Sequence[str], n_prompts: int, k: int
) -> list[dict]:
    """For a few prompts: k responses at n = 1 (the first k draws, i.i.d.) and, per pm_train, its k
    top-ranked of N (the first is the best-of-N pick), with z-scores under pm_train and pm_test."""
    n_p = int(frame["prompt"].max()) + 1
    picks = np.unique(np.linspace(0, n_p - 1, n_prompts).round().astype(int)) if n_prompts else []
    out = []
    for p in picks:
        rows = frame[frame["prompt"] == p].sort_values("sample")
        responses = rows["response"].tolist()

        def show(j: int) -> dict:
            return {
                "response": responses[j],
                **{f"z_{name}": round(float(z[name][p, j]), 3) for name in sorted(z)},
            }

        item = {
            "prompt_id": rows["prompt_id"].iloc[0],
            "objective": rows["objective"].iloc[0],
            "prompt": int(p),
            "n1": [show(j) for j in range(min(k, len(responses)))],
            "best_of_N": {},
        }
        for o in objectives:
            order = np.argsort(-z[f"pm_train_{o}"][p], kind="stable")[:k]
            item["best_of_N"][o] = [show(int(j)) for j in order]
        out.append(item)
    return out


def stage_bon_analysis(prep) -> None:
    ctx, cfg = prep.ctx, prep.ctx.cfg
    b = cfg.bon
    h = config_hash(score_hash(prep), b, cfg.pm_halves.objectives, "bon")
    if stage_complete(ctx.run_dir, "bon", h):
        return
    frame = pd.read_parquet(ctx.run_dir / "bon" / "samples.parquet")
    judges = [c for c in frame.columns if c.startswith(("pm_train_", "pm_test_", "rm_"))]
    z = z_matrices(frame, judges)
    ns = bon.n_grid(b.n_samples)
    table, per_prompt = bon_curves(z, cfg.pm_halves.objectives, ns)
    fits = bon_fits(table, per_prompt, ns, cfg)
    prompts = read_json(ctx.run_dir / "bon" / "prompts.json")["prompts"]
    ex = examples(frame, z, cfg.pm_halves.objectives, b.n_example_prompts, b.n_examples)
    for item in ex:
        item["context"] = prompts[item["prompt"]]["context"]
    write_csv(ctx.run_dir / "bon.csv", table)
    write_json(ctx.run_dir / "bon_fit.json", fits)
    write_csv(
        ctx.run_dir / "frontier.csv",
        frontier_table(z, np.linspace(0, 1, b.frontier_weights), b.frontier_n or b.n_samples),
    )
    write_json(ctx.run_dir / "bon" / "examples.json", {"n_samples": b.n_samples, "prompts": ex})
    write_manifest(ctx.run_dir, "bon", h, ["bon.csv", "bon_fit.json", "frontier.csv", "bon/examples.json"])


def stage_bon(prep) -> None:
    """Sample once, score with every judge, then curves, fits, frontier and examples."""
    stage_bon_sample(prep)
    stage_bon_score(prep)
    stage_bon_analysis(prep)
