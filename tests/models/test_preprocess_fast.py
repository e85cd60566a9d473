"""normalise_hu's in-place arithmetic gives bit for bit the plain expression, and never writes into
the caller's array."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.models.preprocess import normalise_hu
from osteoscan.models.spec import Normalisation

NORM = Normalisation(hu_min=-500.0, hu_max=1500.0, pad_hu=-1024.0)


def _plain(hu: np.ndarray) -> np.ndarray:
    x = np.asarray(hu, dtype=np.float32)
    x = np.where(np.isfinite(x), x, np.float32(NORM.pad_hu))
    lo, hi = np.float32(NORM.hu_min), np.float32(NORM.hu_max)
    return ((np.clip(x, lo, hi) - lo) * np.float32(1.0 / (hi - lo))).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_normalise_hu_is_the_plain_expression(dtype) -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-2000, 3000, size=(7, 8, 9)).astype(dtype)
    if dtype is not np.int16:
        hu[0, 0, :3] = [np.nan, np.inf, -np.inf]
    if dtype is np.float64:
        hu[1, 1, 1] = 1e300  # finite in float64, inf in float32: the padding value, as before
    before = hu.copy()
    out = normalise_hu(hu, NORM)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_array_equal(out, _plain(hu))
    np.testing.assert_array_equal(hu, before)  # the input is left alone
    assert not np.shares_memory(out, hu)
