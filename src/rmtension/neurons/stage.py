"""The neuron stage: score every MLP neuron of each RM, select the sets, measure their overlap.

Which scores define the sets: each analysed RM is scored on a sample of the helpful train split
and on a sample of the harmless train split, so `helpful_top`, `harmless_top` and `shared` all
live inside one model, the one the ablation stage then ablates. The headline is the mixed RM
(`NeuronsConfig.primary_rm`), whose one set of weights must serve both objectives. Because every
RM starts from the same backbone, neuron (layer, index) is the same unit in every RM, and
overlap.json also compares single-objective RMs: the helpful RM's helpful_top against the
harmless RM's harmless_top (`cross_model`).

Outputs (under the run directory):
    neurons/<rm>/scores.safetensors   `<scorer>/<objective>` -> [L, N] float32
    neurons/<rm>/pair_sums.safetensors  each scoring pair's own sums (`rmtension.neurons.overlap_stage`)
    neurons/base/pair_sums.safetensors  the same for the base backbone (the `jaccard_base` reference)
    neurons/sets.json                 sets per rm, scorer and p (indices per layer)
    neurons/overlap.json              {scorer: {p: {jaccard, jaccard_random, p_value, n_shared, ...,
                                      jaccard_permutation, jaccard_split_half, jaccard_bootstrap,
                                      sets_differ, jaccard_base, per_rm, cross_model}}}
    neurons/scorer_agreement.json     within-layer Spearman and top-p Jaccard (with its chance level) between scorers

In overlap.json `jaccard_random` is the uniform floor (random neuron sets of the same sizes);
`jaccard_permutation` (two pseudo-objectives drawn from the pooled pairs), `jaccard_split_half`
(two halves of one objective) and `jaccard_base` (each set against the base backbone's) say how
much overlap sampling noise and "active on any text" alone would give (`rmtension.neurons.nulls`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rmtension.model.arch import n_layers
from rmtension.run import dist, interrupt
from rmtension.config import config_hash
from rmtension.run.context import StudyContext
from rmtension.run.log import device, log
from rmtension.errors import ArtifactError, ConfigError
from rmtension.neurons.config import NeuronsConfig, p_key
from rmtension.judges.layers import first_layer
from rmtension.neurons.overlap import overlap_stats, scorer_agreement
from rmtension.neurons.overlap_stage import BASE, PAIR_SUMS, headline_nulls, rm_nulls, save_pair_sums
from rmtension.judges.select import (
    mask_to_json,
    neuron_sets,
    ranked_by_magnitude,
    stable_seed,
)
from rmtension.judges.neuron_sets import (
    NEURONS,
    load_sets,
    read_scores,
    rm_fingerprint,
    sample_pairs,
    set_mask,
)
from rmtension.run.runio import (
    inside,
    safe_name,
    save_tensors,
    stage_complete,
    write_json,
    write_manifest,
)
from rmtension.neurons import claims as neuron_claims
from rmtension.neurons.report import section_overlap
from rmtension.report.section import Section, in_part
from rmtension.run.prepared import Prepared, top_cache
from rmtension.stats.finding import Finding
from rmtension.model.encode import encode_pairs
from rmtension.model.backbones import load_reward_model, load_tokenizer
from rmtension.judges.neurons import BASE_SCORERS, score_neurons

DATA_OBJECTIVES = ("helpful", "harmless")


@dataclass(frozen=True)
class RMRef:
    name: str
    """`<objective>-seed<seed>`, the folder name under neurons/ (a head's `:` becomes `_`:
    `two_head_helpful-seed0`)."""
    objective: str
    seed: int
    path: Path


def find_rms(ctx: StudyContext, objectives: Sequence[str], max_seeds: int | None) -> list[RMRef]:
    """Trained RMs of these objectives and the first `max_seeds` seeds that exist in the run."""
    seeds = ctx.seeds[:max_seeds] if max_seeds else ctx.seeds
    found = [
        RMRef(f"{safe_name(o)}-seed{s}", o, s, ctx.rm_dir(o, s))
        for o in objectives
        for s in seeds
        if (ctx.rm_dir(o, s) / "config.json").exists()
    ]
    if not found:
        raise ArtifactError(
            f"{ctx.run_dir / 'rm'}: no trained reward model for objectives {list(objectives)}, "
            f"seeds {seeds}; run the training stage first"
        )
    return found


def neurons_hash(ctx: StudyContext, cfg: NeuronsConfig, trunk: bool = False) -> str:
    """Config, data, model, the analysed RMs' weights, and whether the forwards start from the trunk
    cache (`trunk`): in bf16 the two paths round differently, so one never stands for the other."""
    rms = find_rms(ctx, cfg.rms, cfg.max_seeds)
    fingerprints = [rm_fingerprint(ctx.run_dir, r.objective, r.seed) for r in rms]
    return config_hash(cfg, ctx.cfg.data, ctx.cfg.model, fingerprints, *(["trunk cache"] if trunk else []))


def run_neuron_scoring(
    ctx: StudyContext, cfg: NeuronsConfig, force: bool = False, tokenizer=None, trunk=None
) -> Path:
    """Score, select and measure overlap; skipped when its manifest matches. Returns neurons/.

    `tokenizer`: the study's (prepared) tokenizer; None loads the first RM's. `trunk`: gives the
    study's trunk cache (called only if the stage runs); the scoring forwards start from it when the
    analysed blocks lie above it.
    """
    out = ctx.run_dir / NEURONS
    h = neurons_hash(ctx, cfg, trunk is not None)
    if not force and stage_complete(ctx.run_dir, NEURONS, h):
        log("neurons: up to date")
        return out
    score_models(ctx, cfg, tokenizer, trunk() if trunk else None)
    select_sets(ctx.run_dir, cfg)
    compute_overlap(ctx.run_dir, cfg)
    write_manifest(ctx.run_dir, NEURONS, h, [out])
    return out


def score_models(ctx: StudyContext, cfg: NeuronsConfig, tokenizer=None, cache=None) -> list[Path]:
    """Write neurons/<rm>/scores.safetensors and pair_sums.safetensors for every analysed RM, and the
    base backbone's pair sums (one streaming pass per objective; the base forward is shared)."""

    t0 = time.perf_counter()
    mcfg = ctx.cfg.model
    rms = find_rms(ctx, cfg.rms, cfg.max_seeds)
    tok = tokenizer or load_tokenizer(str(rms[0].path), mcfg.max_length, mcfg.trust_remote_code)
    dev = device()
    models = {
        r.name: load_reward_model(str(r.path), tok, mcfg.trust_remote_code, head=ctx.rm_head(r.objective)).to(
            dev
        )
        for r in rms
    }
    score_base = bool(set(BASE_SCORERS) & set(cfg.scorers))  # the jaccard_base reference
    base = (
        load_reward_model(ctx.backbone_path, tok, mcfg.trust_remote_code).to(dev)
        if "rms_change" in cfg.scorers or score_base
        else None
    )
    names = [r.name for r in rms] + ([BASE] if score_base else [])
    tensors: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    per_pair: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    meta: dict[str, dict[str, str]] = {r.name: {"objective": r.objective, "seed": str(r.seed)} for r in rms}
    meta[BASE] = {"objective": BASE, "seed": "0"}
    layers = n_layers(next(iter(models.values())))
    first = first_layer(cfg, ctx.cfg.train.trainable, layers)
    if cache is not None and first < layers - cache.k:  # blocks below the cache are analysed too
        cache = None
    done = 0 if cache is None else layers - cache.k  # blocks the scores leave out already
    for obj in DATA_OBJECTIVES:
        pairs = sample_pairs(ctx.bundle.splits[obj]["train"], cfg.max_pairs, stable_seed(cfg.seed, obj))
        if not pairs:
            raise ArtifactError(f"no {obj} training pairs to score neurons on")
        enc = encode_pairs(pairs, tok, mcfg.max_length)
        log(f"neurons: scoring {len(rms)} RM(s) on {len(enc)} {obj} pairs ({', '.join(cfg.scorers)})")
        use = cache if cache is not None and all(pid in cache.states for pid in enc.pair_ids) else None
        results = score_neurons(
            models, enc, tok.pad_token_id, base, cfg.scorers, cfg.batch_size, cfg.bf16, True, score_base, use
        )
        skip = first - (0 if use is None else done)
        for name, res in results.items():
            tensors[name].update({f"{s}/{obj}": v[skip:].contiguous() for s, v in res.scores.items()})
            per_pair[name].update(res.pair_sums.layers_from(skip).to_tensors(obj))
            meta[name].update(
                {f"n_pairs/{obj}": str(res.n_pairs), f"n_tokens/{obj}": str(res.n_tokens), **res.meta}
            )
            meta[name]["first_layer"] = str(first)
        del results
        interrupt.check(f"after scoring neurons on {obj} pairs")
    paths = [
        save_tensors(
            inside(ctx.run_dir, NEURONS, r.name, "scores.safetensors"), tensors[r.name], meta[r.name]
        )
        for r in rms
    ]
    paths += [save_pair_sums(ctx.run_dir, n, per_pair[n], meta[n]) for n in names]
    for stale in (ctx.run_dir / NEURONS).glob("*/*.safetensors"):  # RMs no longer analysed
        if stale.name in ("scores.safetensors", PAIR_SUMS) and stale.parent.name not in names:
            dist.main_only(stale.unlink, missing_ok=True)
    log(f"neurons: scored in {time.perf_counter() - t0:.0f}s")
    return paths


def _scores_for(
    tensors: dict[str, torch.Tensor], scorer: str, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return tensors[f"{scorer}/helpful"], tensors[f"{scorer}/harmless"]
    except KeyError:
        raise ConfigError(
            f"neurons.scorers: {where} has no '{scorer}' scores; re-run `rmtension neurons score`"
        ) from None


def select_sets(run_dir: Path, cfg: NeuronsConfig) -> Path:
    """neurons/sets.json from the saved scores."""
    scores = read_scores(run_dir)
    gated = any(meta.get("gated") == "true" for _, meta in scores.values())
    magnitude = [s for s in cfg.scorers if ranked_by_magnitude(s, cfg.magnitude, gated)]
    doc: dict = {
        "per_layer": cfg.per_layer,
        "ps": cfg.ps,
        "scorers": list(cfg.scorers),
        "magnitude": magnitude,
        "gated": gated,
        "shape": None,
        "first_layer": 0,
        "rms": {},
        "sets": {},
    }
    for rm, (tensors, meta) in scores.items():
        if meta.get("objective") not in cfg.rms:
            continue
        doc["rms"][rm] = {
            "objective": meta.get("objective"),
            "seed": int(meta.get("seed", 0)),
            **{k: int(v) for k, v in meta.items() if k.startswith("n_")},
        }
        doc["sets"][rm] = {}
        for scorer in cfg.scorers:
            helpful, harmless = _scores_for(tensors, scorer, rm)
            doc["shape"] = list(helpful.shape)
            doc["first_layer"] = int(meta.get("first_layer", 0))
            doc["sets"][rm][scorer] = {
                p_key(p): {
                    name: mask_to_json(m)
                    for name, m in neuron_sets(
                        helpful, harmless, p, cfg.per_layer, scorer in magnitude
                    ).items()
                }
                for p in cfg.ps
            }
    return write_json(Path(run_dir) / NEURONS / "sets.json", doc)


def _mean_stats(entries: list[dict]) -> dict:
    """Average several RMs' overlap stats; the p-value is the largest (every seed must pass)."""
    out = {
        k: float(np.mean([e[k] for e in entries]))
        for k in ("jaccard", "jaccard_random", "n_shared", "n_helpful", "n_harmless", "expected_shared")
    }
    out["p_value"] = max(e["p_value"] for e in entries)
    out["per_layer"] = entries[0]["per_layer"]
    return out


def compute_overlap(run_dir: Path, cfg: NeuronsConfig) -> tuple[Path, Path]:
    """neurons/overlap.json and neurons/scorer_agreement.json from sets.json, the scores and the pair sums.

    Each entry holds the uniform floor (`overlap_stats`) and the nulls drawn from the scoring pairs
    (`rmtension.neurons.overlap_stage.rm_nulls`), per RM (`per_rm`) and for the primary RM's seeds.
    """
    doc = load_sets(run_dir)
    rms = doc["rms"]
    primary = (
        cfg.primary_rm
        if any(r["objective"] == cfg.primary_rm for r in rms.values())
        else next(iter(rms.values()))["objective"]
    )
    masks = {
        rm: {
            scorer: {
                p_key(p): (
                    set_mask(doc, rm, scorer, p, "helpful_top"),
                    set_mask(doc, rm, scorer, p, "harmless_top"),
                )
                for p in doc["ps"]
            }
            for scorer in doc["scorers"]
        }
        for rm in rms
    }
    nulls = {rm: rm_nulls(run_dir, doc, cfg, rm, masks[rm]) for rm in rms}
    overlap: dict = {}
    for scorer in doc["scorers"]:
        overlap[scorer] = {}
        for p in doc["ps"]:
            k = p_key(p)
            pair = {rm: masks[rm][scorer][k] for rm in rms}
            per_rm = {
                rm: {**overlap_stats(h, s, doc["per_layer"]), **nulls[rm][scorer][k]}
                for rm, (h, s) in pair.items()
            }
            head = [per_rm[rm] for rm, r in rms.items() if r["objective"] == primary]
            entry = {
                **_mean_stats(head),
                **headline_nulls(head),
                "rm": primary,
                "n_rms": len(head),
                "per_rm": per_rm,
            }
            cross = [
                overlap_stats(
                    pair[f"helpful-seed{r['seed']}"][0],
                    pair[f"harmless-seed{r['seed']}"][1],
                    doc["per_layer"],
                )
                for rm, r in rms.items()
                if r["objective"] == "helpful" and f"harmless-seed{r['seed']}" in pair
            ]
            if cross:
                entry["cross_model"] = {
                    **_mean_stats(cross),
                    "n_seeds": len(cross),
                    "what": "helpful RM's helpful_top vs harmless RM's harmless_top",
                }
            overlap[scorer][k] = entry
    a = write_json(Path(run_dir) / NEURONS / "overlap.json", overlap)
    b = write_json(Path(run_dir) / NEURONS / "scorer_agreement.json", _agreement(run_dir, doc, cfg))
    return a, b


def _agreement(run_dir: Path, doc: dict, cfg: NeuronsConfig) -> dict:
    out: dict = {"per_rm": {}}
    for rm, (tensors, _) in read_scores(run_dir).items():
        out["per_rm"][rm] = {}
        for obj in DATA_OBJECTIVES:
            scores = {s: tensors[f"{s}/{obj}"] for s in doc["scorers"] if f"{s}/{obj}" in tensors}
            out["per_rm"][rm][obj] = scorer_agreement(scores, doc["ps"], doc["per_layer"], doc["magnitude"])
    if {"mean_act", "attribution"} <= set(doc["scorers"]):
        out["mean_act_vs_attribution"] = {
            rm: {
                obj: {
                    "spearman": a["spearman"]["mean_act"]["attribution"],
                    "spearman_layers": a["spearman_layers"]["mean_act"]["attribution"],
                    "top_jaccard": {p: j["mean_act"]["attribution"] for p, j in a["top_jaccard"].items()},
                    "top_jaccard_chance": {
                        p: j["mean_act"]["attribution"] for p, j in a["top_jaccard_chance"].items()
                    },
                }
                for obj, a in by.items()
            }
            for rm, by in out["per_rm"].items()
        }
    return out


def run(prep: Prepared) -> Path:
    """neurons/: scores, sets and overlap of each analysed RM, starting from the study's trunk cache
    when the sets lie in the trained blocks above it and the stage computes in the cache's precision."""
    cfg = prep.ctx.cfg.neurons
    trunk = top_cache(prep, cfg.bf16)
    return run_neuron_scoring(prep.ctx, cfg, "neurons" in prep.force, prep.tokenizer, trunk)


def sections(run_dir: Path) -> list[Section]:
    return in_part("neurons", section_overlap(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return neuron_claims.findings(run_dir)
