"""From one RM's per-pair margins to the rows of ablation.csv, influence.json, cross_effect.json and
dissociation.json (`rmtension.ablation.run` writes them; the statistics are in
`rmtension.ablation.stats`)."""

from __future__ import annotations

import numpy as np

from rmtension.ablation.plan import ONLY, matched_names
from rmtension.ablation.stats import (
    double_dissociation,
    double_dissociation_relative,
    margin_change,
    margin_sd,
    mean_ci,
    paired_t,
    relative_drop,
    versus_controls,
)
from rmtension.neurons.config import AblationConfig
from rmtension.ablation.influence import (
    compare_matched,
    compare_per_neuron,
    correctness,
    delta_ci,
    drop_per_neuron,
    resample_index,
)
from rmtension.judges.select import SET_OBJECTIVE, stable_seed
from rmtension.stats.bootstrap import interval

Margins = dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]
"""test set -> (clean margins [P], condition key -> ablated margins [P])."""


def _base(rm: str, e: dict, name: str, test: str, n_pairs: int, sd: float) -> dict:
    return {
        "rm": rm,
        "neuron_set": name,
        "scorer": e["scorer"],
        "p": e["p"],
        "mode": e["mode"],
        "test_set": test,
        "n_neurons": e["n"],
        "n_pairs": n_pairs,
        "margin_sd": sd,
        "control_seed": e["seed"],
    }


def set_row(
    rm: str,
    e: dict,
    test: str,
    clean: np.ndarray,
    m: np.ndarray,
    idx: np.ndarray,
    cfg: AblationConfig,
    kind: str = "",
    ctrl: list[np.ndarray] | None = None,
) -> dict:
    """The set's row against one control kind (`kind` "" and no `ctrl`: a set without controls)."""
    sd = margin_sd(clean)
    acc, clean_acc = float(correctness(m).mean()), float(correctness(clean).mean())
    lo, hi = delta_ci(clean, m, idx, cfg.ci)
    row = {
        **_base(rm, e, e["set"], test, len(m), sd),
        "control": kind,
        "n_draws": len(ctrl or []),
        "accuracy": acc,
        "delta_vs_base": acc - clean_acc,
        "ci_lo": lo,
        "ci_hi": hi,
        "margin": float(m.mean()),
        **margin_change(clean, m, idx, cfg.ci, sd),
    }
    base = relative_drop(clean, m, None, idx, cfg.ci)
    row.update(
        rel_drop_vs_base=base["rel_drop"],
        rel_drop_vs_base_ci_lo=base["ci"][0],
        rel_drop_vs_base_ci_hi=base["ci"][1],
    )
    if ctrl:
        rand = [float(correctness(x).mean()) for x in ctrl]
        row.update(versus_controls(m, ctrl, idx, cfg.ci, sd))
        rel = relative_drop(clean, m, ctrl, idx, cfg.ci)
        row.update(
            rel_drop_vs_random=rel["rel_drop"],
            rel_drop_vs_random_ci_lo=rel["ci"][0],
            rel_drop_vs_random_ci_hi=rel["ci"][1],
            rel_drop_vs_random_se=rel["se"],
        )
        row.update(
            random_accuracy=float(np.mean(rand)),
            random_min=min(rand),
            random_max=max(rand),
            acc_vs_random=acc - float(np.mean(rand)),
        )
    return row


def random_row(
    rm: str,
    e: dict,
    test: str,
    clean: np.ndarray,
    ctrl: list[np.ndarray],
    idx: np.ndarray,
    cfg: AblationConfig,
    kind: str,
) -> dict:
    """`random:<set>`: the mean over one control kind's draws (accuracy, margins, paired CIs)."""
    sd = margin_sd(clean)
    cm = np.mean(ctrl, axis=0)  # [P] per-pair mean margin over the draws
    per_pair_acc = np.mean([correctness(x) for x in ctrl], axis=0)
    rand = [float(correctness(x).mean()) for x in ctrl]
    lo, hi = mean_ci(per_pair_acc - correctness(clean), idx, cfg.ci)
    return {
        **_base(rm, e, "random:" + e["set"], test, len(cm), sd),
        "control": kind,
        "n_draws": len(ctrl),
        "accuracy": float(per_pair_acc.mean()),
        "delta_vs_base": float(per_pair_acc.mean() - correctness(clean).mean()),
        "ci_lo": lo,
        "ci_hi": hi,
        "margin": float(cm.mean()),
        **margin_change(clean, cm, idx, cfg.ci, sd),
        "random_accuracy": float(np.mean(rand)),
        "random_min": min(rand),
        "random_max": max(rand),
    }


def none_row(rm: str, test: str, clean: np.ndarray) -> dict:
    return {
        "rm": rm,
        "neuron_set": "none",
        "scorer": "",
        "p": 0.0,
        "mode": "none",
        "test_set": test,
        "control": "",
        "n_draws": 0,
        "accuracy": float(correctness(clean).mean()),
        "delta_vs_base": 0.0,
        "n_neurons": 0,
        "margin": float(clean.mean()),
        "delta_margin": 0.0,
        "std_delta_margin": 0.0,
        "margin_sd": margin_sd(clean),
        "n_pairs": len(clean),
    }


def _controls(e: dict, margins: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The control kinds of a plan entry that ran on this test set, with their draws' margins."""
    return {
        kind: [margins[k] for k in keys]
        for kind, keys in e["controls"].items()
        if keys and all(k in margins for k in keys)
    }


def summarise(rm: str, plan: list[dict], per_test: Margins, cfg: AblationConfig) -> dict[str, list]:
    """{"rows", "influence", "cross", "dissociation"} of one RM."""
    rng = np.random.default_rng(stable_seed(cfg.seed, "bootstrap", rm))
    idx = {t: resample_index(len(c), cfg.bootstrap, rng) for t, (c, _) in per_test.items()}
    rows = []
    for t, (c, ms) in per_test.items():
        rows.append(none_row(rm, t, c))
        for e in plan:
            kinds = _controls(e, ms)
            if not kinds:
                rows.append(set_row(rm, e, t, c, ms[e["key"]], idx[t], cfg))
            for kind, ctrl in kinds.items():
                rows.append(set_row(rm, e, t, c, ms[e["key"]], idx[t], cfg, kind, ctrl))
                rows.append(random_row(rm, e, t, c, ctrl, idx[t], cfg, kind))
    out: dict[str, list] = {"rows": rows, "influence": [], "cross": [], "dissociation": []}
    for scorer, p, mode in sorted({(e["scorer"], e["p"], e["mode"]) for e in plan}):
        entries = {e["set"]: e for e in plan if (e["scorer"], e["p"], e["mode"]) == (scorer, p, mode)}
        head = {"rm": rm, "scorer": scorer, "p": p, "mode": mode}
        out["influence"].append({**head, **_influence(entries, per_test, idx, cfg)})
        out["cross"].append({**head, "matrix": _cross(entries, per_test, idx, cfg)})
        if all(s in entries for s in ONLY) and {"helpful", "harmless"} <= set(per_test):
            tests = ("helpful", "harmless")
            args = (
                {s: {t: per_test[t][1][entries[s]["key"]] for t in tests} for s in ONLY},
                {t: per_test[t][0] for t in tests},
                {t: idx[t] for t in tests},
                cfg.ci,
            )
            dd = double_dissociation(*args)
            dd["relative"] = double_dissociation_relative(*args)
            out["dissociation"].append({**head, "n_neurons": {s: entries[s]["n"] for s in ONLY}, **dd})
    return out


def _cross(entries: dict[str, dict], per_test: Margins, idx: dict, cfg: AblationConfig) -> dict:
    """set -> test set -> the set's changes against the clean model and against each control kind."""
    matrix: dict = {}
    for name, e in entries.items():
        if "@" in name:
            continue
        for t, (c, ms) in per_test.items():
            r = set_row("", e, t, c, ms[e["key"]], idx[t], cfg)
            cell = {k: r[k] for k in ("delta_vs_base", "ci_lo", "ci_hi", "n_neurons", "std_delta_margin")}
            cell["std_ci"] = [r["std_ci_lo"], r["std_ci_hi"]]
            cell["controls"] = {}
            for kind, ctrl in _controls(e, ms).items():
                v = versus_controls(ms[e["key"]], ctrl, idx[t], cfg.ci, r["margin_sd"])
                cell["controls"][kind] = {
                    "n_draws": len(ctrl),
                    "delta_vs_random": v["delta_vs_random"],
                    "std_vs_random": v["std_vs_random"],
                    "std_ci": [v["std_vs_random_ci_lo"], v["std_vs_random_ci_hi"]],
                    "p_value": v["p_value"],
                }
            matrix.setdefault(name, {})[t] = cell
    return matrix


def _influence(entries: dict[str, dict], per_test: Margins, idx: dict, cfg: AblationConfig) -> dict:
    """Per-neuron drops of every set, and shared against each objective-only set (accuracy and margins)."""
    rec: dict = {"sets": {}, "comparisons": []}
    for t, (c, ms) in per_test.items():
        for name, e in entries.items():
            rec["sets"].setdefault(name, {})[t] = drop_per_neuron(c, ms[e["key"]], e["n"], idx[t], cfg.ci)
        shared = entries.get("shared")
        for other in ONLY:
            o = entries.get(other)
            if shared is None or o is None or shared["n"] == 0 or o["n"] == 0:
                continue
            sm, om = (entries.get(n) for n in matched_names(other))
            cmp = {
                "test_set": t,
                "shared": "shared",
                "other": other,
                "own": SET_OBJECTIVE[other] == t,
                "per_neuron": compare_per_neuron(
                    c, ms[shared["key"]], shared["n"], ms[o["key"]], o["n"], idx[t], cfg.ci
                ),
            }
            if sm is not None and om is not None and om["n"] > 0:
                a, b = ms[sm["key"]], ms[om["key"]]
                sd = margin_sd(c)
                diff = (b - a) / sd  # standardised drop of the shared side minus that of the other side
                cmp["matched"] = {
                    "n_shared": sm["n"],
                    "n_other": om["n"],
                    **compare_matched(c, a, b, idx[t], cfg.ci),
                }
                # the paper's unit: (acc(other side) - acc(shared side)) / acc(clean), ratio bootstrap
                cmp["matched_rel"] = relative_drop(c, a, [b], idx[t], cfg.ci)
                cmp["matched_std"] = {
                    "diff": float(diff.mean()),
                    "ci": interval(diff[idx[t]].mean(1), cfg.ci),
                    "p_value": paired_t(diff),
                    "drop_shared": float(((c - a) / sd).mean()),
                    "drop_other": float(((c - b) / sd).mean()),
                    "n_shared": sm["n"],
                    "n_other": om["n"],
                }
            rec["comparisons"].append(cmp)
    return rec
