"""Sampling grids of the cascade: model crops around a point, and the shared 1 mm spine canvas.

A grid is a shape plus an affine in the :mod:`osteoscan.io.volume` convention (array index -> LPS mm).
Crops keep the direction cosines of the source volume so that an axis-aligned CT gives axis-aligned
crops (sampling then reduces to interpolation along each axis).

Why this module samples axis-aligned grids itself instead of always calling
:func:`osteoscan.io.resample.resample_to_grid`: the pipeline's grids are small next to their sources
(a 64x96x96 crop of a 500x512x512 CT) or large and mostly empty (the spine's label map put back on
the CT grid). Interpolating only the box of source voxels a grid needs, and filling only the box of
the grid that lies inside the source, removes the full-volume passes that dominated those stages.
The arithmetic per voxel is resample_to_grid's (same coordinates, indices, weights and order of the
1-D passes), so the values are bit-identical to its single-threaded path; tests pin that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteoscan.errors import GeometryError

#: Tolerance (in source-voxel units over the grid's extent) for calling two grids axis-aligned; the
#: same as osteoscan.io.resample uses, so both take the fast path for the same grids.
AXIS_ALIGNED_TOL = 1e-6

#: A box of array indices: one slice per axis.
Box = tuple[slice, slice, slice]


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


# ------------------------------------------------------------------------------ axis-aligned plans
@dataclass(frozen=True)
class _AxisPlan:
    """Where the points of one grid axis fall along the (permuted) source axis it follows."""

    coords: np.ndarray  # fractional source index of each grid point, float64
    n_src: int  # source voxels along that axis
    first: int  # first grid index inside the source (half a voxel around the outermost centres)
    stop: int  # one past the last; first == stop when no point is inside

    @property
    def inside(self) -> slice:
        return slice(self.first, self.stop)


def _aligned_plans(
    source_shape: tuple[int, ...], affine: np.ndarray, grid: Grid
) -> tuple[list[int], list[_AxisPlan]] | None:
    """Per grid axis: the source axis it follows and its coordinates; None for an oblique grid.

    The coordinates are computed with the same operations as osteoscan.io.resample (which is what
    makes the results bit-identical to it).
    """
    m = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(grid.affine, dtype=np.float64)
    lin = m[:3, :3]
    perm: list[int] = []
    for t in range(3):
        col = lin[:, t]
        s = int(np.argmax(np.abs(col)))
        if np.any(np.abs(np.delete(col, s)) * max(grid.shape[t], 1) > AXIS_ALIGNED_TOL):
            return None
        perm.append(s)
    if sorted(perm) != [0, 1, 2]:
        return None
    plans = []
    for t in range(3):
        coords = lin[perm[t], t] * np.arange(grid.shape[t], dtype=np.float64) + m[perm[t], 3]
        n_src = int(source_shape[perm[t]])
        inside = np.flatnonzero((coords >= -0.5) & (coords <= n_src - 0.5))
        # the coordinates are monotonic, so the points inside form one run
        first, stop = (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)
        plans.append(_AxisPlan(coords=coords, n_src=n_src, first=first, stop=stop))
    return perm, plans


def _nearest_box(src: np.ndarray, plans: list[_AxisPlan]) -> np.ndarray:
    """Nearest-neighbour values of the grid points inside the source (their box only)."""
    out = src
    for axis, p in enumerate(plans):
        c = p.coords[p.inside]
        # floor(x + 0.5) and the clip: resample's rule (ties go up)
        idx = np.clip(np.floor(c + 0.5), 0, p.n_src - 1).astype(np.intp)
        lo, hi = int(idx[0]), int(idx[-1])
        lo, hi = min(lo, hi), max(lo, hi) + 1
        sl = [slice(None)] * 3
        sl[axis] = slice(lo, hi)
        out = out[tuple(sl)]  # a view: the takes below touch only the needed source voxels
        if not (len(idx) == out.shape[axis] and np.array_equal(idx - lo, np.arange(len(idx)))):
            out = np.take(out, idx - lo, axis=axis)
    return out


def _linear_box(src: np.ndarray, plans: list[_AxisPlan]) -> np.ndarray:
    """Trilinear values (float32) of the grid points inside the source (their box only).

    Indices and weights as osteoscan.io.resample._axis_plan computes them for the whole axis; the
    1-D passes run in its order (the axis shrinking most first, by whole-grid/whole-source ratios).
    """
    lerp = []
    for p in plans:
        c = np.clip(p.coords, 0.0, p.n_src - 1.0)
        i0 = np.floor(c).astype(np.intp)
        i0 = np.minimum(i0, max(p.n_src - 2, 0))
        i1 = np.minimum(i0 + 1, p.n_src - 1)
        w = (c - i0).astype(np.float32)
        w[i1 == i0] = 0.0
        lerp.append((i0[p.inside], i1[p.inside], w[p.inside]))
    # only the source box the inside points read (a view)
    box = tuple(slice(int(i0.min()), int(i1.max()) + 1) for i0, i1, _ in lerp)
    out = src[box]
    ratios = [len(p.coords) / max(p.n_src, 1) for p in plans]
    for axis in np.argsort(ratios, kind="stable"):
        i0, i1, w = lerp[axis]
        lo = box[axis].start
        if len(i0) == out.shape[axis] and np.array_equal(i0 - lo, np.arange(len(i0))) and not w.any():
            continue  # identity along this axis
        shape = [1, 1, 1]
        shape[axis] = -1
        a = np.take(out, i0 - lo, axis=axis).astype(np.float32, copy=False)
        b = np.take(out, i1 - lo, axis=axis).astype(np.float32, copy=False)
        b -= a
        b *= w.reshape(shape)
        a += b
        out = a
    return out.astype(np.float32, copy=False)


def sample_box(
    array: np.ndarray, affine: np.ndarray, grid: Grid, *, order: int
) -> tuple[Box, np.ndarray] | None:
    """The part of an axis-aligned grid that lies inside ``array``'s field of view, sampled.

    Returns ``(box, values)``: ``values`` are the samples at the grid points ``grid[box]`` (every
    other point is outside the source); the box is empty when the grid misses the source. None
    when the grid is oblique to the source or ``order`` is not 0 or 1 (use :func:`sample`).
    Order 0 keeps the dtype (labels), order 1 gives float32.

    Raises:
        GeometryError: ``array`` or ``grid`` is not 3-D.
    """
    if array.ndim != 3 or len(grid.shape) != 3:
        raise GeometryError(
            f"sampling needs a 3-D array and grid; got array shape {array.shape}, grid shape {grid.shape}"
        )
    plans_perm = _aligned_plans(array.shape, affine, grid) if order in (0, 1) else None
    if plans_perm is None:
        return None
    perm, plans = plans_perm
    box: Box = tuple(p.inside for p in plans)  # type: ignore[assignment]
    dtype = array.dtype if order == 0 else np.dtype(np.float32)
    if any(p.first == p.stop for p in plans):
        return box, np.zeros(tuple(p.stop - p.first for p in plans), dtype=dtype)
    src = np.transpose(array, perm) if perm != [0, 1, 2] else array
    values = _nearest_box(src, plans) if order == 0 else _linear_box(src, plans)
    return box, values


def sample(
    array: np.ndarray, affine: np.ndarray, grid: Grid, *, order: int, cval: float = 0.0
) -> np.ndarray:
    """Sample ``array`` (with its affine) on ``grid``; points outside get ``cval``.

    Axis-aligned grids (the usual case, both being canonical) are sampled box-wise here
    (:func:`sample_box`); oblique grids and orders above 1 go to
    :func:`osteoscan.io.resample.resample_to_grid`. Order 0 keeps the dtype (labels), order 1 gives
    float32.
    """
    src = array.view(np.uint8) if array.dtype == bool else array
    inside = sample_box(src, affine, grid, order=order)
    if inside is None:
        from osteoscan.io.resample import resample_to_grid

        out = resample_to_grid(src, affine, grid.shape, grid.affine, order=order, cval=cval)
    else:
        box, values = inside
        out = _filled(grid.shape, values.dtype, cval)
        if values.size:
            out[box] = values
    return out.astype(bool) if array.dtype == bool else out


def _filled(shape: tuple[int, ...], dtype: np.dtype, cval: float) -> np.ndarray:
    """An array of ``cval``; zeros come from calloc, so a large, mostly empty grid costs little."""
    fill = np.asarray(cval).astype(dtype)
    return np.zeros(shape, dtype=dtype) if fill == 0 else np.full(shape, fill, dtype=dtype)


def inside_box(source_shape: tuple[int, ...], affine: np.ndarray, grid: Grid) -> Box | None:
    """The box of grid points inside the source's field of view; None for an oblique grid."""
    plans_perm = _aligned_plans(source_shape, affine, grid)
    if plans_perm is None:
        return None
    return tuple(p.inside for p in plans_perm[1])  # type: ignore[return-value]


def inside_mask(source_shape: tuple[int, ...], affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Which grid points fall inside the source volume (its field of view)."""
    box = inside_box(source_shape, affine, grid)
    if box is None:
        ones = np.ones(source_shape, dtype=np.uint8)
        return sample(ones, affine, grid, order=0, cval=0).astype(bool)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[box] = True
    return mask


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
