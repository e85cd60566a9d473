"""Sampling grids of the cascade: model crops around a point, and the shared 1 mm spine canvas.

A grid is a shape plus an affine in the :mod:`osteoscan.io.volume` convention (array index -> LPS mm).
Crops keep the direction cosines of the source volume so that an axis-aligned CT gives axis-aligned
crops (sampling then reduces to interpolation along each axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, ...]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def index_to_lps(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(index, dtype=np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]


def centered_grid(
    center_lps: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float], direction: np.ndarray
) -> Grid:
    """A grid of ``shape`` voxels of ``spacing`` mm whose centre lies at ``center_lps``."""
    aff = np.eye(4)
    aff[:3, :3] = direction * np.asarray(spacing, dtype=np.float64)
    centre_index = (np.asarray(shape, dtype=np.float64) - 1) / 2
    aff[:3, 3] = np.asarray(center_lps, dtype=np.float64) - aff[:3, :3] @ centre_index
    return Grid(tuple(int(s) for s in shape), aff)


def sample(
    array: np.ndarray, affine: np.ndarray, grid: Grid, *, order: int, cval: float = 0.0
) -> np.ndarray:
    """Sample ``array`` (with its affine) on ``grid``; points outside get ``cval``.

    Delegates to :func:`osteoscan.io.resample.resample_to_grid`, which is separable (fast) when the
    grids are axis-aligned - the usual case, both being canonical. Order 0 keeps the dtype (labels),
    order 1 gives float32.
    """
    from osteoscan.io.resample import resample_to_grid

    src = array.view(np.uint8) if array.dtype == bool else array
    out = resample_to_grid(src, affine, grid.shape, grid.affine, order=order, cval=cval)
    return out.astype(bool) if array.dtype == bool else out


def inside_mask(source_shape: tuple[int, ...], affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Which grid points fall inside the source volume (its field of view)."""
    ones = np.ones(source_shape, dtype=np.uint8)
    return sample(ones, affine, grid, order=0, cval=0).astype(bool)


def union_grid(grids: list[Grid], spacing: tuple[float, float, float], direction: np.ndarray) -> Grid:
    """The smallest grid of ``spacing`` and ``direction`` containing every grid (their corners)."""
    corners = []
    for g in grids:
        ext = np.array([[0, 0, 0], np.asarray(g.shape) - 1])
        for c in np.array(np.meshgrid(*ext.T, indexing="ij")).reshape(3, -1).T:
            corners.append(g.index_to_lps(c))
    pts = np.asarray(corners)
    aff = np.eye(4)
    aff[:3, :3] = direction * np.asarray(spacing)
    inv = np.linalg.inv(aff[:3, :3])
    local = pts @ inv.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    aff[:3, 3] = aff[:3, :3] @ np.floor(lo)
    shape = tuple(int(s) for s in np.ceil(hi) - np.floor(lo) + 1)
    return Grid(shape, aff)
