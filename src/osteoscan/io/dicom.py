"""Read a CT series from a DICOM folder, a list of files or a zip, the way hospitals hand them over.

Steps (each documented in docs/io.md):

1. **Discover** files: a folder is walked recursively (any file name, with or without ``.dcm``;
   a DICOMDIR is not needed and is ignored), a zip is unpacked to a temporary folder, a list of
   files is taken as is. Non-DICOM files are skipped with a warning.
2. **Read headers only** (``stop_before_pixels``) and group images into candidate stacks:
   SeriesInstanceUID, then image size and orientation (a series mixing them is split). Enhanced
   (multi-frame) CT files contribute one image per frame.
3. **Select** one stack with the rules of :mod:`osteoscan.io.dicom_select` (or the caller's
   ``series_uid``); every other stack is reported with the reason it was skipped.
4. **Geometry**: slices are sorted by their position along the slice normal (never by
   InstanceNumber or file name); duplicates are dropped; gantry tilt is corrected by shifting each
   slice in-plane onto an orthogonal grid; missing slices / non-uniform spacing are resampled onto
   a uniform grid. Each such step adds a note to ``Provenance.geometry_notes``.
5. **Decode** pixels (in worker processes for compressed syntaxes: the pylibjpeg decoders hold the
   GIL) and apply RescaleSlope/RescaleIntercept to get HU.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osteoscan.errors import GeometryError, InputError, UnsupportedSeriesError
from osteoscan.io.dicom_select import SkippedSeries, StackInfo, choose_stack
from osteoscan.io.volume import CTVolume, Provenance, to_canonical

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: Positions closer than this along the normal (mm) are the same slice position.
DUPLICATE_POSITION_MM = 0.01
#: Slice steps may deviate from the median by this much (mm or fraction) and still count as uniform.
UNIFORM_STEP_ABS_MM = 0.02
UNIFORM_STEP_REL = 0.05
#: A gap wider than both of these is missing data we refuse to invent by interpolation.
MAX_GAP_FACTOR = 4.0
MAX_GAP_MM = 10.0
#: In-plane drift over the whole stack (in pixels) below which a stack counts as orthogonal.
TILT_TOLERANCE_PX = 0.25
#: Gantry tilts beyond this are rejected (no CT scanner tilts further; it means broken geometry).
MAX_TILT_DEG = 30.0
#: Scatter of slice origins around a straight line (pixels) beyond which positions are inconsistent.
POSITION_SCATTER_PX = 0.5
#: HU assigned to voxels that tilt correction moves in from outside the field of view.
AIR_HU = -1024
#: Use worker processes for compressed pixel data from this many frames on (start-up ~0.3 s).
MIN_FRAMES_FOR_PROCESSES = 48
#: SOP class of the DICOMDIR (Media Storage Directory Storage): an index, not an image.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Transfer syntaxes stored uncompressed (decoding is a memory copy; no worker processes).
UNCOMPRESSED_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


@dataclass
class _Frame:
    """One 2-D image: a single-frame file, or one frame of an Enhanced CT file."""

    path: Path
    frame: int | None
    ds: Dataset
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    cols: int
    slope: float
    intercept: float
    thickness: float | None
    instance_number: int
    sop_uid: str
    acquisition: str


@dataclass
class _Stack:
    info: StackInfo
    frames: list[_Frame]


@dataclass(frozen=True)
class DicomSeries:
    """The chosen series: its canonical volume and its header datasets.

    Attributes:
        volume: the CT volume in canonical (S, P, L) orientation, HU.
        datasets: header-only pydicom datasets of the images used, in slice order, i.e. sorted by
            increasing index along ``volume``'s ``slice_axis`` (for an axial series:
            ``datasets[k]`` describes ``volume.array[k]`` unless ``resampled``). Enhanced CT
            contributes its one dataset once per frame.
        slice_axis: the array axis of ``volume`` along the original slice normal.
        resampled: True when the slice grid was resampled (gaps, non-uniform spacing, tilt), so
            slices no longer map one-to-one to ``datasets``.
        skipped: every other series or part of one, with the reason it was not chosen.
        ignored_files: files that were not DICOM images (path, reason).
    """

    volume: CTVolume
    datasets: tuple[Dataset, ...]
    slice_axis: int
    resampled: bool
    skipped: tuple[SkippedSeries, ...] = ()
    ignored_files: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------------------------------
# 1. discovery


def _walk(folder: Path) -> list[Path]:
    files: list[Path] = []
    errors: list[OSError] = []
    for root, dirs, names in os.walk(folder, onerror=errors.append):
        dirs.sort()
        for name in sorted(names):
            files.append(Path(root) / name)
    for err in errors:
        if isinstance(err, PermissionError):
            raise InputError(
                f"{err.filename}: permission denied while listing the folder. "
                f"Make it readable (e.g. chmod -R u+rX '{folder}')."
            )
    return files


def _unzip(path: Path, tmp: Path) -> Path:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise InputError(f"{path}: member '{bad}' is corrupt (CRC mismatch). Re-create the zip file.")
            zf.extractall(tmp)  # zipfile strips absolute paths and '..' (no path traversal)
    except zipfile.BadZipFile as exc:
        raise InputError(
            f"{path}: not a valid zip file ({exc}). Re-create it, or unzip it and pass the folder."
        ) from exc
    return tmp


def _discover(source: str | Path | Sequence[str | Path], tmp: Path) -> tuple[list[Path], str]:
    """Files to look at and a human description of the source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder. Check the path.")
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                raise InputError(
                    f"{path}: permission denied. Make the folder readable (chmod -R u+rX '{path}')."
                )
            files = _walk(path)
            if not files:
                raise InputError(
                    f"{path}: the folder is empty. Point to the folder that holds the DICOM series."
                )
            return files, str(path)
        if zipfile.is_zipfile(path):
            files = _walk(_unzip(path, tmp))
            if not files:
                raise InputError(
                    f"{path}: the zip file is empty. Zip the folder that holds the DICOM series."
                )
            return files, str(path)
        return [path], str(path)
    files = [Path(p) for p in source]
    if not files:
        raise InputError("an empty list of DICOM files was given. Pass at least one file.")
    for p in files:
        if not p.is_file():
            raise InputError(f"{p}: not a file. Pass the DICOM files of one series (or their folder).")
    return files, f"{len(files)} files starting with {files[0]}"


# --------------------------------------------------------------------------------------------------
# 2. headers and stacks


def _read_header(path: Path) -> tuple[Dataset | None, str]:
    """Header-only dataset, or None with the reason the file was ignored."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except PermissionError as exc:
        raise InputError(
            f"{path}: permission denied ({exc.strerror}). Make the files readable (chmod -R u+r)."
        ) from exc
    except InvalidDicomError:
        try:  # DICOM without the 128-byte preamble (old exports) still parses with force=True
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
            return None, f"not a DICOM file ({type(exc).__name__})"
        if "SOPClassUID" not in ds or "Modality" not in ds:
            return None, "not a DICOM file"
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        return None, f"unreadable DICOM header ({exc})"
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        # force-read files lack file meta: treat as implicit VR little endian (the DICOM default)
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ImplicitVRLittleEndian

        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return None, "DICOMDIR index (not needed: files are found by walking the folder)"
    return ds, ""


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _opt_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _first(value: Any) -> str | None:
    """String of a possibly multi-valued element (ConvolutionKernel can be ['Br38f', '3'])."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        parts = [str(v) for v in value if str(v)]
        return parts[0] if parts else None
    return str(value)


def _frames_of(path: Path, ds: Dataset) -> list[_Frame]:
    """The 2-D images of one file (one for classic CT, NumberOfFrames for Enhanced CT)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    common: dict[str, Any] = {
        "path": path,
        "ds": ds,
        "rows": int(ds.get("Rows", 0) or 0),
        "cols": int(ds.get("Columns", 0) or 0),
        "instance_number": int(ds.get("InstanceNumber", 0) or 0),
        "sop_uid": str(ds.get("SOPInstanceUID", "")),
        "acquisition": str(ds.get("AcquisitionNumber", "") or ""),
    }
    if per_frame is not None and len(per_frame) == n_frames:
        frames = []
        for f in range(n_frames):

            def item(seq_name: str, f: int = f):
                for groups in (per_frame[f], shared[0] if shared else None):
                    seq = groups.get(seq_name) if groups is not None else None
                    if seq:
                        return seq[0]
                return None

            pos = item("PlanePositionSequence")
            ori = item("PlaneOrientationSequence")
            meas = item("PixelMeasuresSequence")
            xf = item("PixelValueTransformationSequence")
            slope = _opt_float(xf.get("RescaleSlope")) if xf else None
            inter = _opt_float(xf.get("RescaleIntercept")) if xf else None
            ipp = _floats(pos.get("ImagePositionPatient"), 3) if pos else None
            iop = _floats(ori.get("ImageOrientationPatient"), 6) if ori else None
            ps = _floats(meas.get("PixelSpacing"), 2) if meas else None
            if ipp is None or iop is None or ps is None:
                return []
            frames.append(
                _Frame(
                    frame=f,
                    position=ipp,
                    row_dir=iop[:3],
                    col_dir=iop[3:],
                    pixel_spacing=(float(ps[0]), float(ps[1])),
                    slope=slope or 1.0,
                    intercept=inter or 0.0,
                    thickness=_opt_float(meas.get("SliceThickness")),
                    **common,
                )
            )
        return frames
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    ps = _floats(ds.get("PixelSpacing"), 2)
    if ipp is None or iop is None or ps is None or n_frames != 1:
        return []
    return [
        _Frame(
            frame=None,
            position=ipp,
            row_dir=iop[:3],
            col_dir=iop[3:],
            pixel_spacing=(float(ps[0]), float(ps[1])),
            slope=_opt_float(ds.get("RescaleSlope")) or 1.0,
            intercept=_opt_float(ds.get("RescaleIntercept")) or 0.0,
            thickness=_opt_float(ds.get("SliceThickness")),
            **common,
        )
    ]


def _stack_info(key: str, ds: Dataset, frames: list[_Frame], split_note: str = "") -> StackInfo:
    if frames:
        normal = np.cross(frames[0].row_dir, frames[0].col_dir)
        cos_z = float(abs(normal[2]) / max(np.linalg.norm(normal), 1e-9))
        thickness = frames[0].thickness
    else:
        cos_z, thickness = 0.0, _opt_float(ds.get("SliceThickness"))
    return StackInfo(
        key=key,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        description=str(ds.get("SeriesDescription", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        image_type=tuple(str(t) for t in (ds.get("ImageType") or ())),
        kernel=_first(ds.get("ConvolutionKernel")),
        thickness_mm=thickness,
        n_slices=len(frames),
        normal_cos_z=cos_z,
        has_geometry=bool(frames),
        series_number=int(ds.get("SeriesNumber", 0) or 0),
        split_note=split_note,
    )


def _split_repeated_acquisitions(
    parts: dict[tuple, tuple[list[_Frame], Dataset]],
) -> dict[tuple, tuple[list[_Frame], Dataset]]:
    """Split a stack by AcquisitionNumber when its acquisitions cover the same positions twice.

    Some scanners put several phases (pre/post contrast, repeated scans) into one series; merged,
    they would interleave phases. Acquisitions that merely continue each other are left together.
    """
    out: dict[tuple, tuple[list[_Frame], Dataset]] = {}
    for key, (frames, ds0) in parts.items():
        acqs = {fr.acquisition for fr in frames}
        if len(acqs) > 1:
            normal = np.cross(frames[0].row_dir, frames[0].col_dir)
            d = np.round(np.array([fr.position @ normal for fr in frames]) / DUPLICATE_POSITION_MM)
            if len(np.unique(d)) < len(frames):
                for acq in sorted(acqs):
                    sub = [fr for fr in frames if fr.acquisition == acq]
                    out[(*key, acq)] = (sub, sub[0].ds)
                continue
        out[key] = (frames, ds0)
    return out


def _group(headers: list[tuple[Path, Dataset]]) -> list[_Stack]:
    """Candidate stacks: by series, then split by image size, orientation and localizer-ness."""
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in headers:
        by_series.setdefault(
            str(ds.get("SeriesInstanceUID", "") or f"(no series UID) {path.parent}"), []
        ).append((path, ds))
    stacks: list[_Stack] = []
    for uid, members in by_series.items():
        parts: dict[tuple, tuple[list[_Frame], Dataset]] = {}
        no_geometry: list[tuple[Path, Dataset]] = []
        for path, ds in members:
            frames = _frames_of(path, ds)
            if not frames:
                no_geometry.append((path, ds))
                continue
            types = tuple(str(t).upper() for t in (ds.get("ImageType") or ()))
            for fr in frames:
                key = (
                    fr.rows,
                    fr.cols,
                    tuple(np.round(np.concatenate([fr.row_dir, fr.col_dir]), 3)),
                    "LOCALIZER" in types,
                    str(ds.get("Modality", "")),
                )
                parts.setdefault(key, ([], ds))[0].append(fr)
        parts = _split_repeated_acquisitions(parts)
        ordered = sorted(parts.items(), key=lambda kv: -len(kv[1][0]))
        main_rows = ordered[0][0][0:2] if ordered else None
        for idx, (key, (frames, ds0)) in enumerate(ordered):
            note = ""
            if idx > 0:
                if len(key) > 5:
                    note = (
                        f"{len(frames)} images of acquisition {key[5] or '(none)'} repeat slice positions of "
                        "another acquisition in the same series (e.g. a second contrast phase): left out"
                    )
                elif key[:2] != main_rows:
                    note = (
                        f"{len(frames)} images of {key[0]}x{key[1]} pixels mixed into a series of "
                        f"{ordered[0][0][0]}x{ordered[0][0][1]} images: left out (mixed image sizes)"
                    )
                else:
                    note = f"{len(frames)} images with a different orientation in the same series: left out"
            stacks.append(_Stack(_stack_info(uid if idx == 0 else f"{uid}#{idx}", ds0, frames, note), frames))
        if no_geometry:
            _, ds0 = no_geometry[0]
            info = _stack_info(f"{uid}#nogeometry" if parts else uid, ds0, [])
            stacks.append(_Stack(info, []))
    return stacks


# --------------------------------------------------------------------------------------------------
# 4. geometry


@dataclass
class _Geometry:
    order: list[int]  # frame indices in slice order (after de-duplication)
    normal: np.ndarray
    positions: np.ndarray  # along the normal, mm, ascending, per kept frame
    step_mm: float
    inplane_drift: np.ndarray  # in-plane shift (mm, LPS vector) per mm along the normal (tilt)
    notes: list[str]
    uniform: bool


def _plan_geometry(frames: list[_Frame], label: str) -> _Geometry:
    f0 = frames[0]
    row_dir = f0.row_dir / np.linalg.norm(f0.row_dir)
    col_dir = f0.col_dir / np.linalg.norm(f0.col_dir)
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    pos = np.array([fr.position for fr in frames])
    d = pos @ normal
    order = sorted(range(len(frames)), key=lambda i: (d[i], frames[i].instance_number))
    notes: list[str] = []
    # duplicates: identical SOP instance (copied file) or identical position
    kept: list[int] = []
    seen_sop: set[str] = set()
    dup_pos = 0
    for i in order:
        if frames[i].frame is None and frames[i].sop_uid and frames[i].sop_uid in seen_sop:
            log.info("%s: duplicate SOP instance %s (%s) ignored", label, frames[i].sop_uid, frames[i].path)
            continue
        seen_sop.add(frames[i].sop_uid)
        if kept and abs(d[i] - d[kept[-1]]) < DUPLICATE_POSITION_MM:
            dup_pos += 1
            if frames[i].instance_number < frames[kept[-1]].instance_number:
                kept[-1] = i
            continue
        kept.append(i)
    if dup_pos:
        notes.append(
            f"{dup_pos} image(s) at an already occupied slice position were dropped "
            "(kept the lowest InstanceNumber at each position)"
        )
    dk = d[kept]
    px = min(f0.pixel_spacing)
    if len(kept) == 1:
        thick = f0.thickness or _opt_float(f0.ds.get("SpacingBetweenSlices"))
        if not thick:
            thick = 1.0
            notes.append("single slice without SliceThickness: slice thickness set to 1 mm")
        return _Geometry(kept, normal, dk, float(thick), np.zeros(3), notes, True)
    steps = np.diff(dk)
    step = float(np.median(steps))
    # tilt: in-plane part of the slice origins as a linear function of the position along the normal
    inplane = pos[kept] - np.outer(dk, normal)
    rel = dk - dk[0]
    coef = np.polyfit(rel, inplane, 1)  # (2, 3): slope per mm, intercept
    drift = coef[0]
    fit = np.outer(rel, drift) + coef[1]
    scatter = float(np.abs(inplane - fit).max())
    if scatter > POSITION_SCATTER_PX * px:
        raise GeometryError(
            f"{label}: slice origins scatter by {scatter:.2f} mm in-plane around a straight line; the "
            "positions are inconsistent (mixed acquisitions or a broken export). Choose another series "
            "with --series or re-export this one."
        )
    total_drift_px = float(np.linalg.norm(drift) * (dk[-1] - dk[0]) / px)
    if total_drift_px > TILT_TOLERANCE_PX:
        tilt = float(np.degrees(np.arctan(np.linalg.norm(drift))))
        if tilt > MAX_TILT_DEG:
            raise GeometryError(
                f"{label}: slice positions imply a gantry tilt of {tilt:.1f} degrees (> {MAX_TILT_DEG}); "
                "the geometry is not usable. Re-export the series or choose another one with --series."
            )
        notes.append(
            f"gantry tilt {tilt:.1f} degrees: each slice shifted in-plane onto an orthogonal grid "
            "(linear interpolation; voxels shifted in from outside the field of view set to air)"
        )
    else:
        drift = np.zeros(3)
    uniform = bool(np.all(np.abs(steps - step) <= max(UNIFORM_STEP_ABS_MM, UNIFORM_STEP_REL * step)))
    if not uniform:
        # the median step is the acquisition's spacing; gaps are (near) multiples of it
        big = float(steps.max())
        if big > MAX_GAP_FACTOR * step and big > MAX_GAP_MM:
            at = int(np.argmax(steps))
            raise GeometryError(
                f"{label}: {big:.1f} mm gap between slices at {dk[at]:.1f} and {dk[at + 1]:.1f} mm along the "
                f"slice normal (usual step {step:.2f} mm): slices are missing. Export the complete series."
            )
        n_gaps = int(np.sum(steps > step * (1 + UNIFORM_STEP_REL)))
        notes.append(
            f"non-uniform slice spacing (steps {steps.min():.2f}-{steps.max():.2f} mm, {n_gaps} gap(s)): "
            f"resampled to a uniform {step:.2f} mm grid by linear interpolation along the slice normal"
        )
    return _Geometry(kept, normal, dk, step, drift, notes, uniform)


def _deshear(stack: np.ndarray, positions: np.ndarray, drift: np.ndarray, f0: _Frame) -> np.ndarray:
    """Shift every slice in-plane so that the slice origins line up along the normal (tilt fix)."""
    from scipy import ndimage

    row_dir = f0.row_dir / np.linalg.norm(f0.row_dir)
    col_dir = f0.col_dir / np.linalg.norm(f0.col_dir)
    out = np.empty(stack.shape, dtype=np.float32)
    for k in range(stack.shape[0]):
        t = drift * (positions[k] - positions[0])  # in-plane offset of this slice's origin (mm)
        # target voxel (j, i) lies at source (j - t.col/ps_row, i - t.row/ps_col) of this slice
        shift = (float(t @ col_dir) / f0.pixel_spacing[0], float(t @ row_dir) / f0.pixel_spacing[1])
        ndimage.shift(
            stack[k].astype(np.float32), shift, output=out[k], order=1, mode="constant", cval=AIR_HU
        )
    return out


def _uniform_resample(stack: np.ndarray, positions: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation along axis 0 from irregular ``positions`` onto a uniform grid."""
    n = round((positions[-1] - positions[0]) / step) + 1
    target = positions[0] + step * np.arange(n)
    i1 = np.clip(np.searchsorted(positions, target, side="left"), 1, len(positions) - 1)
    i0 = i1 - 1
    w = ((target - positions[i0]) / (positions[i1] - positions[i0])).clip(0, 1).astype(np.float32)
    a = stack[i0].astype(np.float32)
    b = stack[i1].astype(np.float32)
    return a + (b - a) * w[:, None, None], target


# --------------------------------------------------------------------------------------------------
# 5. pixels


def _decode_one(path: str, frame: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    return pixel_array(path, index=frame)


#: Little-endian uncompressed syntaxes whose pixel values are a plain array at the end of the file.
_RAW_LITTLE_ENDIAN = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": True}  # syntax -> explicit VR


def _raw_pixels(path: Path, ds: Dataset) -> np.ndarray | None:
    """The stored values of a single-frame uncompressed little-endian file read straight from disk,
    or None where that is not certain (then pydicom decodes it).

    Why: pydicom's ``pixel_array(path)`` parses the whole header a second time for every slice
    (~60 % of reading an uncompressed series). Here the header parsed once is reused; the pixel
    values are taken only when the element header just before them is, byte for byte, the
    PixelData element of the expected length (so trailing elements, odd lengths or encapsulation
    fall back), and unused high bits are masked / sign-extended as pydicom does.
    """
    explicit = _RAW_LITTLE_ENDIAN.get(str(ds.file_meta.TransferSyntaxUID))
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.PixelRepresentation) == 1
        one_frame = int(ds.get("NumberOfFrames", 1) or 1) == 1 and int(ds.get("SamplesPerPixel", 1)) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if explicit is None or not one_frame or allocated not in (8, 16) or not 0 < stored <= allocated:
        return None
    n_bytes = rows * cols * allocated // 8
    if n_bytes == 0 or n_bytes % 2:
        return None
    tag = b"\xe0\x7f\x10\x00"
    header = tag + (b"OW\x00\x00" if allocated == 16 else b"OB\x00\x00") if explicit else tag
    header += n_bytes.to_bytes(4, "little")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(size - n_bytes - len(header))
            if fh.read(len(header)) != header:
                return None
            raw = fh.read(n_bytes)
    except (OSError, ValueError):
        return None
    dtype = np.dtype(("<i" if signed else "<u") + str(allocated // 8))
    arr = np.frombuffer(raw, dtype=dtype).reshape(rows, cols)
    if stored < allocated:
        shift = allocated - stored
        arr = (arr << shift) >> shift if signed else arr & np.array((1 << stored) - 1, dtype=dtype)
    return arr.copy() if not arr.flags.writeable else arr


def _decode_chunk(items: list[tuple[str, int | None]]) -> list[np.ndarray]:
    """Worker-process entry: decode stored values of several frames."""
    return [_decode_one(p, f) for p, f in items]


class _EarlyPool:
    """Decoding worker processes, started as soon as the file list suggests they will pay off.

    Starting processes costs ~0.3 s (interpreter + imports); started before the header pass, that
    overlaps with reading the headers instead of adding to it.
    """

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self.pool: ProcessPoolExecutor | None = None
        self.unavailable = False

    def maybe_start(self, files: list[Path]) -> None:
        if self.n_workers < 2 or len(files) < MIN_FRAMES_FOR_PROCESSES or not _looks_compressed(files):
            return
        self.start()

    def start(self) -> ProcessPoolExecutor | None:
        """The pool, started now if needed; None where processes cannot be started."""
        from concurrent.futures.process import BrokenProcessPool

        if self.pool is None and self.n_workers > 1 and not self.unavailable:
            try:
                ctx = multiprocessing.get_context("forkserver")
            except ValueError:  # no forkserver on this platform
                ctx = multiprocessing.get_context("spawn")
            try:
                self.pool = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=ctx)
                for _ in range(self.n_workers):
                    self.pool.submit(_warm_up)
            except (AssertionError, OSError, BrokenProcessPool, RuntimeError) as exc:
                # e.g. "daemonic processes are not allowed to have children" inside a worker pool
                log.warning("cannot start decoding processes (%s); decoding in this process", exc)
                self.unavailable = True
                self.shutdown()
        return self.pool

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _warm_up() -> None:
    """Import the decoders in a worker process before the first real task arrives."""
    import pydicom.pixels  # noqa: F401


def _looks_compressed(files: list[Path]) -> bool:
    """Transfer syntax of the first DICOM file among the first few (file meta only; cheap)."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    for path in files[:8]:
        try:
            ts = str(read_file_meta_info(path).get("TransferSyntaxUID", ""))
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
            continue
        if ts:
            return ts not in UNCOMPRESSED_SYNTAXES
    return False


def _decode_all(frames: list[_Frame], pool: _EarlyPool) -> list[np.ndarray]:
    from pydicom.errors import InvalidDicomError

    items = [(str(fr.path), fr.frame) for fr in frames]
    compressed = any(str(fr.ds.file_meta.TransferSyntaxUID) not in UNCOMPRESSED_SYNTAXES for fr in frames)
    n_cpu = pool.n_workers
    try:
        # One decode per file: Enhanced CT files decode all their frames at once.
        if all(fr.frame is not None for fr in frames) and len({fr.path for fr in frames}) == 1:
            whole = _decode_one(items[0][0], None)
            whole = whole[None] if whole.ndim == 2 else whole
            return [whole[fr.frame] for fr in frames]
        if compressed and n_cpu > 1 and len(items) >= MIN_FRAMES_FOR_PROCESSES:
            decoded = _decode_in_processes(items, pool)
            if decoded is not None:
                return decoded
        out = []
        for fr, (p, f) in zip(frames, items):
            raw = _raw_pixels(fr.path, fr.ds) if f is None else None
            out.append(raw if raw is not None else _decode_one(p, f))
        return out
    except (ValueError, EOFError, OSError, InvalidDicomError, RuntimeError, KeyError, AttributeError) as exc:
        bad = _find_bad_file(items)
        where = bad or "one of the files"
        raise InputError(
            f"{where}: the pixel data cannot be decoded ({exc}). The file is truncated or corrupt: "
            "re-export the series, or remove the file and accept a gap."
        ) from exc


def _find_bad_file(items: list[tuple[str, int | None]]) -> str | None:
    from pydicom.errors import InvalidDicomError

    for p, f in items:
        try:
            _decode_one(p, f)
        except (ValueError, EOFError, OSError, InvalidDicomError, RuntimeError, KeyError, AttributeError):
            return p
    return None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _decode_in_processes(items: list[tuple[str, int | None]], early: _EarlyPool) -> list[np.ndarray] | None:
    """Decode in worker processes (pylibjpeg's decoders hold the GIL, so threads do not help).

    Returns None when worker processes cannot run here (daemonic parent, a ``__main__`` that
    cannot be re-imported, ...): the caller then decodes serially. Decoding errors propagate.
    """
    from concurrent.futures.process import BrokenProcessPool

    n_chunks = early.n_workers * 4
    chunks = [items[i::n_chunks] for i in range(n_chunks)]
    try:
        pool = early.start()
        if pool is None:
            return None
        results = list(pool.map(_decode_chunk, chunks))
    except (BrokenProcessPool, AssertionError, PermissionError) as exc:
        log.warning("parallel decoding unavailable here (%s); decoding in this process", exc)
        return None
    out: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
    for c, res in enumerate(results):
        for j, arr in enumerate(res):
            out[c + j * n_chunks] = arr
    return out


def _to_hu(arrays: list[np.ndarray], frames: list[_Frame], label: str) -> np.ndarray:
    """Stack stored values and apply RescaleSlope/Intercept (int16 when exact, else float32)."""
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise GeometryError(
            f"{label}: decoded images have different sizes {sorted(shapes)}; re-export the series"
        )
    slopes = np.array([fr.slope for fr in frames], dtype=np.float64)
    inters = np.array([fr.intercept for fr in frames], dtype=np.float64)
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    ends = np.concatenate([lo * slopes + inters, hi * slopes + inters])
    i16 = np.iinfo(np.int16)
    exact = np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters))
    if exact and ends.min() >= i16.min and ends.max() <= i16.max:
        out = np.empty((len(arrays), *arrays[0].shape), dtype=np.int16)
        for k, (a, s, i) in enumerate(zip(arrays, slopes, inters)):
            if s == 1:
                np.add(a, int(i), out=out[k], casting="unsafe", dtype=np.int32)
            else:
                np.multiply(a, int(s), out=out[k], casting="unsafe", dtype=np.int32)
                out[k] += int(i)
        return out
    out32 = np.empty((len(arrays), *arrays[0].shape), dtype=np.float32)
    for k, (a, s, i) in enumerate(zip(arrays, slopes, inters)):
        np.multiply(a, np.float32(s), out=out32[k], casting="unsafe", dtype=np.float32)
        out32[k] += np.float32(i)
    return out32


# --------------------------------------------------------------------------------------------------
# provenance


def _age_years(value: Any) -> float | None:
    s = str(value or "").strip().upper()
    if len(s) < 2 or not s[:-1].isdigit():
        return None
    n, unit = float(s[:-1]), s[-1]
    return {"Y": n, "M": n / 12.0, "W": n / 52.1775, "D": n / 365.25}.get(unit)


def _height_m(value: Any) -> float | None:
    h = _opt_float(value)
    if h is None or h <= 0:
        return None
    if h > 3.0:  # PatientSize is metres by the standard; some systems write centimetres
        log.info("PatientSize %.1f looks like centimetres; converted to metres", h)
        h /= 100.0
    return h


def _provenance(ds: Dataset, frames: list[_Frame], source: str, notes: list[str]) -> Provenance:
    from pydicom.uid import UID

    syntaxes = sorted({str(fr.ds.file_meta.TransferSyntaxUID) for fr in frames})
    ts = " + ".join(f"{UID(u).name} [{u}]" if UID(u).is_transfer_syntax else u for u in syntaxes)
    sex = str(ds.get("PatientSex", "") or "").upper() or None
    weight = _opt_float(ds.get("PatientWeight"))
    contrast = str(ds.get("ContrastBolusAgent", "") or "").strip() or None
    return Provenance(
        source_format="dicom",
        source_path=source,
        study_instance_uid=str(ds.get("StudyInstanceUID", "")) or None,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        sop_instance_uids=tuple(fr.sop_uid for fr in frames),
        modality=str(ds.get("Modality", "")) or None,
        manufacturer=str(ds.get("Manufacturer", "") or "") or None,
        manufacturer_model=str(ds.get("ManufacturerModelName", "") or "") or None,
        kvp=_opt_float(ds.get("KVP")),
        convolution_kernel=_first(ds.get("ConvolutionKernel")),
        slice_thickness_mm=frames[0].thickness,
        contrast_agent=contrast,
        transfer_syntax=ts,
        series_description=str(ds.get("SeriesDescription", "") or "") or None,
        study_date=str(ds.get("StudyDate", "") or "") or None,
        patient_id=str(ds.get("PatientID", "") or "") or None,
        patient_name=str(ds.get("PatientName", "") or "") or None,
        patient_age_years=_age_years(ds.get("PatientAge")),
        patient_sex=sex if sex in ("M", "F", "O") else None,
        patient_height_m=_height_m(ds.get("PatientSize")),
        patient_weight_kg=weight if weight and weight > 0 else None,
        geometry_notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------------
# public API


def scan_series(
    source: str | Path | Sequence[str | Path], series_uid: str | None = None
) -> tuple[list[StackInfo], StackInfo | None, list[SkippedSeries], list[tuple[str, str]]]:
    """Headers only: every candidate stack, the one the rules choose, the skipped ones, ignored files.

    Cheap (no pixel decoding); used by ``osteoscan info`` and by :func:`load_dicom_series`.
    """
    with tempfile.TemporaryDirectory(prefix="osteoscan-zip-") as tmp:
        stacks, chosen, skipped, ignored, _ = _scan(source, series_uid, Path(tmp))
    return [s.info for s in stacks], (chosen.info if chosen else None), skipped, ignored


def _scan(source, series_uid, tmp: Path, on_files: Callable[[list[Path]], None] | None = None):
    files, desc = _discover(source, tmp)
    if on_files is not None:
        on_files(files)
    headers: list[tuple[Path, Dataset]] = []
    ignored: list[tuple[str, str]] = []
    for p in files:
        ds, why = _read_header(p)
        if ds is None:
            ignored.append((str(p), why))
            if not why.startswith("DICOMDIR"):
                log.warning("skipped %s: %s", p, why)
            continue
        headers.append((p, ds))
    if not headers:
        detail = "; ".join(f"{Path(p).name}: {w}" for p, w in ignored[:3])
        raise InputError(
            f"{desc}: no DICOM images found among {len(files)} file(s) ({detail}). "
            "Point to the folder or zip that holds the CT series."
        )
    stacks = _group(headers)
    chosen_info, skipped, requested_rejected = choose_stack([s.info for s in stacks], series_uid)
    if series_uid is not None and not any(s.info.series_uid == series_uid for s in stacks):
        available = ", ".join(sorted({f"{s.info.series_uid} ({s.info.description})" for s in stacks}))
        raise InputError(f"{desc}: series {series_uid} not found. Available series: {available}")
    if chosen_info is None:
        reasons = requested_rejected or skipped
        first = reasons[0]
        if len({r.reason for r in reasons}) == 1:
            names = ", ".join(
                f"{r.series_uid or 'no UID'} '{r.description or 'no description'}'" for r in reasons[:3]
            )
            more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
            raise UnsupportedSeriesError(f"{desc}: {first.reason} (series {names}{more})")
        summary = "; ".join(str(r) for r in reasons[:4])
        raise UnsupportedSeriesError(f"{desc}: no analysable CT series. {summary}")
    chosen = next(s for s in stacks if s.info.key == chosen_info.key)
    return stacks, chosen, skipped, ignored, desc


def load_dicom_series(
    source: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    *,
    workers: int | None = None,
) -> DicomSeries:
    """Read the CT series to analyse from a DICOM folder, zip or list of files.

    Args:
        source: folder (searched recursively), zip file, single file, or a list of files.
        series_uid: SeriesInstanceUID to read instead of the automatic choice.
        workers: processes for decoding compressed pixel data (default: available CPUs).

    Returns:
        :class:`DicomSeries` with the canonical volume, header datasets and skipped series.

    Raises:
        InputError: missing/empty/unreadable input, corrupt or truncated files, unknown series_uid.
        UnsupportedSeriesError: no CT series (e.g. "MR series: osteoscan analyses CT only").
        GeometryError: inconsistent positions, large gaps, excessive tilt.
    """
    pool = _EarlyPool(workers or _cpu_count())
    try:
        with tempfile.TemporaryDirectory(prefix="osteoscan-zip-") as tmp:
            # worker processes start while the headers are read, when compressed data is likely
            _stacks, chosen, skipped, ignored, desc = _scan(source, series_uid, Path(tmp), pool.maybe_start)
            info = chosen.info
            label = f"series {info.series_uid} ({info.description or 'no description'}) in {desc}"
            geo = _plan_geometry(chosen.frames, label)
            frames = [chosen.frames[i] for i in geo.order]
            arrays = _decode_all(frames, pool)
    finally:
        pool.shutdown()
    hu = _to_hu(arrays, frames, label)
    f0 = frames[0]
    notes = list(geo.notes)
    resampled = False
    if np.any(geo.inplane_drift):
        hu = _deshear(hu, geo.positions, geo.inplane_drift, f0)
        resampled = True
    if not geo.uniform:
        hu, _ = _uniform_resample(hu, geo.positions, geo.step_mm)
        resampled = True
    if hu.dtype not in (np.int16, np.float32):
        hu = hu.astype(np.float32)
    row_dir = f0.row_dir / np.linalg.norm(f0.row_dir)
    col_dir = f0.col_dir / np.linalg.norm(f0.col_dir)
    affine = np.eye(4)
    affine[:3, 0] = geo.normal * geo.step_mm
    affine[:3, 1] = col_dir * f0.pixel_spacing[0]
    affine[:3, 2] = row_dir * f0.pixel_spacing[1]
    # origin: first slice's in-plane origin, placed at its position along the normal
    p0 = f0.position
    affine[:3, 3] = p0
    prov = _provenance(f0.ds, frames, desc, notes)
    volume = to_canonical(CTVolume(array=hu, affine=affine, provenance=prov))
    # which canonical axis follows the slice normal, and in which direction
    dots = volume.direction.T @ geo.normal
    slice_axis = int(np.argmax(np.abs(dots)))
    datasets = [fr.ds for fr in frames]
    if dots[slice_axis] < 0:
        datasets.reverse()
        prov = dataclasses.replace(prov, sop_instance_uids=tuple(reversed(prov.sop_instance_uids)))
        volume = CTVolume(volume.array, volume.affine, prov)
    for note in notes:
        log.info("%s: %s", label, note)
    log.info("read %s: %s", label, volume.summary())
    return DicomSeries(
        volume=volume,
        datasets=tuple(datasets),
        slice_axis=slice_axis,
        resampled=resampled,
        skipped=tuple(skipped),
        ignored_files=tuple(ignored),
    )


def read_dicom(source: str | Path | Sequence[str | Path], series_uid: str | None = None) -> CTVolume:
    """The canonical CT volume of :func:`load_dicom_series` (headers dropped)."""
    return load_dicom_series(source, series_uid).volume
