"""What differs between the four models during training: loss, batch size, validation metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from osteoscan.models.registry import BMD_REGRESSOR, SPINE_COARSE, TISSUE_2D, VERTEBRA_FINE
from osteoscan.train.losses import bmd_loss, segmentation_loss


def dice_per_class(pred: np.ndarray, target: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    """Hard Dice of each class present in target or prediction (absent in both: skipped)."""
    out = {}
    for c in classes:
        p, t = pred == c, target == c
        denom = int(p.sum()) + int(t.sum())
        if denom:
            out[int(c)] = 2.0 * int((p & t).sum()) / denom
    return out


def _seg_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    return segmentation_loss(model(x), y), {}


#: Cross-entropy class weights of the tissue model: IMAT is a few % of the pixels and thin.
TISSUE_CLASS_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 3.0)


def _tissue_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    w = torch.tensor(TISSUE_CLASS_WEIGHTS, device=x.device)
    return segmentation_loss(model(x), y, class_weights=w), {}


def _bmd_loss(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    mean, sigma = model(x)
    loss = bmd_loss(mean, sigma, y)
    return loss, {"mae": float((mean.detach().float() - y).abs().mean()), "sigma": float(sigma.detach().float().mean())}


def _validate_seg(n_classes: int) -> Callable[[torch.nn.Module, list, torch.device], dict[str, float]]:
    def validate(model: torch.nn.Module, samples: list, device: torch.device) -> dict[str, float]:
        dices: dict[int, list[float]] = {}
        with torch.no_grad():
            for x, y in samples:
                logits = model(torch.from_numpy(x[None]).to(device)).float().cpu().numpy()[0]
                pred = logits.argmax(axis=0)
                for c, d in dice_per_class(pred, y, range(1, n_classes)).items():
                    dices.setdefault(c, []).append(d)
        per = {f"dice_{c}": float(np.mean(v)) for c, v in sorted(dices.items())}
        per["dice_mean"] = float(np.mean([np.mean(v) for v in dices.values()])) if dices else float("nan")
        return per

    return validate


def _validate_bmd(model: torch.nn.Module, samples: list, device: torch.device) -> dict[str, float]:
    if not samples:
        return {}
    x = torch.from_numpy(np.stack([s[0] for s in samples])).to(device)
    y = np.array([float(np.asarray(s[1]).reshape(-1)[0]) for s in samples])
    with torch.no_grad():
        mean, sigma = model(x)
    m = mean.float().cpu().numpy().reshape(-1)
    r = float(np.corrcoef(m, y)[0, 1]) if len(y) > 2 and np.std(y) > 0 else float("nan")
    return {"mae": float(np.abs(m - y).mean()), "pearson_r": r, "sigma_mean": float(sigma.float().mean()), "n": len(y)}


@dataclass(frozen=True)
class Task:
    name: str
    batch_size: int
    buffer_size: int
    loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    validate: Callable[[torch.nn.Module, list, torch.device], dict[str, float]]
    #: Keep batch-norm layers in eval mode (running statistics) while training. For the BMD
    #: regressor: batches hold crops of a few subjects that share a scanner, and batch statistics
    #: would normalise away exactly the absolute intensity the model must measure; with frozen
    #: statistics training and inference see the same function.
    freeze_batchnorm: bool = False


TASKS: dict[str, Task] = {
    SPINE_COARSE: Task(SPINE_COARSE, batch_size=4, buffer_size=12, loss=_seg_loss, validate=_validate_seg(21)),
    VERTEBRA_FINE: Task(VERTEBRA_FINE, batch_size=8, buffer_size=36, loss=_seg_loss, validate=_validate_seg(3)),
    BMD_REGRESSOR: Task(BMD_REGRESSOR, batch_size=32, buffer_size=64, loss=_bmd_loss, validate=_validate_bmd,
                        freeze_batchnorm=True),
    TISSUE_2D: Task(TISSUE_2D, batch_size=16, buffer_size=32, loss=_tissue_loss, validate=_validate_seg(5)),
}
