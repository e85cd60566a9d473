"""``report_pdf.dcm`` (Encapsulated PDF) and ``sc/*.dcm`` (Secondary Capture key images).

For PACS viewers that show neither SEG nor SR: the report itself and two annotated key images
(sagittal spine coloured by BMD; L3 slice with the tissue overlay), all in the source study. The key
images are screenshots of the report's figures, so they carry burned-in annotation.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from osteoscan.report import constants as C
from osteoscan.report import dicom_common as D

log = logging.getLogger(__name__)

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
#: Patient and study attributes copied verbatim from the source series (type 2: empty when absent).
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize",
    "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "IssuerOfPatientID",
)
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _copy_patient_study(src: Dataset, dst: Dataset) -> None:
    for kw in PATIENT_STUDY_KEYWORDS:
        if kw in src:
            dst[kw] = src[kw]
        elif kw in TYPE2_KEYWORDS:
            setattr(dst, kw, "")


def write_encapsulated_pdf(path: Path, pdf_path: Path, source_datasets: Sequence[pydicom.Dataset]) -> Dataset:
    """Wrap ``pdf_path`` as an Encapsulated PDF instance in the source study."""
    src = source_datasets[0]
    pdf = pdf_path.read_bytes()
    length = len(pdf)
    now = _dt.datetime.now()
    sop_uid = hd.UID()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = src.get("SpecificCharacterSet", "ISO_IR 192")
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    _copy_patient_study(src, ds)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = D.SERIES_NUMBER_PDF
    ds.SeriesDescription = "osteoscan report PDF (research/screening aid)"
    ds.Manufacturer = D.MANUFACTURER
    ds.ManufacturerModelName = D.MODEL_NAME
    ds.SoftwareVersions = D.SOFTWARE_VERSION
    ds.ConversionType = "WSD"  # workstation
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the document shows patient identity
    ds.DocumentTitle = "osteoscan screening report (research/screening aid)"
    ds.ConceptNameCodeSequence = DicomSequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    refs = []
    for s in source_datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = s.SOPClassUID
        item.ReferencedSOPInstanceUID = s.SOPInstanceUID
        refs.append(item)
    ds.SourceInstanceSequence = DicomSequence(refs)
    if len(pdf) % 2:
        pdf += b"\x00"  # OB values have even length; PDF readers ignore trailing NUL
    ds.EncapsulatedDocument = pdf
    ds.EncapsulatedDocumentLength = length  # without the padding byte (PS3.3 C.24.2)
    ds.save_as(path, enforce_file_format=True)
    return ds


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def write_secondary_captures(
    outdir: Path,
    images: dict[str, tuple[bytes, tuple[str, str], str]],
    source_datasets: Sequence[pydicom.Dataset],
) -> dict[str, Path]:
    """One SC image per ``name -> (png, patient_orientation, body part)``; returns name -> written path."""
    outdir.mkdir(parents=True, exist_ok=True)
    series_uid = hd.UID()
    paths: dict[str, Path] = {}
    for number, (name, (png, orientation, body_part)) in enumerate(images.items(), start=1):
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source_datasets[0],
            pixel_array=_rgb(png),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=D.SERIES_NUMBER_SC,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=D.MANUFACTURER,
            patient_orientation=orientation,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description="osteoscan key images (research/screening aid)",
        )
        sc.BurnedInAnnotation = "YES"
        # Laterality (type 2C) is required for paired body parts only; naming the unpaired part says so.
        sc.BodyPartExamined = body_part
        sc.ImageComments = f"osteoscan {name}. {C.INTENDED_USE_SHORT}"
        path = outdir / f"{number:02d}_{name}.dcm"
        sc.save_as(path)
        paths[name] = path
    return paths
