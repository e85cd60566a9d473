"""3-D DenseNet regressor for trabecular BMD with a predicted uncertainty (PyTorch).

Input: (N, 2, D, H, W) = normalised CT + vertebral-body mask. The features are pooled twice, once
over the whole crop (context: fat, muscle, air as internal references for the scanner's HU scale)
and once weighted by the (downsampled) body mask (where the bone is), and a small MLP maps them to
a mean and an uncertainty. Outputs are in mg/cm3 directly: ``bmd = offset + scale * z`` and
``sigma = softplus(s) * scale + sigma_floor``, so no caller has to undo a normalisation.

Batch normalisation (not instance normalisation) is used on purpose: instance normalisation would
erase the absolute intensity that BMD is measured from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(cin)
        self.conv = nn.Conv3d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], dim=1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(cin)
        self.conv = nn.Conv3d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(self.conv(F.relu(self.norm(x))), 2)


class DenseNet3d(nn.Module):
    """DenseNet with ``len(block_layers)`` dense blocks separated by 2x average-pool transitions."""

    def __init__(
        self,
        in_channels: int = 2,
        stem_channels: int = 16,
        growth: int = 12,
        block_layers: Sequence[int] = (3, 4, 6),
        bmd_offset: float = 150.0,
        bmd_scale: float = 60.0,
        sigma_floor: float = 0.5,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(stem_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(stem_channels, stem_channels, 3, stride=2, padding=1, bias=False),
        )
        blocks: list[nn.Module] = []
        ch = stem_channels
        for i, n in enumerate(block_layers):
            for _ in range(n):
                blocks.append(DenseLayer(ch, growth))
                ch += growth
            if i < len(block_layers) - 1:
                blocks.append(Transition(ch, ch // 2))
                ch //= 2
        self.features = nn.Sequential(*blocks)
        self.final_norm = nn.BatchNorm3d(ch)
        self.head = nn.Sequential(nn.Linear(2 * ch, 64), nn.ReLU(inplace=True), nn.Linear(64, 2))
        self.bmd_offset = float(bmd_offset)
        self.bmd_scale = float(bmd_scale)
        self.sigma_floor = float(sigma_floor)
        #: total downsampling of the feature maps (stem stride 2, one 2x pool per transition)
        self.reduction = 2 ** len(block_layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = x[:, 1:2]
        f = F.relu(self.final_norm(self.features(self.stem(x))))
        glob = f.mean(dim=(2, 3, 4))
        m = F.avg_pool3d(mask, self.reduction)
        weighted = (f * m).sum(dim=(2, 3, 4)) / (m.sum(dim=(2, 3, 4)) + 1e-3)
        out = self.head(torch.cat([glob, weighted], dim=1))
        bmd = self.bmd_offset + self.bmd_scale * out[:, 0:1]
        sigma = F.softplus(out[:, 1:2]) * self.bmd_scale * 0.5 + self.sigma_floor
        return bmd, sigma
