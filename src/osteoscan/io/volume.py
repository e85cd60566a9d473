"""The one data model of a CT scan inside osteoscan: a HU array + an affine in patient LPS.

Conventions (used by every module; do not re-derive them elsewhere):

* ``array`` is indexed ``array[k, j, i]`` = (axis 0, axis 1, axis 2), usually (z, y, x).
* ``affine`` is a 4x4 matrix mapping the homogeneous *array index* ``(k, j, i, 1)`` (same order as
  the array axes) to patient coordinates in millimetres, in DICOM's LPS system
  (+x = patient Left, +y = Posterior, +z = Superior).
* ``spacing`` is the voxel size in mm per array axis, in array order.
* The **canonical orientation** is axis 0 -> Superior, axis 1 -> Posterior, axis 2 -> Left: an axial
  stack ordered feet-to-head whose slices look like the usual radiological display (anterior at the
  top, patient's right on the left of the image). The code for it is ``("S", "P", "L")``.
* NIfTI (RAS, x-fastest) is converted to and from this model only in :mod:`osteoscan.io.nifti`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osteoscan.errors import GeometryError

CANONICAL_ORIENTATION: tuple[str, str, str] = ("S", "P", "L")

_AXIS_CODES = (("L", "R"), ("P", "A"), ("S", "I"))  # positive / negative direction of LPS x, y, z


@dataclass(frozen=True)
class Provenance:
    """Where a volume came from and how it was acquired; every field optional.

    Units: ``kvp`` kV, ``slice_thickness_mm`` mm, ``patient_height_m`` m, ``patient_weight_kg`` kg,
    ``patient_age_years`` years.
    """

    source_format: str = "unknown"  # "dicom", "nifti", "phantom"
    source_path: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    modality: str | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    kvp: float | None = None
    convolution_kernel: str | None = None
    slice_thickness_mm: float | None = None
    contrast_agent: str | None = None
    transfer_syntax: str | None = None
    series_description: str | None = None
    study_date: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    patient_age_years: float | None = None
    patient_sex: str | None = None  # "M", "F", "O" or None
    patient_height_m: float | None = None
    patient_weight_kg: float | None = None
    #: Things the reader did to the geometry (resampled gaps, tilt correction, ...), human readable.
    geometry_notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sop_instance_uids"] = len(self.sop_instance_uids)  # the count is what a reader needs
        d["geometry_notes"] = list(self.geometry_notes)
        return d

    def with_notes(self, *notes: str) -> Provenance:
        return dataclasses.replace(self, geometry_notes=self.geometry_notes + tuple(notes))


@dataclass(frozen=True)
class CTVolume:
    """A CT volume in Hounsfield units with its geometry and provenance.

    Raises:
        GeometryError: when the array is not 3-D or the affine is not an invertible 4x4 matrix.
    """

    array: np.ndarray
    affine: np.ndarray
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise GeometryError(
                f"a CT volume needs a 3-D array (slices, rows, columns); got shape {self.array.shape}. "
                "Wrap a single slice as array[None] with a slice thickness in the affine."
            )
        if self.array.dtype not in (np.int16, np.float32):
            raise GeometryError(
                f"CT arrays are int16 or float32 HU; got {self.array.dtype}. Convert with astype first."
            )
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise GeometryError(f"affine must be an invertible 4x4 matrix; got {aff!r}")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm per array axis (array order)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit LPS directions of the array axes."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Closest anatomical direction of each array axis, e.g. ('S', 'P', 'L')."""
        return orientation_codes(self.affine)

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    def index_to_lps(self, index: np.ndarray) -> np.ndarray:
        """Map (..., 3) array indices (array order) to LPS mm."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) LPS mm points to fractional array indices (array order)."""
        inv = np.linalg.inv(self.affine)
        pts = np.asarray(points, dtype=np.float64)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def with_array(self, array: np.ndarray, affine: np.ndarray | None = None) -> CTVolume:
        """A new volume sharing this provenance (for derived arrays of the same or new geometry)."""
        return CTVolume(array=array, affine=self.affine if affine is None else affine, provenance=self.provenance)

    def summary(self) -> str:
        sp = "x".join(f"{s:.2f}" for s in self.spacing)
        lo, hi = (float(self.array.min()), float(self.array.max())) if self.array.size else (0.0, 0.0)
        return (
            f"{self.shape[0]}x{self.shape[1]}x{self.shape[2]} voxels (axes {''.join(self.orientation)}), "
            f"spacing {sp} mm, HU range [{lo:.0f}, {hi:.0f}]"
        )


def orientation_codes(affine: np.ndarray) -> tuple[str, str, str]:
    """Closest LPS axis letter of each array axis of an affine (array-order columns)."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    codes = []
    used: set[int] = set()
    for col in range(3):
        v = m[:, col]
        order = np.argsort(-np.abs(v))
        axis = next(int(a) for a in order if int(a) not in used)
        used.add(axis)
        codes.append(_AXIS_CODES[axis][0 if v[axis] >= 0 else 1])
    return tuple(codes)  # type: ignore[return-value]


def to_canonical(volume: CTVolume) -> CTVolume:
    """Reorient by axis permutation and flips (no interpolation) so that axes point (S, P, L).

    Oblique directions keep their obliquity: only the nearest-axis assignment changes.
    """
    return reorient(volume, CANONICAL_ORIENTATION)


def reorient(volume: CTVolume, target: tuple[str, str, str]) -> CTVolume:
    """Permute/flip array axes (no interpolation) so that they point to ``target`` codes."""
    array, affine = reorient_array(volume.array, volume.affine, target)
    return CTVolume(array=array, affine=affine, provenance=volume.provenance)


def reorient_array(array: np.ndarray, affine: np.ndarray, target: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip any array (image or label map) with its affine so its axes point to ``target``."""
    current = orientation_codes(affine)
    letter_axis = {c: i for i, pair in enumerate(_AXIS_CODES) for c in pair}
    perm = []
    flips = []
    for t in target:
        src = next(i for i, c in enumerate(current) if letter_axis[c] == letter_axis[t])
        perm.append(src)
        flips.append(current[src] != t)
    arr = np.transpose(array, perm)
    aff = np.asarray(affine, dtype=np.float64).copy()
    new = np.eye(4)
    new[:3, :3] = aff[:3, :3][:, perm]
    new[:3, 3] = aff[:3, 3]
    for ax, flip in enumerate(flips):
        if flip:
            n = arr.shape[ax]
            new[:3, 3] = new[:3, 3] + new[:3, ax] * (n - 1)
            new[:3, ax] = -new[:3, ax]
    slicer = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    return np.ascontiguousarray(arr[slicer]), new


def affine_from_spacing(
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Affine of a canonical (S, P, L) grid with the given (z, y, x) spacing and LPS origin."""
    aff = np.zeros((4, 4))
    # axis 0 -> +z (S), axis 1 -> +y (P), axis 2 -> +x (L)
    aff[2, 0] = spacing[0]
    aff[1, 1] = spacing[1]
    aff[0, 2] = spacing[2]
    aff[:3, 3] = origin
    aff[3, 3] = 1.0
    return aff
