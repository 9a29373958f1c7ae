import math

import torch

from rmtension.trainer.losses import bradley_terry_loss, split_rewards


def test_bt_loss_matches_hand_computed_values():
    r_c = torch.tensor([2.0, 0.0, -1.0])
    r_r = torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 2, 0, -2
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert math.isclose(bradley_terry_loss(r_c, r_r).item(), expected, rel_tol=1e-6)


def test_bt_loss_margin_and_centring():
    r_c, r_r = torch.tensor([1.0]), torch.tensor([0.5])
    # margin 0.5 turns the difference into 0 -> log 2
    assert math.isclose(bradley_terry_loss(r_c, r_r, margin=0.5).item(), math.log(2), rel_tol=1e-6)
    # centring adds coef * (r_c + r_r)^2 = 0.1 * 2.25
    base = math.log1p(math.exp(-0.5))
    assert math.isclose(bradley_terry_loss(r_c, r_r, center_coef=0.1).item(), base + 0.225, rel_tol=1e-6)


def test_split_rewards_layout_is_chosen_then_rejected():
    c, r = split_rewards(torch.arange(6.0))
    assert c.tolist() == [0, 1, 2] and r.tolist() == [3, 4, 5]


def test_bt_gradient_pushes_chosen_up_and_rejected_down():
    r_c = torch.tensor([0.3], requires_grad=True)
    r_r = torch.tensor([0.1], requires_grad=True)
    bradley_terry_loss(r_c, r_r).backward()
    assert r_c.grad.item() < 0 < r_r.grad.item()
