"""rmtension as a library: load any reward model as a judge, evaluate it, score and ablate its neurons.

    from rmtension.api import evaluate, load_judge

    judge = load_judge("Skywork/Skywork-Reward-V2-Qwen3-0.6B", template="chat")
    result = evaluate(judge, "hh:harmless")
    print(result.accuracy, result.ci95, result.length_controlled["estimate"])

The study's stages call the same core functions (`rmtension.judges`, `rmtension.neurons`); results
are typed and save to the files the study writes (`Evaluation.save`: the study's per-pair score CSV).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rmtension.audit.config import find_suite
from rmtension.audit.stats import audit_breakdown, wrong_pairs
from rmtension.audit.suite import load_suite, suite_pairs
from rmtension.config import DataConfig, resolve_data_path
from rmtension.data.types import Pair
from rmtension.errors import RmtensionError
from rmtension.judges.load import Judge, load_judge
from rmtension.judges.score import PairRewards, score_pairs
from rmtension.stats.bootstrap import calibration, cluster_weights, correct, interval, length_baselines
from rmtension.stats.length import length_controlled
from rmtension.run.runio import inside, save_tensors, write_csv, write_json

__all__ = [
    "Ablation",
    "Evaluation",
    "Judge",
    "NeuronResult",
    "TestSet",
    "ablate",
    "evaluate",
    "load_judge",
    "load_test_set",
    "score_neurons",
]

UNITS = {"pairs": "test pairs", "prompts": "prompts (XSTest)", "scenarios": "scenarios (suite)"}


@dataclass
class TestSet:
    """Pairs to evaluate on and how their CI resamples them."""

    name: str
    pairs: list[Pair]
    unit: str = "pairs"
    """`pairs`, `prompts` (XSTest: one prompt's pairs share it) or `scenarios` (suites)."""
    groups: np.ndarray | None = None
    """[N] the resampled cluster of each pair (prompt or scenario); None: pairs."""
    source: str | None = None
    """The folder or file it was read from (XSTest, RMB, suites)."""


def _hh_root(data: DataConfig) -> str:
    root = resolve_data_path(data)
    if root is None:
        raise RmtensionError(
            "hh test sets need HH-RLHF in the official layout: set RMTENSION_DATA or data.path"
        )
    return root


def _hh_set(objective: str, every: bool, data: DataConfig) -> list[Pair]:
    from rmtension.data import build_dataset
    from rmtension.data.formats import load_pairs
    from rmtension.data.objectives import base_subsets, objective_subsets

    root = _hh_root(data)
    if not every:  # the study's carved test split, with the study's split settings
        return build_dataset(data, root).test_sets[objective]
    subsets = base_subsets(objective_subsets(data)[objective])
    loaded = load_pairs(root, fmt=data.format, subsets=subsets, lenient=data.lenient)
    return [p for result in loaded.values() for p in result.pairs]


def load_test_set(spec: str, data: DataConfig | None = None) -> TestSet:
    """A test set by name.

    `hh:helpful` / `hh:harmless`: the study's carved test split (split settings from `data`, default
    the study's); `hh:helpful:all` / `hh:harmless:all`: every pair of those subsets' files;
    `xstest[:DIR]` (CIs resample prompts); `rmb[:DIR]`; `suite:FILE` (CIs resample scenarios).
    A folder left out comes from `data.xstest_path` / `data.rmb_path`.
    """
    from rmtension.data.formats import load_rmb
    from rmtension.data.xstest import load_xstest, prompt_groups

    data = data or DataConfig()
    kind, _, rest = spec.partition(":")
    if kind == "hh" and rest.split(":")[0] in ("helpful", "harmless") and rest.count(":") <= 1:
        objective, _, every = rest.partition(":")
        if every not in ("", "all"):
            raise RmtensionError(f"test set {spec!r}: write hh:{objective} or hh:{objective}:all")
        return TestSet(spec, _hh_set(objective, every == "all", data))
    if kind == "xstest":
        folder = rest or data.xstest_path
        if not folder:
            raise RmtensionError("test set xstest needs its folder: xstest:DIR (XSTest v2, official layout)")
        xs = load_xstest(folder, lenient=data.lenient)
        pairs = [p for name in sorted(xs.pairs) for p in xs.pairs[name]]
        return TestSet("xstest", pairs, "prompts", np.array(prompt_groups(pairs)), folder)
    if kind == "rmb":
        folder = rest or data.rmb_path
        if not folder:
            raise RmtensionError("test set rmb needs its folder or file: rmb:PATH (RMB pairwise set)")
        return TestSet("rmb", list(load_rmb(folder, lenient=data.lenient).pairs), source=folder)
    if kind == "suite" and rest:
        rest = find_suite(rest)
        suite = load_suite(rest)
        pairs = suite_pairs(suite)
        return TestSet(
            f"suite:{suite.name}", pairs, "scenarios", np.array([p.metadata["scenario"] for p in pairs]), rest
        )
    raise RmtensionError(
        f"unknown test set {spec!r}: use hh:helpful, hh:helpful:all, hh:harmless, xstest[:DIR], rmb[:PATH] or suite:FILE"
    )


@dataclass
class Evaluation:
    """One judge on one test set: the study's numbers, and each pair's rewards."""

    judge: dict
    test_set: str
    source: str | None
    unit: str
    n: int
    accuracy: float
    ci95: list[float]
    mean_margin: float
    calibration: dict
    per_subset: dict
    baselines: dict
    """Accuracy of preferring the longer / the shorter reply (tokens of the judge's tokenizer)."""
    length_controlled: dict
    rewards: PairRewards = field(repr=False)
    audit: dict | None = None
    """Suites: accuracy overall, by label pair and by tag (scenario CIs), and the pairs it got wrong."""
    method: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "rewards"}

    def save(self, folder: str | Path) -> Path:
        """`<folder>/<test set>.csv`, the study's per-pair score file; returns its path."""
        return write_csv(inside(folder, f"{self.test_set}.csv"), self.rewards.frame())


def _weights(test: TestSet, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[B, N] resampling weights: pair counts, or cluster weights (prompts, scenarios)."""
    n = len(test.pairs)
    if test.groups is not None:
        return cluster_weights(test.groups, n_boot, rng)
    idx = rng.integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def _per_subset(subsets: Sequence[str], c: np.ndarray) -> dict:
    subsets = np.asarray(subsets)
    return {
        str(s): {"accuracy": float(c[subsets == s].mean()), "n": int((subsets == s).sum())}
        for s in sorted(set(subsets))
    }


def evaluate(
    judge: Judge,
    test_set: str | TestSet | Sequence[Pair],
    *,
    data: DataConfig | None = None,
    bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    ece_bins: int = 10,
) -> Evaluation:
    """Accuracy with a CI whose resampling unit fits the set, margin, calibration, per-subset accuracy,
    the length baselines and the length-controlled accuracy of `judge` on `test_set` (a name for
    `load_test_set`, a `TestSet`, or a list of pairs)."""
    if isinstance(test_set, str):
        test = load_test_set(test_set, data)
    elif isinstance(test_set, TestSet):
        test = test_set
    else:
        test = TestSet("pairs", list(test_set))
    if not test.pairs:
        raise RmtensionError(f"test set {test.name}: no pairs")
    rewards = score_pairs(judge, test.pairs, batch_size)
    c = correct(rewards.chosen, rewards.rejected)
    rng = np.random.default_rng(seed)
    w = _weights(test, bootstrap, rng)
    audit = None
    if test.unit == "scenarios":
        audit = audit_breakdown(test.pairs, c, bootstrap, seed, level)
        audit["wrong"] = wrong_pairs(test.pairs, rewards.chosen, rewards.rejected)
        labels = np.array(rewards.subsets)
        audit["baselines"] = {
            str(lp): length_baselines(rewards.lengths[labels == lp, 0], rewards.lengths[labels == lp, 1])
            for lp in sorted(set(rewards.subsets))
        }
    return Evaluation(
        judge=judge.describe(),
        test_set=test.name,
        source=test.source,
        unit=test.unit,
        n=len(test.pairs),
        accuracy=float(c.mean()),
        ci95=interval((w @ c) / w.sum(axis=1), level),
        mean_margin=float(rewards.margins.mean()),
        calibration=calibration(rewards.margins, ece_bins),
        per_subset=_per_subset(rewards.subsets, c),
        baselines=length_baselines(rewards.lengths[:, 0], rewards.lengths[:, 1]),
        length_controlled=length_controlled(
            c, rewards.lengths[:, 0], rewards.lengths[:, 1], bootstrap, rng, level, pair_weights=w
        ).as_dict(),
        rewards=rewards,
        audit=audit,
        method={
            "ci": f"{level:.0%} percentile bootstrap over {UNITS[test.unit]} ({bootstrap} resamples)",
            "correct": "1 if the better reply scores higher, 0.5 on a tie, else 0 (sign applied)",
            "length_controlled": "mean of the accuracies where the better reply is longer and where it is "
            "shorter (tokenizer tokens of whole replies); ties dropped; a stratum under 30 pairs: not estimable",
        },
    )


def save_results(folder: str | Path, judge: Judge, evaluations: Sequence[Evaluation]) -> Path:
    """`<folder>/results.json` (every evaluation of one judge) and one per-pair score CSV per test set."""
    for ev in evaluations:
        ev.save(folder)
    return write_json(
        Path(folder) / "results.json",
        {"judge": judge.describe(), "evaluations": {e.test_set: e.as_dict() for e in evaluations}},
    )


@dataclass
class NeuronResult:
    """Neuron scores of one judge on one set of pairs (`rmtension.judges.neurons`)."""

    judge: str
    scores: dict[str, torch.Tensor]
    """scorer -> [layers, neurons] float32."""
    n_pairs: int
    n_tokens: int
    meta: dict[str, str] = field(default_factory=dict)

    def save(self, run_dir: str | Path, data: str = "helpful") -> Path:
        """Add these scores as `<scorer>/<data>` to `run_dir/neurons/<judge>/scores.safetensors`, the
        neuron stage's file (which holds one entry per scorer and data set: `helpful`, `harmless`)."""
        from safetensors import safe_open

        path = inside(run_dir, "neurons", self.judge, "scores.safetensors")
        tensors, meta = {}, {"objective": self.judge, "seed": "0"}
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        tensors.update({f"{s}/{data}": v.contiguous() for s, v in self.scores.items()})
        meta.update(
            {f"n_pairs/{data}": str(self.n_pairs), f"n_tokens/{data}": str(self.n_tokens), **self.meta}
        )
        return save_tensors(path, tensors, meta)


def score_neurons(
    judge: Judge,
    pairs: Sequence[Pair],
    scorers: Sequence[str] = ("mean_act", "fire_rate", "attribution", "contrast"),
    base: Judge | str | None = None,
    batch_size: int = 16,
) -> NeuronResult:
    """Score every MLP neuron of `judge` on `pairs` in one streaming pass. `base`: the judge's base
    backbone (a judge or a path), which `rms_change` needs."""
    from rmtension.judges.neurons import NEEDS_BASE, SCORERS
    from rmtension.judges.neurons import score_neurons as score_all

    unknown = sorted(set(scorers) - set(SCORERS))
    if unknown:
        raise RmtensionError(f"unknown scorer(s) {', '.join(unknown)}; choose from {', '.join(SCORERS)}")
    needs = sorted(NEEDS_BASE & set(scorers))
    if needs and base is None:
        raise RmtensionError(f"scorer {', '.join(needs)} compares with the base model: pass base=PATH_OR_ID")
    if isinstance(base, str):
        base = load_judge(base, template=judge.template, max_length=judge.max_length)
    enc = judge.encode(list(pairs))
    res = score_all(
        {judge.name: judge.model},
        enc,
        judge.tokenizer.pad_token_id,
        base=None if base is None else base.model,
        scorers=scorers,
        batch_size=batch_size,
        bf16=False,
    )[judge.name]
    return NeuronResult(judge.name, res.scores, res.n_pairs, res.n_tokens, dict(res.meta))


@dataclass
class Ablation:
    """A judge's margins with a neuron set zeroed, against matched random draws of the same size per layer."""

    judge: str
    clean: np.ndarray
    """[P] margins r_better - r_worse of the unablated judge (sign applied)."""
    ablated: np.ndarray
    """[P] margins with the set zeroed."""
    controls: list[np.ndarray]
    """Each random draw's [P] margins."""

    def summary(self) -> dict:
        acc = lambda m: float(correct(m, np.zeros_like(m)).mean())  # noqa: E731
        random = [acc(m) for m in self.controls]
        return {
            "accuracy": acc(self.clean),
            "ablated_accuracy": acc(self.ablated),
            "random_accuracy": float(np.mean(random)) if random else None,
            "delta_vs_base": acc(self.ablated) - acc(self.clean),
            "delta_vs_random": acc(self.ablated) - float(np.mean(random)) if random else None,
            "delta_margin_vs_random": float(
                (self.ablated - np.mean(self.controls, axis=0)).mean() if self.controls else np.nan
            ),
            "n_pairs": int(len(self.clean)),
            "n_draws": len(self.controls),
        }


def ablate(
    judge: Judge,
    pairs: Sequence[Pair],
    neurons: torch.Tensor,
    controls: int = 5,
    seed: int = 0,
    batch_size: int = 16,
) -> Ablation:
    """Zero the neurons of bool mask [layers, neurons] in `judge` on `pairs`, and `controls` random sets
    with the same count in every layer (`rmtension.judges.select.random_controls`)."""
    from rmtension.judges.ablate import Condition, run_conditions
    from rmtension.judges.hooks import neuron_shape
    from rmtension.judges.select import random_controls

    shape = neuron_shape(judge.model)
    if tuple(neurons.shape) != shape:
        raise RmtensionError(
            f"{judge.name}: neuron mask of shape {tuple(neurons.shape)}, the judge has {shape}"
        )
    conds = {"set": Condition(neurons.bool())}
    for k, m in enumerate(random_controls(neurons.bool(), controls, seed)):
        conds[f"random{k}"] = Condition(m)
    enc = judge.encode(list(pairs))
    clean, margins = run_conditions(
        judge.model, enc, judge.tokenizer.pad_token_id, conds, batch_size, bf16=False
    )
    s = judge.sign
    return Ablation(
        judge.name, s * clean, s * margins["set"], [s * margins[f"random{k}"] for k in range(controls)]
    )
