"""Patient and study identity for the report header, copied from the source DICOM - never invented.

Without source datasets (NIfTI input) every identity field is "anonymous"/empty: a file name or a
phantom seed is not a patient. These values are PHI: they go into the report and the DICOM objects,
never into log messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pydicom

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class PatientStudyInfo:
    """Header fields of the report; empty strings where the source had nothing."""

    patient_name: str = ANONYMOUS
    patient_id: str = ""
    birth_date: str = ""  # DICOM DA, YYYYMMDD
    sex: str = ""  # "M", "F", "O" or ""
    age: str = ""  # DICOM AS, e.g. "063Y"
    study_date: str = ""  # DICOM DA
    study_description: str = ""
    accession_number: str = ""
    institution: str = ""
    series_description: str = ""
    modality: str = ""
    from_dicom: bool = False

    @property
    def display_name(self) -> str:
        """'Doe, Jane' from the DICOM PN 'Doe^Jane' (family^given^middle^prefix^suffix)."""
        if not self.from_dicom or not self.patient_name:
            return ANONYMOUS
        parts = [p for p in self.patient_name.split("^") if p]
        if len(parts) >= 2:
            return f"{parts[0]}, {' '.join(parts[1:])}"
        return parts[0] if parts else ANONYMOUS

    @staticmethod
    def format_date(da: str) -> str:
        """DICOM DA 'YYYYMMDD' -> 'YYYY-MM-DD' (anything else returned as is)."""
        return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) == 8 and da.isdigit() else da


def identity_from_datasets(datasets: Sequence[pydicom.Dataset] | None) -> PatientStudyInfo:
    """Read the header identity from the first source dataset; "anonymous" when there is none."""
    if not datasets:
        return PatientStudyInfo()
    ds = datasets[0]

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()

    name = text("PatientName")
    return PatientStudyInfo(
        patient_name=name or ANONYMOUS,
        patient_id=text("PatientID"),
        birth_date=text("PatientBirthDate"),
        sex=text("PatientSex"),
        age=text("PatientAge"),
        study_date=text("StudyDate"),
        study_description=text("StudyDescription"),
        accession_number=text("AccessionNumber"),
        institution=text("InstitutionName"),
        series_description=text("SeriesDescription"),
        modality=text("Modality"),
        from_dicom=True,
    )
