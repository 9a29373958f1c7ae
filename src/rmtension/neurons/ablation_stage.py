"""The ablation stage: ablate each RM's neuron sets and their random controls on the test sets.

For every RM, scorer, p, set and mode, one ablated run plus `random_draws` runs of random sets
with the same count per layer, all on the same test pairs as one clean run (see
`rmtension.neurons.ablation.run_conditions`). Effects are reported against the clean model
(`delta_vs_base`) and against the mean of the random draws (`delta_vs_random`); `p_value` is the
exact McNemar test of the set against random draw 0 on per-pair correctness (a single draw keeps
the test exact and paired; the mean over draws is not a per-pair 0/1 outcome).

Mean ablation replaces each neuron by its mean activation over the set's objective's scoring
data (`mean_act/helpful` for helpful_top and helpful_only, `mean_act/harmless` for the harmless
sets, their average for `shared`); a set's random controls use the same values.

Outputs: ablation.csv, neurons/influence.json, neurons/cross_effect.json. ablation.csv has one row
per (rm, neuron_set, scorer, p, mode, test_set): neuron_set `none` is the unablated model,
`random:<set>` the mean of a set's random controls, `<a>@<b>` set a cut to the size of set b.
After the documented columns come `margin` (mean r_chosen - r_rejected), `delta_margin`, `ci_lo`/`ci_hi`
(bootstrap CI of delta_vs_base), `random_accuracy`/`random_min`/`random_max` (over the draws),
`n_pairs` and `control_seed`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rmtension.run import interrupt
from rmtension.config import config_hash
from rmtension.data.xstest import SETS as XSTEST_SETS
from rmtension.run.context import StudyContext
from rmtension.model.encode import EncodedPairs, encode_pairs
from rmtension.errors import ArtifactError, ConfigError
from rmtension.neurons.ablation import Condition, run_conditions
from rmtension.neurons.config import AblationConfig
from rmtension.neurons.influence import (
    compare_matched,
    compare_per_neuron,
    correctness,
    delta_ci,
    drop_per_neuron,
    mcnemar_exact,
    resample_index,
)
from rmtension.neurons.select import SET_OBJECTIVE, random_controls, size_matched, stable_seed
from rmtension.neurons.stage import (
    NEURONS,
    load_sets,
    p_key,
    read_scores,
    rm_fingerprint,
    sample_pairs,
    set_mask,
)
from rmtension.run.log import device, log
from rmtension.run.runio import sha256_file, stage_complete, write_csv, write_json, write_manifest

ABLATION = "ablation"
COLUMNS = [
    "rm",
    "neuron_set",
    "scorer",
    "p",
    "mode",
    "test_set",
    "accuracy",
    "delta_vs_base",
    "delta_vs_random",
    "n_neurons",
    "p_value",
    "margin",
    "delta_margin",
    "ci_lo",
    "ci_hi",
    "random_accuracy",
    "random_min",
    "random_max",
    "n_pairs",
    "control_seed",
]
ONLY = ("helpful_only", "harmless_only")


def matched_names(other: str) -> tuple[str, str]:
    """Names of the equally large (shared side, other side) sets compared for influence."""
    return f"shared@{other}", f"{other}@shared"


def _set_objective(name: str) -> str:
    """Objective whose mean activations replace a set's neurons in mean ablation."""
    return "both" if name.startswith("shared") else SET_OBJECTIVE.get(name.split("@")[0], "both")


def ablation_hash(ctx: StudyContext, cfg: AblationConfig) -> str:
    """Config, data, model, the neuron sets and the weights of every RM the sets come from."""
    doc = load_sets(ctx.run_dir)
    rms = [rm_fingerprint(ctx.run_dir, r["objective"], r["seed"]) for _, r in sorted(doc["rms"].items())]
    return config_hash(
        cfg, ctx.cfg.data, ctx.cfg.model, sha256_file(ctx.run_dir / NEURONS / "sets.json"), rms
    )


def run_ablation(ctx: StudyContext, cfg: AblationConfig, force: bool = False, tokenizer=None) -> Path:
    """Write ablation.csv, neurons/influence.json and neurons/cross_effect.json; returns ablation.csv.

    Skipped when its manifest matches. `tokenizer`: the study's; None loads the first RM's.
    """
    run_dir = ctx.run_dir
    if not (run_dir / NEURONS / "sets.json").exists():
        raise ArtifactError(f"{run_dir / NEURONS / 'sets.json'}: missing; run the neuron stage first")
    h = ablation_hash(ctx, cfg)
    if not force and stage_complete(run_dir, ABLATION, h):
        log("ablation: up to date")
        return run_dir / "ablation.csv"
    from rmtension.model.backbones import load_reward_model, load_tokenizer

    t0 = time.perf_counter()
    doc, scores = load_sets(run_dir), read_scores(run_dir)
    ps = cfg.ps or doc["ps"]
    missing = [p for p in ps if p_key(p) not in {p_key(q) for q in doc["ps"]}]
    if missing:
        raise ConfigError(f"ablation.ps: {missing} not among neurons.ps {doc['ps']}")
    rms = [rm for rm, r in doc["rms"].items() if cfg.rms is None or r["objective"] in cfg.rms]
    if not rms:
        raise ConfigError(
            f"ablation.rms: none of {cfg.rms} was scored by the neuron stage ({list(doc['rms'])})"
        )
    mcfg = ctx.cfg.model
    first = doc["rms"][rms[0]]
    tok = tokenizer or load_tokenizer(
        str(ctx.rm_dir(first["objective"], first["seed"])), mcfg.max_length, mcfg.trust_remote_code
    )
    enc, slices = _test_pairs(ctx, cfg, tok)
    rows, influence, cross = [], [], []
    for rm in rms:
        r = doc["rms"][rm]
        model = load_reward_model(str(ctx.rm_dir(r["objective"], r["seed"])), tok, mcfg.trust_remote_code).to(
            device()
        )
        conds, plan = build_conditions(doc, scores[rm][0], rm, cfg, ps)
        log(f"ablation: {rm}: {len(conds)} conditions on {len(enc)} test pairs")
        clean, margins = run_conditions(model, enc, tok.pad_token_id, conds, cfg.batch_size, cfg.bf16)
        rm_rows, rm_infl, rm_cross = summarise(rm, plan, clean, margins, slices, cfg)
        rows += rm_rows
        influence += rm_infl
        cross += rm_cross
        del model
        interrupt.check(f"after ablating {rm}")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    outputs = [
        write_csv(run_dir / "ablation.csv", frame),
        write_json(
            run_dir / NEURONS / "influence.json",
            {
                "ci": cfg.ci,
                "bootstrap": cfg.bootstrap,
                "unit": "accuracy drop (clean - ablated)",
                "records": influence,
            },
        ),
        write_json(run_dir / NEURONS / "cross_effect.json", cross),
    ]
    write_manifest(run_dir, ABLATION, h, outputs)
    log(f"ablation: done in {time.perf_counter() - t0:.0f}s")
    return outputs[0]


def _test_pairs(ctx: StudyContext, cfg: AblationConfig, tok) -> tuple[EncodedPairs, dict[str, slice]]:
    """All test sets in one encoding (so they share batches), and each set's slice of it."""
    parts, slices, start = [], {}, 0
    # XSTest, when the study has it, so the report can say whether an ablation moves an RM along the
    # avoidant-misuse axis; the claims read only their own test sets
    names = list(cfg.test_sets) + [
        n for n in XSTEST_SETS if n in ctx.bundle.test_sets and n not in cfg.test_sets
    ]
    for name in names:
        if name not in ctx.bundle.test_sets:
            raise ConfigError(
                f"ablation.test_sets: no test set {name!r} (have {sorted(ctx.bundle.test_sets)})"
            )
        pairs = sample_pairs(
            ctx.bundle.test_sets[name], cfg.max_test_pairs, stable_seed(cfg.seed, "test", name)
        )
        parts.append(encode_pairs(pairs, tok, ctx.cfg.model.max_length))
        slices[name] = slice(start, start + len(pairs))
        start += len(pairs)
    enc = EncodedPairs(
        [f"{n}/{i}" for n, e in zip(names, parts) for i in e.pair_ids],
        [s for e in parts for s in e.chosen],
        [s for e in parts for s in e.rejected],
        sum(e.n_truncated for e in parts),
        sum(e.n_indistinguishable for e in parts),
    )
    return enc, slices


def mean_values(tensors: dict[str, torch.Tensor], objective: str) -> torch.Tensor:
    """[L, N] replacement values for mean ablation (see the module docstring)."""
    if "mean_act/helpful" not in tensors:
        raise ConfigError("ablation.modes: 'mean' needs the mean_act scores; add mean_act to neurons.scorers")
    if objective == "both":
        return (tensors["mean_act/helpful"] + tensors["mean_act/harmless"]) / 2
    return tensors[f"mean_act/{objective}"]


def build_conditions(
    doc: dict, tensors: dict[str, torch.Tensor], rm: str, cfg: AblationConfig, ps: list[float]
) -> tuple[dict[str, Condition], list[dict]]:
    """Every condition to run for one RM, and a plan entry per (scorer, p, set, mode) naming its keys."""
    conds: dict[str, Condition] = {}
    plan: list[dict] = []
    claim_p = min(ps, key=lambda q: abs(q - cfg.claim_p))
    for scorer in cfg.scorers:
        for p in ps:
            names = [n for n in cfg.sets if p == claim_p or cfg.sweep_sets is None or n in cfg.sweep_sets]
            masks = {name: set_mask(doc, rm, scorer, p, name) for name in names}
            if cfg.influence_matched and "shared" in masks:
                for other in (o for o in ONLY if o in masks):
                    pair = size_matched(
                        masks["shared"], masks[other], stable_seed(cfg.seed, rm, scorer, p_key(p), other)
                    )
                    masks.update(zip(matched_names(other), pair))
            for name, mask in masks.items():
                seed = stable_seed(cfg.seed, rm, scorer, p_key(p), name)
                controls = random_controls(mask, cfg.random_draws, seed) if "@" not in name else []
                for mode in cfg.modes:
                    values = None if mode == "zero" else mean_values(tensors, _set_objective(name))
                    key = f"{scorer}|{p_key(p)}|{name}|{mode}"
                    conds[key] = Condition(mask, values)
                    for d, ctrl in enumerate(controls):
                        conds[f"{key}|random{d}"] = Condition(ctrl, values)
                    plan.append(
                        {
                            "scorer": scorer,
                            "p": p,
                            "set": name,
                            "mode": mode,
                            "key": key,
                            "n": int(mask.sum()),
                            "controls": [f"{key}|random{d}" for d in range(len(controls))],
                            "seed": seed,
                        }
                    )
    return conds, plan


def _row(
    rm: str,
    e: dict,
    name: str,
    test: str,
    clean: np.ndarray,
    m: np.ndarray,
    idx: np.ndarray,
    ci: float,
    controls: list[np.ndarray],
) -> dict:
    acc = float(correctness(m).mean())
    rand = [float(correctness(c).mean()) for c in controls]
    lo, hi = delta_ci(clean, m, idx, ci)
    return {
        "rm": rm,
        "neuron_set": name,
        "scorer": e["scorer"],
        "p": e["p"],
        "mode": e["mode"],
        "test_set": test,
        "accuracy": acc,
        "delta_vs_base": acc - float(correctness(clean).mean()),
        "delta_vs_random": acc - float(np.mean(rand)) if rand else float("nan"),
        "n_neurons": e["n"],
        "p_value": mcnemar_exact(m, controls[0]) if controls else float("nan"),
        "margin": float(m.mean()),
        "delta_margin": float(m.mean() - clean.mean()),
        "ci_lo": lo,
        "ci_hi": hi,
        "random_accuracy": float(np.mean(rand)) if rand else float("nan"),
        "random_min": min(rand) if rand else float("nan"),
        "random_max": max(rand) if rand else float("nan"),
        "n_pairs": len(m),
        "control_seed": e["seed"],
    }


def summarise(
    rm: str,
    plan: list[dict],
    clean: np.ndarray,
    margins: dict[str, np.ndarray],
    slices: dict[str, slice],
    cfg: AblationConfig,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows of ablation.csv, influence records and cross-effect matrices for one RM."""
    rng = np.random.default_rng(stable_seed(cfg.seed, "bootstrap", rm))
    idx = {t: resample_index(sl.stop - sl.start, cfg.bootstrap, rng) for t, sl in slices.items()}
    rows = []
    for t, sl in slices.items():
        c = clean[sl]
        rows.append(
            {
                "rm": rm,
                "neuron_set": "none",
                "scorer": "",
                "p": 0.0,
                "mode": "none",
                "test_set": t,
                "accuracy": float(correctness(c).mean()),
                "delta_vs_base": 0.0,
                "n_neurons": 0,
                "margin": float(c.mean()),
                "delta_margin": 0.0,
                "n_pairs": len(c),
            }
        )
        for e in plan:
            ctrl = [margins[k][sl] for k in e["controls"]]
            rows.append(_row(rm, e, e["set"], t, c, margins[e["key"]][sl], idx[t], cfg.ci, ctrl))
            if ctrl:
                rand_row = _row(rm, e, "random:" + e["set"], t, c, ctrl[0], idx[t], cfg.ci, [])
                rand_row.update(
                    accuracy=float(np.mean([correctness(x).mean() for x in ctrl])),
                    margin=float(np.mean([x.mean() for x in ctrl])),
                )
                rand_row["delta_vs_base"] = rand_row["accuracy"] - float(correctness(c).mean())
                rows.append(rand_row)
    by = {(e["scorer"], e["p"], e["mode"], e["set"]): e for e in plan}
    influence, cross = [], []
    for scorer, p, mode in sorted({(e["scorer"], e["p"], e["mode"]) for e in plan}):
        get = lambda name: by.get((scorer, p, mode, name))  # noqa: E731
        rec = {"rm": rm, "scorer": scorer, "p": p, "mode": mode, "sets": {}, "comparisons": []}
        matrix: dict = {}
        for t, sl in slices.items():
            c = clean[sl]
            for e in (x for x in plan if (x["scorer"], x["p"], x["mode"]) == (scorer, p, mode)):
                rec["sets"].setdefault(e["set"], {})[t] = drop_per_neuron(
                    c, margins[e["key"]][sl], e["n"], idx[t], cfg.ci
                )
                if e["controls"]:
                    r = _row(
                        rm,
                        e,
                        e["set"],
                        t,
                        c,
                        margins[e["key"]][sl],
                        idx[t],
                        cfg.ci,
                        [margins[k][sl] for k in e["controls"]],
                    )
                    matrix.setdefault(e["set"], {})[t] = {
                        k: r[k]
                        for k in (
                            "delta_vs_base",
                            "delta_vs_random",
                            "p_value",
                            "ci_lo",
                            "ci_hi",
                            "n_neurons",
                        )
                    }
            shared = get("shared")
            for other in ONLY:
                o = get(other)
                sm, om = (get(n) for n in matched_names(other))
                if shared is None or o is None or shared["n"] == 0 or o["n"] == 0:
                    continue
                cmp = {
                    "test_set": t,
                    "shared": "shared",
                    "other": other,
                    "own": SET_OBJECTIVE[other] == t,
                    "per_neuron": compare_per_neuron(
                        c,
                        margins[shared["key"]][sl],
                        shared["n"],
                        margins[o["key"]][sl],
                        o["n"],
                        idx[t],
                        cfg.ci,
                    ),
                }
                if sm is not None and om is not None and om["n"] > 0:
                    cmp["matched"] = {
                        "n_shared": sm["n"],
                        "n_other": om["n"],
                        **compare_matched(c, margins[sm["key"]][sl], margins[om["key"]][sl], idx[t], cfg.ci),
                    }
                rec["comparisons"].append(cmp)
        influence.append(rec)
        cross.append({"rm": rm, "scorer": scorer, "p": p, "mode": mode, "matrix": matrix})
    return rows, influence, cross
