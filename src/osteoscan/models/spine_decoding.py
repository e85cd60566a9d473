"""From the coarse model's per-voxel level scores to a consistent, anatomically ordered spine.

The coarse network labels each voxel with a vertebra level, but levels look alike locally, so its
raw argmax can contain two "L3"s, a vertebra split between two labels, or a whole column shifted by
one. This decoder turns the scores into one labelled instance per vertebra:

1. softmax (if given logits) and argmax;
2. candidates = connected components of each level's argmax region (small fragments are absorbed
   into the candidate they touch, or dropped); candidates whose centroids are closer than half a
   vertebra, or that touch and lie at the same axial level (a body and its arch), are merged, and
   over-long candidates (two vertebrae under one label) are split, then merged again;
3. a Viterbi search assigns each candidate, ordered cranial to caudal, a strictly increasing
   position in the anatomical sequence C7, T1..T12, L1..L5, [L6], sacrum. Its score is the sum of
   each candidate's mean log-probability for the assigned level (thoracic levels carry the rib
   evidence, the sacrum anchors the caudal end), minus penalties for skipped levels (a gap is only
   accepted when the centroid distance says a vertebra is missing) and for dropped candidates.
   Both sequence variants (with and without a transitional L6) are tried.

So a chest-only scan (no sacrum) is anchored by the ribs' thoracic evidence, an abdomen-only scan by
the sacrum and the lumbar evidence, and levels are never duplicated or left with a gap between T12
and L1 unless the scan ends there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from osteoscan.labels import NUM_SPINE_CLASSES, VertebraLevel

log = logging.getLogger(__name__)

#: Typical cranio-caudal distance (mm) from each level's centroid to the next one's, adult spine
#: (vertebral body + disc heights; e.g. thoracic bodies ~20-25 mm, lumbar ~27-30 mm + 8-11 mm discs).
_STEP_MM: dict[VertebraLevel, float] = {
    VertebraLevel.C7: 17.0,
    **{VertebraLevel(v): 19.0 for v in range(VertebraLevel.T1, VertebraLevel.T5)},
    **{VertebraLevel(v): 22.0 for v in range(VertebraLevel.T5, VertebraLevel.T9)},
    **{VertebraLevel(v): 26.0 for v in range(VertebraLevel.T9, VertebraLevel.L1)},
    **{VertebraLevel(v): 35.0 for v in range(VertebraLevel.L1, VertebraLevel.SACRUM)},
}
#: L5 (or L6) centroid to sacrum-component centroid.
_STEP_TO_SACRUM_MM = 45.0
#: A cut vertebra at the cranial edge implies its cranial neighbour is in view (a sliver) when the
#: edge lies at least this many steps above the centroid of the vertebra below the cut one: one step
#: to the cut vertebra's centroid, half a step more to its upper end plate, where the cranial
#: neighbour's inferior end plate and its inferior articular and spinous processes (which reach down
#: beside the cut vertebra's upper half) begin.
CRANIAL_SLIVER_STEPS = 1.5

#: Components smaller than this (mm3) are fragments, not vertebra candidates (a T1 is ~15 cm3).
MIN_CANDIDATE_MM3 = 1500.0
#: Candidates whose centroids are closer than this fraction of the local step are one vertebra.
MERGE_FRACTION = 0.45
#: Penalty (in log-probability units) for each level skipped between two consecutive candidates.
SKIP_PENALTY = 3.0
#: Weight of the squared log-ratio between observed and expected centroid distance.
DISTANCE_WEIGHT = 6.0
#: Penalty for leaving a candidate unlabelled (false positive); scaled by its mean foreground prob.
DROP_PENALTY = 6.0

STANDARD_SEQUENCE: tuple[VertebraLevel, ...] = tuple(
    v for v in VertebraLevel if v not in (VertebraLevel.L6,)
)
L6_SEQUENCE: tuple[VertebraLevel, ...] = tuple(VertebraLevel)


@dataclass(frozen=True)
class DetectedVertebra:
    """One decoded vertebra (or the sacrum) on the coarse grid."""

    level: VertebraLevel
    centroid_index: tuple[float, float, float]  # (z, y, x) voxel index on the coarse grid
    centroid_lps_mm: tuple[float, float, float]
    voxel_count: int
    volume_mm3: float
    touches_border: bool  # the mask reaches the edge of the volume: the vertebra may be cut
    mask_bbox: tuple[tuple[int, int], ...]  # (start, stop) per axis, stop exclusive
    confidence: float  # mean probability of the assigned level over the instance's voxels
    raw_level: VertebraLevel  # the level with the highest mean probability before decoding


@dataclass(frozen=True)
class SpineDecoding:
    vertebrae: tuple[DetectedVertebra, ...]  # cranial to caudal
    level_map: np.ndarray  # uint8, VertebraLevel value per voxel (0 = background), relabelled
    notes: tuple[str, ...] = ()


#: Two logits further apart than this keep their order after the float32 softmax (exp(-gap) is
#: ~1e-3 below 1, thousands of float32 ulps), so where the top logit leads every other one by more,
#: the argmax of the logits is the argmax of the probabilities; closer voxels (ties, NaN, inf) are
#: decided on their exact probabilities.
_LOGIT_ORDER_GAP = 1e-3
#: Voxels per slab of the argmax: its uint8/bool/float32 temporaries then stay in the CPU cache.
_ARGMAX_SLAB_VOXELS = 1 << 18


@dataclass
class _Candidate:
    mask_index: np.ndarray  # flat indices of its voxels
    centroid: np.ndarray  # (z, y, x) index
    mean_prob: np.ndarray  # (NUM_SPINE_CLASSES,) mean softmax over its voxels
    voxel_count: int


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    x = x - x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def _softmax_columns(cols: np.ndarray) -> np.ndarray:
    """:func:`softmax` over axis 0 of (C, n) gathered voxels, bit-identical to :func:`softmax` of the
    whole (C, D, H, W) volume at those voxels.

    numpy sums a (C, D, H, W) array over axis 0 channel after channel, but a gathered (C, n) array
    (voxel-major in memory) pairwise: the channel sum is therefore written out in channel order. The
    result has the gather's memory layout (voxel-major), so reductions over it (the candidates'
    means) add in the same order as on a gather of full-volume probabilities.
    """
    x = np.array(np.asarray(cols, dtype=np.float32).T, order="C")  # (n, C)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    total = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        total += x[:, c]
    x /= total[:, None]
    return x.T


def _checked_scores(scores: np.ndarray) -> np.ndarray:
    """``scores`` as float32 (C, D, H, W) (a batch of one is unwrapped); no copy when already so."""
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim == 5:
        if s.shape[0] != 1:
            raise ValueError(f"decode one volume at a time; got a batch of {s.shape[0]}")
        s = s[0]
    if s.ndim != 4 or s.shape[0] != NUM_SPINE_CLASSES:
        raise ValueError(
            f"expected coarse scores of shape ({NUM_SPINE_CLASSES}, D, H, W); got {s.shape}"
        )
    return s


def _are_probabilities(s: np.ndarray) -> bool:
    """Whether (C, D, H, W) scores already are probabilities (by range and sum), not logits."""
    if s.size and bool((s[-1, 0] < 0.0).any()):
        return False  # a negative score (logits in the background): the same answer as the min below
    return bool(s.min() >= 0.0 and s.max() <= 1.0 and np.allclose(s.sum(axis=0), 1.0, atol=1e-2))


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """(C, D, H, W) probabilities from logits or probabilities (detected by range and sum)."""
    s = _checked_scores(scores)
    return s if _are_probabilities(s) else softmax(s, axis=0)


def first_argmax(x: np.ndarray) -> np.ndarray:
    """``np.argmax(x, axis=0).astype(np.uint8)`` (first maximum; first NaN wins), several times faster.

    numpy's argmax over the outer axis of a (C, D, H, W) array copies it into (D, H, W, C) order
    first; a max reduction plus one comparison per channel streams through it instead.
    """
    if x.shape[0] > np.iinfo(np.uint8).max + 1:
        raise ValueError(f"first_argmax returns uint8: at most 256 channels, got {x.shape[0]}")
    m = x.max(axis=0)
    idx = np.zeros(m.shape, dtype=np.uint8)
    hit = np.empty(m.shape, dtype=bool)
    for c in range(x.shape[0] - 1, -1, -1):  # the lowest channel at the maximum is written last
        np.equal(x[c], m, out=hit)
        np.copyto(idx, np.uint8(c), where=hit)
    nan = np.isnan(m)
    if nan.any():
        idx[nan] = np.argmax(x[:, nan], axis=0)
    return idx


class _Scores:
    """The coarse scores, with softmax probabilities computed only for the voxels that need them.

    Decoding needs the argmax of the probabilities everywhere but the probabilities themselves only
    on vertebra candidates (a few % of the voxels); a full-volume float32 softmax of 21 channels
    was most of the decoder's time. Results are bit-identical to computing it everywhere: the
    softmax of a voxel depends on that voxel's scores only.
    """

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = _checked_scores(scores)
        self.are_probabilities = _are_probabilities(self.scores)
        self.shape: tuple[int, int, int] = tuple(int(n) for n in self.scores.shape[1:])  # type: ignore[assignment]
        self.n_classes = int(self.scores.shape[0])

    def probs_at(self, flat_idx: np.ndarray) -> np.ndarray:
        """(C, n) probabilities of the voxels with these flat indices (in that order)."""
        cols = self.scores[(slice(None), *np.unravel_index(flat_idx, self.shape))]
        return cols if self.are_probabilities else _softmax_columns(cols)

    def argmax(self) -> np.ndarray:
        """uint8 (D, H, W): the class of highest probability per voxel (``np.argmax`` semantics).

        Computed slab by slab along axis 0 so that the per-voxel temporaries stay in cache (2x faster
        than whole-volume passes).
        """
        out = np.empty(self.shape, dtype=np.uint8)
        plane = max(1, self.shape[1] * self.shape[2])
        step = max(1, _ARGMAX_SLAB_VOXELS // plane)
        for z in range(0, self.shape[0], step):
            slab = self.scores[:, z : z + step]
            out[z : z + step] = first_argmax(slab) if self.are_probabilities else _logit_argmax(slab)
        return out


def _logit_argmax(x: np.ndarray) -> np.ndarray:
    """uint8 argmax over axis 0 of ``softmax(x)`` (first maximum, first NaN wins) from logits ``x``,
    computing the softmax only where the top two logits are closer than ``_LOGIT_ORDER_GAP``."""
    m = x.max(axis=0)
    idx = np.zeros(m.shape, dtype=np.uint8)
    near = np.zeros(m.shape, dtype=np.uint8)  # channels within the gap of the top logit
    hit = np.empty(m.shape, dtype=bool)
    gap = np.empty(m.shape, dtype=np.float32)
    for c in range(x.shape[0] - 1, -1, -1):
        np.equal(x[c], m, out=hit)
        np.copyto(idx, np.uint8(c), where=hit)
        np.subtract(m, x[c], out=gap)
        np.less_equal(gap, np.float32(_LOGIT_ORDER_GAP), out=hit)
        near += hit
    unsure = (near != 1) | ~np.isfinite(m)
    if unsure.any():
        idx[unsure] = np.argmax(_softmax_columns(x[:, unsure]), axis=0)
    return idx


def decode_spine(scores: np.ndarray, affine: np.ndarray) -> SpineDecoding:
    """Decode coarse scores (logits or probabilities, (C, D, H, W) or (1, C, D, H, W)).

    ``affine`` maps (z, y, x, 1) indices of the coarse grid to LPS mm (canonical (S, P, L) grid:
    a larger axis-0 index is more superior).
    """
    affine = np.asarray(affine, dtype=np.float64)
    probs = _Scores(scores)
    shape = probs.shape
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_mm3 = float(np.prod(spacing))
    argmax = probs.argmax()
    notes: list[str] = []
    cands = _candidates(argmax, probs, voxel_mm3)
    cands = _merge_close(cands, probs, spacing)
    cands = _split_long(cands, argmax.shape, probs, spacing)
    # a split can cut a vertebra's arch off a mislabelled neighbour (ts_example: L4's arch inside
    # the coarse "L5" component): give such pieces back to the vertebra at their axial level
    cands = _merge_close(cands, probs, spacing)
    # cranial (large z index) first
    cands.sort(key=lambda c: -c.centroid[0])
    assignment, variant_notes = _assign_levels(cands, spacing)
    notes.extend(variant_notes)
    cands, assignment = _join_sacrum(cands, assignment, probs)
    level_map = np.zeros(shape, dtype=np.uint8)
    out: list[DetectedVertebra] = []
    flat = level_map.reshape(-1)
    for cand, level in zip(cands, assignment):
        if level is None:
            notes.append(
                f"dropped a {cand.voxel_count * voxel_mm3 / 1000:.1f} cm3 component at index "
                f"{tuple(round(float(v), 1) for v in cand.centroid)} that did not fit the level sequence"
            )
            continue
        flat[cand.mask_index] = int(level)
        zyx = np.unravel_index(cand.mask_index, shape)
        bbox = tuple((int(a.min()), int(a.max()) + 1) for a in zyx)
        touches = any(lo == 0 or hi == n for (lo, hi), n in zip(bbox, shape))
        lps = affine[:3, :3] @ cand.centroid + affine[:3, 3]
        out.append(
            DetectedVertebra(
                level=level,
                centroid_index=tuple(float(v) for v in cand.centroid),
                centroid_lps_mm=tuple(float(v) for v in lps),
                voxel_count=int(cand.voxel_count),
                volume_mm3=float(cand.voxel_count * voxel_mm3),
                touches_border=bool(touches),
                mask_bbox=bbox,
                confidence=float(cand.mean_prob[int(level)]),
                raw_level=VertebraLevel(int(np.argmax(cand.mean_prob[1:]) + 1)),
            )
        )
    sliver = _cranial_sliver(out, shape, affine, spacing, best_sequence_has_l6=VertebraLevel.L6 in assignment)
    if sliver is not None:
        out.insert(0, sliver)
        notes.append(
            f"{sliver.level.name} inferred at the cranial edge of the scan: {out[1].level.name} is cut there "
            f"and the edge lies above its upper end plate, so only a sliver of {sliver.level.name} is in "
            "view (reported as incomplete, not measured)"
        )
    relabelled = [v for v in out if v.level != v.raw_level and v.voxel_count > 0]
    if relabelled:
        notes.append(
            "relabelled by the sequence decoder: "
            + ", ".join(f"{v.raw_level.name}->{v.level.name}" for v in relabelled)
        )
    return SpineDecoding(vertebrae=tuple(out), level_map=level_map, notes=tuple(notes))


def _cranial_sliver(
    out: list[DetectedVertebra],
    shape: tuple[int, ...],
    affine: np.ndarray,
    spacing: np.ndarray,
    best_sequence_has_l6: bool,
) -> DetectedVertebra | None:
    """The cranial neighbour of a vertebra cut by the top of the scan, when anatomy says it is in view.

    The coarse network cannot label a few-slice sliver (on ts_example it gives T11's three slices
    T12 or background), so the sequence is extended by one level when: the most cranial decoded
    vertebra touches the cranial face of the volume, the vertebra below it is its sequence
    neighbour, and the cranial face lies at least ``CRANIAL_SLIVER_STEPS`` steps above that lower
    vertebra's centroid. The sliver has no voxels of its own (it is never measured); its centroid is
    where the cut vertebra's mask meets the cranial face.
    """
    if len(out) < 2:
        return None
    top, below = out[0], out[1]
    seq = L6_SEQUENCE if best_sequence_has_l6 else STANDARD_SEQUENCE
    if top.level is VertebraLevel.SACRUM or top.level not in seq or seq.index(top.level) == 0:
        return None
    if top.mask_bbox[0][1] != shape[0] or below.level not in seq:
        return None
    if seq.index(below.level) != seq.index(top.level) + 1:
        return None
    edge_mm = (shape[0] - 0.5 - below.centroid_index[0]) * float(spacing[0])
    if edge_mm < CRANIAL_SLIVER_STEPS * _step_mm(top.level):
        return None
    level = seq[seq.index(top.level) - 1]
    (y0, y1), (x0, x1) = top.mask_bbox[1], top.mask_bbox[2]
    centre = np.array([shape[0] - 1.0, (y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0])
    lps = affine[:3, :3] @ centre + affine[:3, 3]
    return DetectedVertebra(
        level=level,
        centroid_index=tuple(float(v) for v in centre),
        centroid_lps_mm=tuple(float(v) for v in lps),
        voxel_count=0,
        volume_mm3=0.0,
        touches_border=True,
        mask_bbox=((shape[0] - 1, shape[0]), top.mask_bbox[1], top.mask_bbox[2]),
        confidence=0.0,
        raw_level=level,
    )


# ------------------------------------------------------------------------------ candidates
def _make_candidate(flat_idx: np.ndarray, shape: tuple[int, ...], probs: _Scores) -> _Candidate:
    zyx = np.stack(np.unravel_index(flat_idx, shape), axis=1).astype(np.float64)
    return _Candidate(
        mask_index=flat_idx,
        centroid=zyx.mean(axis=0),
        mean_prob=probs.probs_at(flat_idx).mean(axis=1),
        voxel_count=int(flat_idx.size),
    )


def _level_components(argmax: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Flat voxel indices (ascending) of each 6-connected component of each level 1..n_classes-1 of
    ``argmax``, level by level, components in raster order of their first voxel.

    Each level is labelled inside its own bounding box (one ``find_objects`` pass over the argmax
    map) rather than over the whole volume (19 whole-volume labellings were a third of decoding):
    the components, and their raster order, are the same.
    """
    shape = argmax.shape
    structure = ndimage.generate_binary_structure(3, 1)
    out: list[np.ndarray] = []
    for level, box in enumerate(ndimage.find_objects(argmax, max_label=n_classes - 1), start=1):
        if box is None:
            continue
        lab, _ = ndimage.label(argmax[box] == level, structure=structure)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            local = np.unravel_index(np.flatnonzero(lab[sl] == i), tuple(s.stop - s.start for s in sl))
            coords = tuple(c + s.start + b.start for c, s, b in zip(local, sl, box))
            out.append(np.ravel_multi_index(coords, shape))
    return out


def _candidates(argmax: np.ndarray, probs: _Scores, voxel_mm3: float) -> list[_Candidate]:
    """Per-level components; fragments are absorbed by the touching candidate or dropped."""
    shape = argmax.shape
    min_vox = max(1, int(MIN_CANDIDATE_MM3 / voxel_mm3))
    cand_map = np.zeros(shape, dtype=np.int32)  # candidate id + 1
    cands: list[_Candidate] = []
    fragments: list[np.ndarray] = []
    structure = ndimage.generate_binary_structure(3, 1)
    for flat_idx in _level_components(argmax, probs.n_classes):
        if flat_idx.size >= min_vox:
            cands.append(_make_candidate(flat_idx, shape, probs))
            cand_map.reshape(-1)[flat_idx] = len(cands)
        else:
            fragments.append(flat_idx)
    # absorb fragments into the candidate they touch most (a vertebra's edge labelled differently)
    if cands and fragments:
        grow: dict[int, list[np.ndarray]] = {}
        for frag in fragments:
            # dilate inside the fragment's bounding box (+1 voxel) only: a noisy prediction can
            # have thousands of fragments, and whole-volume dilations made decoding take minutes
            coords = np.unravel_index(frag, shape)
            lo = [max(int(c.min()) - 1, 0) for c in coords]
            hi = [min(int(c.max()) + 2, n) for c, n in zip(coords, shape)]
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            m = np.zeros(tuple(b - a for a, b in zip(lo, hi)), dtype=bool)
            m[tuple(c - a for c, a in zip(coords, lo))] = True
            ring = ndimage.binary_dilation(m, structure=structure) & ~m
            touching = cand_map[box][ring]
            touching = touching[touching > 0]
            if touching.size:
                grow.setdefault(int(np.bincount(touching).argmax()) - 1, []).append(frag)
        for ci, frags in grow.items():
            merged = np.concatenate([cands[ci].mask_index, *frags])
            cands[ci] = _make_candidate(merged, shape, probs)
    return cands


def _step_mm(level: VertebraLevel) -> float:
    if level is VertebraLevel.SACRUM:
        return _STEP_TO_SACRUM_MM
    return _STEP_MM[level]


def _expected_step_for(cand: _Candidate) -> float:
    level = VertebraLevel(int(np.argmax(cand.mean_prob[1:]) + 1))
    return _step_mm(level)


def _merge_close(cands: list[_Candidate], probs: _Scores, spacing: np.ndarray) -> list[_Candidate]:
    """Merge candidates that are one vertebra under two labels.

    Two rules, both "closer than ``MERGE_FRACTION`` of a vertebra step":

    * the centroids are that close in 3-D (one body split between two labels);
    * the candidates touch and are that close along the body axis (axis 0): vertebrae are stacked
      cranio-caudally, so two touching pieces at the same axial level are one vertebra's body and
      its posterior arch (or one side of it), however far apart antero-posteriorly. On
      ts_example the coarse model labelled L4's arch "L5" and the sequence decoder then gave that
      arch, not the real L5 body, the level L5 (see docs/VALIDATION.md). Consecutive vertebrae stay
      apart: even at the lumbosacral junction's ~45 degree tilt their axial distance is ~0.7 of a step.
      The sacrum is never merged with a vertebra this way (L5 sits in front of its upper part).
    """
    if len(cands) < 2:
        return cands
    shape = probs.shape
    merged = True
    while merged:
        merged = False
        cands.sort(key=lambda c: -c.centroid[0])
        for i in range(len(cands) - 1):
            for j in range(i + 1, len(cands)):
                a, b = cands[i], cands[j]
                limit = MERGE_FRACTION * min(_expected_step_for(a), _expected_step_for(b))
                axial = abs(float(a.centroid[0] - b.centroid[0])) * float(spacing[0])
                if axial >= limit:
                    break  # sorted by axis 0: every later candidate is further away axially
                dist = float(np.linalg.norm((a.centroid - b.centroid) * spacing))
                same_level = dist < limit or (
                    not (_is_sacrum(a) or _is_sacrum(b)) and _touch(a, b, shape)
                )
                if same_level:
                    cands[i] = _make_candidate(np.concatenate([a.mask_index, b.mask_index]), shape, probs)
                    del cands[j]
                    merged = True
                    break
            if merged:
                break
    return cands


def _is_sacrum(c: _Candidate) -> bool:
    return int(np.argmax(c.mean_prob[1:]) + 1) == int(VertebraLevel.SACRUM)


def _touch(a: _Candidate, b: _Candidate, shape: tuple[int, ...]) -> bool:
    """Whether two candidates share a face (6-connectivity), checked in the smaller one's box."""
    small, big = (a, b) if a.voxel_count <= b.voxel_count else (b, a)
    coords = np.unravel_index(small.mask_index, shape)
    lo = [max(int(c.min()) - 1, 0) for c in coords]
    hi = [min(int(c.max()) + 2, n) for c, n in zip(coords, shape)]
    m = np.zeros(tuple(h - l for l, h in zip(lo, hi)), dtype=bool)
    m[tuple(c - l for c, l in zip(coords, lo))] = True
    ring = ndimage.binary_dilation(m, structure=ndimage.generate_binary_structure(3, 1)) & ~m
    ring_flat = np.ravel_multi_index(
        tuple(r + l for r, l in zip(np.nonzero(ring), lo)), shape
    )
    return bool(np.isin(ring_flat, big.mask_index, assume_unique=False).any())


def _split_long(
    cands: list[_Candidate], shape: tuple[int, ...], probs: _Scores, spacing: np.ndarray
) -> list[_Candidate]:
    """Split candidates much longer in z than one vertebra (two vertebrae under one label)."""
    out: list[_Candidate] = []
    for c in cands:
        level = VertebraLevel(int(np.argmax(c.mean_prob[1:]) + 1))
        z = np.unravel_index(c.mask_index, shape)[0]
        extent_mm = (int(z.max()) - int(z.min()) + 1) * spacing[0]
        if level is VertebraLevel.SACRUM or extent_mm < 1.8 * _step_mm(level):
            out.append(c)
            continue
        # cut at the slice with the fewest voxels in the middle half (the disc between them)
        zmin = int(z.min())
        counts = np.bincount(z - zmin)
        n = counts.size
        lo, hi = n // 4, max(n // 4 + 1, 3 * n // 4)
        cut = zmin + lo + int(np.argmin(counts[lo:hi]))
        upper, lower = c.mask_index[z > cut], c.mask_index[z <= cut]
        # both halves must be vertebra-sized: a cut that only trims off a process tip (a spinous
        # process reaching down past the disc) would make a fragment a "vertebra" candidate
        min_vox = MIN_CANDIDATE_MM3 / float(np.prod(spacing))
        if upper.size >= min_vox and lower.size >= min_vox:
            out.append(_make_candidate(upper, shape, probs))
            out.append(_make_candidate(lower, shape, probs))
        else:
            out.append(c)
    return out


def _join_sacrum(
    cands: list[_Candidate], assignment: list[VertebraLevel | None], probs: _Scores
) -> tuple[list[_Candidate], list[VertebraLevel | None]]:
    """The candidates the sequence assigned to the sacrum as one (it is one bone), in the place of
    the first of them."""
    pieces = [i for i, lv in enumerate(assignment) if lv is VertebraLevel.SACRUM]
    if len(pieces) < 2:
        return cands, assignment
    joined = _make_candidate(np.sort(np.concatenate([cands[i].mask_index for i in pieces])), probs.shape, probs)
    keep = [i for i in range(len(cands)) if i not in pieces[1:]]
    return ([joined if i == pieces[0] else cands[i] for i in keep], [assignment[i] for i in keep])


# ------------------------------------------------------------------------------- sequence
def _assign_levels(
    cands: list[_Candidate], spacing: np.ndarray
) -> tuple[list[VertebraLevel | None], list[str]]:
    """Best anatomical labelling of cranio-caudally sorted candidates (Viterbi over positions)."""
    if not cands:
        return [], []
    best: tuple[float, list[VertebraLevel | None], tuple[VertebraLevel, ...]] | None = None
    for seq in (STANDARD_SEQUENCE, L6_SEQUENCE):
        score, assign = _viterbi(cands, seq, spacing)
        if seq is L6_SEQUENCE:
            score -= 2.0  # prior: a transitional L6 is present in a few % of people only
        if best is None or score > best[0]:
            best = (score, assign, seq)
    assert best is not None
    notes = []
    if best[2] is L6_SEQUENCE and VertebraLevel.L6 in best[1]:
        notes.append("transitional vertebra: six lumbar vertebrae (L6) decoded")
    return best[1], notes


def _viterbi(
    cands: list[_Candidate], seq: tuple[VertebraLevel, ...], spacing: np.ndarray
) -> tuple[float, list[VertebraLevel | None]]:
    n, p = len(cands), len(seq)
    eps = 1e-4
    # emission: mean log-probability of level seq[j] for candidate i, renormalised over levels
    emis = np.empty((n, p))
    for i, c in enumerate(cands):
        fg = c.mean_prob[1:].sum()
        for j, lv in enumerate(seq):
            emis[i, j] = math.log(c.mean_prob[int(lv)] / max(fg, eps) + eps)
    drop = np.array([DROP_PENALTY * float(c.mean_prob[1:].sum()) for c in cands])
    neg = -1e18
    # expected[s][j]: centroid distance from position s to position j, summed in the order s..j-1
    steps = [_step_mm(lv) for lv in seq]
    expected = [[0.0] * p for _ in range(p)]
    for s in range(p):
        run = 0.0
        for j in range(s + 1, p):
            run += steps[j - 1]
            expected[s][j] = run
    emis_rows = emis.tolist()
    sacrum = seq.index(VertebraLevel.SACRUM) if VertebraLevel.SACRUM in seq else -1
    # state: last assigned position (or -1 for none yet); score[i][j] (python floats: this loop is
    # scalar work, where numpy element access costs more than the arithmetic)
    score = [[neg] * (p + 1) for _ in range(n + 1)]  # column p = "nothing assigned yet"
    back: list[list[tuple[int, bool]]] = [[(-1, False)] * (p + 1) for _ in range(n + 1)]
    score[0][p] = 0.0
    last_centroid: dict[tuple[int, int], np.ndarray] = {}
    for i in range(n):
        row, nxt, emis_i = score[i], score[i + 1], emis_rows[i]
        centroid = cands[i].centroid
        for s in range(p + 1):
            cur = row[s]
            if cur <= neg / 2:
                continue
            # drop candidate i
            v = cur - drop[i]
            if v > nxt[s]:
                nxt[s] = v
                back[i + 1][s] = (s, False)
                if (i, s) in last_centroid:
                    last_centroid[(i + 1, s)] = last_centroid[(i, s)]
            # assign candidate i to position j > s
            if s == p:
                for j in range(p):
                    v = cur + emis_i[j]
                    if v > nxt[j]:
                        nxt[j] = v
                        back[i + 1][j] = (s, True)
                        last_centroid[(i + 1, j)] = centroid
                continue
            if s == sacrum:
                # the sacrum is one bone but often several components on the coarse grid (S1's
                # body apart from the fused lower segments): further pieces of it stay "sacrum"
                # instead of paying the drop penalty (or being taken for a transitional L6)
                v = cur + emis_i[s]
                if v > nxt[s]:
                    nxt[s] = v
                    back[i + 1][s] = (s, True)
                    last_centroid[(i + 1, s)] = last_centroid[(i, s)]
                continue
            dist = max(float(np.linalg.norm((last_centroid[(i, s)] - centroid) * spacing)), 1.0)
            expected_s = expected[s]
            for j in range(s + 1, p):
                v = cur + emis_i[j]
                v -= SKIP_PENALTY * (j - s - 1)
                v -= DISTANCE_WEIGHT * math.log(dist / expected_s[j]) ** 2
                if v > nxt[j]:
                    nxt[j] = v
                    back[i + 1][j] = (s, True)
                    last_centroid[(i + 1, j)] = centroid
    last = score[n]
    end = int(np.argmax(last))
    total = float(last[end])
    assign: list[VertebraLevel | None] = [None] * n
    s = end
    for i in range(n, 0, -1):
        prev, assigned = back[i][s]
        if assigned:
            assign[i - 1] = seq[s]
        s = prev
    return total, assign
