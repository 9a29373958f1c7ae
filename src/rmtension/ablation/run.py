"""The ablation stage: ablate each RM's neuron sets and their random controls on the test sets.

For every RM, scorer, p, set and mode, one ablated run plus, per control kind (`layer`: the same
count per layer; `magnitude`: the same count per layer and mean-|activation| decile), a number of
random draws (`rmtension.ablation.plan.draws_for`), all on the same test pairs as one clean
run (`rmtension.judges.ablate.run_conditions`). The XSTest sets, when the study has them, get
the sets without their controls. Statistics: `rmtension.ablation.stats`.

Outputs: ablation.csv, neurons/influence.json, neurons/cross_effect.json, neurons/dissociation.json.

ablation.csv has one row per (rm, neuron_set, scorer, p, mode, test_set, control): neuron_set `none`
is the unablated model, `random:<set>` the mean over a set's draws of one control kind, `<a>@<b>`
set a cut to the size of set b. Columns, after the documented first eleven (`COLUMNS`):

- accuracy, delta_vs_base (accuracy change against the unablated model), ci_lo / ci_hi (its
  paired bootstrap CI), random_accuracy / random_min / random_max (over the draws), acc_vs_random;
- delta_vs_random: mean over pairs of the set's margin minus the per-pair mean margin of the
  draws (margin units), and p_value: the paired t-test of exactly those per-pair differences;
- control (`layer`, `magnitude`, or empty where a set has no controls), n_draws, n_pairs;
- margin (mean r_chosen - r_rejected), delta_margin (mean change against the unablated model)
  with margin_ci_lo / margin_ci_hi (paired bootstrap CI);
- margin_sd: the SD of the unablated margin on that test set, the unit of the standardised
  columns std_delta_margin (with std_ci_lo / std_ci_hi) and std_vs_random (delta_vs_random / margin_sd,
  with std_vs_random_ci_lo / std_vs_random_ci_hi), which the claims read;
- control_seed;
- the paper's unit, the relative accuracy drop: rel_drop_vs_base = (acc_clean - acc_set) / acc_clean
  and rel_drop_vs_random = (acc_controls - acc_set) / acc_clean (per-pair mean correctness over the
  draws), each with its paired bootstrap CI (`_ci_lo`, `_ci_hi`), and the latter's bootstrap SE
  (`rel_drop_vs_random_se`, what the seed-level interval of the claims adds up;
  `rmtension.ablation.stats.relative_drop`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from rmtension.config import config_hash
from rmtension.data.xstest import SETS as XSTEST_SETS
from rmtension.errors import ArtifactError, ConfigError
from rmtension.model.encode import EncodedPairs, encode_pairs
from rmtension.judges.ablate import resolve_bf16, run_conditions
from rmtension.ablation.plan import build_conditions
from rmtension.ablation.summary import Margins, summarise
from rmtension.neurons.config import AblationConfig
from rmtension.judges.select import stable_seed
from rmtension.judges.neuron_sets import NEURONS, load_sets, read_scores, rm_fingerprint, sample_pairs
from rmtension.neurons.config import p_key
from rmtension.run import interrupt
from rmtension.run.context import StudyContext
from rmtension.run.log import device, log
from rmtension.run.progress import stage_bar
from rmtension.run.runio import sha256_file, stage_complete, write_csv, write_json, write_manifest
from rmtension.model.backbones import load_reward_model, load_tokenizer

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
    "control",
    "n_draws",
    "n_pairs",
    "margin",
    "delta_margin",
    "margin_ci_lo",
    "margin_ci_hi",
    "margin_sd",
    "std_delta_margin",
    "std_ci_lo",
    "std_ci_hi",
    "std_vs_random",
    "std_vs_random_ci_lo",
    "std_vs_random_ci_hi",
    "ci_lo",
    "ci_hi",
    "acc_vs_random",
    "random_accuracy",
    "random_min",
    "random_max",
    "control_seed",
    "rel_drop_vs_base",
    "rel_drop_vs_base_ci_lo",
    "rel_drop_vs_base_ci_hi",
    "rel_drop_vs_random",
    "rel_drop_vs_random_ci_lo",
    "rel_drop_vs_random_ci_hi",
    "rel_drop_vs_random_se",
]


def ablation_hash(ctx: StudyContext, cfg: AblationConfig, trunk: bool = False) -> str:
    """Config, data, model, the neuron sets, the weights of every RM the sets come from, and whether
    the clean pass starts from the trunk cache (`trunk`; in bf16 the two paths round differently)."""
    doc = load_sets(ctx.run_dir)
    rms = [rm_fingerprint(ctx.run_dir, r["objective"], r["seed"]) for _, r in sorted(doc["rms"].items())]
    sets = sha256_file(ctx.run_dir / NEURONS / "sets.json")
    return config_hash(cfg, ctx.cfg.data, ctx.cfg.model, sets, rms, *(["trunk cache"] if trunk else []))


def run_ablation(
    ctx: StudyContext, cfg: AblationConfig, force: bool = False, tokenizer=None, trunk=None
) -> Path:
    """Write ablation.csv and neurons/{influence,cross_effect,dissociation}.json; returns ablation.csv.

    Skipped when its manifest matches. `tokenizer`: the study's; None loads the first RM's. `trunk`:
    gives the study's trunk cache (called only if the stage runs), which
    `rmtension.judges.ablate.run_conditions` starts from when the sets lie above it.
    """
    run_dir = ctx.run_dir
    if not (run_dir / NEURONS / "sets.json").exists():
        raise ArtifactError(f"{run_dir / NEURONS / 'sets.json'}: missing; run the neuron stage first")
    h = ablation_hash(ctx, cfg, trunk is not None)
    if not force and stage_complete(run_dir, ABLATION, h):
        log("ablation: up to date")
        return run_dir / "ablation.csv"

    t0 = time.perf_counter()
    cache = trunk() if trunk else None
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
    rcfgs = {rm: rm_config(cfg, doc["rms"][rm]["objective"]) for rm in rms}
    by_tests = {tuple(c.test_sets): c for c in rcfgs.values()}
    encs_of = {k: _test_pairs(ctx, c, tok) for k, c in by_tests.items()}
    bf16 = resolve_bf16(cfg.bf16, device())
    out: dict[str, list] = {"rows": [], "influence": [], "cross": [], "dissociation": []}
    layers = int(doc.get("first_layer", 0)) + doc["shape"][0]  # the analysed blocks run to the top
    plans = {rm: build_conditions(doc, scores[rm][0], rm, rcfgs[rm], ps, layers) for rm in rms}
    total = sum(
        len(part_conditions(*plans[rm], part)) for rm in rms for part in encs_of[tuple(rcfgs[rm].test_sets)]
    )
    with stage_bar("ablation", total, "condition") as bar:
        for rm in rms:
            r = doc["rms"][rm]
            model = load_reward_model(
                str(ctx.rm_dir(r["objective"], r["seed"])),
                tok,
                mcfg.trust_remote_code,
                head=ctx.rm_head(r["objective"]),
            ).to(device())
            conds, plan = plans[rm]
            per_test: Margins = {}
            for part, (enc, slices) in encs_of[tuple(rcfgs[rm].test_sets)].items():
                run = part_conditions(conds, plan, part)
                t1 = time.perf_counter()
                clean, margins = run_conditions(
                    model, enc, tok.pad_token_id, run, cfg.batch_size, bf16, stack=cfg.stack, cache=cache
                )
                bar.update(len(run))
                log(
                    f"ablation: {rm}: {len(run)} conditions on {len(enc)} {part} test pairs "
                    f"in {time.perf_counter() - t1:.0f}s"
                )
                for t, sl in slices.items():
                    per_test[t] = (clean[sl], {k: m[sl] for k, m in margins.items()})
            for key, items in summarise(rm, plan, per_test, rcfgs[rm]).items():
                out[key] += items
            del model
            interrupt.check(f"after ablating {rm}")
    frame = pd.DataFrame(out["rows"], columns=COLUMNS)
    head = {"ci": cfg.ci, "bootstrap": cfg.bootstrap}
    outputs = [
        write_csv(run_dir / "ablation.csv", frame),
        write_json(
            run_dir / NEURONS / "influence.json",
            {
                **head,
                "unit": "accuracy drop (clean - ablated); matched_std: drop in SDs of the unablated margin",
                "records": out["influence"],
            },
        ),
        write_json(run_dir / NEURONS / "cross_effect.json", out["cross"]),
        write_json(
            run_dir / NEURONS / "dissociation.json",
            {
                **head,
                "unit": "SDs of the unablated margin",
                "definition": "((drop(helpful_only, helpful) - drop(helpful_only, harmless)) + "
                "(drop(harmless_only, harmless) - drop(harmless_only, helpful))) / 2",
                "records": out["dissociation"],
            },
        ),
    ]
    write_manifest(run_dir, ABLATION, h, outputs)
    log(f"ablation: done in {time.perf_counter() - t0:.0f}s")
    return outputs[0]


def rm_config(cfg: AblationConfig, objective: str) -> AblationConfig:
    """The ablation settings of one RM: under `own_objective` a single-objective RM gets its own top set
    on its own test set only (`<objective>_top` on `<objective>`); any other RM gets `cfg` itself."""
    own = f"{objective}_top"
    if not cfg.own_objective or own not in cfg.sets or objective not in cfg.test_sets:
        return cfg
    return cfg.model_copy(update={"sets": [own], "test_sets": [objective], "influence_matched": False})


def part_conditions(conds: dict, plan: list[dict], part: str) -> dict:
    """The conditions run on one part of the test pairs: all of them on the HH test sets ("main"), the
    sets themselves without their random controls on the XSTest sets."""
    own = {e["key"] for e in plan}
    return conds if part == "main" else {k: c for k, c in conds.items() if k in own}


def _test_pairs(
    ctx: StudyContext, cfg: AblationConfig, tok
) -> dict[str, tuple[EncodedPairs, dict[str, slice]]]:
    """{"main": the configured test sets, "xstest": the XSTest sets (when the study has them)},
    each in one encoding (so they share batches) with each set's slice of it."""
    groups = {
        "main": list(cfg.test_sets),
        # so the report can say whether an ablation moves an RM along the avoidant-misuse axis
        "xstest": [n for n in XSTEST_SETS if n in ctx.bundle.test_sets and n not in cfg.test_sets],
    }
    out = {}
    for part, names in groups.items():
        if not names:
            continue
        encs, slices, start = [], {}, 0
        for name in names:
            if name not in ctx.bundle.test_sets:
                raise ConfigError(
                    f"ablation.test_sets: no test set {name!r} (have {sorted(ctx.bundle.test_sets)})"
                )
            pairs = sample_pairs(
                ctx.bundle.test_sets[name], cfg.max_test_pairs, stable_seed(cfg.seed, "test", name)
            )
            encs.append(encode_pairs(pairs, tok, ctx.cfg.model.max_length))
            slices[name] = slice(start, start + len(pairs))
            start += len(pairs)
        ids = [i for e in encs for i in e.pair_ids]
        if len(set(ids)) < len(ids):  # a pair in two test sets: ids made unique (no trunk cache then)
            ids = [f"{n}/{i}" for n, e in zip(names, encs) for i in e.pair_ids]
        out[part] = (
            EncodedPairs(
                ids,
                [s for e in encs for s in e.chosen],
                [s for e in encs for s in e.rejected],
                sum(e.n_truncated for e in encs),
                sum(e.n_indistinguishable for e in encs),
            ),
            slices,
        )
    return out
