"""Sliding-window inference over a whole volume with any model callable (MONAI-style).

Every back-end shares it: ``fn`` is anything mapping a batch ``(B, C, *patch)`` to ``(B, K, *patch)``
(an array, or a dict of arrays such as an ``InferenceSession.infer`` result). When ``fn`` is an
``InferenceSession`` the batches go through ``infer_many`` so OpenVINO keeps several requests in
flight. Overlapping predictions are blended with a Gaussian importance map (nnU-Net: sigma = 1/8
of the patch) or uniformly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from osteoscan.errors import InputError

#: nnU-Net's Gaussian importance map: sigma = patch size * 1/8
GAUSSIAN_SIGMA_SCALE = 0.125

Prediction = np.ndarray | dict[str, np.ndarray]


def window_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Start indices covering ``[0, length)`` with windows of ``patch`` overlapping by >= ``overlap``."""
    if length <= patch:
        return [0]
    stride = max(1, int(patch * (1.0 - overlap)))
    n = math.ceil((length - patch) / stride) + 1
    return sorted({round(i * (length - patch) / (n - 1)) for i in range(n)})


@functools.lru_cache(maxsize=16)
def importance_map(patch: tuple[int, ...], blend: str, sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> np.ndarray:
    """Weights of one patch's voxels (max 1, strictly positive so every voxel is covered)."""
    if blend == "constant":
        return np.ones(patch, dtype=np.float32)
    if blend != "gaussian":
        raise InputError(f"unknown blend {blend!r}; use 'gaussian' or 'constant'")
    w = np.ones((), dtype=np.float64)
    for size in patch:
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-6)
        w = np.multiply.outer(w, np.exp(-0.5 * (x / sigma) ** 2))
    w = (w / w.max()).astype(np.float32)
    w[w <= 0] = w[w > 0].min()
    w = np.maximum(w, 1e-3)  # keep far corners from dividing by ~0 where only one window covers
    w.setflags(write=False)
    return w


def sliding_window_inference(
    fn: Callable[[np.ndarray], Any] | Any,
    array: np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
    blend: str = "gaussian",
    *,
    size_divisor: int = 1,
    pad_value: float = 0.0,
    output_key: str | None = None,
) -> Prediction:
    """Predict on ``array`` ``(C, *spatial)`` (2D or 3D) patch by patch; returns ``(K, *spatial)``.

    Args:
        fn: callable ``(B, C, *patch) -> (B, K, *patch)`` array or dict of such arrays, or an
            ``InferenceSession`` (batches then run through ``infer_many``).
        patch_size: spatial patch size; a volume smaller than a patch is padded up to it, and
            every dim is padded to a multiple of ``size_divisor``.
        overlap: fraction of a patch shared by neighbouring windows (0 <= overlap < 1).
        batch_size: patches per call of ``fn``.
        blend: "gaussian" (centre-weighted) or "constant".
        size_divisor: pad each spatial dim to a multiple of this (the network's down-sampling).
        pad_value: value of padded voxels (e.g. the normalised value of air).
        output_key: with a dict-returning ``fn``, blend only this output and return an array.

    Returns:
        The blended prediction (an array, or a dict when ``fn`` returns dicts and no
        ``output_key`` is given), cropped back to ``array``'s spatial shape. When one window covers
        the (padded) volume, the prediction is ``fn``'s output itself, cropped: a view, not a copy
        (for the coarse spine model that is a 21-channel volume of 100s of MB).
    """
    arr = np.asarray(array, dtype=np.float32)
    nsp = len(patch_size)
    if arr.ndim != nsp + 1:
        raise InputError(f"sliding window: array must be (C, *spatial) with {nsp} spatial dims, got shape {arr.shape}")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"sliding window: overlap must be in [0, 1), got {overlap}")
    if batch_size < 1 or size_divisor < 1:
        raise InputError("sliding window: batch_size and size_divisor must be >= 1")
    spatial = arr.shape[1:]
    padded_shape = [max(s, p) for s, p in zip(spatial, patch_size)]
    padded_shape = [int(math.ceil(s / size_divisor) * size_divisor) for s in padded_shape]
    if any(p != s for p, s in zip(padded_shape, spatial)):
        pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded_shape, spatial)]
        arr = np.pad(arr, pad, mode="constant", constant_values=pad_value)
    patch = tuple(min(int(p), s) for p, s in zip(patch_size, padded_shape))
    starts = [window_starts(s, p, overlap) for s, p in zip(padded_shape, patch)]
    grids = np.stack(np.meshgrid(*starts, indexing="ij"), axis=-1).reshape(-1, nsp)
    windows = [tuple(slice(int(a), int(a) + p) for a, p in zip(corner, patch)) for corner in grids]
    crop = (slice(None), *(slice(0, s) for s in spatial))
    if len(windows) == 1:
        return _single_window(fn, arr, crop, output_key)
    batches = [
        np.stack([arr[(slice(None), *w)] for w in windows[i : i + batch_size]])
        for i in range(0, len(windows), batch_size)
    ]
    if hasattr(fn, "infer_many"):
        preds: list[Any] = fn.infer_many(batches)
    else:
        preds = [fn(b) for b in batches]
    weight = importance_map(patch, blend)
    acc: dict[str, np.ndarray] = {}
    norm = np.zeros(padded_shape, dtype=np.float32)
    as_dict = isinstance(preds[0], Mapping)
    for bi, pred in enumerate(preds):
        outs = dict(pred) if as_dict else {"": pred}
        if output_key is not None:
            if output_key not in outs:
                raise InputError(f"sliding window: model has no output {output_key!r} (outputs: {sorted(outs)})")
            outs = {output_key: outs[output_key]}
        for key, val in outs.items():
            val = np.asarray(val, dtype=np.float32)
            if val.shape[2:] != patch:
                raise InputError(
                    f"sliding window: output {key or 'array'} has spatial shape {val.shape[2:]}, expected {patch}; "
                    "only dense (same-size) outputs can be blended"
                )
            if key not in acc:
                acc[key] = np.zeros((val.shape[1], *padded_shape), dtype=np.float32)
            val = val.copy() if not val.flags.writeable else val
            for j in range(val.shape[0]):
                w = windows[bi * batch_size + j]
                region = acc[key][(slice(None), *w)]
                np.add(region, np.multiply(val[j], weight, out=val[j]), out=region)  # in place: these are 100s of MB
        for j in range(len(batches[bi])):
            norm[windows[bi * batch_size + j]] += weight
    inv = np.reciprocal(norm[crop[1:]])
    result = {k: np.multiply(v[crop], inv, out=v[crop]) for k, v in acc.items()}
    if as_dict and output_key is None:
        return result
    return next(iter(result.values()))


def _single_window(fn: Callable[[np.ndarray], Any] | Any, arr: np.ndarray, crop: tuple[slice, ...],
                   output_key: str | None) -> Prediction:
    """One window covering the whole padded ``arr``: the weighted mean of one prediction is the
    prediction itself, so no importance map, accumulator or normaliser is made, and the output is
    returned as the cropped view of ``fn``'s result."""
    batch = np.array(arr[None], dtype=np.float32)  # fn gets its own batch, as in the windowed path
    pred = fn.infer_many([batch])[0] if hasattr(fn, "infer_many") else fn(batch)
    as_dict = isinstance(pred, Mapping)
    outs = dict(pred) if as_dict else {"": pred}
    if output_key is not None:
        if output_key not in outs:
            raise InputError(f"sliding window: model has no output {output_key!r} (outputs: {sorted(outs)})")
        outs = {output_key: outs[output_key]}
    result: dict[str, np.ndarray] = {}
    for key, val in outs.items():
        val = np.asarray(val, dtype=np.float32)
        if val.shape[2:] != arr.shape[1:]:
            raise InputError(
                f"sliding window: output {key or 'array'} has spatial shape {val.shape[2:]}, expected {arr.shape[1:]}; "
                "only dense (same-size) outputs can be blended"
            )
        result[key] = val[0][crop]
    if as_dict and output_key is None:
        return result
    return next(iter(result.values()))
