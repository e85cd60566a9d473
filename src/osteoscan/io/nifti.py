"""NIfTI <-> osteoscan geometry: the ONE place where RAS/x-fastest meets LPS/array-order.

NIfTI (through nibabel) stores ``data[i, j, k]`` with an affine mapping ``(i, j, k, 1)`` to RAS mm.
osteoscan stores ``array[k, j, i]`` with an affine mapping ``(k, j, i, 1)`` to LPS mm
(see :mod:`osteoscan.io.volume`). The conversion is a transpose of the array, a reversal of the
affine's index columns and a sign flip of the x and y world rows. Nothing else in the code base
may do this conversion: call :func:`read_nifti` / :func:`write_nifti` (or the two ``*_affine``
helpers) instead.

Round trip: the array (any dtype) is exact; the affine is exact to float32 precision, which is
how NIfTI stores its sform.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from osteoscan.errors import InputError
from osteoscan.io.volume import CTVolume, Provenance

log = logging.getLogger(__name__)

#: RAS <-> LPS: negate world x and y (the same matrix in both directions).
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: (k, j, i) index order <-> (i, j, k): reverse the three index columns (its own inverse).
_REVERSE_INDEX = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
#: NIfTI sform/qform code "scanner anatomical" (NIfTI-1 standard, NIFTI_XFORM_SCANNER_ANAT).
_XFORM_SCANNER_ANAT = 1

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | Path) -> bool:
    """True when the file name ends in .nii or .nii.gz (case-insensitive)."""
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def nifti_affine_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """NIfTI affine ((i, j, k) -> RAS) to osteoscan affine ((k, j, i) -> LPS)."""
    return _RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64) @ _REVERSE_INDEX


def lps_affine_to_nifti(affine_lps: np.ndarray) -> np.ndarray:
    """osteoscan affine ((k, j, i) -> LPS) to NIfTI affine ((i, j, k) -> RAS)."""
    return _RAS_TO_LPS @ np.asarray(affine_lps, dtype=np.float64) @ _REVERSE_INDEX


def _load(path: Path):  # -> nibabel.Nifti1Image | Nifti2Image
    import nibabel as nib

    if not path.exists():
        raise InputError(f"{path}: file not found. Check the path.")
    if not path.is_file():
        raise InputError(f"{path}: not a file. Pass the .nii or .nii.gz file itself.")
    try:
        img = nib.load(str(path))
    except PermissionError as exc:
        raise InputError(
            f"{path}: permission denied ({exc.strerror}). Make the file readable (chmod +r)."
        ) from exc
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot be read as NIfTI ({exc}). The file is corrupt or truncated; re-export it."
        ) from exc
    return img


def read_nifti_array(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read any NIfTI (image or label map) as ``(array[k, j, i], affine_lps)``, keeping its dtype.

    The stored dtype is kept when the file has no (or identity) intensity scaling, so label maps
    come back as the integers they were written as. A 4-D file with a single volume is squeezed.

    Raises:
        InputError: missing, unreadable, corrupt or truncated file, or more than one volume.
    """
    path = Path(path)
    img = _load(path)
    try:
        slope, inter = img.dataobj.slope, img.dataobj.inter
        if (slope is None or slope == 1) and (inter is None or inter == 0):
            data = np.asarray(img.dataobj.get_unscaled())
        else:
            data = np.asarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(
            f"{path}: the image data cannot be decoded ({exc}). The file is truncated or corrupt."
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise InputError(
            f"{path}: a CT volume has 3 dimensions; this NIfTI has shape {data.shape}. "
            "Split multi-volume files and pass one volume."
        )
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    return array, nifti_affine_to_lps(img.affine)


def _as_hu_dtype(array: np.ndarray) -> np.ndarray:
    """int16 when the values are integers that fit, else float32 (the two dtypes CTVolume takes)."""
    if array.dtype == np.int16 or array.dtype == np.float32:
        return array
    if np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_):
        if array.size == 0 or (
            array.min() >= np.iinfo(np.int16).min and array.max() <= np.iinfo(np.int16).max
        ):
            return array.astype(np.int16)
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(
                "the NIfTI contains NaN or infinite values; a CT in HU has none. Fix the export."
            )
        rounded = np.rint(array)
        lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
        if array.size and np.array_equal(rounded, array) and array.min() >= lo and array.max() <= hi:
            return rounded.astype(np.int16)
        return array.astype(np.float32)
    raise InputError(f"unsupported NIfTI data type {array.dtype} for a CT volume")


def read_nifti(path: str | Path) -> CTVolume:
    """Read a NIfTI CT (values in HU) as a :class:`CTVolume` in the file's own orientation.

    Integer-valued data that fits int16 becomes int16, anything else float32. The volume is not
    reoriented (use :func:`osteoscan.io.to_canonical`, or :func:`osteoscan.io.load_ct`).

    Raises:
        InputError: unreadable/corrupt file, wrong number of dimensions, NaN values.
    """
    path = Path(path)
    array, affine = read_nifti_array(path)
    try:
        array = _as_hu_dtype(array)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    prov = Provenance(source_format="nifti", source_path=str(path))
    return CTVolume(array=array, affine=affine, provenance=prov)


def write_nifti(
    volume_or_array: CTVolume | np.ndarray,
    affine: np.ndarray | None = None,
    path: str | Path | None = None,
) -> Path:
    """Write a CT volume or any array (e.g. a label map, any dtype) as NIfTI (.nii or .nii.gz).

    Call as ``write_nifti(volume, path=p)`` / ``write_nifti(volume, None, p)`` for a
    :class:`CTVolume`, or ``write_nifti(array, affine_lps, p)`` for an ``array[k, j, i]`` with an
    osteoscan (LPS, array-order) affine. The dtype is stored as is (bool becomes uint8); sform and
    qform are both set to "scanner anatomical".

    Raises:
        InputError: when the array is not 3-D, the affine is missing/invalid or the path is unwritable.
    """
    import nibabel as nib

    if path is None:
        raise InputError("write_nifti needs an output path ending in .nii or .nii.gz")
    path = Path(path)
    if isinstance(volume_or_array, CTVolume):
        array = volume_or_array.array
        aff = volume_or_array.affine if affine is None else np.asarray(affine, dtype=np.float64)
    else:
        array = np.asarray(volume_or_array)
        if affine is None:
            raise InputError(f"{path}: write_nifti(array, affine, path) needs the array's 4x4 LPS affine")
        aff = np.asarray(affine, dtype=np.float64)
    if array.ndim != 3:
        raise InputError(f"{path}: write_nifti takes 3-D arrays; got shape {array.shape}")
    if aff.shape != (4, 4):
        raise InputError(f"{path}: the affine must be 4x4; got shape {aff.shape}")
    if not is_nifti_path(path):
        raise InputError(f"{path}: NIfTI output needs a .nii or .nii.gz suffix")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    # No copy: nibabel writes (i, j, k) in Fortran order, i.e. the (k, j, i) array's C order, slice by
    # slice; a C-contiguous (i, j, k) copy would make it transpose every slice again (same bytes, 2x slower).
    data = array.transpose(2, 1, 0)
    ras = lps_affine_to_nifti(aff)
    img = nib.Nifti1Image(data, ras)
    img.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    img.set_sform(ras, code=_XFORM_SCANNER_ANAT)
    img.set_qform(ras, code=_XFORM_SCANNER_ANAT)
    # No intensity scaling: the stored numbers are the values (HU or label ids).
    img.header.set_slope_inter(1.0, 0.0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(path))
    except PermissionError as exc:
        raise InputError(
            f"{path}: permission denied while writing ({exc.strerror}). Choose a writable folder."
        ) from exc
    log.debug("wrote %s %s %s", path, array.shape, array.dtype)
    return path
