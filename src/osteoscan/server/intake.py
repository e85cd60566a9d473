"""Checking an upload before it is queued: cheap, header-only, and strict about archives.

A bad upload must end as ``rejected`` with a reason the sender can act on, at once, without taking a
worker: a 0-byte file, a truncated or corrupt zip, a zip whose member names would escape the job
folder (``../``, absolute paths, symlinks) or that expands beyond the configured limit, files that are
neither DICOM nor NIfTI, and DICOM that holds no CT image (MR, ...). Deeper problems (geometry,
unsupported series) are found by the pipeline and also end as ``rejected``.
"""

from __future__ import annotations

import logging
import shutil
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from osteoscan.errors import InputError, UnsupportedSeriesError

log = logging.getLogger(__name__)

#: SOP classes of CT images (DICOM PS3.4 B.5): CT Image Storage, Enhanced CT Image Storage.
CT_SOP_CLASSES: frozenset[str] = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"})
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ZIP_MAGIC = b"PK\x03\x04"
#: The only header elements intake needs (parsing just these keeps a busy box responsive).
_INTAKE_TAGS = ["SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                "SeriesDescription"]


@dataclass(frozen=True)
class IntakeInfo:
    """What an accepted input holds (filled into the job row)."""

    input_kind: str  # "dicom" or "nifti"
    n_files: int
    study_uid: str | None = None
    series_uid: str | None = None  # the CT series, when there is exactly one
    patient_id: str | None = None
    description: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def _safe_member_path(name: str) -> PurePosixPath:
    """The relative path of a zip member, or InputError when it could escape the target folder."""
    if "\x00" in name:
        raise InputError(f"zip member name {name!r} contains a NUL byte; the archive is refused")
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if p.is_absolute() or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise InputError(f"zip member {name!r} has an absolute path; path traversal refused, "
                         "re-create the zip with relative paths")
    if ".." in p.parts:
        raise InputError(f"zip member {name!r} contains '..'; path traversal refused, "
                         "re-create the zip with relative paths")
    return p


def extract_zip(archive: Path, dest: Path, max_unzipped_bytes: int) -> list[Path]:
    """Extract ``archive`` into ``dest`` after checking every member; returns the files written.

    Raises:
        InputError: truncated/corrupt archive, unsafe member names, symlinks, or too large once expanded.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            total = 0
            for info in infos:
                _safe_member_path(info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise InputError(f"zip member {info.filename!r} is a symbolic link; links are refused")
                total += info.file_size
            if total > max_unzipped_bytes:
                raise InputError(
                    f"zip {archive.name} expands to {total / 2**20:.0f} MiB, more than the limit of "
                    f"{max_unzipped_bytes / 2**20:.0f} MiB (api.max_unzipped_mb)"
                )
            bad = zf.testzip()
            if bad is not None:
                raise InputError(f"zip {archive.name}: member {bad!r} is corrupt (CRC mismatch); re-send it")
            written: list[Path] = []
            root = dest.resolve()
            for info in infos:
                if info.is_dir():
                    continue
                rel = _safe_member_path(info.filename)
                target = (root / rel).resolve()
                if not target.is_relative_to(root):
                    raise InputError(f"zip member {info.filename!r} resolves outside the job folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(target)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive.name} is not a readable zip archive (truncated or corrupt: {exc})") from exc
    except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise InputError(f"zip {archive.name} cannot be extracted ({exc}); re-send it as a plain zip") from exc
    if not written:
        raise InputError(f"zip {archive.name} contains no files")
    return written


def describe_dicom(files: list[Path]) -> IntakeInfo:
    """Read the headers of ``files`` and check that they hold CT images.

    Non-DICOM files next to DICOM ones (a README, a DICOMDIR) are ignored and noted.

    Raises:
        InputError: when none of the files is DICOM.
        UnsupportedSeriesError: when the DICOM files hold no CT image (e.g. MR).
    """
    ct_series: Counter[str] = Counter()
    other: Counter[str] = Counter()
    study_uids: set[str] = set()
    patient_id = description = None
    skipped: list[str] = []
    n_dicom = 0
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_INTAKE_TAGS)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            skipped.append(f"{f.name} ({type(exc).__name__})")
            continue
        n_dicom += 1
        sop = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", "") or "?")
        if sop in CT_SOP_CLASSES or (not sop and modality == "CT"):
            if modality not in ("CT", "?"):
                other[f"{modality} ({UID(sop).name})"] += 1
                continue
            ct_series[str(ds.get("SeriesInstanceUID", ""))] += 1
            study_uids.add(str(ds.get("StudyInstanceUID", "")))
            patient_id = patient_id or (str(ds.get("PatientID", "")) or None)
            description = description or (str(ds.get("SeriesDescription", "")) or None)
        else:
            other[f"{modality} ({UID(sop).name if sop else 'no SOP class'})"] += 1
    if n_dicom == 0:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        raise InputError(f"no DICOM or NIfTI file in the upload ({len(files)} file(s) unreadable: {shown}); "
                         "send CT DICOM files, a zip of them, or a NIfTI volume")
    if not ct_series:
        found = ", ".join(f"{n} x {k}" for k, n in other.most_common())
        raise UnsupportedSeriesError(f"no CT image in the upload: found {found}; osteoscan analyses CT only")
    notes = []
    if skipped:
        notes.append(f"ignored {len(skipped)} non-DICOM file(s)")
    if other:
        notes.append(f"ignored {sum(other.values())} non-CT DICOM instance(s)")
    series_uid = next(iter(ct_series)) if len(ct_series) == 1 else None
    if len(study_uids) > 1:
        notes.append(f"{len(study_uids)} studies in one upload; the pipeline picks the CT series")
    return IntakeInfo(
        input_kind="dicom",
        n_files=sum(ct_series.values()),
        study_uid=next(iter(study_uids)) if len(study_uids) == 1 else None,
        series_uid=series_uid,
        patient_id=patient_id,
        description=description,
        notes=tuple(notes),
    )


def describe_nifti(path: Path) -> IntakeInfo:
    """Check that ``path`` is a readable 3-D NIfTI (header only)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as exc:
        raise InputError(f"{path.name} is not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if len([s for s in shape if s > 1]) != 3:
        raise UnsupportedSeriesError(f"{path.name} has shape {shape}; a 3-D CT volume is needed")
    return IntakeInfo(input_kind="nifti", n_files=1, description=path.name)


def ingest(uploads: list[Path], input_dir: Path, max_unzipped_bytes: int) -> IntakeInfo:
    """Turn the uploaded files (already on disk, in ``input_dir``) into a checked job input.

    Zips are extracted in place and removed; the result is either DICOM files or one NIfTI file.

    Raises:
        InputError (or UnsupportedSeriesError): with the reason the upload is rejected.
    """
    if not uploads:
        raise InputError("the upload has no file; send a zip, DICOM files or a NIfTI volume")
    files: list[Path] = []
    for up in uploads:
        size = up.stat().st_size
        if size == 0:
            raise InputError(f"uploaded file {up.name!r} is empty (0 bytes)")
        with open(up, "rb") as fh:
            magic = fh.read(4)
        if magic == ZIP_MAGIC or up.name.lower().endswith(".zip"):
            files.extend(extract_zip(up, input_dir / up.stem, max_unzipped_bytes))
            up.unlink()
        else:
            files.append(up)
    nifti = [f for f in files if _is_nifti(f.name)]
    if nifti:
        if len(nifti) > 1 or len(files) > 1:
            raise InputError(f"the upload mixes {len(nifti)} NIfTI file(s) with {len(files) - len(nifti)} "
                             "other file(s); send one NIfTI volume alone")
        return describe_nifti(nifti[0])
    return describe_dicom(files)
