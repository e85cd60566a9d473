"""Synthetic vertebral bodies with known geometry, voxelised on the fly (test helper, not a test)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Body:
    """A vertebral-body-like solid in its own frame (u superior, v anterior, w left), mm.

    The inferior endplate is flat at u = -posterior/2 (plus a concavity); the superior endplate runs
    linearly from the posterior height (v = -depth/2) to the anterior height (v = +depth/2), so a
    wedge has a sloped superior endplate. ``concavity`` (mm) pushes both endplates inwards as a dome
    (largest in the centre): a biconcave body. ``section`` is "box" or "ellipse" (axial section).
    """

    posterior: float = 25.0
    anterior: float = 25.0
    depth: float = 34.0  # AP
    width: float = 44.0  # LR
    concavity: float = 0.0
    section: str = "ellipse"

    def height_at(self, v: float, w: float = 0.0) -> float:
        f = v / self.depth + 0.5
        h = self.posterior + f * (self.anterior - self.posterior)
        return h - 2.0 * self._dome(v, w)

    def _dome(self, v, w):
        r2 = (2 * v / self.depth) ** 2 + (2 * w / self.width) ** 2
        return self.concavity * np.clip(1.0 - r2, 0.0, None)

    def inside(self, u, v, w):
        if self.section == "box":
            sec = (np.abs(v) <= self.depth / 2) & (np.abs(w) <= self.width / 2)
        else:
            sec = (2 * v / self.depth) ** 2 + (2 * w / self.width) ** 2 <= 1.0
        f = v / self.depth + 0.5
        bottom = -self.posterior / 2 + self._dome(v, w)
        top = -self.posterior / 2 + self.posterior + f * (self.anterior - self.posterior) - self._dome(v, w)
        return sec & (u >= bottom) & (u <= top)

    def truth_heights(self) -> dict[str, float]:
        return {
            name: self.height_at(-self.depth / 2 + f * self.depth)
            for name, f in (("posterior", 0.15), ("middle", 0.5), ("anterior", 0.85))
        }


def tilted_axes(tilt_deg: float, roll_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Superior/anterior/left unit vectors in grid-mm (S, P, L) for a sagittal tilt and a coronal roll.

    Positive tilt turns the superior axis towards posterior (+P) - the L1 endplate in lordosis.
    """
    t, r = math.radians(tilt_deg), math.radians(roll_deg)
    s = np.array([math.cos(t), math.sin(t), 0.0])
    a = np.array([math.sin(t), -math.cos(t), 0.0])
    left = np.array([0.0, 0.0, 1.0])
    # roll about the anterior axis (coronal tilt)
    s2 = math.cos(r) * s + math.sin(r) * left
    l2 = -math.sin(r) * s + math.cos(r) * left
    return s2, a, l2


def voxelise(
    body: Body,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre_mm: tuple[float, float, float],
    tilt_deg: float = 0.0,
    roll_deg: float = 0.0,
) -> np.ndarray:
    """Bool mask (voxel centres inside) of ``body`` placed at ``centre_mm`` (grid mm) with a tilt."""
    s, a, left = tilted_axes(tilt_deg, roll_deg)
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    p = idx * np.asarray(spacing) - np.asarray(centre_mm)
    return body.inside(p @ s, p @ a, p @ left).reshape(shape)
