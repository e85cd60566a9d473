"""The one place model preprocessing lives: HU normalisation and crop extraction, read from a spec.

Training (``osteoscan.train``), evaluation and the pipeline all call these functions, so a network
always sees its input exactly as it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osteoscan.models.spec import ModelSpec, Normalisation


def normalise_hu(hu: np.ndarray, spec: ModelSpec | Normalisation) -> np.ndarray:
    """Map HU to the network's input range: clip to the spec's window, scale linearly to [0, 1].

    The bottom of the window maps to 0, so air, the spec's padding value and the zero padding that a
    sliding window or the convolutions themselves add all look the same to the network. Returns
    float32 of the same shape. Non-finite values (NaN from a bad resample) become the padding value.
    """
    norm = spec.normalisation if isinstance(spec, ModelSpec) else spec
    src = np.asarray(hu)
    x = src.astype(np.float32, copy=False)
    if src.dtype.kind not in "biu" and not np.all(np.isfinite(x)):  # integer CT (int16) is always finite
        x = np.where(np.isfinite(x), x, np.float32(norm.pad_hu))
    lo, hi = np.float32(norm.hu_min), np.float32(norm.hu_max)
    # (clip(x) - lo) * scale in one float32 array updated in place (never the caller's array)
    out = np.clip(x, lo, hi, out=None if x is src else x)
    out -= lo
    out *= np.float32(1.0 / (hi - lo))
    return out


def crop_start(center_index: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """First index of a crop of ``size`` whose centre ((size - 1) / 2) lies at ``center_index``.

    The same centre convention as :func:`osteoscan.pipeline.grid.centered_grid`, rounded to whole
    voxels.
    """
    c = np.asarray(center_index, dtype=np.float64)
    s = np.asarray(size, dtype=np.float64)
    if c.shape != s.shape:
        raise ValueError(f"center_index {tuple(c)} and size {tuple(s)} must have the same length")
    return np.floor(c - (s - 1) / 2 + 0.5).astype(int)


def extract_crop(
    array: np.ndarray, center_index: Sequence[float], size: Sequence[int], pad_value: float = 0.0
) -> np.ndarray:
    """Crop ``size`` voxels of ``array`` centred on ``center_index`` (any number of axes).

    Parts of the crop outside the array are filled with ``pad_value`` (use the spec's
    ``normalisation.pad_hu`` for HU arrays, 0 for masks). The dtype is kept.
    """
    size = tuple(int(s) for s in size)
    if len(size) != array.ndim:
        raise ValueError(f"crop size {size} has {len(size)} axes but the array has {array.ndim}")
    start = crop_start(center_index, size)
    out = np.full(size, pad_value, dtype=array.dtype)
    src, dst = [], []
    for a, (st, n, dim) in enumerate(zip(start, size, array.shape)):
        lo, hi = max(st, 0), min(st + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))
    out[tuple(dst)] = array[tuple(src)]
    return out


def pad_to_multiple(array: np.ndarray, divisor: int, pad_value: float, axes: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad ``axes`` of ``array`` at the end up to a multiple of ``divisor``.

    Returns the padded array and the slices that cut the original region back out of it.
    """
    pads = [(0, 0)] * array.ndim
    for a in axes:
        n = array.shape[a]
        pads[a] = (0, (-n) % divisor)
    out = np.pad(array, pads, mode="constant", constant_values=pad_value)
    return out, tuple(slice(0, n) for n in array.shape)
