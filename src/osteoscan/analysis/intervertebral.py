"""Intervertebral analyses: the vertebra's own axes, heights, Genant grade, disc heights, lordosis.

All measurements follow the vertebra's own axes rather than the image axes, because a tilted vertebra
(lordosis, scoliosis, a patient lying obliquely) measured along the image z axis looks taller and
its anterior/posterior heights mix. Masks are treated as continuous fields (see
:mod:`osteoscan.analysis.geometry`) so that lengths are sub-voxel accurate.

Points and directions are in the frame of ``spacing_or_affine`` (grid mm for a spacing, LPS mm for
an affine); see :mod:`osteoscan.analysis.geometry`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from osteoscan.analysis.constants import (
    GENANT_MILD_LOSS,
    GENANT_MODERATE_LOSS,
    GENANT_SEVERE_LOSS,
    HEIGHT_POSITIONS_FROM_POSTERIOR,
)
from osteoscan.analysis.geometry import (
    ArrayLike,
    Frame,
    check_mask,
    crop_to_mask,
    mask_points_mm,
    ray_segment,
    sample,
    unit,
)
from osteoscan.result import FractureShape, Heights

log = logging.getLogger(__name__)

#: Sampling step along rays, as a fraction of the smallest voxel edge (sub-voxel interpolation).
_RAY_STEP_FRACTION = 0.1
#: Coarser step for endplate rays: many rays, and the crossing is interpolated between samples.
_ENDPLATE_RAY_STEP_FRACTION = 0.25
#: Above this angle (deg) between the PCA "height" axis and the image SI axis, PCA is not trusted.
_MAX_PCA_TILT_DEG = 45.0
#: Two in-plane PCA variances closer than this ratio mean a round section: use the image AP instead.
_ROUND_SECTION_RATIO = 1.15
#: Endplate planes are fitted over this central fraction of the AP and LR extents (rim and
#: osteophytes excluded).
_ENDPLATE_CENTRAL_AP = 0.6
_ENDPLATE_CENTRAL_LR = 0.5
#: All three heights at least this much below the neighbours' (same position) = a uniform collapse.
#: Adjacent normal vertebrae differ by about 5-8 % in height (e.g. L5 vs L4), so 15 % all round is a
#: collapse; the grade then comes from the Genant loss against the expected height, so a grade-1
#: crush (20-25 % below the expected height, i.e. ~15-20 % below same-position neighbours) is seen.
_CRUSH_UNIFORM_REDUCTION = 0.15
#: How far below the guide body (beyond its own half-height) plate_below looks for the plate.
_PLATE_BELOW_REACH_MM = 30.0
#: Gaps shorter than this along a height column are holes in the segmentation (basivertebral
#: foramen, vessel channels, noise), not the end of the body.
_MAX_HOLE_MM = 6.0
#: Search range and step (deg) of the wall alignment of the AP axis (see _align_with_walls).
_WALL_SEARCH_DEG = 20.0
_WALL_SEARCH_STEP_DEG = 0.25
#: Disc heights are averaged over rays within this radius of the line between body centroids.
_DISC_CENTRAL_RADIUS_MM = 5.0


@dataclass(frozen=True)
class VertebralAxes:
    """A vertebra's own orthonormal axes (unit vectors) and centroid, in the caller's frame.

    ``source`` says how the superior axis was found: "neighbours" (line between neighbouring
    centroids, as TotalSegmentator does), "pca" (smallest-variance axis of the body) or "image"
    (fallback when PCA was ambiguous).
    """

    centroid_mm: tuple[float, float, float]
    superior: tuple[float, float, float]
    anterior: tuple[float, float, float]
    left: tuple[float, float, float]
    source: str

    def tilt_deg(self, frame_superior: ArrayLike) -> float:
        """Angle between this vertebra's superior axis and a reference (e.g. the image) axis."""
        c = float(np.clip(np.dot(self.superior, unit(frame_superior)), -1.0, 1.0))
        return math.degrees(math.acos(c))


@dataclass(frozen=True)
class HeightMeasurement:
    """Heights plus where they were measured (mm points, for figures and audits)."""

    heights: Heights
    axes: VertebralAxes
    ap_extent_mm: float | None
    #: position name ("posterior", "middle", "anterior") -> (inferior point, superior point)
    endpoints_mm: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]


class GenantAssessment(NamedTuple):
    """Genant semi-quantitative grade (0-3), fracture shape and the height loss that decided it."""

    grade: int
    shape: FractureShape
    height_loss_percent: float


def _orthonormal(superior: np.ndarray, anterior_hint: np.ndarray, left_hint: np.ndarray) -> tuple[np.ndarray, ...]:
    s = unit(superior)
    a = anterior_hint - np.dot(anterior_hint, s) * s
    if np.linalg.norm(a) < 1e-6:  # superior parallel to the AP hint: use the left hint instead
        a = np.cross(s, left_hint)
    a = unit(a)
    left = left_hint - np.dot(left_hint, s) * s - np.dot(left_hint, a) * a
    if np.linalg.norm(left) < 1e-6:
        left = np.cross(s, a)
    return s, a, unit(left)


def _axes_from_points(
    pts: np.ndarray,
    frame: Frame,
    neighbour_centroids_mm: Sequence[ArrayLike] | None,
    align_walls: bool = True,
) -> VertebralAxes:
    centroid = pts.mean(axis=0)
    centred = pts - centroid
    source = "pca"
    sup: np.ndarray | None = None
    if neighbour_centroids_mm:
        nbs = [np.asarray(p, dtype=np.float64) for p in neighbour_centroids_mm if p is not None]
        if len(nbs) >= 2:
            nbs.sort(key=lambda p: float(np.dot(p, frame.superior)))
            sup = nbs[-1] - nbs[0]
        elif len(nbs) == 1:
            sup = nbs[0] - centroid
        if sup is not None and np.linalg.norm(sup) > 1e-6:
            sup = unit(sup)
            source = "neighbours"
        else:
            sup = None
    if sup is None:
        _w, v = np.linalg.eigh(np.cov(centred.T))
        sup = v[:, 0]  # smallest variance: the body is lower than it is wide or deep
        cos_max = math.cos(math.radians(_MAX_PCA_TILT_DEG))
        if abs(float(np.dot(sup, frame.superior))) < cos_max:
            k = int(np.argmax(np.abs(v.T @ frame.superior)))
            sup = v[:, k]
            source = "image" if abs(float(np.dot(sup, frame.superior))) < cos_max else "pca"
            if source == "image":
                sup = frame.superior.copy()
    if np.dot(sup, frame.superior) < 0:
        sup = -sup
    # AP: in-plane PCA of the section perpendicular to the axis, unless the section is round.
    proj = centred - np.outer(centred @ sup, sup)
    w2, v2 = np.linalg.eigh(np.cov(proj.T))
    # the two largest eigenvectors span the plane perpendicular to sup
    cand = v2[:, 1:]
    var = w2[1:]
    ant_hint = frame.anterior
    if var[1] > 0 and var[1] / max(var[0], 1e-12) >= _ROUND_SECTION_RATIO:
        k = int(np.argmax(np.abs(cand.T @ frame.anterior)))
        ant_hint = cand[:, k] * (1.0 if np.dot(cand[:, k], frame.anterior) >= 0 else -1.0)
        # A vertebral body is wider (LR) than deep (AP); the smaller in-plane variance is AP. If the
        # eigenvector nearest the image AP is the wide one, the PCA is misleading: keep image AP.
        if k == 1:
            ant_hint = frame.anterior
    s, a, left = _orthonormal(sup, ant_hint, frame.left)
    if align_walls:
        s, a, left, refined = _align_with_walls(centred, s, a, left)
        if refined:
            source += "+walls"
    return VertebralAxes(tuple(centroid), tuple(s), tuple(a), tuple(left), source)  # type: ignore[arg-type]


def _align_with_walls(
    centred: np.ndarray, s: np.ndarray, a: np.ndarray, left: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Turn (s, a) about the left axis so that a is perpendicular to the anterior/posterior walls.

    Why: the principal axes of a wedge-shaped (fractured, or L5-like) body tilt towards the sloped
    endplate, which moves the 15/50/85 % positions and biases heights by millimetres. The walls stay
    parallel to the vertebra's original axis, and the AP width of the body's sagittal projection
    (its caliper width) is smallest exactly when measured perpendicular to them - whatever the
    endplates do. We search +-20 deg around the PCA estimate; a minimum at the search boundary means
    no wall-defined minimum (e.g. an extremely flat body) and the PCA axes are kept.
    """
    p2 = np.stack([centred @ a, centred @ s], axis=1)
    try:
        hull = p2[ConvexHull(p2).vertices]
    except (QhullError, ValueError):  # degenerate (flat) point sets: nothing to refine
        return s, a, left, False
    deltas = np.radians(np.arange(-_WALL_SEARCH_DEG, _WALL_SEARCH_DEG + 1e-9, _WALL_SEARCH_STEP_DEG))
    dirs = np.stack([np.cos(deltas), np.sin(deltas)], axis=0)  # (2, n): a' = cos d * a + sin d * s
    proj = hull @ dirs
    widths = proj.max(axis=0) - proj.min(axis=0)
    k = int(np.argmin(widths))
    if k in (0, len(deltas) - 1):
        return s, a, left, False
    d = float(deltas[k])
    a2 = math.cos(d) * a + math.sin(d) * s
    s2 = -math.sin(d) * a + math.cos(d) * s
    return unit(s2), unit(a2), left, True


def vertebral_axis(
    body_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    neighbour_centroids_mm: Sequence[ArrayLike] | None = None,
    align_walls: bool = True,
) -> VertebralAxes | None:
    """The vertebra's own superior (cranial) and anterior axes.

    Initial superior axis: with neighbour centroids (the vertebrae above and/or below, mm in the
    same frame) the line between them (or from this centroid to the only neighbour), as
    TotalSegmentator tilts its sagittal cut; otherwise the body's smallest-variance principal axis
    (a vertebral body is lower than it is wide or deep). Initial anterior axis: the in-plane
    principal axis nearest the image's anterior direction, orthogonalised.

    With ``align_walls`` (default) both are then turned in the sagittal plane until the anterior
    axis is perpendicular to the body's anterior and posterior walls (``_align_with_walls``): the
    walls keep the vertebra's own direction when the endplates are wedged or concave, and a
    neighbour line is off by half the segmental angle at the ends of a curve (L5 with only L4).
    ``source`` records which estimate was used ("neighbours", "pca", "image", "+walls").
    Returns None for an empty mask.
    """
    mask = check_mask(body_mask, "body_mask")
    frame0 = Frame.from_geometry(spacing_or_affine)
    cropped = crop_to_mask(mask, margin=0)
    if cropped is None:
        return None
    field, lo = cropped
    pts = mask_points_mm(field > 0.5, frame0.shifted(lo))
    if len(pts) < 4:
        return None
    return _axes_from_points(pts, frame0, neighbour_centroids_mm, align_walls)


def _step(frame: Frame) -> float:
    return float(frame.voxel_mm.min()) * _RAY_STEP_FRACTION


def measure_heights(
    body_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    axes: VertebralAxes | None = None,
    neighbour_centroids_mm: Sequence[ArrayLike] | None = None,
) -> HeightMeasurement | None:
    """Heights with their measurement points; see :func:`vertebral_heights`. None for an empty mask."""
    mask = check_mask(body_mask, "body_mask")
    frame0 = Frame.from_geometry(spacing_or_affine)
    cropped = crop_to_mask(mask, margin=2)
    if cropped is None:
        return None
    field, lo = cropped
    field = ndimage.binary_fill_holes(field > 0.5).astype(np.float32)  # enclosed cavities are body
    frame = frame0.shifted(lo)
    if axes is None:
        pts = mask_points_mm(field > 0.5, frame)
        if len(pts) < 4:
            return None
        axes = _axes_from_points(pts, frame, neighbour_centroids_mm)
    c = np.asarray(axes.centroid_mm)
    s = np.asarray(axes.superior)
    a = np.asarray(axes.anterior)
    step = _step(frame)
    half = float(np.linalg.norm(frame.matrix @ np.asarray(field.shape, dtype=np.float64)))  # > any chord

    # AP extent of the mid-sagittal section (plane through the centroid spanned by s and a).
    grid_step = 0.5 * float(frame.voxel_mm.min())  # coarse: both AP ends are refined by rays below
    u = np.arange(-half / 2, half / 2 + grid_step / 2, grid_step)
    ss, aa = np.meshgrid(u, u, indexing="ij")
    plane = c + ss[..., None] * s + aa[..., None] * a
    inside = sample(field, frame, plane) >= 0.5
    if not inside.any():
        return HeightMeasurement(Heights(), axes, None, {})
    a_in, s_in = aa[inside], ss[inside]
    i_post, i_ant = int(np.argmin(a_in)), int(np.argmax(a_in))
    # refine both AP ends on the row (constant s) where the grid found them
    a_post = _refine_end(field, frame, c, s, a, float(s_in[i_post]), float(a_in[i_post]), -1, step)
    a_ant = _refine_end(field, frame, c, s, a, float(s_in[i_ant]), float(a_in[i_ant]), +1, step)
    extent = a_ant - a_post

    # Column heights at 15/50/85 % of the AP extent from the posterior wall.
    s_mid = float(ss[inside].mean())
    values: dict[str, float | None] = {}
    ends: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {}
    for name, f in zip(("posterior", "middle", "anterior"), HEIGHT_POSITIONS_FROM_POSTERIOR):
        origin = c + (a_post + f * extent) * a
        seg = ray_segment(field, frame, origin, s, half / 2, step, prefer_t=s_mid, max_gap=_MAX_HOLE_MM)
        if seg is None:
            values[name] = None
            continue
        values[name] = seg[1] - seg[0]
        ends[name] = (tuple(origin + seg[0] * s), tuple(origin + seg[1] * s))  # type: ignore[assignment]
    h = Heights(anterior=values["anterior"], middle=values["middle"], posterior=values["posterior"])
    return HeightMeasurement(h, axes, extent, ends)


def _refine_end(
    field: np.ndarray, frame: Frame, c: np.ndarray, s: np.ndarray, a: np.ndarray,
    s_row: float, a_inside: float, sign: int, step: float,
) -> float:
    """Sub-voxel AP end of the section, along the row at height ``s_row`` from an inside sample."""
    origin = c + s_row * s + a_inside * a
    seg = ray_segment(field, frame, origin, a, 4.0 * float(frame.voxel_mm.max()), step, prefer_t=0.0)
    if seg is None:  # the grid sample was inside, so this only happens at the 0.5 level exactly
        return a_inside
    return a_inside + (seg[1] if sign > 0 else seg[0])


def vertebral_heights(
    body_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    axes: VertebralAxes | None = None,
    neighbour_centroids_mm: Sequence[ArrayLike] | None = None,
) -> Heights:
    """Posterior, middle and anterior heights (mm) of a vertebral body on its mid-sagittal plane.

    The plane passes through the body centroid and is spanned by the vertebra's own superior and
    anterior axes (``axes``, or :func:`vertebral_axis` of the mask / its neighbours). The AP extent
    of the body on that plane is found at sub-voxel precision; heights are the lengths, along the
    superior axis, of the body at 15 %, 50 % and 85 % of that extent from the posterior wall
    (TotalSegmentator's positions). Each length is the inside run of the interpolated mask that
    contains the section's mid-height (or the longest run), after filling enclosed cavities and
    bridging gaps shorter than 6 mm along the column (segmentation holes such as the basivertebral
    foramen must not cut a height in two).
    A position the body does not reach is None; an empty mask gives ``Heights()`` (all None).
    """
    m = measure_heights(body_mask, spacing_or_affine, axes, neighbour_centroids_mm)
    return Heights() if m is None else m.heights


def height_ratio_min(heights: Heights) -> float | None:
    """min/max of the three heights (1 = no loss; TotalSegmentator flags 1 - this > 0.2)."""
    hs = [h for h in (heights.anterior, heights.middle, heights.posterior) if h is not None]
    if len(hs) < 3 or max(hs) <= 0:
        return None
    return min(hs) / max(hs)


def genant_grade_from_loss(loss_fraction: float) -> int:
    """Genant grade for a fractional height loss: <0.20 -> 0, [0.20, 0.25) -> 1, [0.25, 0.40] -> 2, >0.40 -> 3."""
    if loss_fraction > GENANT_SEVERE_LOSS:
        return 3
    if loss_fraction >= GENANT_MODERATE_LOSS:
        return 2
    if loss_fraction >= GENANT_MILD_LOSS:
        return 1
    return 0


def _ratio_loss(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return 1.0 - num / den


def _expected_heights(neighbour_heights: Sequence[Heights]) -> tuple[dict[str, float], float | None]:
    """Position-wise reference heights and the expected (unfractured) height from the neighbours.

    The reference at each position is the neighbours' mean; the expected height is the largest
    reference (Genant compares with the vertebra's normal height, whose largest value is what the
    fracture took away from). Fractured neighbours are no reference: a neighbour whose own wedge or
    biconcave ratio shows a fracture is dropped, and when two neighbours' largest heights differ by
    more than the grade-1 threshold (a crushed one) only the taller one is used.
    """
    usable = [
        n for n in neighbour_heights
        if any(getattr(n, p) is not None for p in _POSITIONS) and not _looks_fractured(n)
    ]
    if len(usable) == 2:
        m = [max(h for h in (n.anterior, n.middle, n.posterior) if h is not None) for n in usable]
        if min(m) < (1.0 - GENANT_MILD_LOSS) * max(m):
            usable = [usable[int(np.argmax(m))]]
    refs: dict[str, float] = {}
    for pos in _POSITIONS:
        vals = [getattr(n, pos) for n in usable if getattr(n, pos) is not None]
        if vals:
            refs[pos] = float(np.mean(vals))
    return refs, (max(refs.values()) if refs else None)


_POSITIONS = ("anterior", "middle", "posterior")


def _looks_fractured(h: Heights) -> bool:
    """Own wedge (Ha/Hp) or biconcave (Hm/Hp) loss at grade 1 or more."""
    losses = [_ratio_loss(h.anterior, h.posterior), _ratio_loss(h.middle, h.posterior)]
    return any(x is not None and x >= GENANT_MILD_LOSS for x in losses)


def genant_grade(
    heights: Heights, neighbour_heights: Sequence[Heights] | None = None
) -> GenantAssessment | None:
    """Genant grade 0-3, fracture shape and height loss (%) from the three heights.

    Losses (fractions; negative ones count as 0; the largest decides grade and shape):

    * wedge ``1 - Ha/Hp`` and biconcave ``1 - Hm/Hp``: against the posterior height of the same
      vertebra (the classic morphometric ratios);
    * with neighbours (the adjacent vertebrae's heights), each height is also compared with the
      neighbours' mean at the same position, ``l_x = 1 - Hx/ref_x``: ``l_a`` counts as wedge,
      ``l_m`` as biconcave, ``l_p`` as crush. Same-position comparison keeps the natural shape
      (a lordotic L5 is taller anteriorly, so is its neighbour) out of the loss;
    * a uniform collapse: when all three ``l_x`` are at least ``_CRUSH_UNIFORM_REDUCTION`` (15 %),
      the shape is crush and the loss is ``1 - min(H)/E`` with ``E`` the expected height, the
      largest of the neighbours' position-wise means (Genant compares with the normal height).

    A neighbour whose largest height is more than 20 % below the other neighbour's is probably
    fractured and is not used. Without neighbours a crush cannot be seen. Returns None when neither
    the posterior height nor a neighbour comparison is available.
    """
    own = {"anterior": heights.anterior, "middle": heights.middle, "posterior": heights.posterior}
    wedge: list[float] = []
    bicon: list[float] = []
    crush: list[float] = []
    for bucket, loss in ((wedge, _ratio_loss(own["anterior"], own["posterior"])),
                         (bicon, _ratio_loss(own["middle"], own["posterior"]))):
        if loss is not None:
            bucket.append(loss)
    if neighbour_heights:
        refs, expected = _expected_heights(neighbour_heights)
        positionwise = {p: _ratio_loss(own[p], refs.get(p)) for p in _POSITIONS}
        for bucket, pos in ((wedge, "anterior"), (bicon, "middle"), (crush, "posterior")):
            if positionwise[pos] is not None:
                bucket.append(positionwise[pos])  # type: ignore[arg-type]
        hs = [h for h in own.values() if h is not None]
        if expected is not None and len(hs) == 3 and all(
            lp is not None and lp >= _CRUSH_UNIFORM_REDUCTION for lp in positionwise.values()
        ):
            loss = max(1.0 - min(hs) / expected, 0.0)
            grade = genant_grade_from_loss(loss)
            return GenantAssessment(grade, FractureShape.CRUSH if grade else FractureShape.NONE, 100.0 * loss)
    if not (wedge or bicon or crush):
        return None
    candidates = [
        (max(wedge, default=-math.inf), FractureShape.WEDGE),
        (max(bicon, default=-math.inf), FractureShape.BICONCAVE),
        (max(crush, default=-math.inf), FractureShape.CRUSH),
    ]
    loss, shape = max(candidates, key=lambda x: x[0])
    loss = max(loss, 0.0)
    grade = genant_grade_from_loss(loss)
    return GenantAssessment(grade, shape if grade > 0 else FractureShape.NONE, 100.0 * loss)


def _joint_crop(
    a: np.ndarray, b: np.ndarray, frame0: Frame
) -> tuple[np.ndarray, np.ndarray, Frame] | None:
    """Both masks as float fields cropped (2-voxel margin, zero-padded) to their joint bounding box,
    with the frame of that crop; None when either mask is empty."""
    both = crop_to_mask(a | b, margin=2)
    if both is None or not a.any() or not b.any():
        return None
    _, lo = both
    hi = lo + np.asarray(both[0].shape)
    sl = tuple(slice(max(x, 0), y) for x, y in zip(lo, hi))
    pad = [(max(-x, 0), max(y - n, 0)) for x, y, n in zip(lo, hi, a.shape)]
    return np.pad(a[sl].astype(np.float32), pad), np.pad(b[sl].astype(np.float32), pad), frame0.shifted(lo)


def disc_height(
    upper_body_mask: np.ndarray,
    lower_body_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    axis: ArrayLike | None = None,
    central_radius_mm: float = _DISC_CENTRAL_RADIUS_MM,
) -> float | None:
    """Mean distance (mm) between the inferior endplate above and the superior endplate below.

    Measured along the local spine axis (``axis``, default the line between the two body centroids)
    on rays through a disc of ``central_radius_mm`` around that line at mid-disc, i.e. the central
    disc height. Touching or overlapping bodies give 0. None when a mask is empty or no ray meets
    both bodies.
    """
    up = check_mask(upper_body_mask, "upper_body_mask")
    low = check_mask(lower_body_mask, "lower_body_mask")
    if up.shape != low.shape:
        raise ValueError(f"upper and lower body masks differ in shape: {up.shape} vs {low.shape}")
    crop = _joint_crop(up, low, Frame.from_geometry(spacing_or_affine))
    if crop is None:
        return None
    fu, fl, frame = crop
    cu = frame.to_mm(np.argwhere(fu > 0.5).mean(axis=0))
    cl = frame.to_mm(np.argwhere(fl > 0.5).mean(axis=0))
    d = float(np.linalg.norm(cu - cl))
    if d < 1e-6:
        return None
    ax = unit(cu - cl) if axis is None else unit(axis)
    if np.dot(ax, cu - cl) < 0:
        ax = -ax
    e1 = unit(np.cross(ax, frame.left if abs(np.dot(ax, frame.left)) < 0.9 else frame.anterior))
    e2 = np.cross(ax, e1)
    mid = (cu + cl) / 2
    step = _step(frame)
    t = np.arange(-d, d + step / 2, step)
    r = np.arange(-central_radius_mm, central_radius_mm + 1e-9, max(float(frame.voxel_mm.min()), 0.5))
    xx, yy = np.meshgrid(r, r, indexing="ij")
    keep = xx**2 + yy**2 <= central_radius_mm**2
    starts = mid + xx[keep][:, None] * e1 + yy[keep][:, None] * e2  # (rays, 3)
    pts = starts[:, None, :] + t[None, :, None] * ax  # (rays, samples, 3)
    vu, vl = sample(fu, frame, pts), sample(fl, frame, pts)
    inside_u, inside_l = vu >= 0.5, vl >= 0.5
    ok = inside_u.any(axis=1) & inside_l.any(axis=1)
    if not ok.any():
        return None
    rows = np.flatnonzero(ok)
    iu = inside_u[rows].argmax(axis=1)  # first (lowest) inside sample of the upper body
    il = inside_l.shape[1] - 1 - inside_l[rows, ::-1].argmax(axis=1)  # last (highest) of the lower body
    tu = np.array([_crossing(t, vu[r_], i, -1) for r_, i in zip(rows, iu)])
    tl = np.array([_crossing(t, vl[r_], i, +1) for r_, i in zip(rows, il)])
    return float(np.mean(np.maximum(tu - tl, 0.0)))


def _column_ends(values: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``values`` (rays sampled at ``t``), the 0.5 crossings bounding the inside run at t=0.

    Rows whose sample at t=0 is outside fall back to the outermost inside samples; rows that never
    enter the object give NaN.
    """
    inside = values >= 0.5
    n = len(t)
    i0 = int(np.argmin(np.abs(t)))
    has = inside.any(axis=1)
    first_in = inside.argmax(axis=1)
    last_in = n - 1 - inside[:, ::-1].argmax(axis=1)
    # run containing i0: first outside sample above / below it
    above = ~inside[:, i0:]
    hi_idx = np.where(above.any(axis=1), i0 + above.argmax(axis=1) - 1, n - 1)
    below = ~inside[:, : i0 + 1][:, ::-1]
    lo_idx = np.where(below.any(axis=1), i0 - below.argmax(axis=1) + 1, 0)
    centre_in = inside[:, i0]
    hi_idx = np.where(centre_in, hi_idx, last_in)
    lo_idx = np.where(centre_in, lo_idx, first_in)
    t_hi = np.full(len(values), np.nan)
    t_lo = np.full(len(values), np.nan)
    for r in np.flatnonzero(has):
        t_hi[r] = _crossing(t, values[r], int(hi_idx[r]), +1)
        t_lo[r] = _crossing(t, values[r], int(lo_idx[r]), -1)
    return t_lo, t_hi


def _crossing(t: np.ndarray, v: np.ndarray, i: int, direction: int) -> float:
    """Interpolated 0.5 crossing between inside sample ``i`` and its outside neighbour i+direction."""
    j = i + direction
    if j < 0 or j >= len(t):
        return float(t[i])
    return float(t[i] + (v[i] - 0.5) / (v[i] - v[j]) * (t[j] - t[i]))


@dataclass(frozen=True)
class EndplatePlane:
    """A least-squares plane through endplate surface points; normal points cranially."""

    point_mm: tuple[float, float, float]
    normal: tuple[float, float, float]
    n_points: int
    rms_mm: float


def endplate_plane(
    body_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    which: str,
    axes: VertebralAxes | None = None,
) -> EndplatePlane | None:
    """Fit a plane to the superior or inferior endplate of a body.

    Rays parallel to the vertebra's superior axis are cast over the central part of the body
    (``_ENDPLATE_CENTRAL_AP`` x ``_ENDPLATE_CENTRAL_LR`` of its extents, so that rims and osteophytes
    do not tilt the plane); the sub-voxel top (or bottom) of each column is a surface point, and a
    plane is fitted to them by SVD. None for an empty mask or fewer than 6 surface points.
    """
    if which not in ("superior", "inferior"):
        raise ValueError(f"which must be 'superior' or 'inferior'; got {which!r}")
    mask = check_mask(body_mask, "body_mask")
    frame0 = Frame.from_geometry(spacing_or_affine)
    cropped = crop_to_mask(mask, margin=2)
    if cropped is None:
        return None
    field, lo = cropped
    frame = frame0.shifted(lo)
    pts = mask_points_mm(field > 0.5, frame)
    if len(pts) < 4:
        return None
    if axes is None:
        axes = _axes_from_points(pts, frame, None)
    c, s, a, lft = (np.asarray(v) for v in (axes.centroid_mm, axes.superior, axes.anterior, axes.left))
    rel = pts - c
    pa, pl = rel @ a, rel @ lft
    a_lo, a_hi = np.quantile(pa, [0.5 - _ENDPLATE_CENTRAL_AP / 2, 0.5 + _ENDPLATE_CENTRAL_AP / 2])
    l_lo, l_hi = np.quantile(pl, [0.5 - _ENDPLATE_CENTRAL_LR / 2, 0.5 + _ENDPLATE_CENTRAL_LR / 2])
    g = max(float(frame.voxel_mm.min()), 0.5)
    step = float(frame.voxel_mm.min()) * _ENDPLATE_RAY_STEP_FRACTION
    half = 2.0 * (float(np.abs(rel @ s).max()) + 2.0 * float(frame.voxel_mm.max()))
    xx, yy = np.meshgrid(np.arange(a_lo, a_hi + 1e-9, g), np.arange(l_lo, l_hi + 1e-9, g), indexing="ij")
    starts = c + xx.ravel()[:, None] * a + yy.ravel()[:, None] * lft
    t = np.arange(-half / 2, half / 2 + step / 2, step)
    values = sample(field, frame, starts[:, None, :] + t[None, :, None] * s)
    t_lo, t_hi = _column_ends(values, t)
    t_end = t_hi if which == "superior" else t_lo
    found = np.isfinite(t_end)
    surface = starts[found] + t_end[found, None] * s
    if len(surface) < 6:
        return None
    sp = np.asarray(surface)
    centre = sp.mean(axis=0)
    _, sv, vt = np.linalg.svd(sp - centre, full_matrices=False)
    normal = vt[2]
    if np.dot(normal, s) < 0:
        normal = -normal
    rms = float(sv[2] / math.sqrt(len(sp)))
    return EndplatePlane(tuple(centre), tuple(normal), len(sp), rms)  # type: ignore[arg-type]


def sagittal_tilt_deg(normal: ArrayLike, spacing_or_affine: ArrayLike) -> float:
    """Tilt (deg) of a cranially pointing normal in the image's sagittal plane; + = towards posterior."""
    frame = Frame.from_geometry(spacing_or_affine)
    n = np.asarray(normal, dtype=np.float64)
    return math.degrees(math.atan2(float(np.dot(n, -frame.anterior)), float(np.dot(n, frame.superior))))


def plate_below(
    guide_body_mask: np.ndarray,
    target_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    guide_axes: VertebralAxes | None = None,
) -> EndplatePlane | None:
    """The cranial surface of ``target_mask`` facing the body above it (e.g. the S1 plate under L5).

    The sacrum's principal axes say nothing about its S1 endplate (alae, curved segments), but the
    plate lies right under L5: rays from the central part of the guide body (L5), cast caudally along
    its axis, first enter the target at the plate. A plane is fitted to those entry points (normal
    pointing cranially). None when either mask is empty or fewer than 6 rays reach the target.
    """
    guide = check_mask(guide_body_mask, "guide_body_mask")
    target = check_mask(target_mask, "target_mask")
    if guide.shape != target.shape:
        raise ValueError(f"guide and target masks differ in shape: {guide.shape} vs {target.shape}")
    crop = _joint_crop(guide, target, Frame.from_geometry(spacing_or_affine))
    if crop is None:
        return None
    fg, ft, frame = crop
    pts = mask_points_mm(fg > 0.5, frame)
    if len(pts) < 4:
        return None
    axes = guide_axes or _axes_from_points(pts, frame, None)
    c, sup, a, lft = (np.asarray(v) for v in (axes.centroid_mm, axes.superior, axes.anterior, axes.left))
    rel = pts - c
    pa, pl = rel @ a, rel @ lft
    a_lo, a_hi = np.quantile(pa, [0.5 - _ENDPLATE_CENTRAL_AP / 2, 0.5 + _ENDPLATE_CENTRAL_AP / 2])
    l_lo, l_hi = np.quantile(pl, [0.5 - _ENDPLATE_CENTRAL_LR / 2, 0.5 + _ENDPLATE_CENTRAL_LR / 2])
    g = max(float(frame.voxel_mm.min()), 0.5)
    step = float(frame.voxel_mm.min()) * _ENDPLATE_RAY_STEP_FRACTION
    reach = float(np.abs(rel @ sup).max()) + _PLATE_BELOW_REACH_MM
    xx, yy = np.meshgrid(np.arange(a_lo, a_hi + 1e-9, g), np.arange(l_lo, l_hi + 1e-9, g), indexing="ij")
    starts = c + xx.ravel()[:, None] * a + yy.ravel()[:, None] * lft
    t = np.arange(0.0, reach + step / 2, step)  # distance travelled caudally
    vals = sample(ft, frame, starts[:, None, :] - t[None, :, None] * sup)
    inside = vals >= 0.5
    hit = inside.any(axis=1)
    if hit.sum() < 6:
        return None
    rows = np.flatnonzero(hit)
    first = inside[rows].argmax(axis=1)
    t_hit = np.array([_crossing(t, vals[r], int(i), -1) for r, i in zip(rows, first)])
    surface = starts[rows] - t_hit[:, None] * sup
    centre = surface.mean(axis=0)
    _, sv, vt = np.linalg.svd(surface - centre, full_matrices=False)
    normal = vt[2] if np.dot(vt[2], sup) >= 0 else -vt[2]
    return EndplatePlane(tuple(centre), tuple(normal), len(surface), float(sv[2] / math.sqrt(len(surface))))  # type: ignore[arg-type]


def lumbar_lordosis_deg(
    upper_body_mask: np.ndarray,
    lower_body_mask: np.ndarray,
    spacing_or_affine: ArrayLike,
    lower_plate: str = "inferior",
    upper_axes: VertebralAxes | None = None,
    lower_axes: VertebralAxes | None = None,
    l5_body_mask: np.ndarray | None = None,
) -> float | None:
    """Cobb-like lumbar lordosis angle (deg) between L1's superior and L5's inferior endplate.

    ``upper_body_mask`` is L1's body; ``lower_body_mask`` is L5's body (``lower_plate="inferior"``)
    or the sacrum (``lower_plate="superior"``: the S1 plate, found under ``l5_body_mask`` with
    :func:`plate_below` when that is given, else from the sacrum's own axes or ``lower_axes``, which
    is unreliable). Each endplate normal is projected on the image's sagittal plane and its tilt
    measured towards posterior (:func:`sagittal_tilt_deg`); the angle is
    ``tilt(L1 superior) - tilt(lower plate)``.

    Sign convention: **positive = lordosis** (the segment is concave posteriorly: the L1 endplate
    faces cranially-posteriorly, the L5 endplate cranially-anteriorly), negative = kyphosis of the
    segment. None when an endplate cannot be fitted.
    """
    if lower_plate not in ("superior", "inferior"):
        raise ValueError(f"lower_plate must be 'inferior' (L5) or 'superior' (S1); got {lower_plate!r}")
    top = endplate_plane(upper_body_mask, spacing_or_affine, "superior", upper_axes)
    if lower_plate == "superior" and l5_body_mask is not None:
        bottom = plate_below(l5_body_mask, lower_body_mask, spacing_or_affine)
    else:
        bottom = endplate_plane(lower_body_mask, spacing_or_affine, lower_plate, lower_axes)
    if top is None or bottom is None:
        log.info("lordosis not measured: an endplate could not be fitted")
        return None
    return sagittal_tilt_deg(top.normal, spacing_or_affine) - sagittal_tilt_deg(bottom.normal, spacing_or_affine)
