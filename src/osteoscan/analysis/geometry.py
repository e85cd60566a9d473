"""Geometry shared by the analyses: a metric frame for array indices, sub-voxel sampling, ray casting.

Why this exists: heights, disc spaces and endplate angles must be measured in millimetres along the
vertebra's own axes, which are oblique to the voxel grid. We therefore treat a binary mask as a
continuous field (trilinear interpolation of 0/1) whose 0.5 level is the object's surface. For an
axis-aligned box of N voxels the 0.5 crossings lie exactly on the outer voxel faces, so the measured
length is N * spacing; for oblique objects the error stays well below one voxel.

Two frames are supported, chosen by what the caller passes as ``spacing_or_affine``:

* a 3-sequence ``spacing`` (array order, mm): points are ``index * spacing`` ("grid mm"); the array is
  assumed canonical (axis 0 -> Superior, axis 1 -> Posterior, axis 2 -> Left), so superior is
  ``(1, 0, 0)``, anterior ``(0, -1, 0)`` and left ``(0, 0, 1)``;
* a 4x4 ``affine`` (index -> LPS mm, see :mod:`osteoscan.io.volume`): points are LPS mm, superior is
  ``(0, 0, 1)``, anterior ``(0, -1, 0)`` and left ``(1, 0, 0)``, whatever the array orientation.

Every point or direction a function in :mod:`osteoscan.analysis` takes or returns is in the frame of
the ``spacing_or_affine`` it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

ArrayLike = np.ndarray | Sequence[float]


@dataclass(frozen=True)
class Frame:
    """Maps array indices to millimetres and knows the anatomical directions in that frame."""

    matrix: np.ndarray  # 3x3, columns = mm step per array axis
    offset: np.ndarray  # (3,) mm position of index (0, 0, 0)
    superior: np.ndarray
    anterior: np.ndarray
    left: np.ndarray

    @classmethod
    def from_geometry(cls, spacing_or_affine: ArrayLike) -> Frame:
        """Build a frame from a spacing triple (array order) or a 4x4 index->LPS affine.

        Raises:
            ValueError: when the argument is neither, or the spacing is not positive.
        """
        g = np.asarray(spacing_or_affine, dtype=np.float64)
        if g.shape == (4, 4):
            m = g[:3, :3]
            if abs(np.linalg.det(m)) < 1e-9:
                raise ValueError(f"affine is singular: {g!r}; pass the volume's index->LPS affine")
            return cls(m.copy(), g[:3, 3].copy(), np.array([0.0, 0, 1]), np.array([0.0, -1, 0]), np.array([1.0, 0, 0]))
        if g.shape == (3,):
            if np.any(g <= 0) or not np.all(np.isfinite(g)):
                raise ValueError(f"spacing must be three positive mm values in array order; got {tuple(g)}")
            return cls(np.diag(g), np.zeros(3), np.array([1.0, 0, 0]), np.array([0.0, -1, 0]), np.array([0.0, 0, 1]))
        raise ValueError(
            f"expected a spacing (3 values, array order) or a 4x4 affine; got an array of shape {g.shape}"
        )

    @property
    def voxel_mm(self) -> np.ndarray:
        """Edge length in mm of a voxel along each array axis."""
        return np.linalg.norm(self.matrix, axis=0)

    def to_mm(self, index: np.ndarray) -> np.ndarray:
        """(..., 3) array indices -> (..., 3) mm points."""
        return _apply3(self.matrix, np.asarray(index, dtype=np.float64)) + self.offset

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) mm points -> (..., 3) fractional array indices."""
        return _apply3(np.linalg.inv(self.matrix), np.asarray(points, dtype=np.float64) - self.offset)

    def shifted(self, index_offset: np.ndarray) -> Frame:
        """The frame of a crop starting at ``index_offset`` of this frame's array (same mm points)."""
        return Frame(self.matrix, self.offset + self.matrix @ np.asarray(index_offset, dtype=np.float64),
                     self.superior, self.anterior, self.left)


def _apply3(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``p @ m.T`` for (..., 3) points, written elementwise.

    Why: a BLAS matmul with a 3-wide inner dimension gains nothing and, on a loaded multi-core
    machine, its thread pool can make it 50x slower than these three multiply-adds.
    """
    return p[..., :1] * m[:, 0] + p[..., 1:2] * m[:, 1] + p[..., 2:3] * m[:, 2]


def check_mask(mask: np.ndarray, name: str, ndim: int = 3) -> np.ndarray:
    """Return ``mask`` as a bool array, or raise ValueError naming the argument."""
    m = np.asarray(mask)
    if m.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D mask; got shape {m.shape}")
    return m.astype(bool, copy=False)


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, last + 1) index of a 3-D mask's bounding box; None when empty.

    Projections instead of ``argwhere``: a vertebra is a few 10^4 voxels of a 10^7-10^8 voxel
    volume, and listing its voxels' indices over the full array costs ~10x more than three
    ``any`` reductions restricted to the occupied slab.
    """
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if ks.size == 0:
        return None
    slab = mask[ks[0] : ks[-1] + 1]
    js = np.flatnonzero(slab.any(axis=(0, 2)))
    is_ = np.flatnonzero(slab.any(axis=(0, 1)))
    return np.array([ks[0], js[0], is_[0]]), np.array([ks[-1] + 1, js[-1] + 1, is_[-1] + 1])


def crop_to_mask(mask: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop a mask to its bounding box plus ``margin`` voxels; None when empty.

    Returns the cropped float32 field (0/1) and the index of its first voxel in the input array
    (may be negative: the margin is zero padding). Working on the crop keeps every analysis fast on
    full-size volumes.
    """
    box = bounding_box(mask)
    if box is None:
        return None
    lo, hi = box
    crop = np.asarray(mask[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
    # Zero padding (rather than neighbouring array content) keeps the 0.5 crossing at the border
    # visible to interpolation even when the object touches the edge of the array.
    crop = np.pad(crop, margin)
    return crop, lo - margin


def mask_points_mm(mask: np.ndarray, frame: Frame, max_points: int = 200_000) -> np.ndarray:
    """mm coordinates of the voxel centres of a mask (deterministically thinned when huge)."""
    idx = np.argwhere(mask)
    if len(idx) > max_points:
        idx = idx[:: int(np.ceil(len(idx) / max_points))]
    return frame.to_mm(idx)


def mask_centroid_mm(mask: np.ndarray, spacing_or_affine: ArrayLike) -> np.ndarray | None:
    """Centroid (mm, in the frame of ``spacing_or_affine``) of a mask; None when the mask is empty."""
    m = np.asarray(mask, dtype=bool)
    box = bounding_box(m) if m.ndim == 3 else None
    if box is None:
        return None
    lo, hi = box
    idx = np.argwhere(m[tuple(slice(a, b) for a, b in zip(lo, hi))])
    return Frame.from_geometry(spacing_or_affine).to_mm(idx.mean(axis=0) + lo)


def sample(field: np.ndarray, frame: Frame, points_mm: np.ndarray) -> np.ndarray:
    """Trilinear samples of a float field at mm points (0 outside the array)."""
    pts = np.asarray(points_mm, dtype=np.float64)
    idx = frame.to_index(pts.reshape(-1, 3)).T
    vals = ndimage.map_coordinates(field, idx, order=1, mode="constant", cval=0.0)
    return vals.reshape(pts.shape[:-1])


def unit(v: ArrayLike) -> np.ndarray:
    """v / |v|; raises ValueError for a zero vector."""
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    if n < 1e-12:
        raise ValueError(f"cannot normalise a zero-length direction {tuple(a)}")
    return a / n


def inside_segments(values: np.ndarray, t: np.ndarray, level: float = 0.5) -> list[tuple[float, float]]:
    """Sub-sample intervals of ``t`` where ``values >= level`` (ends linearly interpolated)."""
    inside = values >= level
    if not inside.any():
        return []
    edges = np.diff(inside.astype(np.int8))
    starts = list(np.flatnonzero(edges == 1) + 1)
    ends = list(np.flatnonzero(edges == -1))
    if inside[0]:
        starts.insert(0, 0)
    if inside[-1]:
        ends.append(len(values) - 1)
    segments = []
    for s, e in zip(starts, ends):
        lo = float(t[s])
        if s > 0:  # crossing between s-1 (outside) and s (inside)
            v0, v1 = values[s - 1], values[s]
            lo = float(t[s - 1] + (level - v0) / (v1 - v0) * (t[s] - t[s - 1]))
        hi = float(t[e])
        if e < len(values) - 1:
            v0, v1 = values[e], values[e + 1]
            hi = float(t[e] + (v0 - level) / (v0 - v1) * (t[e + 1] - t[e]))
        segments.append((lo, hi))
    return segments


def merge_segments(segments: list[tuple[float, float]], max_gap: float) -> list[tuple[float, float]]:
    """Join consecutive intervals separated by less than ``max_gap`` (holes in a segmentation)."""
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(segments):
        if merged and lo - merged[-1][1] < max_gap:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def ray_segment(
    field: np.ndarray,
    frame: Frame,
    origin: np.ndarray,
    direction: np.ndarray,
    half_length: float,
    step: float,
    prefer_t: float | None = 0.0,
    max_gap: float = 0.0,
) -> tuple[float, float] | None:
    """The inside interval (t_lo, t_hi) of ``field`` along ``origin + t * direction``.

    Intervals separated by gaps shorter than ``max_gap`` (mm) are joined first. The interval
    containing (or nearest to) ``prefer_t`` is returned when ``prefer_t`` is given, otherwise the
    longest one; None when the ray never enters the object.
    """
    t = np.arange(-half_length, half_length + step / 2, step)
    pts = origin[None, :] + t[:, None] * direction[None, :]
    segs = inside_segments(sample(field, frame, pts), t)
    if not segs:
        return None
    if max_gap > 0:
        segs = merge_segments(segs, max_gap)
    if prefer_t is not None:
        for lo, hi in segs:
            if lo <= prefer_t <= hi:
                return lo, hi
    return max(segs, key=lambda s: s[1] - s[0])
