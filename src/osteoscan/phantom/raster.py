"""Rasterisation of analytic shapes on any voxel grid (numpy only).

The phantom describes anatomy in *anatomy* millimetres (x = patient left, y = posterior,
z = superior, origin at the centre of the S1 upper endplate). A :class:`Grid` is a canonical (S, P, L)
voxel grid placed in that frame with a small in-plane rotation (patient roll on the table); every
shape is evaluated only inside its own bounding box, so cost scales with the shape, not the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A canonical voxel grid: ``shape`` (nz, ny, nx), ``spacing`` (dz, dy, dx) mm.

    ``origin`` is the anatomy-frame position of voxel (0, 0, 0) *before* the in-plane rotation by
    ``roll_deg`` about the z axis through ``(0, pivot_y)``. Index (k, j, i) maps to the unrotated
    point ``origin + (i*dx, j*dy, k*dz)`` (x, y, z), which is then rotated into the anatomy frame.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # (x, y, z) of voxel (0,0,0), scanner frame, mm
    roll_deg: float = 0.0
    pivot_y: float = 0.0

    def __post_init__(self) -> None:
        c, s = np.cos(np.deg2rad(self.roll_deg)), np.sin(np.deg2rad(self.roll_deg))
        object.__setattr__(self, "_cs", (float(c), float(s)))

    # scanner frame (the image's own axes, = LPS up to a translation) ------------------------
    @property
    def z(self) -> np.ndarray:
        return self.origin[2] + np.arange(self.shape[0]) * self.spacing[0]

    @property
    def y_scan(self) -> np.ndarray:
        return self.origin[1] + np.arange(self.shape[1]) * self.spacing[1]

    @property
    def x_scan(self) -> np.ndarray:
        return self.origin[0] + np.arange(self.shape[2]) * self.spacing[2]

    def anatomy_xy(self, js: slice = slice(None), is_: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy-frame x, y (2-D arrays, float32) of the in-plane pixels ``[js, is_]``."""
        c, s = self._cs  # type: ignore[attr-defined]
        ys = self.y_scan[js][:, None] - self.pivot_y
        xs = self.x_scan[is_][None, :]
        x = c * xs - s * ys
        y = s * xs + c * ys + self.pivot_y
        return x.astype(np.float32), y.astype(np.float32)

    def to_scanner_xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy-frame (x, y) -> scanner-frame (x, y) (inverse rotation)."""
        c, s = self._cs  # type: ignore[attr-defined]
        yy = np.asarray(y) - self.pivot_y
        xs = c * np.asarray(x) + s * yy
        ys = -s * np.asarray(x) + c * yy + self.pivot_y
        return xs, ys

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (k, j, i) covering the anatomy-frame box [lo, hi] (x, y, z), or None if outside."""
        xs = np.array([lo[0], hi[0], lo[0], hi[0]])
        ys = np.array([lo[1], lo[1], hi[1], hi[1]])
        sx, sy = self.to_scanner_xy(xs, ys)
        bounds_lo = (lo[2], sy.min(), sx.min())
        bounds_hi = (hi[2], sy.max(), sx.max())
        org = (self.origin[2], self.origin[1], self.origin[0])
        out = []
        for ax in range(3):
            a = int(np.floor((bounds_lo[ax] - org[ax]) / self.spacing[ax]))
            b = int(np.ceil((bounds_hi[ax] - org[ax]) / self.spacing[ax])) + 1
            a, b = max(a, 0), min(b, self.shape[ax])
            if a >= b:
                return None
            out.append(slice(a, b))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable anatomy-frame x (1,ny,nx), y (1,ny,nx), z (nz,1,1) of a box."""
        x, y = self.anatomy_xy(sl[1], sl[2])
        z = self.z[sl[0]].astype(np.float32)[:, None, None]
        return x[None], y[None], z


def local_coords(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, center: np.ndarray, frame: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates in a local frame: columns of ``frame`` are the unit axes (u, v, w) in anatomy mm."""
    dx, dy, dz = x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])
    f = frame.astype(np.float32)
    u = dx * f[0, 0] + dy * f[1, 0] + dz * f[2, 0]
    v = dx * f[0, 1] + dy * f[1, 1] + dz * f[2, 1]
    w = dx * f[0, 2] + dy * f[1, 2] + dz * f[2, 2]
    return u, v, w


def capsule_chain(
    grid: Grid,
    points: np.ndarray,
    radii: np.ndarray,
    seg_len_mm: float = 12.0,
    with_centre: bool = False,
) -> list[tuple]:
    """Rasterise a tube along a polyline: per chunk, (box slices, depth = radius - distance, mm).

    ``points`` (n, 3) anatomy mm and ``radii`` (n,) mm along the polyline. The polyline is cut into
    chunks of about ``seg_len_mm``; each chunk is evaluated in its own bounding box, the caller takes
    ``depth > 0`` as inside (union over chunks; chunks overlap at the joints). With ``with_centre``
    each chunk also gives the mean polyline point of the chunk (for gas levels and the like).
    """
    pts = np.asarray(points, dtype=np.float64)
    rad = np.asarray(radii, dtype=np.float64)
    seglen = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    n_chunks = max(1, int(np.ceil(cum[-1] / seg_len_mm)))
    edges = np.searchsorted(cum, np.linspace(0, cum[-1], n_chunks + 1))
    out = []
    for c in range(n_chunks):
        a, b = int(edges[c]), int(edges[c + 1])
        a = max(0, min(a, len(pts) - 2))
        b = max(a + 1, min(b, len(pts) - 1))
        p = pts[a : b + 1]
        r = rad[a : b + 1]
        rmax = r.max()
        sl = grid.box(p.min(0) - rmax, p.max(0) + rmax)
        if sl is None:
            continue
        x, y, z = grid.coords(sl)
        # the distance also covers the neighbouring segments, so that boxes overlapping at a joint
        # compute the same depth there (no seams in the cortical shell)
        a2, b2 = max(a - 1, 0), min(b + 1, len(pts) - 1)
        p = pts[a2 : b2 + 1]
        r = rad[a2 : b2 + 1]
        best = None
        for s in range(len(p) - 1):
            p0, p1 = p[s], p[s + 1]
            d = p1 - p0
            L2 = float(d @ d) or 1e-9
            t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / np.float32(L2)
            t = np.clip(t, 0.0, 1.0)
            qx = x - (p0[0] + t * d[0])
            qy = y - (p0[1] + t * d[1])
            qz = z - (p0[2] + t * d[2])
            dist = np.sqrt(qx * qx + qy * qy + qz * qz)
            depth = (r[s] + t * (r[s + 1] - r[s])) - dist
            best = depth if best is None else np.maximum(best, depth)
        if with_centre:
            out.append((sl, best.astype(np.float32), p.mean(axis=0)))
        else:
            out.append((sl, best.astype(np.float32)))
    return out


def ellipsoid_depth(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    center: np.ndarray,
    frame: np.ndarray,
    semi: np.ndarray,
) -> np.ndarray:
    """Approximate inside depth (mm, > 0 inside) of an oriented ellipsoid."""
    u, v, w = local_coords(x, y, z, center, frame)
    rho = np.sqrt((u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (w / semi[2]) ** 2)
    return ((1.0 - rho) * np.float32(min(semi))).astype(np.float32)


def rotation(axis: str, deg: float) -> np.ndarray:
    """3x3 rotation matrix about the anatomy x, y or z axis."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
