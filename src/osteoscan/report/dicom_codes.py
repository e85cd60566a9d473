"""Coded concepts of the DICOM outputs: SNOMED CT / DICOM (DCM) / UCUM, plus a small private scheme.

Standard codes are used wherever DICOM defines one (vertebrae: CID 7603 "Vertebra"; segmentation
categories: CID 7150; attenuation: DCM 112181). Quantities no standard code names precisely
(volumetric BMD from a regressor, Genant grade, vertebral heights by position, VAT/SAT ratio) use the
private coding scheme ``99OSTEOSCAN``, declared in each SR's Coding Scheme Identification Sequence,
as PS3.16 section 8 allows for local codes.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from osteoscan.labels import Tissue, VertebraLevel

PRIVATE_SCHEME = "99OSTEOSCAN"
PRIVATE_SCHEME_NAME = "osteoscan local codes"


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def coding_scheme_identification() -> Dataset:
    """Item of (0008,0110) Coding Scheme Identification Sequence declaring the private scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "osteoscan project"
    return item


# --- anatomy -----------------------------------------------------------------------------------------
#: SNOMED CT code of each vertebra level (DICOM CID 7603). L6 (transitional) has no own code: it is
#: coded as "Vertebra" and named in the segment label.
_LEVEL_CODE_NAMES: dict[VertebraLevel, str] = {
    **{VertebraLevel[f"T{i}"]: f"T{i}Vertebra" for i in range(1, 13)},
    **{VertebraLevel[f"L{i}"]: f"L{i}Vertebra" for i in range(1, 6)},
    VertebraLevel.C7: "C7Vertebra",
    VertebraLevel.L6: "Vertebra",
    VertebraLevel.SACRUM: "Sacrum",
}


def vertebra_code(level: VertebraLevel) -> CodedConcept:
    code = getattr(codes.SCT, _LEVEL_CODE_NAMES[level])
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


def _cc(code) -> CodedConcept:
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


CATEGORY_ANATOMY = _cc(codes.SCT.AnatomicalStructure)
CATEGORY_TISSUE = _cc(codes.SCT.Tissue)

#: Tissue -> (segmented property type, anatomic region or None, segment label).
TISSUE_CODES: dict[Tissue, tuple[CodedConcept, CodedConcept | None, str]] = {
    Tissue.MUSCLE: (_cc(codes.SCT.SkeletalMuscle), None, "Skeletal muscle"),
    Tissue.SAT: (_cc(codes.SCT.AdiposeTissue), _cc(codes.SCT.SubcutaneousTissue), "Subcutaneous adipose tissue"),
    Tissue.VAT: (_cc(codes.SCT.AdiposeTissue), _cc(codes.SCT.AbdominalCavityStructure), "Visceral adipose tissue"),
    Tissue.IMAT: (_cc(codes.SCT.AdiposeTissue), _cc(codes.SCT.SkeletalMuscle), "Intermuscular adipose tissue"),
}

# --- measurements ------------------------------------------------------------------------------------
MEAN_ATTENUATION = _cc(codes.DCM.MeanAttenuationCoefficient)
SD_ATTENUATION = _cc(codes.DCM.StandardDeviationOfAttenuationCoefficient)
VOLUME = _cc(codes.SCT.Volume)
AREA = _cc(codes.SCT.Area)
BMD = private("BMD-REG", "Trabecular volumetric BMD (regressor)")
BMD_UNCERTAINTY = private("BMD-UNC", "Uncertainty of trabecular volumetric BMD (regressor)")
BMD_CALIBRATED = private("BMD-CAL", "Trabecular volumetric BMD (phantomless calibration)")
BMD_L1_L2 = private("BMD-L1L2", "Mean trabecular volumetric BMD of L1 and L2")
HEIGHT_ANTERIOR = private("H-ANT", "Anterior vertebral body height")
HEIGHT_MIDDLE = private("H-MID", "Middle vertebral body height")
HEIGHT_POSTERIOR = private("H-POST", "Posterior vertebral body height")
HEIGHT_RATIO = private("H-RATIO", "Vertebral body height ratio (min/max)")
HEIGHT_LOSS = private("H-LOSS", "Vertebral body height loss (Genant)")
GENANT_GRADE = private("GENANT", "Genant semi-quantitative fracture grade")
FRACTURE_SHAPE = private("FX-SHAPE", "Vertebral fracture shape")
ACR_CATEGORY = private("ACR-QCT", "ACR QCT bone density category")
VAT_SAT_RATIO = private("VAT-SAT", "Visceral to subcutaneous fat area ratio")
SMI = private("SMI", "Skeletal muscle index")

SHAPE_VALUES: dict[str, CodedConcept] = {
    "none": private("FX-NONE", "No fracture deformity"),
    "wedge": private("FX-WEDGE", "Wedge deformity"),
    "biconcave": private("FX-BICONC", "Biconcave deformity"),
    "crush": private("FX-CRUSH", "Crush deformity"),
}
ACR_VALUES: dict[str, CodedConcept] = {
    "normal": private("ACR-NORMAL", "Normal bone density"),
    "osteopenia": private("ACR-OSTEOPENIA", "Low bone density (osteopenia)"),
    "osteoporosis": private("ACR-OSTEOPOROSIS", "Osteoporosis"),
}

# --- UCUM units --------------------------------------------------------------------------------------
def ucum(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator="UCUM", meaning=meaning)


UNIT_HU = ucum("[hnsf'U]", "Hounsfield unit")
UNIT_MG_CM3 = ucum("mg/cm3", "milligram per cubic centimeter")
UNIT_MM = ucum("mm", "millimeter")
UNIT_ML = ucum("mL", "milliliter")
UNIT_CM2 = ucum("cm2", "square centimeter")
UNIT_CM2_M2 = ucum("cm2/m2", "square centimeter per square meter")
UNIT_RATIO = ucum("1", "no units")
UNIT_PERCENT = ucum("%", "percent")
UNIT_GRADE = ucum("{grade}", "grade")
