"""Report sections of the core study: data, tension table, calibration, training curves.

Each reads run-directory files only and returns None when they are absent. The one statistic
computed here rather than read is the bootstrap CI of each ECE (`calibration_cis`), from the
per-pair scores in `eval/` with the study's bins and bootstrap settings.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.report.figures import (
    CHANCE_COLOUR,
    COLUMN_WIDTH,
    DOUBLE_WIDTH,
    PALETTE,
    RM_COLOURS,
    new_figure,
    save,
)
from rmtension.report.section import Section
from rmtension.stats.bootstrap import beats_chance, ece_pair_gaps
from rmtension.run.runio import configured, read_config, read_json, safe_name  # noqa: F401 (re-exported)


def fmt_acc(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['sd']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def ordered_tests(tests) -> list[str]:
    """helpful, harmless, then any other test set (e.g. RMB) by name."""
    return sorted(tests, key=lambda t: ({"helpful": 0, "harmless": 1}.get(t, 2), t))


def interference_verdict(d: dict) -> str:
    lo, hi = d["ci95"]
    if hi < 0:
        return "mixed RM worse than the best single-objective RM"
    if lo > 0:
        return "mixed RM better than the best single-objective RM"
    return "no significant difference"


def section_data(run_dir: Path) -> Section | None:
    path = run_dir / "data" / "summary.json"
    if not path.exists():
        return None
    d = read_json(path)
    s = Section("Data", "data")
    s.paragraphs.append(
        f"Format `{d.get('format', '?')}`, mixed objective `{d.get('mixed_mode', '?')}`"
        + (f" (ratio {d['mixed_ratio']:g})" if d.get("mixed_mode") == "ratio" else "")
        + f", split {tuple(d.get('split_fractions', []))} with seed {d.get('split_seed', '?')}; prompt groups found in two "
        f"splits: {d.get('groups_in_two_splits', '?')}. Sources: `data/summary.json`, pair ids per split in "
        "`data/splits.json`, truncation in `data/truncation.json`."
    )
    if d.get("counts_per_subset"):
        s.tables.append(
            (
                "Pairs per subset and split, after drops",
                pd.DataFrame(
                    [
                        {"subset": k, "split from": d.get("split_mode", {}).get(k, ""), **v}
                        for k, v in d["counts_per_subset"].items()
                    ]
                ),
            )
        )
    if d.get("objectives"):
        s.tables.append(
            (
                "Pairs used per objective (after the `max_*_pairs` caps)",
                pd.DataFrame(
                    [
                        {"objective": k, **{split: v.get(split, "") for split in ("train", "val", "test")}}
                        for k, v in d["objectives"].items()
                    ]
                ),
            )
        )
    drops = [{"kind": "dropped", "reason": k, "pairs": v} for k, v in d.get("drops", {}).items()]
    drops += [{"kind": "skipped (lenient)", "reason": k, "pairs": v} for k, v in d.get("skipped", {}).items()]
    drops += [{"kind": "kept, flagged", "reason": k, "pairs": v} for k, v in d.get("flags", {}).items()]
    if drops:
        s.tables.append(("Dropped, skipped and flagged pairs by reason", pd.DataFrame(drops)))
    trunc = run_dir / "data" / "truncation.json"
    if trunc.exists():
        t = read_json(trunc)
        s.tables.append(
            (
                f"Left truncation at {t['max_length']} tokens (source: `data/truncation.json`)",
                pd.DataFrame([{"set": k, **v} for k, v in t["sets"].items()]),
            )
        )
    return s


LENGTH_PRIOR_PARTS = (
    ("interference", None),
    ("dilution", "dilution"),
    ("negative transfer", "negative_transfer"),
)


def length_prior_words(interference: dict) -> str:
    """In words, per test set, how much of each effect (interference, dilution, negative transfer) the
    length prior explains: the raw estimate, the length-controlled one and their difference with its CI
    (`tension.json`'s `length_prior`, `rmtension.stats.length`); a share of the raw effect only where the
    raw CI excludes 0 (a ratio to a value near 0 means nothing)."""
    sentences = []
    for ts, d in interference.items():
        prior, lc = d.get("length_prior"), d.get("length_controlled")
        if prior is None or lc is None:
            continue
        if not prior.get("estimable"):
            sentences.append(
                f"On {ts} test pairs the length-controlled effects are not estimable ({prior['reason']})."
            )
            continue
        texts = []
        for label, key in LENGTH_PRIOR_PARTS:
            raw = d if key is None else d.get(key)
            p, c = (prior, lc) if key is None else (prior.get(key), lc.get(key))
            if raw is None or p is None or c is None or not p.get("estimable"):
                continue
            est = raw.get("estimate", raw.get("mixed_minus_best_single"))
            text = (
                f"{label} {est:+.3f} raw and {c['estimate']:+.3f} length-controlled, so length explains "
                f"{p['estimate']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]"
            )
            lo, hi = raw["ci95"]
            if lo > 0 or hi < 0:
                text += f" ({p['estimate'] / est:.0%} of the raw effect)"
            texts.append(text)
        ties = prior.get("n_ties", 0)
        sentences.append(
            f"On {ts} test pairs ({prior['n_chosen_longer']} with the chosen reply longer, "
            f"{prior['n_chosen_shorter']} shorter, {ties} tied and dropped): " + "; ".join(texts) + "."
        )
    if not sentences:
        return ""
    return (
        "How much of each effect the length prior explains (raw minus length-controlled, where the length-controlled "
        "accuracy weights the chosen-longer and chosen-shorter pairs equally; paired bootstrap, 95% CI; the verdicts "
        "read the length-controlled values). " + " ".join(sentences)
    )


def section_tension(run_dir: Path) -> Section | None:
    path = run_dir / "tension.json"
    if not path.exists():
        return None
    t = read_json(path)
    tests = ordered_tests({ts for by in t["accuracy"].values() for ts in by})
    s = Section("Tension table", "tension")
    s.paragraphs.append(
        "Pairwise accuracy, mean ± sd over seeds [95% CI from a bootstrap over test pairs and seeds]. "
        f"Source: `tension.json`. Method: {t['method']['ci']}."
    )
    rows = [
        {"RM": rm, **{ts: fmt_acc(by[ts]) for ts in tests if ts in by}} for rm, by in t["accuracy"].items()
    ]
    base = t.get("baselines", {})
    for rule in ("longer", "shorter") if base else ():
        rows.append(
            {"RM": f"prefer the {rule} reply", **{ts: f"{base[ts][rule]:.3f}" for ts in tests if ts in base}}
        )
    s.tables.append(("Accuracy of each RM on each test set, and of length alone", pd.DataFrame(rows)))
    matched = [
        {
            "RM": rm,
            **{
                ts: "–"
                if by[ts]["length_matched"]["n"] == 0
                else f"{by[ts]['length_matched']['mean']:.3f} [{by[ts]['length_matched']['ci95'][0]:.3f}, "
                f"{by[ts]['length_matched']['ci95'][1]:.3f}] (n={by[ts]['length_matched']['n']})"
                for ts in tests
                if "length_matched" in by.get(ts, {})
            },
        }
        for rm, by in t["accuracy"].items()
    ]
    if base:
        s.paragraphs.append(
            "Length alone: 'prefer the longer reply' and 'prefer the shorter reply' scored on the same pairs, "
            f"in tokens of the backbone's tokenizer ({t['method']['baselines']}); "
            + "; ".join(
                f"{ts}: longer {base[ts]['longer']:.3f}, shorter {base[ts]['shorter']:.3f}"
                + (
                    " (length beats chance)"
                    if beats_chance(max(base[ts]["longer"], base[ts]["shorter"]), base[ts]["n"])
                    else ""
                )
                for ts in tests
                if ts in base
            )
            + ". An accuracy near a length baseline may be length, not content: the length-matched "
            "table keeps only pairs whose replies differ by at most 10% in length."
        )
        s.tables.append(("Accuracy on length-matched pairs [95% CI] (pairs)", pd.DataFrame(matched)))
    inter = []
    for ts, d in t["interference"].items():
        row = {
            "test set": ts,
            "mixed − best single": f"{d['mixed_minus_best_single']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]",
            "best single RM": d["best_single"],
        }
        lc = d.get("length_controlled")
        if lc is not None:
            row["length-controlled"] = (
                f"{lc['estimate']:+.3f} [{lc['ci95'][0]:+.3f}, {lc['ci95'][1]:+.3f}]"
                if lc["estimable"]
                else "not estimable"
            )
        for key, label in (("dilution", "dilution"), ("negative_transfer", "negative transfer")):
            if key in d:
                e = d[key]
                row[label] = f"{e['estimate']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"
        row["verdict"] = interference_verdict(d)
        inter.append(row)
    words = length_prior_words(t["interference"])
    if words:
        s.paragraphs.append(words)
    if inter:
        s.tables.append(
            (
                "Interference = accuracy(mixed) − accuracy(best single RM) [95% CI], split into dilution = "
                "best single on the mixed RM's share of its data − best single, and negative transfer = "
                "mixed − best single on that share",
                pd.DataFrame(inter),
            )
        )
    sub_rows = [
        {
            "RM": rm,
            "test set": ts,
            "subset": sub,
            "pairs": d["n"],
            "accuracy": f"{d['accuracy']:.3f}",
            "mean margin (whole test set)": f"{by[ts]['mean_margin']:+.3f}",
        }
        for rm, by in t["accuracy"].items()
        for ts in tests
        if ts in by
        for sub, d in by[ts].get("per_subset", {}).items()
    ]
    if sub_rows:
        s.tables.append(("Per-subset accuracy, mean over seeds", pd.DataFrame(sub_rows)))
    rms = list(t["accuracy"])
    wide = len(rms) * len(tests) > 12  # more RMs (controls, heads) or test sets than one column holds
    fig, ax = new_figure(DOUBLE_WIDTH if wide else COLUMN_WIDTH, 3.0 if wide else 2.4)
    width = 0.8 / max(1, len(rms))
    others = iter(PALETTE[3:] * 2)  # RMs beyond the three objectives' get the palette's other colours
    for i, (rm, by) in enumerate(t["accuracy"].items()):
        mine = [ts for ts in tests if ts in by]
        xs = [tests.index(ts) + i * width for ts in mine]
        err = [
            [by[ts]["mean"] - by[ts]["ci95"][0] for ts in mine],
            [by[ts]["ci95"][1] - by[ts]["mean"] for ts in mine],
        ]
        ax.bar(
            xs,
            [by[ts]["mean"] for ts in mine],
            width,
            yerr=err,
            label=f"{rm} RM",
            color=RM_COLOURS.get(rm) or next(others),
            capsize=2 if not wide else 1,
            error_kw={"lw": 0.8},
        )
    ax.axhline(0.5, color=CHANCE_COLOUR, lw=0.8, ls="--")
    ax.set_xticks(
        [j + width * (len(rms) - 1) / 2 for j in range(len(tests))],
        [ts.replace("xstest-", "XSTest\n") + " test" for ts in tests],
    )
    ax.set_ylabel("pairwise accuracy")
    top = max(by[ts]["ci95"][1] for by in t["accuracy"].values() for ts in by)
    low = min(by[ts]["ci95"][0] for by in t["accuracy"].values() for ts in by)
    ax.set_ylim(min(0.4, low - 0.02), max(0.8, top + 0.05))
    if wide:
        fig.legend(frameon=False, ncols=4, loc="outside lower center")
    else:
        ax.legend(frameon=False, ncols=3, loc="upper center")
    s.figures.append(
        ("Accuracy with 95% CIs; dashed line: chance. Source: `tension.json`.", save(fig, run_dir, "tension"))
    )
    return s


def _files_key(run_dir: Path) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns) for p in sorted((run_dir / "eval").glob("*/seed*/*.csv")))


def calibration_cis(run_dir: Path) -> dict[tuple[str, str], list[float]]:
    """(rm, test) -> [lo, hi]: percentile bootstrap CI of the ECE over test pairs (seeds pooled as in tension.json)."""
    return _calibration_cis(str(run_dir), _files_key(Path(run_dir)))


def ece_replicates(margins: np.ndarray, bins: int, pair_idx: np.ndarray) -> np.ndarray:
    """ECE of `stats.calibration` on each bootstrap resample of test pairs, vectorised.

    margins: [S, N] r_chosen - r_rejected per seed and pair; pair_idx: [B, N] resampled pair indices
    (every seed takes the same pairs). Each pair counts in both orientations as in `stats.calibration`,
    so ECE = sum over bins of |sum predicted - sum observed| / number of entries. Returns [B].
    """
    s, n = margins.shape
    gap = ece_pair_gaps(margins, bins)  # [N, bins]
    weights = np.stack([np.bincount(row, minlength=n) for row in pair_idx])  # [B, N] times each pair is drawn
    return np.abs(weights @ gap).sum(axis=1) / (2 * s * n)


@lru_cache(maxsize=8)
def _calibration_cis(run_dir: str, _key: tuple) -> dict[tuple[str, str], list[float]]:
    ev = read_config(Path(run_dir)).get("eval") or {}
    bins, level, n_boot = (
        int(ev.get("ece_bins", 10)),
        float(ev.get("ci", 0.95)),
        int(ev.get("bootstrap", 2000)),
    )
    out = {}
    for rm_dir in sorted((Path(run_dir) / "eval").glob("*")):
        for test in sorted({p.stem for p in rm_dir.glob("seed*/*.csv")}):
            frames = [pd.read_csv(p) for p in sorted(rm_dir.glob(f"seed*/{test}.csv"))]
            m = np.stack([(f["r_chosen"] - f["r_rejected"]).to_numpy() for f in frames])  # [S, N]
            idx = np.random.default_rng(0).integers(0, m.shape[1], size=(n_boot, m.shape[1]))
            reps = ece_replicates(m, bins, idx)
            a = (1 - level) / 2
            out[(rm_dir.name, test)] = [float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))]
    return out


def section_calibration(run_dir: Path) -> Section | None:
    path = run_dir / "tension.json"
    if not path.exists():
        return None
    cal = read_json(path)["calibration"]
    cis = calibration_cis(run_dir)
    s = Section("Calibration", "calibration")
    s.paragraphs.append(
        "Bai et al. (2022) report well-calibrated preference models. Predicted P(chosen preferred) = "
        "sigmoid(r_chosen − r_rejected), pooled over seeds; ECE over equal-width bins. Source: `tension.json`; "
        "the ECE's 95% CI is a percentile bootstrap over test pairs of `eval/<rm>/seed<k>/<test>.csv`."
    )
    rows = []
    for rm, by in cal.items():
        row = {"RM": rm}
        for ts in ordered_tests(by):
            ci = cis.get((safe_name(rm), ts))  # keyed by eval/ folder names
            row[ts] = f"{by[ts]['ece']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        rows.append(row)
    s.tables.append(("Expected calibration error [95% CI]", pd.DataFrame(rows)))
    fig, ax = new_figure(COLUMN_WIDTH, 2.8)
    ax.plot([0, 1], [0, 1], color=CHANCE_COLOUR, lw=0.8, ls="--")
    for rm, by in cal.items():
        for ts, d in by.items():
            if ts != rm and rm != "mixed":
                continue
            pts = d["points"]
            ax.plot(
                [p["predicted"] for p in pts],
                [p["observed"] for p in pts],
                marker="o" if ts == "helpful" else "s",
                ms=2.5,
                lw=1,
                color=RM_COLOURS.get(rm),
                ls="-" if ts == "helpful" else ":",
                label=f"{rm} RM, {ts} test (ECE {d['ece']:.3f})",
            )
    ax.set_xlabel("predicted P(chosen preferred)")
    ax.set_ylabel("observed frequency")
    ax.legend(frameon=False, loc="upper left")
    s.figures.append(
        (
            "Reliability diagram (own-objective test sets; the mixed RM on both). Source: `tension.json`.",
            save(fig, run_dir, "calibration"),
        )
    )
    return s


def section_training(run_dir: Path) -> Section | None:
    metrics = sorted((run_dir / "rm").glob("*/seed*/metrics.json"))
    if not metrics:
        return None
    s = Section("Training curves", "training")
    fig, (ax1, ax2) = new_figure(DOUBLE_WIDTH, 2.4, ncols=2)
    rows = []
    for path in metrics:
        m = json.loads(path.read_text())
        rm, seed = path.parent.parent.name, path.parent.name
        c = RM_COLOURS.get(rm)
        loss = m["loss"]
        ax1.plot(
            [x for x, _ in loss],
            pd.Series([y for _, y in loss]).rolling(10, min_periods=1).mean(),
            color=c,
            lw=0.8,
            alpha=0.8,
        )
        ax2.plot(
            [x for x, _ in m["val_accuracy"]],
            [y for _, y in m["val_accuracy"]],
            color=c,
            lw=0.8,
            marker=".",
            ms=2,
        )
        rows.append(
            {
                "RM": rm,
                "seed": seed,
                "train pairs": m["n_train"],
                "steps": m["steps"],
                "best step": m["best_step"],
                "best val acc": f"{m['best_val_accuracy']:.3f}",
                "pairs/s": f"{m['pairs_per_s']:.1f}",
                "tokens/s": f"{m['tokens_per_s']:.0f}",
                "peak MB": f"{m['peak_memory_mb']:.0f}",
            }
        )
    ax1.set_xlabel("optimiser step")
    ax1.set_ylabel("BT loss (rolling mean)")
    ax2.set_xlabel("optimiser step")
    ax2.set_ylabel("validation accuracy")
    for rm, c in RM_COLOURS.items():
        ax2.plot([], [], color=c, label=f"{rm} RM")
    ax2.legend(frameon=False)
    s.figures.append(
        (
            "Training loss and validation accuracy per RM and seed. Source: `rm/<objective>/seed<k>/metrics.json`.",
            save(fig, run_dir, "training"),
        )
    )
    s.tables.append(
        ("Per-run training metrics (source: `rm/<objective>/seed<k>/metrics.json`)", pd.DataFrame(rows))
    )
    s.paragraphs.append(
        "The model is selected on the validation split only; test sets are never used for selection."
    )
    return s
