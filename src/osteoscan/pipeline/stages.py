"""The stages of the cascade: typed functions over frozen dataclasses.

Each stage takes what the previous ones produced and returns a new frozen value; nothing is shared
or mutated between stages. The order in which they run is written down once, in
:mod:`osteoscan.pipeline.screen`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from osteoscan.io import CTVolume
from osteoscan.labels import (
    BODY_OFFSET,
    POSTERIOR_OFFSET,
    Tissue,
    VertebraLevel,
    VertebraPart,
)
from osteoscan.pipeline.cascade import LoadedModel
from osteoscan.pipeline.grid import (
    Box,
    Grid,
    centered_grid,
    inside_box,
    inside_mask,
    sample,
    sample_box,
    union_grid,
)

log = logging.getLogger(__name__)

#: HU given to points outside the scanned field of view when cropping (air).
OUTSIDE_HU = -1024.0
#: Minimum z extent (mm) for the 3-D spine path; thinner inputs take the single-slice L3 path.
MIN_Z_EXTENT_FOR_SPINE_MM = 40.0


# --------------------------------------------------------------------------------------------- load
@dataclass(frozen=True)
class LoadedStudy:
    volume: CTVolume  # canonical (S, P, L)
    source_datasets: tuple[Any, ...] | None  # header-only pydicom datasets in axis-0 order (DICOM input)
    input_path: str


def load_study(path: str | Path, series_uid: str | None = None) -> LoadedStudy:
    """Read a DICOM folder/zip/file or a NIfTI file into a canonical CT volume.

    Raises:
        InputError: unreadable input; UnsupportedSeriesError: not a CT.
    """
    from osteoscan.io.dicom import load_dicom_series
    from osteoscan.io.load import load_ct
    from osteoscan.io.nifti import is_nifti_path

    if is_nifti_path(path):
        return LoadedStudy(volume=load_ct(path), source_datasets=None, input_path=str(path))
    series = load_dicom_series(path, series_uid=series_uid)
    return LoadedStudy(volume=series.volume, source_datasets=tuple(series.datasets), input_path=str(path))


def z_extent_mm(volume: CTVolume) -> float:
    return volume.shape[0] * volume.spacing[0]


# ------------------------------------------------------------------------------------ localisation
@dataclass(frozen=True)
class DetectedLevel:
    level: VertebraLevel
    centroid_lps_mm: np.ndarray
    touches_border: bool


@dataclass(frozen=True)
class SpineLocalisation:
    detected: tuple[DetectedLevel, ...]  # cranial to caudal
    level_map: np.ndarray  # uint8 VertebraLevel per voxel of the coarse grid (0 = background)
    grid: Grid  # the coarse grid
    notes: tuple[str, ...] = ()


def localise_spine(volume: CTVolume, coarse: LoadedModel) -> SpineLocalisation:
    """Coarse level segmentation (4 mm for spine_coarse 0.2) and the decoded level sequence."""
    from osteoscan.io import resample
    from osteoscan.models.spine_decoding import decode_spine
    from osteoscan.pipeline.body_crop import coarse_logits, embed, window_affine

    low = resample(volume, tuple(coarse.spec.input_spacing_mm), order=1)
    logits, window = coarse_logits(lambda batch: coarse.infer(batch)["logits"], low.array, coarse.spec)
    # decoded on the window (the air around it holds no vertebra), the level map then put back; the
    # window holds the whole body, so a vertebra reaching its side reaches the field's side too
    # (decode_spine's touches_border keeps its meaning)
    decoded = decode_spine(logits, window_affine(low.affine, window))
    detected = tuple(
        DetectedLevel(
            level=VertebraLevel(int(v.level)),
            centroid_lps_mm=np.asarray(v.centroid_lps_mm, dtype=np.float64),
            touches_border=bool(v.touches_border),
        )
        for v in decoded.vertebrae
    )
    return SpineLocalisation(
        detected=detected,
        level_map=embed(np.asarray(decoded.level_map, dtype=np.uint8), window, low.shape),
        grid=Grid(low.shape, low.affine),
        notes=tuple(getattr(decoded, "notes", ())),
    )


def levels_for_fine_model(
    localisation: SpineLocalisation, default_levels: frozenset[VertebraLevel], all_levels: bool
) -> tuple[DetectedLevel, ...]:
    """Which detected vertebrae get the fine model.

    The default set; every vertebra when asked; and every vertebra when no lumbar level is in view
    (a chest CT: thoracic BMD and fractures are then all there is to report). A level inferred from
    the sequence without voxels of its own (a sliver at the edge of the scan) has nothing to crop.
    """
    slivers = sliver_levels(localisation)  # once: it scans the whole coarse map
    vertebrae = [d for d in localisation.detected if d.level is not VertebraLevel.SACRUM and d.level not in slivers]
    lumbar_in_view = any(d.level.region == "lumbar" for d in vertebrae)
    if all_levels or not lumbar_in_view:
        return tuple(vertebrae)
    return tuple(d for d in vertebrae if d.level in default_levels)


def sliver_levels(localisation: SpineLocalisation) -> frozenset[VertebraLevel]:
    """Detected levels with no voxels on the coarse map: inferred slivers at the scan's edge."""
    present = set(np.unique(localisation.level_map).tolist())
    return frozenset(d.level for d in localisation.detected if int(d.level) not in present)


# ---------------------------------------------------------------------------- fine segmentation
@dataclass(frozen=True)
class VertebraSegment:
    level: VertebraLevel
    grid: Grid  # the ~1 mm crop grid
    parts: np.ndarray  # uint8 VertebraPart per crop voxel
    ct: np.ndarray  # float32 HU sampled on the crop grid
    complete: bool  # the vertebra lies fully inside the scanned field of view
    # evidence for the segmentation-quality gate (osteoscan.analysis.segmentation_qc)
    coarse_fractions: tuple[tuple[VertebraLevel, float], ...] = ()  # mask fraction per coarse level
    largest_component_fraction: float = 1.0  # of the raw fine foreground
    touches_axial_crop_face: bool = False  # reaches the crop's first or last axial slice

    @property
    def body(self) -> np.ndarray:
        return self.parts == VertebraPart.BODY

    @property
    def vertebra(self) -> np.ndarray:
        return self.parts != VertebraPart.BACKGROUND

    @cached_property
    def body_centroid_index(self) -> np.ndarray | None:
        """Mean crop index (float64, array order) of the body's voxels; None without a body.

        Needed by the BMD crop, the analyses and the L3 slice, so computed once. Equal, bit for bit,
        to ``np.argwhere(self.body).mean(axis=0)``: the index sums are exact integers either way, but
        here they come from three projections instead of a list of every voxel's index.
        """
        body = self.body
        n = int(np.count_nonzero(body))
        if n == 0:
            return None
        sums = [
            int(np.arange(body.shape[axis]) @ body.sum(axis=tuple(a for a in range(3) if a != axis)))
            for axis in range(3)
        ]
        return np.asarray(sums, dtype=np.float64) / n


def segment_vertebrae(
    volume: CTVolume, localisation: SpineLocalisation, levels: tuple[DetectedLevel, ...], fine: LoadedModel
) -> tuple[VertebraSegment, ...]:
    """Fine body/posterior segmentation of each selected vertebra, all crops in one batch."""
    from osteoscan.models.preprocess import normalise_hu
    from osteoscan.models.spine_decoding import first_argmax

    if not levels:
        return ()
    spec = fine.spec
    shape = tuple(int(s) for s in spec.patch_size)
    spacing = tuple(float(s) for s in spec.input_spacing_mm)
    grids = [centered_grid(d.centroid_lps_mm, shape, spacing, volume.direction) for d in levels]
    cts = [sample(volume.array, volume.affine, g, order=1, cval=OUTSIDE_HU) for g in grids]
    # the coarse level map on each crop, sampled once: the guide and the quality evidence both use it
    coarse_crops = [sample(localisation.level_map, localisation.grid.affine, g, order=0, cval=0) for g in grids]
    batch = np.stack(
        [
            np.stack([normalise_hu(ct, spec), (coarse == d.level).astype(np.float32)])
            for d, ct, coarse in zip(levels, cts, coarse_crops)
        ]
    )
    logits = fine.infer(batch)["logits"]
    segments = []
    for d, g, ct, coarse, lg in zip(levels, grids, cts, coarse_crops, logits):
        raw = first_argmax(lg)
        parts = _largest_component_parts(raw)
        if not parts.any():
            log.warning("the fine model found no %s inside its crop; level dropped", d.level.name)
            continue
        fg = parts > 0
        complete = not _near_field_edge(fg, volume, g) and not d.touches_border
        segments.append(
            VertebraSegment(
                level=d.level,
                grid=g,
                parts=parts,
                ct=ct,
                complete=complete,
                coarse_fractions=_coarse_fractions(coarse, fg),
                largest_component_fraction=float(fg.sum()) / float(max(int(np.count_nonzero(raw)), 1)),
                touches_axial_crop_face=bool(fg[0].any() or fg[-1].any()),
            )
        )
    return tuple(segments)


#: Voxels of margin to the edge of the scanned field of view within which a fine mask counts as cut.
FIELD_EDGE_MARGIN_VOXELS = 2


def _near_field_edge(mask: np.ndarray, volume: CTVolume, grid: Grid) -> bool:
    """Whether ``mask`` (on ``grid``) comes within the margin of the field of view's edge (a cut vertebra).

    The points outside the field, dilated by the margin (6-connected, so an L1 ball): for an
    axis-aligned crop the inside is a box, and the dilation reaches exactly the points within the
    margin of one of the box's faces that lie inside the crop (a face on the crop's border has
    nothing outside it to dilate from), so the mask is tested against the shrunken box instead.
    """
    box = inside_box(volume.shape, volume.affine, grid)
    if box is None:  # oblique crop: the general morphology
        outside = ~inside_mask(volume.shape, volume.affine, grid)
        near = ndimage.binary_dilation(outside, iterations=FIELD_EDGE_MARGIN_VOXELS)
        return bool(np.any(near & mask))
    core = []
    for sl, n in zip(box, grid.shape):
        start = sl.start + (FIELD_EDGE_MARGIN_VOXELS if sl.start > 0 else 0)
        stop = sl.stop - (FIELD_EDGE_MARGIN_VOXELS if sl.stop < n else 0)
        core.append(slice(start, max(start, stop)))
    return int(np.count_nonzero(mask[tuple(core)])) != int(np.count_nonzero(mask))


def _coarse_fractions(coarse: np.ndarray, mask: np.ndarray) -> tuple[tuple[VertebraLevel, float], ...]:
    """Fraction of a fine mask on each level of the coarse level map (which level it really is).

    ``coarse`` is the coarse level map sampled on the fine mask's grid.
    """
    counts = np.bincount(coarse[mask].astype(np.int64), minlength=1)
    n = max(int(mask.sum()), 1)
    return tuple((VertebraLevel(i), float(c) / n) for i, c in enumerate(counts) if i > 0 and c > 0)


def _largest_component_parts(parts: np.ndarray) -> np.ndarray:
    """Keep the largest connected vertebra (body + posterior) of a fine prediction.

    Labelled on the foreground's bounding box only: the same components in the same (raster) order.
    """
    fg = parts > 0
    box = _bounding_box(fg)
    if box is None:
        return parts
    lab, n = ndimage.label(fg[box])
    if n <= 1:
        return parts
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    keep = lab == (int(np.argmax(sizes)) + 1)
    out = np.zeros_like(parts)
    out[box] = np.where(keep, parts[box], 0)
    return out


def _bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every set voxel of a 3-D mask; None when none is set."""
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


@dataclass(frozen=True)
class SpineCanvas:
    """All fine segmentations pasted on one ~1 mm grid (osteoscan.labels body/posterior encoding)."""

    labels: np.ndarray  # uint16
    ct: np.ndarray  # float32 HU on the same grid
    grid: Grid
    #: (level, other) -> fraction of level's fine mask that other's fine mask covers too (levels at
    #: most two apart: only those can reach each other)
    overlap: dict[tuple[VertebraLevel, VertebraLevel], float] = field(default_factory=dict)

    def body_mask(self, level: VertebraLevel) -> np.ndarray:
        return self.labels == BODY_OFFSET + int(level)

    def vertebra_mask(self, level: VertebraLevel) -> np.ndarray:
        return (self.labels == BODY_OFFSET + int(level)) | (self.labels == POSTERIOR_OFFSET + int(level))


def build_canvas(volume: CTVolume, segments: tuple[VertebraSegment, ...]) -> SpineCanvas | None:
    if not segments:
        return None
    spacing = segments[0].grid.spacing
    grid = union_grid([s.grid for s in segments], spacing, volume.direction)  # type: ignore[arg-type]
    labels = np.zeros(grid.shape, dtype=np.uint16)
    pasted: list[tuple[Box, np.ndarray]] = []  # each fine mask's box on the canvas and its mask there
    for seg in segments:
        enc = np.zeros(seg.parts.shape, dtype=np.uint16)
        enc[seg.parts == VertebraPart.BODY] = BODY_OFFSET + int(seg.level)
        enc[seg.parts == VertebraPart.POSTERIOR] = POSTERIOR_OFFSET + int(seg.level)
        box, values = _sampled_box(enc, seg.grid.affine, grid)
        region = labels[box]
        # first come, first kept: a voxel two masks claim stays with the earlier one
        region[(values > 0) & (region == 0)] = values[(values > 0) & (region == 0)]
        pasted.append((box, values > 0))
    overlap = {}
    for (a, (box_a, ma)), (b, (box_b, mb)) in itertools.permutations(zip(segments, pasted), 2):
        if a.level is not b.level and abs(int(a.level) - int(b.level)) <= 2:
            overlap[(a.level, b.level)] = _shared_voxels(box_a, ma, box_b, mb) / max(int(ma.sum()), 1)
    ct = sample(volume.array, volume.affine, grid, order=1, cval=OUTSIDE_HU)
    return SpineCanvas(labels=labels, ct=ct, grid=grid, overlap=overlap)


def _sampled_box(array: np.ndarray, affine: np.ndarray, grid: Grid) -> tuple[Box, np.ndarray]:
    """Nearest-neighbour samples of ``array`` on the part of ``grid`` it covers, and that box.

    Axis-aligned grids sample only the box; an oblique one is sampled whole (the box is the grid).
    """
    inside = sample_box(array, affine, grid, order=0)
    if inside is not None:
        return inside
    return tuple(slice(0, n) for n in grid.shape), sample(array, affine, grid, order=0, cval=0)  # type: ignore[return-value]


def _shared_voxels(box_a: Box, mask_a: np.ndarray, box_b: Box, mask_b: np.ndarray) -> float:
    """Voxels set in both masks, each given on its own box of one grid."""
    starts = [max(a.start, b.start) for a, b in zip(box_a, box_b)]
    stops = [min(a.stop, b.stop) for a, b in zip(box_a, box_b)]
    if any(lo >= hi for lo, hi in zip(starts, stops)):
        return 0.0
    in_a = tuple(slice(lo - a.start, hi - a.start) for lo, hi, a in zip(starts, stops, box_a))
    in_b = tuple(slice(lo - b.start, hi - b.start) for lo, hi, b in zip(starts, stops, box_b))
    return float(np.count_nonzero(mask_a[in_a] & mask_b[in_b]))


def labels_on_ct_grid(volume: CTVolume, canvas: SpineCanvas | None) -> np.ndarray:
    """The vertebra label map (body/posterior encoding) on the CT's own grid, for outputs."""
    if canvas is None:
        return np.zeros(volume.shape, dtype=np.uint16)
    return sample(canvas.labels, canvas.grid.affine, Grid(volume.shape, volume.affine), order=0, cval=0)


# ------------------------------------------------------------------------------------------ BMD
@dataclass(frozen=True)
class BmdPrediction:
    level: VertebraLevel
    bmd_mg_cm3: float
    sigma_mg_cm3: float


def regress_bmd(
    volume: CTVolume, segments: tuple[VertebraSegment, ...], bmd: LoadedModel
) -> tuple[BmdPrediction, ...]:
    """Trabecular BMD of every complete vertebra with a body, all crops in one batch."""
    from osteoscan.models.preprocess import normalise_hu

    spec = bmd.spec
    shape = tuple(int(s) for s in spec.patch_size)
    spacing = tuple(float(s) for s in spec.input_spacing_mm)
    chosen = [(s, s.body_centroid_index) for s in segments if s.complete]
    chosen = [(s, c) for s, c in chosen if c is not None]  # with a body
    if not chosen:
        return ()
    inputs = []
    for seg, centre_index in chosen:
        g = centered_grid(seg.grid.index_to_lps(centre_index), shape, spacing, volume.direction)
        ct = sample(volume.array, volume.affine, g, order=1, cval=OUTSIDE_HU)
        body = sample(seg.body.astype(np.uint8), seg.grid.affine, g, order=0, cval=0)
        inputs.append(np.stack([normalise_hu(ct, spec), body.astype(np.float32)]))
    out = bmd.infer(np.stack(inputs))
    return tuple(
        BmdPrediction(level=s.level, bmd_mg_cm3=float(b), sigma_mg_cm3=float(sg))
        for (s, _), b, sg in zip(chosen, out["bmd"].reshape(-1), out["sigma"].reshape(-1))
    )


# ------------------------------------------------------------------------------------ tissue (2-D)
@dataclass(frozen=True)
class TissueSlice:
    slice_index: int  # along axis 0 of the canonical CT
    tissue: np.ndarray  # uint8 osteoscan.labels.Tissue on the CT's own in-plane grid
    ct: np.ndarray  # HU of that slice (float32)
    pixel_spacing_mm: tuple[float, float]
    level_assumed: bool  # True when the slice was not located by the spine models (single-slice input)


def segment_tissue(volume: CTVolume, slice_index: int, tissue: LoadedModel, level_assumed: bool) -> TissueSlice:
    """2-D tissue segmentation of one axial slice, mapped back to the slice's own pixel grid."""
    from osteoscan.models.preprocess import normalise_hu

    spec = tissue.spec
    ct_slice = volume.array[slice_index].astype(np.float32)
    spacing_in = volume.spacing[1:]
    target = tuple(float(s) for s in spec.input_spacing_mm)[-2:]
    patch = tuple(int(s) for s in spec.patch_size)[-2:]
    # model grid: same centre as the slice, model spacing, model patch size (in-plane only)
    zoom = np.asarray(spacing_in) / np.asarray(target)
    centre_in = (np.asarray(ct_slice.shape) - 1) / 2
    centre_out = (np.asarray(patch) - 1) / 2
    rows = (np.arange(patch[0]) - centre_out[0]) / zoom[0] + centre_in[0]
    cols = (np.arange(patch[1]) - centre_out[1]) / zoom[1] + centre_in[1]
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    model_in = ndimage.map_coordinates(ct_slice, [rr, cc], order=1, mode="constant", cval=OUTSIDE_HU)
    logits = tissue.infer(normalise_hu(model_in, spec)[None, None])["logits"][0]
    # back to the slice grid: nearest class of the model pixel each slice pixel falls in
    back_r = (np.arange(ct_slice.shape[0]) - centre_in[0]) * zoom[0] + centre_out[0]
    back_c = (np.arange(ct_slice.shape[1]) - centre_in[1]) * zoom[1] + centre_out[1]
    br, bc = np.meshgrid(back_r, back_c, indexing="ij")
    # interpolate the class scores (not the argmax) so that boundaries stay smooth at the finer
    # native pixel size; outside the model's patch everything is background
    scores = np.stack(
        [ndimage.map_coordinates(ch, [br, bc], order=1, mode="nearest") for ch in logits.astype(np.float32)]
    )
    tissue_map = np.argmax(scores, axis=0).astype(np.uint8)
    outside = (br < 0) | (br > patch[0] - 1) | (bc < 0) | (bc > patch[1] - 1)
    tissue_map[outside] = Tissue.BACKGROUND
    return TissueSlice(
        slice_index=int(slice_index),
        tissue=tissue_map.astype(np.uint8),
        ct=ct_slice,
        pixel_spacing_mm=(float(spacing_in[0]), float(spacing_in[1])),
        level_assumed=level_assumed,
    )
