"""One plain sentence per claim of Tanwar & Atanasova (2026), read from the run directory only.

Claims (all at one top-p and one scorer, in the primary RM, mixed by default):

- identified:    ablating an objective's top neurons lowers its margin more than matched random neurons.
- shared:        helpful_top and harmless_top overlap, described against random neuron sets of the same
                 sizes (hypergeometric p): a floor, not a test of "the same neurons", so never a verdict.
- sets_differ:   the two sets differ more than sampling noise and more than input text alone makes them
                 (permutation null of pseudo-objectives drawn from the pooled scoring pairs; effect: the
                 RM's null minus observed Jaccard minus the untrained base backbone's, by a
                 preference-dependent scorer the base has, contrast; equivalence rule). A run without
                 it is "not testable here".
- influence:     shared neurons matter more than as many objective-only neurons (paired bootstrap CI).
- cross_effect:  ablating one objective's neurons also lowers the other objective's margin.
- double_dissociation: each objective-only set hurts its own objective more than the other's (2x2
                 interaction). The ablation claims (mean ablation, margins in SDs of the unablated
                 margin, equivalence rule) are in `rmtension.ablation.claims`.

Each is a `rmtension.stats.finding.Finding` whose evidence is rendered from its numbers; a claim
whose file is absent is "not run".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmtension.neurons.config import AblationConfig, claim_settings
from rmtension.run.saved_config import read_config
from rmtension.stats.pvalues import nearest_p, p_phrase
from rmtension.run.runio import read_json
from rmtension.judges.neuron_sets import shared_share
from rmtension.stats.bootstrap import spearman_ci
from rmtension.stats.finding import (
    CONFLICT_TRACKS_SHARED_NEURONS,
    NEURON_SETS_DIFFER,
    NEURONS_SHARED,
    Finding,
    not_run,
    single_part,
)
from rmtension.neurons.overlap_stage import LEARNING_SCORERS
from rmtension.stats.verdicts import (
    NOT_RUN,
    NOT_TESTABLE,
    INCONCLUSIVE,
    SUPPORTED,
    claim_min_effect,
    equivalence_verdict,
    min_detectable_effect,
)


def claim_shared(overlap: dict, scorer: str, p: float, alpha: float) -> Finding:
    by_p = overlap.get(scorer, {})
    if not by_p:
        return Finding(NEURONS_SHARED, INCONCLUSIVE, f"No overlap results for scorer {scorer}.", OVERLAP_FILE)
    k = nearest_p(list(by_p), p)
    o = by_p[k]
    nums = {
        k2: o[k2] for k2 in ("jaccard", "jaccard_random", "p_value", "n_shared", "n_helpful", "n_harmless")
    }
    frac = o["n_shared"] / max(1, min(o["n_helpful"], o["n_harmless"]))
    text = (
        f"{o['n_shared']:g} neurons are in both the top {k}% helpful ({o['n_helpful']:g}) and harmless "
        f"({o['n_harmless']:g}) sets of the {o.get('rm', '')} RM by {scorer} ({frac:.0%} of the smaller set); "
        f"Jaccard {o['jaccard']:.3f} vs {o['jaccard_random']:.3f} expected by chance, "
        f"hypergeometric p {p_phrase(o['p_value'])}."
    )
    # the uniform floor decides nothing: the most active neurons top every objective's list, and an
    # untrained backbone's sets of the same pairs overlap far above it too (input text, not learning)
    verdict = INCONCLUSIVE
    text += (
        " (Chance here is random neuron sets of these sizes, a floor that the untrained backbone's sets also "
        "clear, so it is a description and decides no verdict; whether the sets differ more than sampling "
        "noise is tested separately.)"
    )
    boot = o.get("jaccard_bootstrap")
    decided = {}
    if boot and boot.get("n") and boot["sd"] == boot["sd"]:
        # Jaccard above the floor, its CI from the scoring pairs' bootstrap (the floor is exact)
        effect = o["jaccard"] - o["jaccard_random"]
        ci = [effect - 1.96 * boot["sd"], effect + 1.96 * boot["sd"]]
        decided = {
            "effect": {"shared": effect},
            "ci95": {"shared": ci},
            "min_detectable_effect": min_detectable_effect(ci),
        }
    test, null = OVERLAP_TESTS["shared"]
    key = f"Jaccard {o['jaccard']:.3f} vs {o['jaccard_random']:.3f} by chance, p {p_phrase(o['p_value'])}"
    return Finding(
        NEURONS_SHARED, verdict, text, OVERLAP_FILE, key, test=test, null=null, numbers=nums, **decided
    )


OVERLAP_TESTS = {
    "shared": (
        "one-sided hypergeometric test of the number of shared neurons (stratified per layer when the sets "
        "are chosen per layer), at the claims' alpha",
        "two uniformly random neuron sets of the same sizes (a floor: the most active neurons top every "
        "objective's list), described only: the verdict stays inconclusive without a null that separates "
        "learning from input text",
    ),
    "sets_differ": (
        "equivalence rule on the 95% CI of the permutation null's mean Jaccard minus the observed Jaccard "
        "(CI half-width 1.96 sqrt(sd_null^2 + sd_bootstrap^2)); supported also needs the permutation p < alpha",
        "the two objectives' scoring pairs are exchangeable: pseudo-objectives of the same sizes drawn at "
        "random from the pooled pairs (neurons.permutations re-splits)",
    ),
}
"""Claim name -> (the test that decides it, its null), for findings.json's `test` and `null`."""


def claim_sets_differ(overlap: dict, scorer: str, p: float, alpha: float, min_effect: float) -> Finding:
    """Do the helpful and harmless top-p sets differ more than two samples of one objective would?

    Effect (Jaccard units): the permutation null's mean Jaccard minus the observed one, with the CI
    of `rmtension.neurons.nulls.sets_differ_effect`; verdict by the equivalence rule
    (`rmtension.stats.verdicts.equivalence_verdict`) against `min_effect`, and "supported" also
    needs the permutation p-value below `alpha`. A placebo (two samples of one objective) gives an
    effect near 0: "inconclusive", or "not supported" when the CI lies inside +-min_effect.
    """
    by_p = overlap.get(scorer, {})
    if not by_p:
        return Finding(
            NEURON_SETS_DIFFER, INCONCLUSIVE, f"No overlap results for scorer {scorer}.", OVERLAP_FILE
        )
    k = nearest_p(list(by_p), p)
    o = by_p[k]
    setting = f"top {k}%, {scorer}"
    if "sets_differ" not in o:
        why = (
            o.get("nulls_skipped") or "neurons/overlap.json has no permutation null; re-run the neuron stage"
        )
        return Finding(NEURON_SETS_DIFFER, INCONCLUSIVE, f"{why}.", OVERLAP_FILE, setting=setting)
    d, null, half = o["sets_differ"], o["jaccard_permutation"], o["jaccard_split_half"]
    base = o.get("jaccard_base", {})
    learned = o.get("learning")
    if learned is None:
        why = (
            f"Not testable here with {scorer}: the claim is about learning, so it reads the trained-minus-base "
            "difference of a preference-dependent scorer the base backbone has (contrast, with the base's "
            "per-pair sums); this run has none. The RM's own difference, which input text alone also "
            f"produces, as description: Jaccard {o['jaccard']:.3f} vs {null['mean']:.3f} for random splits, "
            f"null − observed {d['effect']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]."
        )
        test, null_words = OVERLAP_TESTS["sets_differ"]
        return Finding(
            NEURON_SETS_DIFFER, NOT_TESTABLE, why, OVERLAP_FILE, test=test, null=null_words, setting=setting
        )
    ci = learned["ci95"]
    mde = min_detectable_effect(ci)
    verdict = equivalence_verdict(ci, min_effect)
    if verdict == SUPPORTED and not null["p_value"] < alpha:
        verdict = INCONCLUSIVE
    text = (
        f"Jaccard {o['jaccard']:.3f} observed in the {o.get('rm', '')} RM vs {null['mean']:.3f} "
        f"[{null['p2_5']:.3f}, {null['p97_5']:.3f}] when its scoring pairs are split at random into two "
        f"pseudo-objectives of the same sizes ({null['n']} splits, permutation p {p_phrase(null['p_value'])}); "
        f"two halves of one objective overlap at {half['mean']:.3f}"
        + (f", each set and the base backbone's at {base['mean']:.3f}" if "mean" in base else "")
        + f". Null minus observed {d['effect']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] in the RM, "
        f"{learned['base_effect']:+.3f} in the untrained base backbone on the same pairs (its sets' Jaccard "
        f"{learned['base_jaccard']:.3f}: the part input text alone explains); trained minus base "
        f"{learned['effect']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] (95% CI), judged against ±{min_effect:g}."
    )
    if verdict == INCONCLUSIVE:
        text += f" This sample could detect differences of about {mde:.3f} (80% power)."
    nums = {
        "jaccard": o["jaccard"],
        "jaccard_permutation": null["mean"],
        "p_value": null["p_value"],
        "n_permutations": null["n"],
        "jaccard_split_half": half["mean"],
        "jaccard_base": base.get("mean"),
        "rm_effect": d["effect"],
        "rm_ci95": d["ci95"],
        "base_effect": learned["base_effect"],
        "base_jaccard": learned["base_jaccard"],
    }
    key = (
        f"Jaccard {o['jaccard']:.3f} vs {null['mean']:.3f} for random splits; trained − base "
        f"{learned['effect']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}], p {p_phrase(null['p_value'])}"
    )
    test, null_words = OVERLAP_TESTS["sets_differ"]
    return Finding(
        NEURON_SETS_DIFFER,
        verdict,
        text,
        OVERLAP_FILE,
        key,
        effect={"sets_differ": learned["effect"]},
        ci95={"sets_differ": ci},
        min_effect=min_effect,
        min_detectable_effect=mde,
        test=test,
        null=null_words,
        setting=setting,
        numbers=nums,
    )


OVERLAP_FILE = "neurons/overlap.json"


def overlap_claims(
    run_dir: str | Path, p: float = 5.0, scorer: str = "mean_act", alpha: float = 0.05
) -> list[Finding]:
    """`neurons_shared` and `neuron_sets_differ` from neurons/overlap.json ("not run" without it)."""
    run_dir = Path(run_dir)
    if not (run_dir / OVERLAP_FILE).exists():
        return [
            not_run(cid, ("neurons",), run_dir, OVERLAP_FILE) for cid in (NEURONS_SHARED, NEURON_SETS_DIFFER)
        ]
    overlap = read_json(run_dir / OVERLAP_FILE)
    learning = next((s for s in LEARNING_SCORERS if s in overlap), scorer)
    return [
        claim_shared(overlap, scorer, p, alpha),
        claim_sets_differ(overlap, learning, p, alpha, claim_min_effect(run_dir, NEURON_SETS_DIFFER)),
    ]


def findings(run_dir: Path) -> list[Finding]:
    """The neuron stage's claims at the run's claim settings: the overlap claims, and whether conflict
    tracks the shared neurons (it reads the conflict stage's `conflict.json` too)."""
    st = claim_settings(run_dir)
    return [
        *overlap_claims(run_dir, st["p"], st["scorer"], st["alpha"]),
        conflict_tracks_shared_neurons(run_dir),
    ]


def settings_sentence(run_dir: Path) -> list[str]:
    """The summary's sentence on the setting the neuron claims are read at (none without neuron results)."""
    if not (run_dir / OVERLAP_FILE).exists():
        return []
    st = claim_settings(run_dir)
    a = AblationConfig.model_validate(read_config(run_dir).get("ablation") or {})
    if a.relative_margins:
        return [
            f"`neurons_identified` is tested at top-{'/'.join(f'{p:g}' for p in a.claim_points())}% by "
            f"`{a.scorers[0]}` with {a.claim_mode} ablation in each objective's own RMs, seeds as the unit, in "
            "relative accuracy drop against matched random neurons; `neuron_sets_differ` on the trained-minus-base "
            "difference of the contrast sets."
        ]
    return [
        f"The neuron claims are tested at top-{st['p']:g}% by `{st['scorer']}` with mean ablation (zero "
        f"ablation where a run has no mean rows) in the {st['rm']} RM, at significance level {st['alpha']:g}; "
        "the ablation claims are described only (configs/neurons.yaml decides them)."
    ]


def conflict_tracks_shared_neurons(run_dir: Path) -> Finding:
    cid = CONFLICT_TRACKS_SHARED_NEURONS
    path = run_dir / "conflict.json"
    share = shared_share(run_dir)
    if not path.exists() or share is None or "mixed" not in read_json(path)["rms"]:
        why = "Not run in this study (needs `train.conflict_every` and `neurons:` with mean_act)."
        return Finding(cid, NOT_RUN, why)
    blocks = {b: d for b, d in read_json(path)["rms"]["mixed"]["blocks"].items() if b in share}
    if len(blocks) < 3:
        why = (
            f"Not run: conflict is measured on {len(blocks)} transformer block(s) (the trainable ones); a rank "
            "correlation needs at least 3 (train more blocks, e.g. `train.trainable: top:4` in configs/extended.yaml)."
        )
        return Finding(cid, NOT_RUN, why, "conflict.json")
    names = sorted(blocks, key=lambda b: int(b.split(".")[1]))
    conflict = np.array([-blocks[b]["mean_cosine"] for b in names])
    shared = np.array([share[b] for b in names])
    rho, ci = spearman_ci(conflict, shared)
    m = claim_min_effect(run_dir, cid)
    verdict = equivalence_verdict(ci, m)
    evidence = (
        f"Spearman correlation over {len(names)} blocks between conflict (− mean cosine, `conflict.json`) and the "
        f"share of the block's neurons in the mixed RM's shared set (`neurons/sets.json`): {rho:+.2f} "
        f"[{ci[0]:+.2f}, {ci[1]:+.2f}]. Judged against ±{m:g}."
    )
    return Finding(
        cid,
        verdict,
        evidence,
        "conflict.json, neurons/sets.json",
        f"rho {rho:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]",
        **single_part("rho", rho, ci),
        min_effect=m,
        test="Spearman correlation over the trained blocks, Fisher-z CI",
        null="no correlation (0), judged by the equivalence rule",
    )
