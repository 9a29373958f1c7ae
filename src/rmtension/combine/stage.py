"""The combine stage: every way to make one judge of the two objectives, on the same test pairs.

    rm:helpful, rm:harmless, rm:mixed   the study's RMs, as reference points
    reward_interp@w                     w z(helpful RM) + (1 - w) z(harmless RM)
    two_head_dial@w                     the same dial over two_head's two heads
    gated, gated_mean                   two_head's heads mixed by the prompt gate w(x), and by its mean
    weight_interp@lambda                the RM with weights lambda theta_helpful + (1 - lambda) theta_harmless
    data_ratio@r                        a mixed RM of the matched size trained on a share r of helpful pairs

z(.) standardises a judge by the mean and SD of its rewards on the mixed RM's training pairs (both
replies), so a dial value means the same share for every method and every seed. Each method's dial
for the `combined_keeps_both` claim is chosen on validation pairs, never on the test pairs.

Writes `combine/frontier.csv` (`rmtension.combine.frontier.COLUMNS`), `combine/summary.json`
(hypervolumes, the gate's accuracy, the selected dials and their paired differences from the best
single RM) and `combine/judge.json` (the first seed's two-head standardisers and the gate, for the
best-of-n picks of `rmtension.judges.combined`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmtension.judges.dials import dial, interpolate_state, standardise, standardiser
from rmtension.combine.frontier import (
    TESTS,
    Point,
    Resamples,
    frontier_table,
    hypervolumes,
    select_dial,
    shortfalls,
)
from rmtension.data.ratios import ratio_views
from rmtension.judges.gate import prompt_embeddings, prompt_texts, train_gate
from rmtension.config import config_hash
from rmtension.model.backbones import load_reward_model
from rmtension.model.encode import reply_lengths
from rmtension.model.forward import PairForward
from rmtension.model.trunk import trunk_fingerprint
from rmtension.judges.pair_scores import read_scores
from rmtension.model.kinds import ratio_rm
from rmtension.run.prepared import Prepared, pair_heads, train_hash, trunk_cache
from rmtension.stats.bootstrap import correct
from rmtension.stats.length import length_strata
from rmtension.run import interrupt
from rmtension.run.log import device, log
from rmtension.run.runio import inside, stage_complete, write_csv, write_json, write_manifest
from rmtension.combine.report import combined_keeps_both, section_combine
from rmtension.report.section import Section, in_part
from rmtension.stats.finding import Finding

SINGLE = ("helpful", "harmless")


def stage_combine(prep: Prepared) -> None:
    """combine/frontier.csv and combine/summary.json, unless up to date."""
    ctx, cfg = prep.ctx, prep.ctx.cfg
    cc = cfg.combine
    if not cc.methods:  # `combine: {methods: []}` trains two_head only
        return
    missing = [t for t in TESTS if t not in prep.tests]
    if missing:
        raise ValueError(
            f"combine: needs the HH test sets {list(TESTS)}; this study has {sorted(prep.tests)}"
        )
    rms = ["helpful", "harmless", "mixed"] + (["two_head"] if cc.two_head else [])
    rms += [ratio_rm(r) for r in cc.trained_ratios()]
    h = config_hash(
        cc,
        {rm: [train_hash(cfg, rm, s) for s in cfg.train.seeds] for rm in rms},
        {t: prep.tests[t].pair_ids for t in TESTS},
        str(cfg.data.split_seed),
    )
    if stage_complete(ctx.run_dir, "combine", h):
        return
    log(f"combine: {', '.join(cc.methods)} over {len(cfg.train.seeds)} seed(s), {cc.grid} dial values")
    points, val_points, extra = combine_points(prep)
    interrupt.check("after scoring the combined judges")
    strata = {t: length_strata(*test_lengths(prep, t).T) for t in TESTS}
    res = Resamples({t: len(prep.tests[t]) for t in TESTS}, cc.bootstrap, cfg.data.split_seed, strata)
    table, reps = frontier_table(points, res)
    own = {t: val_points[(f"rm:{t}", np.nan)][t] for t in TESTS}
    val_single = {r: val_points[(r, np.nan)] for r in ("rm:helpful", "rm:harmless")}
    dialled = sorted({m for m, d in val_points if not np.isnan(d)})
    selected = {
        m: select_dial({d: val_points[(m2, d)] for m2, d in val_points if m2 == m}, own) for m in dialled
    }
    selected |= {m: np.nan for m in ("gated",) if m in cc.methods}
    out = ctx.run_dir / "combine"
    summary = {
        "dials": cc.dials(),
        "standardised_on": "the chosen and rejected replies of the mixed RM's training pairs",
        "hypervolume": {m: v for m, v in hypervolumes(table).items() if not m.startswith("rm:")},
        "validation_accuracy": {
            f"{m}@{d:g}" if not np.isnan(d) else m: acc for (m, d), acc in val_points.items()
        },
        "selected_dial": {m: (None if np.isnan(d) else d) for m, d in selected.items()},
        "keeps_both": shortfalls(selected, reps, table, val_acc=val_single, strata=strata),
        **extra,
    }
    judge = summary.pop("judge", None)
    paths = [write_csv(out / "frontier.csv", table), write_json(out / "summary.json", summary)]
    if judge is not None:
        paths.append(write_json(out / "judge.json", judge))
    write_manifest(ctx.run_dir, "combine", h, paths)


def combine_points(prep: Prepared) -> tuple[list[Point], dict[tuple[str, float], dict[str, float]], dict]:
    """Every judge's per-seed test correctness (`Point`s), its seed-mean validation accuracies keyed
    (method, dial), and the gate's numbers."""
    cfg = prep.ctx.cfg
    cc = cfg.combine
    seeds = cfg.train.seeds
    test_c: dict[tuple[str, float], dict[str, list[np.ndarray]]] = {}
    val_c: dict[tuple[str, float], dict[str, list[np.ndarray]]] = {}

    def add(store, method, d, t, r_c, r_r):
        store.setdefault((method, float(d)), {}).setdefault(t, []).append(correct(r_c, r_r))

    gate = fit_gate(prep) if "gated" in cc.methods else None
    stats: dict[tuple[str, int], tuple[float, float]] = {}
    for seed in seeds:
        test = {v: {t: eval_scores(prep, v, seed, t) for t in TESTS} for v in views(cc)}
        for rm in ("helpful", "harmless", "mixed"):
            for t in TESTS:
                add(test_c, f"rm:{rm}", np.nan, t, *test[rm][t])
        val = {}
        for rm in SINGLE + (("two_head",) if cc.two_head else ()):  # one load per RM: reference and val
            val[rm], ref = rm_scores(prep, rm, seed)
            stats |= ref
        for rm in SINGLE:
            for t in TESTS:
                add(val_c, f"rm:{rm}", np.nan, t, *val[rm][t])
        pairs = {"reward_interp": ("helpful", "harmless")}
        if cc.two_head:
            heads = val.pop("two_head")
            for i, head in enumerate(SINGLE):
                val[f"two_head:{head}"] = {t: (c[:, i], r[:, i]) for t, (c, r) in heads.items()}
            pairs["two_head_dial"] = ("two_head:helpful", "two_head:harmless")
        for method, (a, b) in pairs.items():
            wanted, gated_here = method in cc.methods, method == "two_head_dial" and gate is not None
            if not (wanted or gated_here):
                continue
            za, zb = stats[(a, seed)], stats[(b, seed)]
            z = lambda sc, t, k: (standardise(sc[a][t][k], za), standardise(sc[b][t][k], zb))  # noqa: E731
            for t in TESTS:
                zt, zv = [z(test, t, k) for k in (0, 1)], [z(val, t, k) for k in (0, 1)]
                for w in cc.dials() if wanted else []:
                    add(test_c, method, w, t, *(dial(*zt[k], w) for k in (0, 1)))
                    add(val_c, method, w, t, *(dial(*zv[k], w) for k in (0, 1)))
                if gated_here:
                    add(test_c, "gated", np.nan, t, *(dial(*zt[k], gate["test_weights"][t]) for k in (0, 1)))
                    add(test_c, "gated_mean", np.nan, t, *(dial(*zt[k], gate["mean"]) for k in (0, 1)))
        if "data_ratio" in cc.methods:
            for r, rm in ratio_views(cc.ratios).items():
                scored = val[rm] if rm in val else score_sets(prep, rm, seed, prep.val)
                for t in TESTS:
                    add(test_c, "data_ratio", r, t, *eval_scores(prep, rm, seed, t))
                    add(val_c, "data_ratio", r, t, *scored[t])
        if "weight_interp" in cc.methods:
            for lam, scored in weight_path(prep, seed, cc.dials()):
                for t in TESTS:
                    add(test_c, "weight_interp", lam, t, *scored["test"][t])
                    add(val_c, "weight_interp", lam, t, *scored["val"][t])
        interrupt.check(f"after combining seed {seed}")
    points = [Point(m, d, {t: np.stack(v[t]) for t in TESTS}) for (m, d), v in test_c.items()]
    val_points = {k: {t: float(np.mean(v[t])) for t in TESTS} for k, v in val_c.items()}
    extra = (
        {} if gate is None else {"gate": {k: v for k, v in gate.items() if k not in ("test_weights", "gate")}}
    )
    # what best-of-n needs to pick with the two-head dial and the gate (`rmtension.judges.combined`)
    if cc.two_head:
        seed = seeds[0]
        extra["judge"] = {
            "seed": seed,
            "standardisers": {h: list(stats[(f"two_head:{h}", seed)]) for h in SINGLE},
            **({"gate": gate_doc(gate["gate"])} if gate is not None else {}),
        }
    if "data_ratio" in cc.methods:
        sizes = {o: len(prep.train[o]) for o in ("helpful", "harmless", "mixed")}
        extra["data_ratio"] = {
            "rms": {f"{r:g}": rm for r, rm in ratio_views(cc.ratios).items()},
            "training_pairs": sizes,
            "ends_matched": sizes["helpful"] == sizes["harmless"] == sizes["mixed"],
        }
    return points, val_points, extra


def test_lengths(prep: Prepared, test: str) -> np.ndarray:
    """[N, 2] whole reply lengths (chosen, rejected) in the tokenizer's tokens, as the tension table counts them."""
    whole, _ = reply_lengths(prep.ctx.bundle.test_sets[test], prep.tests[test], prep.tokenizer)
    return np.asarray(whole)


def views(cc) -> list[str]:
    return ["helpful", "harmless", "mixed"] + (
        ["two_head:helpful", "two_head:harmless"] if cc.two_head else []
    )


def eval_scores(prep: Prepared, view: str, seed: int, test: str) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) [N] rewards of `view` on a test set, from the eval stage's file, in the
    order of `prep.tests[test]`."""
    frame = read_scores(inside(prep.ctx.run_dir, "eval", view, f"seed{seed}", f"{test}.csv"))
    if list(frame["pair_id"]) != list(prep.tests[test].pair_ids):
        raise ValueError(f"eval/{view}/seed{seed}/{test}.csv: its pairs are not this study's {test} test set")
    return frame["r_chosen"].to_numpy(np.float64), frame["r_rejected"].to_numpy(np.float64)


def _load(prep: Prepared, rm: str, seed: int):
    model = load_reward_model(str(prep.ctx.rm_dir(rm, seed)), prep.tokenizer).to(device())
    cache = trunk_cache(prep)
    if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
        cache = None
    return model, cache


def _score(prep: Prepared, model, cache, sets: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(chosen, rejected) rewards of `model` on each set of `sets` (name -> `EncodedPairs`)."""
    cfg = prep.ctx.cfg
    with PairForward(model, prep.tokenizer.pad_token_id, cfg.train.bf16, cache) as fwd:
        return {t: fwd.score(enc, cfg.combine.batch_size) for t, enc in sets.items()}


def score_sets(prep: Prepared, rm: str, seed: int, sets: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(chosen, rejected) rewards of trained RM `rm` (all heads: [N, K]) on the HH sets of `sets`."""
    model, cache = _load(prep, rm, seed)
    return _score(prep, model, cache, {t: sets[t] for t in TESTS})


def rm_scores(prep: Prepared, rm: str, seed: int) -> tuple[dict, dict[tuple[str, int], tuple[float, float]]]:
    """Trained RM `rm` loaded once: its (chosen, rejected) rewards on the HH validation sets (all heads:
    [N, K]), and the `standardiser` of it (of each head, `two_head:<head>`, of a multi-head one) on the
    chosen and rejected replies of the mixed RM's training pairs, keyed (view, seed)."""
    model, cache = _load(prep, rm, seed)
    scored = _score(prep, model, cache, {"ref": prep.train["mixed"], **{t: prep.val[t] for t in TESTS}})
    c, r = scored.pop("ref")
    if c.ndim == 1:
        return scored, {(rm, seed): standardiser(np.concatenate([c, r]))}
    return scored, {
        (f"{rm}:{h}", seed): standardiser(np.concatenate([c[:, i], r[:, i]])) for i, h in enumerate(SINGLE)
    }


def weight_path(prep: Prepared, seed: int, lambdas: list[float]):
    """Yields (lambda, {"test": ..., "val": ...}) scores of theta(lambda) = lambda theta_helpful +
    (1 - lambda) theta_harmless, for the helpful and harmless RMs of `seed`."""
    helpful, cache = _load(prep, "helpful", seed)
    harmless, _ = _load(prep, "harmless", seed)
    a = {k: v.detach().clone() for k, v in helpful.state_dict().items()}
    b = {k: v.detach().clone() for k, v in harmless.state_dict().items()}
    del harmless
    tests = {t: prep.tests[t] for t in TESTS}
    vals = {t: prep.val[t] for t in TESTS}
    for lam in lambdas:
        helpful.load_state_dict(interpolate_state(a, b, lam))
        if cache is not None and trunk_fingerprint(helpful, cache.k) != cache.fingerprint:
            raise RuntimeError("weight_interp: the interpolated trunk differs from the cached one")
        yield lam, {"test": _score(prep, helpful, cache, tests), "val": _score(prep, helpful, cache, vals)}


def gate_doc(gate) -> dict:
    """A fitted `Gate` as JSON (`rmtension.judges.combined.read_gate` reads it back)."""
    return {
        "weight": gate.weight.tolist(),
        "bias": gate.bias,
        "mean": gate.mean.tolist(),
        "sd": gate.sd.tolist(),
    }


def fit_gate(prep: Prepared) -> dict:
    """The prompt gate, trained on the mixed RM's training prompts (label: the pair's objective),
    with its accuracy and weights on the test prompts. e(x) comes from the untrained backbone, which
    every RM of the study shares, so one gate serves every seed."""
    ctx, cfg = prep.ctx, prep.ctx.cfg
    cc = cfg.combine
    bundle = ctx.bundle
    model = load_reward_model(ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code).to(device())
    embed = lambda pairs: prompt_embeddings(
        model, prep.tokenizer, prompt_texts(pairs), cfg.model.max_length, cc.batch_size
    )  # noqa: E731
    train_pairs = bundle.splits["mixed"]["train"]
    helpful = (pair_heads(prep, "train") == SINGLE.index("helpful")).astype(np.float64)
    features = embed(train_pairs)
    gate = train_gate(features, helpful, cc.gate_steps, cc.gate_lr, cc.gate_l2, cfg.data.split_seed)
    weights = {t: gate(embed(bundle.test_sets[t])) for t in TESTS}
    acc = {t: float(((weights[t] > 0.5) == (t == "helpful")).mean()) for t in TESTS}
    n = {t: len(weights[t]) for t in TESTS}
    on_train = gate(features)
    return {
        "gate": gate,
        "train_accuracy": float(((on_train > 0.5) == helpful.astype(bool)).mean()),
        "test_weights": weights,
        "mean": float(on_train.mean()),
        "accuracy": {**acc, "all": sum(acc[t] * n[t] for t in TESTS) / sum(n.values())},
        "mean_weight": {t: float(weights[t].mean()) for t in TESTS},
        "features": "mean-pooled last hidden state of the untrained backbone, prompt only",
        "n_train_prompts": len(train_pairs),
    }


run = stage_combine
"""The stage contract (`rmtension.study.STAGES`): `run(prep)`, `sections(run_dir)`, `findings(run_dir)`."""


def sections(run_dir: Path) -> list[Section]:
    return in_part("combine", section_combine(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return [combined_keeps_both(run_dir)]
