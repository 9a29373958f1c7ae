"""The pairwise reward-model loss, as pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: float | torch.Tensor = 0.0,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Bradley-Terry loss, mean over pairs.

    r_chosen, r_rejected: [B] rewards. margin: scalar or [B].
    loss = mean(-log sigmoid(r_c - r_r - margin)) + center_coef * mean((r_c + r_r)^2)

    The centring term (Eisenstein et al. 2023, as in TRL's `center_rewards_coefficient`) pins
    the rewards' mean near zero without changing their differences.
    """
    loss = -F.logsigmoid(r_chosen - r_rejected - margin).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


def split_rewards(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[2B] rewards laid out chosen-then-rejected -> ([B], [B])."""
    return rewards.chunk(2)
