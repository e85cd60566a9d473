"""Count a model's parameters and floating-point operations per patch (torch forward hooks).

FLOPs = 2 x multiply-accumulates of every Conv, ConvTranspose and Linear layer; normalisation,
activations and additions are not counted (a few % of a conv net's work).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    total = 0

    def conv_hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(mod.kernel_size)
        if isinstance(mod, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
            # every input voxel scatters cin/groups x kernel x cout products
            x = inputs[0]
            total += 2 * x.numel() * kernel * mod.out_channels // mod.groups
        else:
            total += 2 * output.numel() * kernel * mod.in_channels // mod.groups

    def linear_hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
