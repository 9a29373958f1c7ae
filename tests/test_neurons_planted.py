"""Planted neurons: a positive control for `neurons_identified` (next to tests/test_planted.py's interference).

A tiny BERT RM (2 blocks of 64 MLP neurons) is trained with everything frozen except a known set S of 13
neurons of its top block (their input rows and output columns): the preference, a feature token in the
chosen reply (another in the rejected one, at the same place), can only be learnt by S. The claim
pipeline then runs as in a study: attribution scores on scoring pairs, the top 10% of neurons,
zero ablation against 5 + 5 matched random draws on disjoint test pairs (`run_conditions`), the
relative accuracy drop per seed, and the claim over 3 seeds (`rmtension.ablation.relative`), with
the skill gate fed by the RMs' own length-controlled accuracies.

The planted value is measured independently: S's output columns set to zero in a copy of the model
(weight surgery, no hooks) against 20 fresh random sets of the same layers, plain forwards. The claim
must be "supported", the pipeline's set must be S, and the CI must cover the planted value.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tiny import tiny_reward_model

from rmtension.ablation.controls import controls
from rmtension.ablation.relative import identified_relative
from rmtension.ablation.stats import relative_drop
from rmtension.judges.ablate import Condition, run_conditions
from rmtension.judges.neurons import score_neurons
from rmtension.judges.select import top_percent
from rmtension.model.encode import EncodedPairs
from rmtension.stats.bootstrap import seed_resamples
from rmtension.stats.length import length_controlled_accuracy, length_strata, resample_counts

PLANTED = torch.arange(5, 64, 5)[:13]  # 13 of the top block's 64 neurons: 10% of the 128
GOOD, BAD, CLS, EOS = 100, 101, 2, 1


def pairs(n: int, seed: int) -> EncodedPairs:
    """Random replies of independent lengths; the chosen one holds GOOD, the rejected BAD, at the same place."""
    g = np.random.default_rng(seed)
    chosen, rejected = [], []
    for _ in range(n):
        a, b = (
            g.integers(10, 90, size=g.integers(5, 12)).tolist(),
            g.integers(10, 90, size=g.integers(5, 12)).tolist(),
        )
        at = int(g.integers(0, min(len(a), len(b))))
        a[at], b[at] = GOOD, BAD
        chosen.append([CLS, *a, EOS])
        rejected.append([CLS, *b, EOS])
    return EncodedPairs([f"p{seed}-{i}" for i in range(n)], chosen, rejected, 0, 0)


def batch(enc: EncodedPairs, idx: list[int]) -> dict[str, torch.Tensor]:
    rows = [enc.chosen[i] for i in idx] + [enc.rejected[i] for i in idx]
    t = max(map(len, rows))
    ids = torch.tensor([r + [0] * (t - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def margins(model, enc: EncodedPairs) -> np.ndarray:
    with torch.no_grad():
        r = model(**batch(enc, list(range(len(enc))))).logits.squeeze(-1)
    return (r[: len(enc)] - r[len(enc) :]).double().numpy()


def planted_rm(seed: int) -> torch.nn.Module:
    """The tiny RM trained through the planted neurons only (module docstring)."""
    model = tiny_reward_model("bert", seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    block = model.bert.encoder.layer[-1]
    w_in, b_in, w_out = (
        block.intermediate.dense.weight,
        block.intermediate.dense.bias,
        block.output.dense.weight,
    )
    keep = torch.zeros(64, dtype=torch.bool)
    keep[PLANTED] = True
    for p, mask in ((w_in, keep[:, None]), (b_in, keep), (w_out, keep[None, :])):
        p.requires_grad_(True)
        p.register_hook(lambda g, mask=mask: g * mask)
    opt = torch.optim.Adam([w_in, b_in, w_out], lr=0.03)
    train = pairs(256, 1000 + seed)
    g = np.random.default_rng(seed)
    for _ in range(120):
        idx = g.choice(len(train), 32, replace=False).tolist()
        r = model(**batch(train, idx)).logits.squeeze(-1)
        loss = -F.logsigmoid(r[:32] - r[32:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def surgery_margins(model, enc: EncodedPairs, mask: torch.Tensor) -> np.ndarray:
    """Margins with the masked neurons' output columns zeroed in a copy: zero ablation by weight surgery."""
    cut = copy.deepcopy(model)
    for layer, block in enumerate(cut.bert.encoder.layer):
        with torch.no_grad():
            block.output.dense.weight[:, mask[layer]] = 0.0
    return margins(cut, enc)


def test_planted_neurons_are_identified_and_the_ci_covers_the_planted_value(tmp_path):
    test, score = pairs(300, 7), pairs(64, 8)  # disjoint test and scoring pairs
    idx = np.random.default_rng(0).integers(0, 300, size=(400, 300))
    rows, planted, correct = [], [], []
    for seed in range(3):
        model = planted_rm(seed)
        attr = score_neurons({"rm": model}, score, 0, scorers=["attribution"], bf16=False)["rm"].scores
        chosen = top_percent(attr["attribution"], 10.0)
        want = torch.zeros(2, 64, dtype=torch.bool)
        want[1, PLANTED] = True
        assert torch.equal(chosen, want), seed  # attribution finds exactly the planted neurons
        conds = {"set": Condition(chosen)}
        for kind in ("layer",):
            conds.update({f"{kind}{d}": Condition(m) for d, m in enumerate(controls(kind, chosen, 10, seed))})
        clean, m = run_conditions(model, test, 0, conds, batch_size=50, bf16=False)
        rel = relative_drop(clean, m["set"], [m[f"layer{d}"] for d in range(10)], idx)
        for kind in ("layer", "magnitude"):  # the two kinds' rows: here both layer-matched, 5 draws each
            rows.append(
                {
                    "rm": f"helpful-seed{seed}",
                    "neuron_set": "helpful_top",
                    "scorer": "attribution",
                    "p": 10.0,
                    "mode": "zero",
                    "test_set": "helpful",
                    "control": kind,
                    "n_draws": 10,
                    "rel_drop_vs_random": rel["rel_drop"],
                    "rel_drop_vs_random_se": rel["se"],
                }
            )
        # the planted value: surgery, 20 fresh random sets of the same layer, plain forwards
        c_clean = (np.sign(margins(model, test)) + 1) / 2
        np.testing.assert_allclose(margins(model, test), clean, atol=1e-4)
        fresh = [
            (np.sign(surgery_margins(model, test, r)) + 1) / 2
            for r in controls("layer", chosen, 20, 99 + seed)
        ]
        c_set = (np.sign(surgery_margins(model, test, chosen)) + 1) / 2
        planted.append((np.mean(fresh) - c_set.mean()) / c_clean.mean())
        correct.append(c_clean)
    # the skill gate: the RMs' own length-controlled accuracy over the three seeds
    strata = length_strata(np.array(list(map(len, test.chosen))), np.array(list(map(len, test.rejected))))
    rng = np.random.default_rng(1)
    lc, _ = length_controlled_accuracy(
        np.stack(correct),
        strata,
        resample_counts(rng.integers(0, 300, (400, 300)), 300),
        seed_resamples(3, 400, rng),
        0.95,
    )
    assert lc.estimable and lc.ci95[0] > 0.5
    (tmp_path / "tension.json").write_text(
        json.dumps({"accuracy": {"helpful": {"helpful": {"length_controlled": lc.as_dict()}}}})
    )
    found = identified_relative(
        tmp_path, pd.DataFrame(rows), [10.0], {10.0: 0.06}, "attribution", "zero", None
    )
    assert found.verdict == "supported", found.evidence
    value = float(np.mean(planted))
    assert value > 0.06  # the planted effect reaches past the margin
    for part, (lo, hi) in found.ci95.items():
        assert lo <= value <= hi, (part, value, [lo, hi])
