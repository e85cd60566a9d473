"""The unit of work of a batch: one study, described by plain data that travels to any worker.

A ``StudyTask`` is frozen, small and picklable (it crosses process and Ray boundaries); it names the
input and the patient data given for it, never the loaded pixels.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Characters allowed in a study id (it becomes a folder name on every file system).
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest study id kept (file-name limits of common file systems are 255 bytes).
MAX_STUDY_ID_LENGTH = 120


def safe_study_id(text: str) -> str:
    """A folder-safe id: runs of other characters become ``_``; empty ids are rejected."""
    sid = _SAFE_ID.sub("_", text).strip("._")[:MAX_STUDY_ID_LENGTH]
    if not sid:
        raise ValueError(f"cannot make a study id from {text!r}: give a study_id with letters or digits")
    return sid


@dataclass(frozen=True)
class StudyTask:
    """One study to screen.

    ``input_path`` is what :meth:`osteoscan.pipeline.Pipeline.run_study` takes (DICOM folder, zip or
    NIfTI file). ``files`` lists the files that make up the input when it is only part of a folder
    (series discovered in a mixed folder); empty means "everything under input_path".
    """

    study_id: str
    input_path: str
    series_uid: str | None = None
    files: tuple[str, ...] = ()
    patient_height_cm: float | None = None
    patient_sex: str | None = None
    patient_age: float | None = None

    def __post_init__(self) -> None:
        if self.study_id != safe_study_id(self.study_id):
            raise ValueError(
                f"study id {self.study_id!r} is not folder-safe; use letters, digits, '.', '_' or '-'"
            )
        object.__setattr__(self, "input_path", str(self.input_path))
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))

    @property
    def path(self) -> Path:
        return Path(self.input_path)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyTask:
        return cls(**{**d, "files": tuple(d.get("files") or ())})
