"""Turning the user's INPUTS (folders, a manifest CSV, glob patterns) into a list of studies.

Rules (documented in docs/batch.md):

* a **folder** holds one study per entry: each sub-folder (DICOM inside, any depth), each NIfTI
  file and each zip is one study; a folder with DICOM files directly in it and no sub-folders is
  itself one study;
* with ``by_series=True`` a folder is instead searched (recursively) for DICOM files, which are
  grouped by SeriesInstanceUID: every CT series is one study, whatever the folder layout;
* a **manifest** (``*.csv``) lists one study per row: column ``input`` (required; relative paths
  are relative to the manifest's folder) and optionally ``study_id``, ``series_uid``,
  ``patient_height_cm``, ``patient_sex``, ``patient_age``;
* a **glob pattern** (``*``, ``?``, ``[``; ``**`` recurses): every match is one study.

Discovery only looks at names (and, by series, DICOM headers): it does not decide whether an input
is readable. A missing or corrupt input becomes a study that fails in its worker with a reason.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from osteoscan.batch.tasks import StudyTask, safe_study_id
from osteoscan.errors import InputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ZIP_SUFFIX = ".zip"
MANIFEST_SUFFIX = ".csv"
#: Manifest columns understood (``input`` is required).
MANIFEST_COLUMNS = ("input", "study_id", "series_uid", "patient_height_cm", "patient_sex", "patient_age")
#: DICOM Part 10 files carry "DICM" after a 128-byte preamble (PS3.10 section 7.1).
_DICM_OFFSET = 128
_DICM_MAGIC = b"DICM"
#: Modalities screened when discovering by series.
CT_MODALITIES = ("CT",)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_zip(path: Path) -> bool:
    return path.name.lower().endswith(ZIP_SUFFIX)


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file (preamble + "DICM") or a file named ``*.dcm``."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(_DICM_OFFSET)
            return fh.read(4) == _DICM_MAGIC
    except OSError:
        return False


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, ZIP_SUFFIX):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _visible(entries: Iterable[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def discover_folder(folder: Path) -> list[StudyTask]:
    """One study per sub-folder / NIfTI / zip in ``folder`` (or ``folder`` itself if it is one study)."""
    entries = _visible(folder.iterdir())
    subdirs = [p for p in entries if p.is_dir()]
    singles = [p for p in entries if p.is_file() and (is_nifti(p) or is_zip(p))]
    loose_dicom = [p for p in entries if p.is_file() and not (is_nifti(p) or is_zip(p)) and is_dicom_file(p)]
    if loose_dicom and not subdirs and not singles:
        return [StudyTask(study_id=safe_study_id(folder.name or "study"), input_path=str(folder))]
    if loose_dicom:
        log.warning(
            "%s: %d DICOM files lie next to study sub-folders and are ignored; move them into a "
            "sub-folder or use --by-series",
            folder,
            len(loose_dicom),
        )
    return [StudyTask(study_id=safe_study_id(_stem(p)), input_path=str(p)) for p in (*subdirs, *singles)]


def discover_series(folder: Path) -> list[StudyTask]:
    """One study per CT series found in the DICOM files under ``folder`` (any layout, any depth).

    The study's ``input_path`` is the deepest folder holding all of the series' files, with the
    series pinned by ``series_uid`` and its files listed (so that its input hash covers only them).
    """
    import pydicom

    series: dict[str, list[Path]] = {}
    meta: dict[str, tuple[str, str]] = {}
    skipped: dict[str, int] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or not is_dicom_file(path):
                continue
            try:
                ds = pydicom.dcmread(
                    path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Modality", "SeriesNumber"]
                )
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                log.warning("%s: unreadable DICOM header (%s); skipped", path, exc)
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            modality = str(ds.get("Modality", "") or "")
            if not uid or modality not in CT_MODALITIES:
                key = modality or "no modality"
                skipped[key] = skipped.get(key, 0) + 1
                continue
            series.setdefault(uid, []).append(path)
            meta.setdefault(uid, (modality, str(ds.get("SeriesNumber", "") or "")))
    for modality, count in sorted(skipped.items()):
        log.info("%s: %d DICOM files of modality %s (not CT) skipped", folder, count, modality)
    tasks = []
    for uid, paths in sorted(series.items(), key=lambda kv: str(kv[1][0])):
        common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        rel = common.relative_to(folder).as_posix() if common != folder else folder.name
        number = meta[uid][1] or hashlib.sha1(uid.encode()).hexdigest()[:8]
        tasks.append(
            StudyTask(
                study_id=safe_study_id(f"{rel}_se{number}"),
                input_path=str(common),
                series_uid=uid,
                files=tuple(str(p) for p in sorted(paths)),
            )
        )
    return tasks


def _optional_float(value: str, column: str, where: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{where}: column {column!r} must be a number, got {value!r}") from None


def read_manifest(path: Path) -> list[StudyTask]:
    """Studies listed in a manifest CSV (see module docstring for the columns).

    Raises:
        InputError: the manifest has no ``input`` column or a malformed row (named by line).
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "input" not in columns:
            raise InputError(
                f"{path}: a manifest needs an 'input' column (found {columns or 'no header'}); "
                f"understood columns: {', '.join(MANIFEST_COLUMNS)}"
            )
        unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
        if unknown:
            log.warning("%s: columns %s are not used (understood: %s)", path, unknown, ", ".join(MANIFEST_COLUMNS))
        tasks = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            where = f"{path}, line {line}"
            if not row.get("input"):
                raise InputError(f"{where}: empty 'input'; give a DICOM folder, zip or NIfTI path")
            target = Path(row["input"]).expanduser()
            if not target.is_absolute():
                target = path.parent / target
            sex = row.get("patient_sex") or None
            if sex is not None and sex.upper() not in ("M", "F"):
                raise InputError(f"{where}: patient_sex must be M or F, got {sex!r}")
            try:
                study_id = safe_study_id(row.get("study_id") or _stem(target))
            except ValueError as exc:
                raise InputError(f"{where}: {exc}") from None
            tasks.append(
                StudyTask(
                    study_id=study_id,
                    input_path=str(target),
                    series_uid=row.get("series_uid") or None,
                    patient_height_cm=_optional_float(row.get("patient_height_cm", ""), "patient_height_cm", where),
                    patient_sex=sex.upper() if sex else None,
                    patient_age=_optional_float(row.get("patient_age", ""), "patient_age", where),
                )
            )
    return tasks


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _dedupe(tasks: list[StudyTask], explicit_ids: set[str]) -> list[StudyTask]:
    """Same input listed twice -> once; different inputs with one id -> ids made unique.

    Ids given in a manifest are the user's: two rows with one id are an error, not renamed.
    """
    seen_inputs: set[tuple[str, str | None]] = set()
    by_id: dict[str, StudyTask] = {}
    out: list[StudyTask] = []
    for task in tasks:
        key = (os.path.realpath(task.input_path), task.series_uid)
        if key in seen_inputs:
            log.info("%s listed more than once; screened once", task.input_path)
            continue
        seen_inputs.add(key)
        if task.study_id in by_id:
            if task.study_id in explicit_ids and by_id[task.study_id].study_id in explicit_ids:
                raise InputError(
                    f"study id {task.study_id!r} is given to two inputs ({by_id[task.study_id].input_path} "
                    f"and {task.input_path}); study ids must be unique"
                )
            suffix = hashlib.sha1(key[0].encode() + (task.series_uid or "").encode()).hexdigest()[:8]
            new_id = safe_study_id(f"{task.study_id}-{suffix}")
            log.warning("study id %r is taken; %s becomes %r", task.study_id, task.input_path, new_id)
            task = StudyTask(**{**task.to_dict(), "study_id": new_id, "files": task.files})
        by_id[task.study_id] = task
        out.append(task)
    return out


def discover(inputs: Sequence[str | Path], *, by_series: bool = False) -> list[StudyTask]:
    """All studies named by ``inputs`` (folders, manifest CSVs, glob patterns), in a stable order.

    Raises:
        InputError: an input is neither an existing folder/file nor a pattern with matches.
    """
    tasks: list[StudyTask] = []
    explicit: set[str] = set()
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_file() and path.name.lower().endswith(MANIFEST_SUFFIX):
            found = read_manifest(path)
            explicit.update(t.study_id for t in found)
        elif path.is_dir():
            found = discover_series(path) if by_series else discover_folder(path)
        elif path.is_file() and (is_nifti(path) or is_zip(path)):
            found = [StudyTask(study_id=safe_study_id(_stem(path)), input_path=str(path))]
        elif _is_glob(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise InputError(f"pattern {text!r} matches nothing; check the path and quote it in the shell")
            found = [StudyTask(study_id=safe_study_id(_stem(m)), input_path=str(m)) for m in matches]
        elif path.exists():
            raise InputError(
                f"{path}: not a study folder, NIfTI, zip or manifest (.csv); give a folder of studies, "
                "a manifest or a glob pattern"
            )
        else:
            raise InputError(f"{path}: no such file or folder")
        if not found:
            log.warning("%s: no studies found", text)
        tasks.extend(found)
    return _dedupe(tasks, explicit)
