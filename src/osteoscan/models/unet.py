"""U-Nets for the cascade (PyTorch; imported only for training, export and the torch back-end).

One dimension-agnostic implementation serves three models:

* ``res_unet3d``  (spine_coarse): residual blocks, deep (5 levels) for a large receptive field,
* ``unet3d``      (vertebra_fine): plain double-conv blocks,
* ``unet2d``      (tissue_2d): plain double-conv blocks in 2-D.

Normalisation is instance norm (as in nnU-Net: robust to scanner-to-scanner intensity shifts) or
batch norm. Instance norm makes a voxel's output depend on the whole window it was computed in, so
such a network must see windows of its training patch; batch norm folds into the convolutions at
export, and the network is then a plain convolution stack that can take a whole scan in one call
(the coarse model: see ``ModelSpec.window_invariant``). Only ops that ONNX opset 17, ONNX Runtime and
OpenVINO all support are used (Conv, ConvTranspose, InstanceNormalization, LeakyRelu, Concat, Add),
and every spatial size that is a multiple of ``2 ** (levels - 1)`` is accepted, so the exported
graphs have dynamic spatial axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TCONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {
    "instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}
NORMS: tuple[str, ...] = tuple(_NORM)


def _norm(dim: int, ch: int, kind: str) -> nn.Module:
    if kind == "instance":
        return _NORM[kind][dim](ch, affine=True)
    return _NORM[kind][dim](ch)


class ConvBlock(nn.Module):
    """conv-norm-act x2, with an optional residual connection (1x1 projection when needed)."""

    def __init__(self, dim: int, cin: int, cout: int, residual: bool, norm: str = "instance") -> None:
        super().__init__()
        conv = _CONV[dim]
        self.conv1 = conv(cin, cout, 3, padding=1, bias=False)
        self.norm1 = _norm(dim, cout, norm)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(dim, cout, norm)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.residual = residual
        self.proj = conv(cin, cout, 1, bias=False) if residual and cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.residual:
            y = y + (self.proj(x) if self.proj is not None else x)
        return self.act(y)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; strided-conv down, transposed-conv up.

    Args:
        dim: 2 or 3 spatial dimensions.
        in_channels / out_channels: input channels and output classes (logits).
        channels: feature channels per level, top to bottom (``len`` = number of levels).
        residual: residual blocks instead of plain double convs.
        norm: "instance" or "batch" (see the module docstring).
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (8, 16, 32, 64, 128),
        residual: bool = False,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if norm not in _NORM:
            raise ValueError(f"UNet norm must be one of {NORMS}, got {norm!r}")
        if dim not in (2, 3):
            raise ValueError(f"UNet dim must be 2 or 3, got {dim}")
        if len(channels) < 2:
            raise ValueError(f"UNet needs at least 2 levels, got channels={tuple(channels)}")
        conv, tconv = _CONV[dim], _TCONV[dim]
        ch = [int(c) for c in channels]
        self.stem = ConvBlock(dim, in_channels, ch[0], residual, norm)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for a, b in zip(ch[:-1], ch[1:]):
            self.down.append(nn.Sequential(conv(a, b, 2, stride=2, bias=False), _norm(dim, b, norm), nn.LeakyReLU(0.01, inplace=True)))
            self.enc.append(ConvBlock(dim, b, b, residual, norm))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for a, b in zip(reversed(ch[1:]), reversed(ch[:-1])):
            self.up.append(tconv(a, b, 2, stride=2, bias=False))
            self.dec.append(ConvBlock(dim, 2 * b, b, residual, norm))
        self.head = conv(ch[0], out_channels, 1)

    @property
    def size_divisor(self) -> int:
        return 2 ** len(self.down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down, enc in zip(self.down, self.enc):
            skips.append(enc(down(skips[-1])))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)
