"""The steering loop, every arm and seed: round 0 offline, then R online rounds, measured after each.

    <out>/loop/round0/<reviewer key>/seed<k>/   D_0 labels and PM_0; shared by arms whose reviewers
                                                label alike (the key hashes β, ε, noise seed, shortcuts)
    <out>/loop/round0/<key>/seed<k>/measure.json  π_0 measured with PM_0
    <out>/loop/arms/<arm>/seed<k>/round<r>/     one round (`rmtension.loop.rounds.run_round`) and its
                                                measure.json
    <out>/loop/arms/<arm>/seed<k>/weight_path.json  θ = λ·θ_R + (1 − λ)·θ_0 measured per λ

Round 0: the arm's reviewer relabels `d0_pairs` HH training pairs (gold scores both replies), and
PM_0 takes `pm.steps0` Bradley-Terry steps on them. Round r = 1..R: π_{r−1} samples two replies for
each of the round's prompts (the r-th block of `prompts_per_round` prompts, so rounds never share a
prompt; every arm and seed sees the same blocks), the reviewer labels them, PM_r is **warm-started**
from PM_{r−1} and takes `pm.steps` steps on D_r together with D_0..D_{r−1}, and π_r is π_{r−1}
after best-of-n distillation against PM_r (KL to π_0 is measured, not penalised: the distillation
steps and the best-of-n size are what hold it). The `offline` arm takes 0 PM steps after round 0
(PM_0 throughout); every arm takes the same policy steps on the same prompts with the same seeds.

Every phase writes its file atomically and is skipped when its file is there, so a loop killed
anywhere reruns to the same files, bit for bit (tests/test_loop_study.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from rmtension.data.types import Turn, render_transcript
from rmtension.errors import ConfigError
from rmtension.loop.bench_reviewer import BenchReviewer
from rmtension.loop.config import LoopConfig
from rmtension.loop.kept import KeptPolicy, kept_gold, same_weights
from rmtension.loop.measure import GoldFn, Probes, measure_policy
from rmtension.loop.reviewer import SimulatedReviewer, labels_file
from rmtension.model.precision import use_bf16
from rmtension.loop.rounds import (
    EnsemblePM,
    RoundSpec,
    pm_rewards,
    preference_pairs,
    run_round,
    train_pm,
    write_json,
    Pairs,
)
from rmtension.policy.sampling import Policy, Sampled, load_policy
from rmtension.rl.rloo import snapshot


@dataclass
class LoopParts:
    """What the loop runs on: models, judges and prompt sets (real ones from `rmtension.loop.parts`,
    tiny ones in tests)."""

    new_policy: Callable[[], Policy]
    """π_0, freshly loaded (fp32) each call."""
    new_pm: Callable[[], torch.nn.Module]
    """A fresh PM (before PM_0's training), the same every call."""
    pm_tokenizer: object
    gold: GoldFn
    d0: list[tuple[tuple[Turn, ...], str, str]]
    """HH training pairs of the proxy share as (context, reply a, reply b): relabelled into D_0."""
    prompts: list[tuple[Turn, ...]]
    """The rounds' prompts: round r takes block r − 1 of `prompts_per_round`."""
    probes: Probes


def round_spec(cfg: LoopConfig, arm: str, seed: int, r: int) -> RoundSpec:
    offline = cfg.arms[arm].pm == "offline" and r > 0
    return RoundSpec(
        round=r,
        seed=seed,
        max_new_tokens=cfg.round.max_new_tokens,
        max_prompt_tokens=cfg.round.max_prompt_tokens,
        n_best_of=cfg.round.n_best_of,
        pm_steps=cfg.pm.steps0 if r == 0 else (0 if offline else cfg.pm.steps),
        pm_lr=cfg.pm.lr,
        pm_batch=cfg.pm.batch,
        distill_steps=cfg.round.distill_steps,
        distill_lr=cfg.round.distill_lr,
        pm_max_length=cfg.pm.max_length,
        bf16=use_bf16(cfg.precision == "bf16"),  # what runs here: a resume elsewhere must match it
        policy_trainable=cfg.round.trainable,
        draw_rows=cfg.round.draw_rows,
        fresh_after=False,  # KL and gold are measured on the held-out prompts (measure.json)
    )


def scorer(pm: torch.nn.Module, tokenizer, max_length: int, bf16: bool = False):
    """A PM as a score function: (contexts [N], replies [N]) -> [N] rewards, in batches of 32 (`bf16`:
    under bf16 autocast where native)."""

    @torch.no_grad()
    def score(contexts: Sequence[tuple[Turn, ...]], replies: Sequence[str]) -> np.ndarray:
        texts = [render_transcript(tuple(c), r) for c, r in zip(contexts, replies)]
        out = [
            pm_rewards(pm, tokenizer, texts[i : i + 32], max_length, bf16) for i in range(0, len(texts), 32)
        ]
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    return score


def d0_pairs(parts: LoopParts) -> Pairs:
    return Pairs(list(range(len(parts.d0))), [a for _, a, _ in parts.d0], [b for _, _, b in parts.d0])


def run_round0(folder: Path, cfg: LoopConfig, arm: str, seed: int, parts: LoopParts, reviewer) -> None:
    """D_0 (labels.json) and PM_0 (pm/model.safetensors) in `folder`, skipping what is there."""
    folder.mkdir(parents=True, exist_ok=True)
    contexts = [c for c, _, _ in parts.d0]
    pairs = d0_pairs(parts)
    if not (folder / "labels.json").exists():
        labels = reviewer.label(
            pairs.a, pairs.b, parts.gold(contexts, pairs.a), parts.gold(contexts, pairs.b), stream=0
        )
        write_json(
            folder / "labels.json",
            labels_file(labels),
        )
    labels = json.loads((folder / "labels.json").read_text())
    pm_file = folder / "pm" / "model.safetensors"
    if not pm_file.exists():
        pm = new_pm(parts, cfg, arm)
        both = preference_pairs(contexts, pairs, labels["a_preferred"])
        losses = train_pm(
            pm, parts.pm_tokenizer, [c for c, _ in both], [r for _, r in both], round_spec(cfg, arm, seed, 0)
        )
        pm_file.parent.mkdir(exist_ok=True)
        write_json(folder / "pm" / "losses.json", losses)
        save_model(pm, str(pm_file) + ".tmp")
        Path(str(pm_file) + ".tmp").replace(pm_file)


def new_pm(parts: LoopParts, cfg: LoopConfig, arm: str) -> torch.nn.Module:
    """The arm's fresh PM: one, or an `EnsemblePM` of `ensemble` (each then trains on its own batches)."""
    a = cfg.arms[arm]
    if a.pm != "ensemble":
        return parts.new_pm()
    return EnsemblePM([parts.new_pm() for _ in range(a.ensemble)], a.aggregate, a.uwo_lambda)


def load_pm(parts: LoopParts, cfg: LoopConfig, arm: str, file: Path) -> torch.nn.Module:
    pm = new_pm(parts, cfg, arm)
    load_model(pm, str(file))
    pm.eval()
    return pm


def history_of(folder: Path, contexts: Sequence[tuple[Turn, ...]], pairs: Pairs) -> list[tuple[str, str]]:
    """The (chosen, rejected) transcripts of a finished round's (or round 0's) labelled pairs."""
    labels = json.loads((folder / "labels.json").read_text())
    return preference_pairs(contexts, pairs, labels["a_preferred"])


def measure_into(folder: Path, policy, reference, pm_r, pm_0, parts, cfg, seed, full: bool = True) -> dict:
    """folder/measure.json: `measure_policy` of `policy`, computed once; without `full`, the capability
    set and XSTest are left out (they are measured at rounds 0 and R only)."""
    path = folder / "measure.json"
    if not path.exists():
        tok = parts.pm_tokenizer
        probes = parts.probes if full else _held_out_only(parts.probes, cfg.heldout_between)
        same = pm_r is pm_0 or same_weights(pm_r, dict(pm_0.named_parameters()))  # offline: PM_r is PM_0
        out = measure_policy(
            policy,
            reference,
            scorer(pm_r, tok, cfg.pm.max_length, cfg.precision == "bf16"),
            None if same else scorer(pm_0, tok, cfg.pm.max_length, cfg.precision == "bf16"),
            parts.gold,
            probes,
            seed,
            cfg.precision == "bf16",
        )
        write_json(path, out)
    return json.loads(path.read_text())


def run_arm_seed(
    out: Path,
    cfg: LoopConfig,
    arm: str,
    seed: int,
    parts: LoopParts,
    reviewer: SimulatedReviewer,
    after_phase: Callable[[str], None] | None = None,
    kept: dict[tuple, Sampled] | None = None,
) -> None:
    """Round 0 (or its shared copy), rounds 1..R with their measures, then the weight path. `kept`:
    π_0's draws, shared with the other arms (`rmtension.loop.kept`)."""
    zero = out / "round0" / cfg.round0_key(arm) / f"seed{seed}"
    run_round0(zero, cfg, arm, seed, parts, cfg.reviewer_of(arm))
    pm_0 = load_pm(parts, cfg, arm, zero / "pm" / "model.safetensors")
    policy = parts.new_policy()
    reference = snapshot(policy.model, [n for n, _ in policy.model.named_parameters()])
    if kept is not None:
        policy = KeptPolicy.of(policy, reference, kept)
    measure_into(zero, policy, reference, pm_0, pm_0, parts, cfg, seed)
    history = history_of(zero, [c for c, _, _ in parts.d0], d0_pairs(parts))
    pm_file, n = zero / "pm" / "model.safetensors", cfg.prompts_per_round
    for r in range(1, cfg.rounds + 1):
        folder = out / "arms" / arm / f"seed{seed}" / f"round{r}"
        contexts = parts.prompts[(r - 1) * n : r * n]
        pm = load_pm(parts, cfg, arm, pm_file)
        result = run_round(
            folder,
            round_spec(cfg, arm, seed, r),
            policy,
            reference,
            pm,
            parts.pm_tokenizer,
            contexts,
            parts.gold,
            reviewer,
            after_phase,
            history,
        )
        history = history + preference_pairs(contexts, result.pairs, result.a_preferred)
        pm_file = folder / "pm" / "model.safetensors"
        measure_into(folder, policy, reference, pm, pm_0, parts, cfg, seed, full=r == cfg.rounds)
        if after_phase:
            after_phase("measure")
    if cfg.weight_path_arms is None or arm in cfg.weight_path_arms:
        ends = {0.0: zero / "measure.json", 1.0: folder / "measure.json"}
        weight_path(out / "arms" / arm / f"seed{seed}", cfg, policy, reference, parts, seed, ends)


def interpolate(
    model: torch.nn.Module, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], lam: float
):
    """Set every parameter of `model` to λ·end + (1 − λ)·start (exactly `start` where end equals it)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            same = torch.equal(start[name], end[name])
            p.copy_(start[name] if same else lam * end[name] + (1.0 - lam) * start[name])


def weight_path(
    folder: Path,
    cfg: LoopConfig,
    policy: Policy,
    reference,
    parts: LoopParts,
    seed: int,
    ends: dict[float, Path] | None = None,
) -> None:
    """folder/weight_path.json: gold reward and capability along θ = λ·θ_R + (1 − λ)·θ_0.

    `ends` maps λ = 0 and 1 to the full measure.json of π_0 and π_R with the same seed: θ is then
    exactly θ_0 or θ_R (λ·a + (1 − λ)·b with λ ∈ {0, 1} is a or b bit for bit), so the same draws
    give the same numbers and are read instead of sampled again."""
    path = folder / "weight_path.json"
    if path.exists() or not cfg.weight_path:
        return
    final = snapshot(policy.model, [n for n, _ in policy.model.named_parameters()])
    rows = []
    no_pm = lambda contexts, replies: np.zeros(len(replies))  # noqa: E731
    for lam in cfg.weight_path:
        known = (ends or {}).get(float(lam))
        if known is not None and known.exists():
            m = json.loads(known.read_text())
        else:
            interpolate(policy.model, reference, final, lam)
            probes = _no_xstest(parts.probes)
            m = measure_policy(
                policy, reference, no_pm, no_pm, parts.gold, probes, seed, cfg.precision == "bf16"
            )
        rows.append({"lambda": lam, "gold": m["gold"], "capability": m["capability"], "kl": m["kl"]})
    interpolate(policy.model, reference, final, 1.0)
    write_json(path, rows)


def _held_out_only(probes: Probes, n: int | None = None) -> Probes:
    """The first `n` (None: all) held-out prompts, without the capability set and XSTest."""
    return replace(probes, heldout=probes.heldout[:n], capability=[], xstest_respond=[], xstest_refuse=[])


def _no_xstest(probes: Probes) -> Probes:
    return replace(probes, xstest_respond=[], xstest_refuse=[])


def check_prompts(cfg: LoopConfig, available: int) -> None:
    """ConfigError when the data gives fewer distinct round prompts than the rounds need."""
    need = cfg.rounds * cfg.prompts_per_round
    if available < need:
        raise ConfigError(
            f"the loop needs {need} round prompts ({cfg.rounds} rounds x {cfg.prompts_per_round}), "
            f"the data gives {available}"
        )


def round_reviewer(cfg: LoopConfig, arm: str):
    """Who labels rounds 1..R of `arm`: its simulated reviewer, or people on the bench (`reviewer.kind:
    bench`; round 0's D_0 is then still relabelled by the simulated reviewer of the same β and ε)."""
    if cfg.reviewer.kind == "bench":
        return BenchReviewer(cfg.reviewer.database, cfg.reviewer.k, task_prefix=cfg.name)
    return cfg.reviewer_of(arm)


def run_loop(
    out: str | Path,
    cfg: LoopConfig,
    parts: LoopParts,
    reviewers: dict[str, SimulatedReviewer] | None = None,
    after_phase: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
    seeds: Sequence[int] | None = None,
) -> Path:
    """Every seed and arm into out/loop/, then rounds.csv, loop.json and findings.json there.
    `progress(line)` hears which seed and arm start; `after_phase(name)` each phase of a round.
    `seeds`: only these of the config's seeds, and no results (one worker of `rmtension loop run
    --workers`; the files of a seed do not depend on which process ran it)."""
    from rmtension.loop.results import write_results

    out = Path(out) / "loop"
    out.mkdir(parents=True, exist_ok=True)
    check_prompts(cfg, len(parts.prompts))
    claim_run_dir(out, cfg)
    reviewers = reviewers or {arm: round_reviewer(cfg, arm) for arm in cfg.arms}
    parts = replace(parts, gold=kept_gold(parts.gold, {}))  # every arm's repeated gold calls, once
    kept: dict[tuple, Sampled] = {}  # π_0's draws (`rmtension.loop.kept`), for every arm and seed
    for seed in cfg.seeds if seeds is None else seeds:
        for arm in cfg.arms:
            if progress:
                progress(f"seed {seed}, arm {arm}")
            run_arm_seed(out, cfg, arm, seed, parts, reviewers[arm], after_phase, kept)
    if seeds is None:
        write_results(out, cfg)
    return out


def claim_run_dir(loop: Path, cfg: LoopConfig) -> None:
    """Write loop/config.json, or check a resumed run's: a run directory holds one config's files, so
    resuming with another config (which would mix its rounds with the old ones) is a ConfigError that
    names the keys that differ. `claims` may change: they are read from the files afterwards. A
    folder that holds nothing but its config.json (a run that stopped before it trained anything)
    takes the new config."""
    file, now = loop / "config.json", cfg.model_dump(mode="json")
    own = ("config.json", "precision.json")
    made = [p.name for p in loop.iterdir() if p.name not in own] if loop.is_dir() else []
    if file.exists() and made:
        try:
            stored = json.loads(file.read_text())
            before = LoopConfig.model_validate(stored).model_dump(mode="json")
        except (OSError, ValueError):  # unreadable, not JSON, or not a loop config
            raise ConfigError(f"{file}: not a loop config this version reads; use a new --out") from None
        if "draw_rows" not in stored.get("round", {}):  # drawn in 32-row batches, not recorded then
            raise ConfigError(
                f"{loop.parent}: was run by a version that drew in decode batches of 32 rows without "
                "recording it (round.draw_rows); its draws cannot be continued exactly: use a new --out"
            )
        free = ("claims", "workers")  # read afterwards / checked in precision.json
        keys = sorted(k for k in set(before) | set(now) if k not in free and before.get(k) != now.get(k))
        if keys:
            raise ConfigError(
                f"{loop.parent}: was run with another loop config ({', '.join(keys)} differ); "
                "resume it with that config or use a new --out"
            )
    loop.mkdir(parents=True, exist_ok=True)
    write_json(file, now)
    check_precision(
        loop, use_bf16(cfg.precision == "bf16"), fresh=not made, workers=min(cfg.workers, len(cfg.seeds))
    )


def check_precision(loop: Path, bf16: bool, fresh: bool = False, workers: int = 1) -> None:
    """loop/precision.json records how this run computes: in bf16 or not (asked for and native here),
    and in how many worker processes (their thread count may change float sums in the last bits). A
    resume where either differs is a ConfigError, not a run of mixed numerics; a file written before
    workers were recorded checks bf16 only. A `fresh` folder (nothing trained yet) takes this run's."""
    file = loop / "precision.json"
    if file.exists() and not fresh:
        before = json.loads(file.read_text())
        if before.get("bf16") != bf16:
            ran, here = ("bf16", "fp32") if before.get("bf16") else ("fp32", "bf16")
            raise ConfigError(
                f"{loop.parent}: its loop ran in {ran}, and this machine would continue it in {here} "
                "(`precision` and native bf16 decide); resume it on a machine of the same kind or use a new --out"
            )
        if before.get("workers", workers) != workers:
            raise ConfigError(
                f"{loop.parent}: its loop ran with {before['workers']} worker(s), this would continue it with "
                f"{workers}; resume it with --workers {before['workers']} or use a new --out"
            )
        if "workers" not in before:
            return  # an older run's file stays as it was
    write_json(file, {"bf16": bf16, "workers": workers})


def load_trained_policy(folder: Path, template: Policy) -> Policy:
    """A round's saved π_r (its HF folder) with the sampling settings of `template`."""
    return Policy(
        load_policy(str(folder / "policy"), precision="fp32"),
        template.tokenizer,
        template.stop_ids,
        template.pad_id,
        str(folder),
        draw_bf16=template.draw_bf16,
    )
