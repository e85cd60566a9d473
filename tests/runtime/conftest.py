"""Fixtures of the runtime tests: tiny torch networks exported to ONNX on the fly, and a runtime
config whose cache and user-model folders live in the test's tmp_path (never ~/.cache)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from osteoscan.runtime import RuntimeConfig

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyUNet(nn.Module):
    """Encoder-decoder with a skip connection: the op mix of the real U-Nets (conv, norm, pool,
    upsample, concat), a few hundred parameters. ``dim`` 2 or 3; ``heads`` adds a 2nd output."""

    def __init__(self, in_ch: int = 1, out_ch: int = 3, dim: int = 3, width: int = 4, two_heads: bool = False) -> None:
        super().__init__()
        conv = nn.Conv3d if dim == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
        pool = nn.MaxPool3d if dim == 3 else nn.MaxPool2d
        self.enc = nn.Sequential(conv(in_ch, width, 3, padding=1), norm(width, affine=True), nn.LeakyReLU(0.01))
        self.down = nn.Sequential(pool(2), conv(width, 2 * width, 3, padding=1), nn.LeakyReLU(0.01))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Sequential(conv(3 * width, width, 3, padding=1), nn.LeakyReLU(0.01))
        self.head = conv(width, out_ch, 1)
        self.two_heads = two_heads

    def forward(self, x):
        e = self.enc(x)
        d = self.dec(torch.cat([e, self.up(self.down(e))], dim=1))
        y = self.head(d)
        if self.two_heads:
            pooled = y.flatten(2).mean(-1)
            return pooled[:, :1], torch.nn.functional.softplus(pooled[:, 1:2])
        return y


def make_net(seed: int = 0, **kw) -> TinyUNet:
    torch.manual_seed(seed)
    return TinyUNet(**kw).eval()


def export_onnx(net: nn.Module, path: Path, in_ch: int, spatial: tuple[int, ...],
                output_names: tuple[str, ...] = ("logits",), dynamic_spatial: bool = True) -> Path:
    x = torch.randn(1, in_ch, *spatial)
    axes = {0: "batch"}
    if dynamic_spatial:
        axes.update({2 + i: f"s{i}" for i in range(len(spatial))})
    dyn = {"image": axes, **{n: {0: "batch"} for n in output_names}}
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=list(output_names),
                      dynamic_axes=dyn, opset_version=17, dynamo=False)
    return path


@pytest.fixture
def rt_config(tmp_path: Path) -> RuntimeConfig:
    return RuntimeConfig(cache_dir=tmp_path / "cache", model_dir=tmp_path / "models")


@pytest.fixture
def tiny3d(tmp_path: Path) -> tuple[Path, Callable[[], nn.Module]]:
    """(ONNX path, factory of the same torch module) of a 3-D 1->3 channel TinyUNet."""
    factory = lambda: make_net(seed=0)
    return export_onnx(factory(), tmp_path / "tiny3d.onnx", 1, (16, 16, 16)), factory


@pytest.fixture
def smooth_input() -> Callable[..., np.ndarray]:
    """Smooth random volumes (structures, not white noise) so argmax maps have real regions."""
    from scipy.ndimage import gaussian_filter

    def make(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape).astype(np.float32)
        sig = (0, 0) + (1.5,) * (len(shape) - 2)
        x = gaussian_filter(x, sig)
        return (x / x.std()).astype(np.float32)

    return make


@pytest.fixture
def nets():
    """The helpers above for tests that build their own networks (tests cannot import conftest
    under ``--import-mode=importlib``)."""
    from types import SimpleNamespace

    return SimpleNamespace(make_net=make_net, export_onnx=export_onnx, TinyUNet=TinyUNet)
