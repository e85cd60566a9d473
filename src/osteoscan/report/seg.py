"""``seg.dcm``: DICOM Segmentation (highdicom) - one segment per vertebra level plus the L3 tissues.

Binary segmentation in the source series' Frame of Reference, frames aligned with the source slices
(on the source grid the map is handed to highdicom as a plain array, whose geometry it copies from the
source slices; otherwise as a volume with its affine, which highdicom matches to the source images),
empty frames omitted. Vertebra segments merge body and posterior elements (one segment per level);
tissue segments exist on the composition slice only. Where the tissue map claims a voxel that is
also labelled vertebra, the vertebra keeps it (counted and logged): segments in this object never
overlap, which every viewer handles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from scipy import ndimage

from osteoscan.io import CTVolume, orientation_codes, reorient_array
from osteoscan.labels import Tissue, VertebraLevel
from osteoscan.report import constants as C
from osteoscan.report import dicom_codes as K
from osteoscan.report import dicom_common as D
from osteoscan.result import StudyResult

log = logging.getLogger(__name__)

TISSUE_ORDER: tuple[Tissue, ...] = (Tissue.MUSCLE, Tissue.SAT, Tissue.VAT, Tissue.IMAT)
#: Tolerances for "this SEG plane is that source slice" (highdicom's own: positions to 1e-3 mm,
#: direction cosines to 1e-5, pixel spacing to a relative 1e-4).
SAME_POSITION_MM = 1e-3
SAME_COSINE = 1e-5
SAME_SPACING_RTOL = 1e-4


@dataclass(frozen=True)
class SegmentInfo:
    """Where each level/tissue went: segment numbers, for the SR's references, and the written object
    (the SR's evidence: the same dataset that is in seg.dcm, without reading the file back)."""

    levels: dict[str, int]  # "L1" -> segment number
    tissues: dict[Tissue, int]
    dataset: pydicom.Dataset | None = None


def _algorithm(result: StudyResult, family_name: str) -> hd.AlgorithmIdentificationSequence:
    models = [m for m in result.provenance.models if family_name in m.name] or list(result.provenance.models)
    version = ", ".join(f"{m.name} {m.version}" for m in models) or result.provenance.osteoscan_version
    return hd.AlgorithmIdentificationSequence(
        name=f"osteoscan {family_name}",
        family=codes.cid7162.ArtificialIntelligence,
        version=version[:64],
    )


def build_label_volume(
    lvl: np.ndarray,
    tissue: np.ndarray | None,
    slice_index: int | None,
    boxes: list[tuple[slice, ...] | None] | None = None,
) -> tuple[np.ndarray, list[VertebraLevel], list[Tissue], int]:
    """Segment-number map (uint16): levels cranial to caudal, then tissues on ``slice_index``.

    ``lvl`` is the level map (:func:`osteoscan.report.levels.level_map`), ``boxes`` its
    ``scipy.ndimage.find_objects`` (computed when not given): each level is copied within its own
    bounding box, never with a pass over the whole volume per level. Returns the map, the levels, the
    tissues and the number of tissue pixels given up to vertebrae.
    """
    if boxes is None:
        boxes = ndimage.find_objects(lvl)
    seg = np.zeros(lvl.shape, dtype=np.uint16)
    present: list[VertebraLevel] = []
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        present.append(VertebraLevel(value))
        sub = seg[box]
        sub[lvl[box] == value] = len(present)
    tissues: list[Tissue] = []
    conflicts = 0
    if tissue is not None and slice_index is not None:
        plane = seg[slice_index]
        for t in TISSUE_ORDER:
            mask = tissue == t
            if not mask.any():
                continue
            tissues.append(t)
            conflicts += int((mask & (plane > 0)).sum())
            plane[mask & (plane == 0)] = len(present) + len(tissues)
    return seg, present, tissues, conflicts


def _source_orientation(datasets: Sequence[pydicom.Dataset]) -> tuple[str, str, str] | None:
    """Orientation codes of the stored source pixels (slices, rows, columns), or None if unknown."""
    ds = datasets[0]
    iop = ds.get("ImageOrientationPatient")
    if iop is None and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PlaneOrientationSequence" in shared:
            iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    if iop is None:
        return None
    row_dir = np.array([float(x) for x in iop[:3]])  # along a row: increasing column index
    col_dir = np.array([float(x) for x in iop[3:]])  # down a column: increasing row index
    normal = np.cross(row_dir, col_dir)
    if len(datasets) > 1 and "ImagePositionPatient" in datasets[0] and "ImagePositionPatient" in datasets[-1]:
        step = np.array([float(x) for x in datasets[-1].ImagePositionPatient]) - np.array(
            [float(x) for x in datasets[0].ImagePositionPatient]
        )
        if step @ normal < 0:
            normal = -normal
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = normal, col_dir, row_dir
    return orientation_codes(aff)


def _in_source_orientation(
    seg: np.ndarray, affine: np.ndarray, source_datasets: Sequence[pydicom.Dataset]
) -> tuple[np.ndarray, np.ndarray]:
    """The segment map permuted/flipped (no interpolation) to the stored source pixel orientation.

    highdicom references source frames only for frames laid out like them; in the canonical
    orientation a source stored e.g. with columns running right would get "spatial locations not
    preserved" frames that viewers cannot overlay one to one.
    """
    codes_ = _source_orientation(source_datasets)
    if codes_ is None:
        log.info("source orientation unknown; seg.dcm keeps the analysis grid orientation")
        return seg, affine
    return reorient_array(seg, affine, codes_)


def _crop_to_labelled_frames(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames (axis 0) from the first to the last with a segment, with the affine moved to match.

    Empty frames are omitted from seg.dcm anyway; handing highdicom only the labelled run of frames
    spares its per-frame source matching (quadratic in the number of frames: 1.2 s of 1.6 s for a
    515-slice series) and the emptiness tests on the rest. The frames written are the same.
    """
    labelled = np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))
    if labelled.size == 0:
        return array, affine
    k0, k1 = int(labelled[0]), int(labelled[-1]) + 1
    moved = np.array(affine, dtype=np.float64, copy=True)
    moved[:3, 3] = moved[:3, 3] + moved[:3, 0] * k0
    return array[k0:k1], moved


def _floats(values: Sequence[object]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)  # type: ignore[arg-type]


def on_source_grid(array: np.ndarray, affine: np.ndarray, source_datasets: Sequence[pydicom.Dataset]) -> bool:
    """Whether plane ``p`` of ``array`` (axis 0, with its array-order LPS ``affine``) is source slice ``p``:
    same number of slices, rows, columns, pixel spacing, orientation and position.

    Then the plain array goes to highdicom, which copies the source slices' geometry and references
    (one source per plane by construction). Given a ``highdicom.Volume`` it would instead match every
    plane against every slice (``_match_planes`` plus a quadratic UID search: 0.5 s of 0.8 s for a
    324-slice series) to find the same one-to-one correspondence, and write the same frames.
    """
    if len(source_datasets) != array.shape[0]:
        return False
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    iop = np.concatenate([aff[:3, 2] / spacing[2], aff[:3, 1] / spacing[1]])  # along a row, down a column
    origins = aff[:3, 3] + np.arange(array.shape[0])[:, None] * aff[:3, 0]
    for p, ds in enumerate(source_datasets):
        if "PerFrameFunctionalGroupsSequence" in ds or "ImagePositionPatient" not in ds:
            return False  # a multi-frame (enhanced) source: highdicom's per-frame path
        if (ds.Rows, ds.Columns) != array.shape[1:]:
            return False
        if np.abs(_floats(ds.ImageOrientationPatient) - iop).max() > SAME_COSINE:
            return False
        if not np.allclose(_floats(ds.PixelSpacing), spacing[1:], rtol=SAME_SPACING_RTOL, atol=0.0):
            return False
        if np.linalg.norm(_floats(ds.ImagePositionPatient) - origins[p]) >= SAME_POSITION_MM:
            return False
    return True


def segmentation_pixels(
    seg: np.ndarray, affine: np.ndarray, source_datasets: Sequence[pydicom.Dataset], *, allow_source_grid: bool = True
) -> np.ndarray | hd.Volume:
    """What ``hd.seg.Segmentation`` gets as ``pixel_array`` for the segment map ``seg`` (analysis grid).

    The map in the source orientation; as a plain array when it lies on the source slices
    (:func:`on_source_grid`, unless ``allow_source_grid`` is False), else as a ``highdicom.Volume``
    cropped to its labelled frames, placed by patient position. Both give the same frames.
    """
    array, moved = _in_source_orientation(seg, affine, source_datasets)
    if allow_source_grid and on_source_grid(array, moved, source_datasets):
        return array
    array, moved = _crop_to_labelled_frames(array, moved)
    return hd.Volume(
        array=array,
        affine=moved,
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(source_datasets[0].FrameOfReferenceUID),
    )


def write_seg(
    path: Path,
    result: StudyResult,
    ct: CTVolume,
    lvl: np.ndarray,
    tissue: np.ndarray | None,
    source_datasets: Sequence[pydicom.Dataset],
    boxes: list[tuple[slice, ...] | None] | None = None,
) -> SegmentInfo:
    """Write the Segmentation from the level map ``lvl`` (``boxes``: its ``find_objects``, optional);
    returns the segment numbers per level and tissue."""
    slice_index = result.composition.slice_index if result.composition is not None else None
    seg, levels, tissues, conflicts = build_label_volume(lvl, tissue, slice_index, boxes)
    if conflicts:
        log.warning("%d tissue pixels on slice %s are also vertebra; kept as vertebra in seg.dcm", conflicts,
                    slice_index)
    if not levels and not tissues:
        raise ValueError("nothing to write in seg.dcm: the label map has no vertebra and there is no tissue map")
    vert_algo = _algorithm(result, "vertebra")
    tissue_algo = _algorithm(result, "tissue")
    descriptions: list[hd.seg.SegmentDescription] = []
    for n, level in enumerate(levels, start=1):
        label = f"{level.name} vertebra" if level is not VertebraLevel.SACRUM else "Sacrum"
        if level is VertebraLevel.L6:
            label = "L6 vertebra (transitional)"
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=label,
                segmented_property_category=K.CATEGORY_ANATOMY,
                segmented_property_type=K.vertebra_code(level),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=vert_algo,
                tracking_uid=hd.UID(),
                tracking_id=f"vertebra {level.name}",
            )
        )
    for i, t in enumerate(tissues):
        prop, region, label = K.TISSUE_CODES[t]
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=len(levels) + 1 + i,
                segment_label=f"{label} ({result.composition.level if result.composition else 'L3'})",
                segmented_property_category=K.CATEGORY_TISSUE,
                segmented_property_type=prop,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=tissue_algo,
                tracking_uid=hd.UID(),
                tracking_id=f"tissue {t.name}",
                anatomic_regions=[region] if region is not None else None,
            )
        )
    obj = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=segmentation_pixels(seg, ct.affine, source_datasets),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=D.SERIES_NUMBER_SEG,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=D.MANUFACTURER,
        manufacturer_model_name=D.MODEL_NAME,
        software_versions=D.SOFTWARE_VERSION,
        device_serial_number=D.DEVICE_SERIAL,
        content_description=C.INTENDED_USE_LO,
        content_label="OSTEOSCAN",
        series_description="osteoscan segmentation (research/screening aid)",
    )
    obj.save_as(path)
    return SegmentInfo(
        levels={level.name: n for n, level in enumerate(levels, start=1)},
        tissues={t: len(levels) + 1 + i for i, t in enumerate(tissues)},
        dataset=obj,
    )
