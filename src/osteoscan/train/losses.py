"""Loss functions: cross-entropy + soft Dice for segmentation, Gaussian NLL for BMD."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_background: bool = True) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch (target: integer class map).

    Classes absent from both target and prediction would give 0/0; only classes present in the
    target are averaged, so rare classes (one vertebra level) are not drowned by empty ones.
    """
    probs = torch.softmax(logits.float(), dim=1)
    n_cls = probs.shape[1]
    onehot = F.one_hot(target.long(), n_cls).movedim(-1, 1).float()
    dims = tuple(range(2, probs.ndim))
    inter = (probs * onehot).sum(dim=(0, *dims))
    denom = probs.sum(dim=(0, *dims)) + onehot.sum(dim=(0, *dims))
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    present = onehot.sum(dim=(0, *dims)) > 0
    if ignore_background:
        present[0] = False
    if not present.any():
        return probs.sum() * 0.0
    return 1.0 - dice[present].mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy + soft Dice (the nnU-Net default)."""
    ce = F.cross_entropy(logits.float(), target.long(), weight=class_weights)
    return ce + soft_dice_loss(logits, target)


def gaussian_nll(mean: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under N(mean, sigma^2) (constant dropped)."""
    mean, sigma, target = mean.float(), sigma.float(), target.float()
    return (torch.log(sigma) + 0.5 * ((target - mean) / sigma) ** 2).mean()


def bmd_loss(mean: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL plus a small L1 term that keeps the mean learning while sigma is still large."""
    return gaussian_nll(mean, sigma, target) + 0.02 * (mean.float() - target.float()).abs().mean()
