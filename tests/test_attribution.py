"""Attribution patching: the pure sums on hand-worked values, and the estimate against a finite difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_reward_model

from rmtension.judges.ablate import Condition
from rmtension.judges.attribution import (
    attribute,
    estimate_conditions,
    gradient_sums,
    most_harmful,
    neuron_effects,
    set_effects,
)
from rmtension.judges.hooks import neuron_hooks, neuron_shape
from rmtension.model.arch import neuron_hook_name
from rmtension.model.encode import EncodedPairs, collate_pairs


def test_gradient_sums_by_hand():
    # one row, three positions (the last is padding), two neurons
    acts = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [9.0, 9.0]]])
    grads = torch.tensor([[[0.5, 1.0], [2.0, 0.5], [7.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0]])
    g, ag = gradient_sums(acts, grads, mask)
    # G: 0.5 + 2 = 2.5, 1 + 0.5 = 1.5; AG: 1*0.5 + 3*2 = 6.5, 2*1 + (-1)*0.5 = 1.5
    assert g.tolist() == [[2.5, 1.5]]
    assert ag.tolist() == [[6.5, 1.5]]


def test_neuron_and_set_effects_by_hand():
    g = torch.tensor([[2.5, 1.5, -1.0]])
    ag = torch.tensor([[6.5, 1.5, 2.0]])
    # zero ablation: sum_t (0 - a) g = -AG
    assert neuron_effects(g, ag).tolist() == [[-6.5, -1.5, -2.0]]
    # mean ablation to v: sum_t (v - a) g = v G - AG: 2*2.5 - 6.5 = -1.5, 0 - 1.5, -1*-1 - 2 = -1
    mean = neuron_effects(g, ag, torch.tensor([2.0, 0.0, -1.0]))
    assert mean.tolist() == [[-1.5, -1.5, -1.0]]
    masks = torch.tensor([[1, 0], [1, 1], [0, 1]])  # sets {0, 1} and {1, 2}
    assert set_effects(mean, masks).tolist() == [[-3.0, -2.5]]


def test_most_harmful_picks_the_most_negative_estimates():
    effects = torch.tensor([[0.5, -2.0, 0.0], [-1.0, -2.0, 3.0]])
    assert most_harmful(effects, 2).tolist() == [[False, True, False], [False, True, False]]
    assert most_harmful(effects, 3).tolist() == [[False, True, False], [True, True, False]]


def _enc(n: int = 5) -> EncodedPairs:
    g = torch.Generator().manual_seed(3)
    ln = lambda: int(torch.randint(3, 10, (1,), generator=g))  # noqa: E731
    tok = lambda k: torch.randint(4, 260, (k,), generator=g).tolist()  # noqa: E731
    return EncodedPairs(
        [f"p{i}" for i in range(n)], [tok(ln()) for _ in range(n)], [tok(ln()) for _ in range(n)], 0, 0
    )


def _interpolated(model, enc, cond: Condition, eps: torch.Tensor) -> torch.Tensor:
    """[P] margins with the set's neurons moved a fraction eps (a scalar tensor) of the way to their
    ablated values, at every position and layer at once, by hooks on a plain forward."""
    fns = {}
    for layer in range(cond.mask.shape[0]):
        cols = cond.mask[layer]
        if not bool(cols.any()):
            continue
        target = torch.zeros(cols.shape, dtype=torch.float64) if cond.values is None else cond.values[layer]

        def fn(acts, cols=cols, target=target):
            moved = acts + eps * (target.to(acts.dtype) - acts)
            return torch.where(cols, moved, acts)

        fns[neuron_hook_name(layer)] = fn
    with neuron_hooks(model, fns):
        r = model(**collate_pairs(enc, list(range(len(enc))), 0)).logits.squeeze(-1)
    return r[: len(enc)] - r[len(enc) :]


def _conditions(L: int, N: int) -> dict[str, Condition]:
    g = torch.Generator().manual_seed(4)
    values = torch.randn(L, N, generator=g, dtype=torch.float64)
    spread = torch.rand(L, N, generator=g) < 0.2
    one = torch.zeros(L, N, dtype=torch.bool)
    one[1, 7] = True
    return {
        "spread_zero": Condition(spread),
        "spread_mean": Condition(spread, values),
        "one_mean": Condition(one, values),
    }


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_estimate_is_the_derivative_of_the_margin_along_the_ablation(family):
    """The estimate is d margin / d eps at eps = 0 of moving the whole set a fraction eps toward its
    ablated values (all its layers at once, by hooks): the derivative by autograd w.r.t. the one scalar
    eps, in float64, and a central finite difference as a check on that."""
    model = tiny_reward_model(family, layers=3).double()
    enc = _enc()
    conds = _conditions(*neuron_shape(model))
    clean, est = estimate_conditions(model, enc, 0, conds, batch_size=2)  # other batches than below
    with torch.no_grad():
        np.testing.assert_allclose(
            clean, _interpolated(model, enc, conds["one_mean"], torch.tensor(0.0)), atol=1e-8
        )
    for key, cond in conds.items():
        eps = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        slope = torch.autograd.functional.jacobian(lambda e: _interpolated(model, enc, cond, e), eps).numpy()
        np.testing.assert_allclose(est[key] - clean, slope, rtol=1e-4, atol=1e-9, err_msg=key)
        assert np.abs(slope).max() > 1e-6  # the set moves the margin: the check has something to match
        with torch.no_grad():
            h = torch.tensor(1e-2, dtype=torch.float64)
            fd = (_interpolated(model, enc, cond, h) - _interpolated(model, enc, cond, -h)).numpy() / 2e-2
        np.testing.assert_allclose(fd, slope, atol=0.05 * np.abs(slope).max(), err_msg=key)


def test_mean_effects_rank_and_no_gradient_left_on_parameters():
    model = tiny_reward_model("gpt2", layers=2)
    att = attribute(model, _enc(4), 0, batch_size=3)
    assert att.mean_effects().shape == neuron_shape(model)
    # batches of 3 + 1 pairs give each pair the effects one batch of all 4 gives it
    whole = attribute(model, _enc(4), 0, batch_size=4)
    np.testing.assert_allclose(att.effects().numpy(), whole.effects().numpy(), rtol=1e-5, atol=1e-7)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == 0
