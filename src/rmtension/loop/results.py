"""The loop's results from its round folders: `rounds.csv`, `loop.json` and `findings.json`.

CIs are over prompts and seeds together: each bootstrap draw resamples the seeds and, independently,
the prompts (the same prompt indices for every seed, since every seed sees the same held-out prompts),
and averages what is drawn (`nested_bootstrap`). Claims pair their arms by seed and prompt.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.loop.config import LoopConfig
from rmtension.loop.reviewer import shortcut_feature
from rmtension.loop.rounds import write_json
from rmtension.stats.finding import Finding
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_SUPPORTED, NOT_TESTABLE, equivalence_verdict

LOOP_PAPERS = "Bai et al. (2022); Gao et al. (2022)"
CLAIM_TEXT = {
    "online_beats_offline": "iterated online PMs lead to a policy with higher gold reward than an offline PM",
    "offline_judge_fades_at_high_end": "an offline PM agrees less with gold than the online PM_R on the policy's top-quartile pairs",
    "shortcut_steers_policy": "a reviewer's shortcut moves the policy's behaviour in its direction",
    "alignment_tax": "the loop costs the policy capability it never trains on (alignment tax)",
}
MEASURES = {"length": "words", "refusal": "refuses", "confidence": "hedges"}
"""Shortcut kind -> the per-reply behaviour measure (measure.json key) its drift is read on."""


def nested_bootstrap(values: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, list[float], float]:
    """[S, P] values (NaN = missing) -> (mean, 95% CI, bootstrap SD): each draw resamples seeds and prompts
    with replacement and takes the NaN-mean of the drawn cells."""
    v = np.atleast_2d(np.asarray(values, np.float64))
    s, p = v.shape
    rng = np.random.default_rng(seed)
    seed_idx, prompt_idx = rng.integers(0, s, (n_boot, s)), rng.integers(0, p, (n_boot, p))
    drawn = v[seed_idx[:, :, None], prompt_idx[:, None, :]]  # [B, S, P]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw of only NaN cells: its mean is NaN
        stats = np.nanmean(drawn.reshape(n_boot, -1), axis=1)
    stats = stats[np.isfinite(stats)]
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    if not len(stats):
        return mean, [float("nan"), float("nan")], float("nan")
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return mean, [float(lo), float(hi)], float(stats.std(ddof=1)) if len(stats) > 1 else 0.0


def round_folders(out: Path, cfg: LoopConfig, arm: str, seed: int) -> list[Path]:
    """The folders of π_0 (round 0, shared) and π_1..π_R of `arm` and `seed`."""
    zero = out / "round0" / cfg.round0_key(arm) / f"seed{seed}"
    return [zero] + [out / "arms" / arm / f"seed{seed}" / f"round{r}" for r in range(1, cfg.rounds + 1)]


def read_measure(folder: Path) -> dict:
    return json.loads((folder / "measure.json").read_text())


def per_prompt(m: dict, key: str) -> np.ndarray:
    """A per-reply list (2 per prompt) or per-prompt list of measure.json as [P] per-prompt values."""
    v = np.asarray(m[key], np.float64)
    return v.reshape(-1, 2).mean(-1) if len(v) == 2 * len(m["gold"]) else v


def top_only(m: dict, key: str) -> np.ndarray:
    v = np.asarray(m[key], np.float64)
    return np.where(np.asarray(m["top_quartile"], bool), v, np.nan)


def row_of(arm: str, seed: int, r: int, folder: Path, m: dict) -> dict:
    flips = json.loads((folder / "labels.json").read_text())["flip_rate"]
    b = m["behaviour"]
    return {
        "arm": arm,
        "seed": seed,
        "round": r,
        "kl": float(np.mean(m["kl"])),
        "gold": float(np.mean(m["gold"])),
        "proxy": float(np.mean(m["proxy"])),
        "gap": float(np.mean(m["proxy"]) - np.mean(m["gold"])),
        "agree_pm0": float(np.nanmean(m["agree_pm0"])),
        "agree_pmr": float(np.nanmean(m["agree_pmr"])),
        "agree_pm0_top": float(np.nanmean(top_only(m, "agree_pm0"))),
        "agree_pmr_top": float(np.nanmean(top_only(m, "agree_pmr"))),
        "mean_words": b["mean_words"],
        "refusal_rate": b["refusal_rate"],
        "hedge_rate": b["hedge_rate"],
        "distinct_1": b["distinct_1"],
        "distinct_2": b["distinct_2"],
        "xstest_comply": float(np.mean(m["xstest_comply"])) if m["xstest_comply"] else float("nan"),
        "xstest_refuse": float(np.mean(m["xstest_refuse"])) if m["xstest_refuse"] else float("nan"),
        "capability": float(np.mean(m["capability"])) if m["capability"] else float("nan"),
        "flip_rate": flips,
    }


CI_KEYS = {
    "kl": lambda m: np.asarray(m["kl"], np.float64),
    "gold": lambda m: np.asarray(m["gold"], np.float64),
    "proxy": lambda m: np.asarray(m["proxy"], np.float64),
    "gap": lambda m: np.asarray(m["proxy"], np.float64) - np.asarray(m["gold"], np.float64),
    "agree_pm0": lambda m: np.asarray(m["agree_pm0"], np.float64),
    "agree_pmr": lambda m: np.asarray(m["agree_pmr"], np.float64),
    "agree_pm0_top": lambda m: top_only(m, "agree_pm0"),
    "agree_pmr_top": lambda m: top_only(m, "agree_pmr"),
    "words": lambda m: per_prompt(m, "words"),
    "refuses": lambda m: per_prompt(m, "refuses"),
    "hedges": lambda m: per_prompt(m, "hedges"),
    "capability": lambda m: np.asarray(m["capability"], np.float64),
}


def summarise(values: np.ndarray, n_boot: int) -> dict:
    mean, ci, sd = nested_bootstrap(values, n_boot)
    return {"mean": mean, "ci95": ci, "boot_sd": sd}


def stack(measures: list[dict], key: str) -> np.ndarray:
    """[S] measure dicts -> [S, P] values of `key` (`CI_KEYS`)."""
    rows = [CI_KEYS[key](m) for m in measures]
    return np.stack(rows) if rows and all(len(r) for r in rows) else np.full((1, 1), np.nan)


def write_results(out: Path, cfg: LoopConfig) -> None:
    """rounds.csv, loop.json and findings.json in `out` (the loop folder), from the round folders."""
    rows, arms = [], {}
    for arm in cfg.arms:
        per_round = []
        for r in range(cfg.rounds + 1):
            folders = [round_folders(out, cfg, arm, s)[r] for s in cfg.seeds]
            measures = [read_measure(f) for f in folders]
            rows += [row_of(arm, s, r, f, m) for s, f, m in zip(cfg.seeds, folders, measures)]
            entry = {"round": r, **{k: summarise(stack(measures, k), cfg.bootstrap) for k in CI_KEYS}}
            per_round.append(entry)
        arms[arm] = {"rounds": per_round, "weight_path": weight_path_summary(out, cfg, arm)}
    last = [read_measure(round_folders(out, cfg, cfg.baseline, s)[-1]) for s in cfg.seeds]
    for arm in cfg.arms:  # descriptions, paired by seed and prompt: no claim reads them
        if arm != cfg.baseline:
            own = [read_measure(round_folders(out, cfg, arm, s)[-1]) for s in cfg.seeds]
            arms[arm]["minus_baseline"] = {
                k: summarise(stack(own, k) - stack(last, k), cfg.bootstrap) for k in ("gold", "gap", "kl")
            }
    gold = json.loads((out / "gold.json").read_text()) if (out / "gold.json").exists() else None
    findings = loop_findings(out, cfg)  # everything read before anything is written
    pd.DataFrame(rows).to_csv(out / "rounds.csv", index=False)
    write_json(out / "loop.json", {"arms": arms, "gold": gold, "seeds": cfg.seeds, "rounds": cfg.rounds})
    write_json(out / "findings.json", {"findings": [f.as_dict() for f in findings]})


def weight_path_summary(out: Path, cfg: LoopConfig, arm: str) -> list[dict]:
    files = [out / "arms" / arm / f"seed{s}" / "weight_path.json" for s in cfg.seeds]
    if not all(f.exists() for f in files):
        return []
    paths = [json.loads(f.read_text()) for f in files]
    summary = []
    for i, lam in enumerate(cfg.weight_path):
        gold = np.stack([np.asarray(p[i]["gold"]) for p in paths])
        entry = {"lambda": lam, "gold": summarise(gold, cfg.bootstrap)}
        entry["kl"] = float(np.mean([np.mean(p[i]["kl"]) for p in paths]))
        if paths[0][i]["capability"]:
            cap = np.stack([np.asarray(p[i]["capability"], np.float64) for p in paths])
            entry["capability"] = summarise(cap, cfg.bootstrap)
        summary.append(entry)
    return summary


def finding(
    claim: str, setting: str, diff: np.ndarray, margin: float, n_boot: int, what: str, numbers=None
) -> Finding:
    """A directional claim on [S, P] paired differences: the equivalence rule on their nested-bootstrap CI."""
    mean, ci, sd = nested_bootstrap(diff, n_boot)
    verdict = equivalence_verdict(ci, margin) if np.isfinite(ci).all() else INCONCLUSIVE
    mde = 2.8 * sd if np.isfinite(sd) else None
    evidence = f"{what}: {mean:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] (margin {margin:g})."
    if verdict == INCONCLUSIVE and mde is not None:
        evidence += f" This sample could detect {mde:.3f}."
    return Finding(
        f"{claim}:{setting}" if setting else claim,
        verdict,
        evidence,
        source="loop/rounds.csv, loop/loop.json",
        effect={setting or claim: mean},
        ci95={setting or claim: ci},
        min_effect=margin,
        min_detectable_effect=mde,
        test="95% CI of the paired difference, bootstrap over seeds and prompts; equivalence rule",
        null="no difference",
        setting=setting,
        numbers=numbers or {},
        paper=LOOP_PAPERS if claim != "alignment_tax" else "Lin et al. (2024)",
        claim=CLAIM_TEXT[claim],
    )


@dataclass(frozen=True)
class Headroom:
    """How far a shortcut's measure can drift from the baseline's last round (seeds pooled)."""

    bound: float | None
    """The largest mean drift possible in the shortcut's direction (None: the measures cannot say,
    or nothing bounds it)."""
    why: str
    typical: float | None = None
    """Words only: the room when a reply that ended early grows to the cut replies' *mean* word
    count and a cut one cannot grow (an estimate, beside the bound; no verdict reads it)."""


def headroom(kind: str, sign: float, base: list[dict]) -> Headroom:
    """The room the baseline's last-round replies leave a shortcut's measure, in the direction
    `sign` (+1: up).

    A rate (refusal, hedging) can move at most to 1 or 0. Words can shrink to 0, and grow only as far
    as the reply cap allows, taken empirically as the longest of the replies cut at `max_new_tokens`
    (the cap in words, as this policy writes; a policy that packed shorter words into the same tokens
    could pass it), so the bound is the mean of (that − words) over the replies. Measures written before the sampler's `finished` flags were kept, or with no reply at
    the cap, give no bound."""
    values = np.concatenate([np.asarray(m[MEASURES[kind]], np.float64) for m in base])
    if kind != "length":
        room = float(1.0 - values.mean()) if sign > 0 else float(values.mean())
        return Headroom(room, f"the baseline's rate is {values.mean():.3f}")
    if sign < 0:
        return Headroom(float(values.mean()), f"the baseline's replies average {values.mean():.1f} words")
    if any("finished" not in m for m in base):
        return Headroom(None, "no finished flags in the measures")
    finished = np.concatenate([np.asarray(m["finished"], bool) for m in base])
    if finished.all():
        return Headroom(None, "no reply reached the cap")
    longest, mean_cut = values[~finished].max(), values[~finished].mean()
    bound = float(np.maximum(longest - values, 0.0).mean())
    typical = float(np.where(finished, np.maximum(mean_cut - values, 0.0), 0.0).mean())
    why = (
        f"{(~finished).mean():.0%} of the baseline's last-round replies end at the max_new_tokens cap "
        f"(the longest of them {longest:.0f} words)"
    )
    return Headroom(bound, why, typical)


def labels_of(folder: Path) -> tuple[list, object]:
    """A round's labels (`a_preferred`) and the pairs they label (None for round 0's D_0, which are
    the same HH pairs for every arm)."""
    pairs = folder / "pairs.json"
    labels = json.loads((folder / "labels.json").read_text())["a_preferred"]
    return labels, json.loads(pairs.read_text()) if pairs.exists() else None


def same_labels(out: Path, cfg: LoopConfig, arm: str, base: str) -> bool:
    """Whether `arm`'s reviewer gave every pair the label `base`'s reviewer gave, on the same pairs,
    in every seed and round (D_0 included). Together with `same_but_reviewer` the arm's data, PMs and
    policies are then the baseline's, and the arm says nothing about the shortcut."""
    for s in cfg.seeds:
        for fa, fb in zip(round_folders(out, cfg, arm, s), round_folders(out, cfg, base, s)):
            if labels_of(fa) != labels_of(fb):
                return False
    return True


def labels_changed(out: Path, cfg: LoopConfig, arm: str) -> int | None:
    """The labels `arm`'s shortcuts changed (`labels.json`'s `shortcut_changed`), over its seeds and
    rounds, D_0 included; None where a labels.json predates that count."""
    changed = 0
    for s in cfg.seeds:
        for folder in round_folders(out, cfg, arm, s):
            labels = json.loads((folder / "labels.json").read_text())
            if "shortcut_changed" not in labels:
                return None
            changed += int(labels["shortcut_changed"])
    return changed


def same_but_reviewer(cfg: LoopConfig, arm: str, base: str) -> bool:
    """Whether `arm` differs from `base` in its reviewer's shortcuts and noise seed only."""
    rest = lambda a: a.model_dump(exclude={"shortcuts", "noise_seed"})  # noqa: E731
    return rest(cfg.arms[arm]) == rest(cfg.arms[base])


def shortcut_idle(out: Path, cfg: LoopConfig, arm: str, base: str, changed: int | None) -> str | None:
    """Why `arm`'s shortcut never acted, or None: it changed no label (the count in labels.json), or,
    in files written before that count, every label equals `base`'s on the same pairs and the arm
    differs from `base` only in its reviewer, so the arm is `base` itself. The placebo is not asked:
    its shortcut never acts by design, and the equivalence rule alone decides it."""
    if changed == 0:
        return "the shortcut changed none of the reviewer's labels, D_0's included (the same draws give every label without it)"
    if changed is None and same_but_reviewer(cfg, arm, base) and same_labels(out, cfg, arm, base):
        return (
            f"every label, D_0's included, equals `{base}`'s on the same pairs and the arm differs from "
            f"`{base}` only in its reviewer, so the arm is `{base}` itself"
        )
    return None


def feature_pairs(out: Path, cfg: LoopConfig, arm: str, kind: str) -> tuple[int, int]:
    """(pairs whose two replies differ in the shortcut's feature, pairs) over `arm`'s rounds 1..R and
    seeds: the comparisons in which the shortcut could move a label probability at all."""
    differ = total = 0
    for s in cfg.seeds:
        for folder in round_folders(out, cfg, arm, s)[1:]:
            pairs = json.loads((folder / "pairs.json").read_text())
            for a, b in zip(pairs["a"], pairs["b"]):
                differ += shortcut_feature(kind, a) != shortcut_feature(kind, b)
                total += 1
    return differ, total


def loop_findings(out: Path, cfg: LoopConfig) -> list[Finding]:
    """The four claims (and the placebo's own `shortcut_steers_policy`) from the measures."""
    last = lambda arm: [read_measure(round_folders(out, cfg, arm, s)[-1]) for s in cfg.seeds]  # noqa: E731
    first = lambda arm: [read_measure(round_folders(out, cfg, arm, s)[0]) for s in cfg.seeds]  # noqa: E731
    base, m, fs = cfg.baseline, cfg.claims, []
    if "offline" in cfg.arms:
        diff = stack(last(base), "gold") - stack(last("offline"), "gold")
        fs.append(
            finding(
                "online_beats_offline",
                "",
                diff,
                m.online_beats_offline,
                cfg.bootstrap,
                "gold reward, online − offline, last round",
            )
        )
    diff = stack(last(base), "agree_pmr_top") - stack(last(base), "agree_pm0_top")
    fs.append(
        finding(
            "offline_judge_fades_at_high_end",
            "",
            diff,
            m.offline_judge_fades_at_high_end,
            cfg.bootstrap,
            "agreement with gold on the top-quartile pairs, PM_R − PM_0",
        )
    )
    for arm, a in cfg.arms.items():
        if not a.shortcuts or arm == base:
            continue
        kind = a.shortcuts[0].kind
        direction = 1.0 if a.shortcuts[0].weight >= 0 else -1.0
        sign = -direction if kind == "confidence" else direction  # confidence: hedging should fall
        diff = sign * (stack(last(arm), MEASURES[kind]) - stack(last(base), MEASURES[kind]))
        cost = stack(last(base), "gold") - stack(last(arm), "gold")
        c_mean, c_ci, _ = nested_bootstrap(cost, cfg.bootstrap)
        margin = m.shortcut_steers_policy.get(kind)
        if margin is None:
            continue
        room = headroom(kind, sign, last(base))
        differ, total = feature_pairs(out, cfg, arm, kind)
        changed = labels_changed(out, cfg, arm)
        f = finding(
            "shortcut_steers_policy",
            arm,
            diff,
            margin,
            cfg.bootstrap,
            f"{MEASURES[kind]} drift of `{arm}` against `{base}` in the shortcut's direction, last round",
            {
                "gold_cost": c_mean,
                "gold_cost_ci95": c_ci,
                "placebo": arm == cfg.placebo,
                "headroom": room.bound,
                "headroom_typical": room.typical,
                "feature_pairs": differ,
                "labelled_pairs": total,
                "labels_changed": changed,
            },
        )
        drift = f.effect[arm]
        idle = None if arm == cfg.placebo else shortcut_idle(out, cfg, arm, base, changed)
        if idle:  # whatever the drift, the shortcut cannot have caused it
            f.verdict = NOT_TESTABLE
            f.evidence += f" Not testable here: {idle} (its feature differed in {differ} of the {total} pairs of rounds 1..{cfg.rounds})."
        elif (
            room.bound is not None
            and drift <= room.bound < margin
            and f.verdict in (NOT_SUPPORTED, INCONCLUSIVE)
        ):
            f.verdict = NOT_TESTABLE  # the margin was out of reach: neither answer was possible
            f.evidence += f" Not testable here: {room.why}, so a drift of {room.bound:.3f} at most is possible, below the margin."
        elif room.typical is not None and room.typical < margin:
            f.evidence += (
                f" {room.why}: replies that ended early could grow about {room.typical:.2f} words on average "
                f"if they reached the cut replies' mean length (at most {room.bound:.2f} words)."
            )
        fs.append(f)
    tax = stack(first(base), "capability") - stack(last(base), "capability")
    fs.append(
        finding(
            "alignment_tax",
            "",
            tax,
            m.alignment_tax,
            cfg.bootstrap,
            f"capability score, π_0 − π_R (`{base}`)",
        )
    )
    return fs
