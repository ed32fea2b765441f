"""Group-relative advantages (DESIGN §4): A_i = (r_i - mean_g) / (std_g + eps), population std.

Rows of one group (one prompt's G completions) need not be adjacent. Group ids may be strings
(a list, e.g. the prompt_id column) or integers (list, numpy array or tensor). Statistics are
taken in float64 so that groups of identical rewards are detected exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _grouped(rewards_B, group_ids_B) -> tuple[np.ndarray, np.ndarray, int]:
    """(rewards [B] float64, group index [B] in 0..num_groups-1, num_groups)."""
    if isinstance(rewards_B, torch.Tensor):
        rewards_B = rewards_B.detach().cpu().numpy()
    if isinstance(group_ids_B, torch.Tensor):
        group_ids_B = group_ids_B.detach().cpu().numpy()
    rewards = np.asarray(rewards_B, dtype=np.float64).reshape(-1)  # [B]
    ids = np.asarray(group_ids_B).reshape(-1)  # [B]
    if rewards.shape != ids.shape:
        raise ValueError(f"rewards ({rewards.size}) and group ids ({ids.size}) differ in length")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    _, group_B = np.unique(ids, return_inverse=True)
    group_B = group_B.reshape(-1)  # numpy 2.0 briefly returned it with the input's shape
    return rewards, group_B, int(group_B.max()) + 1 if group_B.size else 0


def _zero_std(rewards: np.ndarray, group_B: np.ndarray, num_groups: int) -> np.ndarray:
    # max == min rather than std == 0: the float std of equal values need not be exactly 0
    high = np.full(num_groups, -np.inf)
    low = np.full(num_groups, np.inf)
    np.maximum.at(high, group_B, rewards)
    np.minimum.at(low, group_B, rewards)
    return (high == low)[group_B]  # [B]


def zero_std_groups(rewards_B, group_ids_B: Sequence | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Bool [B]: True for rows whose group has identical rewards (A = 0, no learning signal);
    what ``drop_zero_std_groups`` drops. A group of one row counts as zero-variance."""
    rewards, group_B, num_groups = _grouped(rewards_B, group_ids_B)
    return torch.from_numpy(_zero_std(rewards, group_B, num_groups))


def group_advantages(
    rewards_B,
    group_ids_B: Sequence | np.ndarray | torch.Tensor,
    eps: float = 1e-6,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[B] advantages (r_i - mean_g) / (std_g + eps), population std (ddof = 0).

    A group whose rewards are all equal gives exactly 0, whatever eps is (eps = 0 is allowed).
    """
    rewards, group_B, num_groups = _grouped(rewards_B, group_ids_B)
    count_g = np.bincount(group_B, minlength=num_groups).astype(np.float64)  # [num_groups]
    mean_g = np.bincount(group_B, weights=rewards, minlength=num_groups) / np.maximum(count_g, 1)
    centred = rewards - mean_g[group_B]  # [B]
    var_g = np.bincount(group_B, weights=centred**2, minlength=num_groups) / np.maximum(count_g, 1)
    zero = _zero_std(rewards, group_B, num_groups)  # [B]
    std = np.sqrt(var_g)[group_B] + eps  # [B]
    advantages = np.where(zero, 0.0, centred / np.where(zero, 1.0, std))  # [B]
    return torch.from_numpy(advantages).to(dtype)
