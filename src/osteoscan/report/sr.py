"""``sr.dcm``: Comprehensive 3D SR with a TID 1500 Measurement Report of every number the report shows.

One measurement group per vertebra (TID 1411, referencing its segment in ``seg.dcm`` when that was
written, else TID 1501 with the vertebra as finding site): trabecular HU (mean, SD), BMD (regressor,
its uncertainty, calibrated), volume, anterior/middle/posterior heights, height ratio, Genant grade
and fracture shape. One group per L3 tissue (area; muscle attenuation) and one summary group (mean
L1-L2 BMD, ACR category, VAT/SAT ratio, SMI). Units are UCUM. Values that were not measured are left
out (TID 1500 has no "missing" value); the reasons are in result.json and the report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import pydicom
from highdicom.sr import CodedConcept
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes

from osteoscan.labels import Tissue, VertebraLevel
from osteoscan.report import dicom_codes as K
from osteoscan.report import dicom_common as D
from osteoscan.report.seg import SegmentInfo
from osteoscan.result import StudyResult, VertebraResult

log = logging.getLogger(__name__)


def _measure(name: CodedConcept, value: float | None, unit: CodedConcept) -> list[hd.sr.Measurement]:
    if value is None:
        return []
    if not math.isfinite(value):
        log.warning("%s is %s in the result; left out of sr.dcm (not a measurement)", name.meaning, value)
        return []
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit)]


def vertebra_measurements(v: VertebraResult) -> list[hd.sr.Measurement]:
    """The numeric content of one vertebra's group (exposed for the round-trip tests)."""
    h = v.heights_mm
    return [
        *_measure(K.MEAN_ATTENUATION, v.hu_trabecular, K.UNIT_HU),
        *_measure(K.SD_ATTENUATION, v.hu_trabecular_sd, K.UNIT_HU),
        *_measure(K.BMD, v.bmd_mg_cm3, K.UNIT_MG_CM3),
        *_measure(K.BMD_UNCERTAINTY, v.bmd_uncertainty_mg_cm3, K.UNIT_MG_CM3),
        *_measure(K.BMD_CALIBRATED, v.bmd_calibrated_mg_cm3, K.UNIT_MG_CM3),
        *_measure(K.VOLUME, v.volume_ml, K.UNIT_ML),
        *_measure(K.HEIGHT_ANTERIOR, h.anterior, K.UNIT_MM),
        *_measure(K.HEIGHT_MIDDLE, h.middle, K.UNIT_MM),
        *_measure(K.HEIGHT_POSTERIOR, h.posterior, K.UNIT_MM),
        *_measure(K.HEIGHT_RATIO, v.height_ratio_min, K.UNIT_RATIO),
        *_measure(K.HEIGHT_LOSS, v.height_loss_percent, K.UNIT_PERCENT),
        *_measure(K.GENANT_GRADE, v.genant_grade, K.UNIT_GRADE),
    ]


def _tracking(identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier)


def _roi_group(
    identifier: str,
    finding_type: CodedConcept,
    measurements: list[hd.sr.Measurement],
    qualitative: list[hd.sr.QualitativeEvaluation],
    seg: pydicom.Dataset | None,
    segment_number: int | None,
    source_series_uid: str,
    algorithm: hd.sr.AlgorithmIdentification,
):
    if seg is not None and segment_number is not None:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(identifier),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=segment_number,
                source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
            ),
            finding_type=finding_type,
            algorithm_id=algorithm,
            measurements=measurements or None,
            qualitative_evaluations=qualitative or None,
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(identifier),
        finding_type=finding_type,
        finding_sites=[hd.sr.FindingSite(finding_type)],
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=qualitative or None,
    )


def write_sr(
    path: Path,
    result: StudyResult,
    source_datasets: Sequence[pydicom.Dataset],
    seg: pydicom.Dataset | None = None,
    segments: SegmentInfo | None = None,
) -> pydicom.Dataset:
    """Write the measurement report; ``seg``/``segments`` from :func:`write_seg` when it was written."""
    src_series = str(source_datasets[0].SeriesInstanceUID)
    algorithm = hd.sr.AlgorithmIdentification(
        name="osteoscan", version=result.provenance.osteoscan_version,
        parameters=[f"backend={result.provenance.backend}", f"device={result.provenance.device}",
                    f"precision={result.provenance.precision}"],
    )
    groups = []
    for v in result.vertebrae:
        meas = vertebra_measurements(v)
        qual = []
        if v.fracture_shape is not None:
            qual.append(hd.sr.QualitativeEvaluation(K.FRACTURE_SHAPE, K.SHAPE_VALUES[v.fracture_shape.value]))
        if not meas and not qual:
            continue
        level = VertebraLevel.from_name(v.level)
        groups.append(
            _roi_group(f"vertebra {v.level}", K.vertebra_code(level), meas, qual, seg,
                       segments.levels.get(v.level) if segments else None, src_series, algorithm)
        )
    comp = result.composition
    if comp is not None:
        areas = {Tissue.MUSCLE: comp.sma_cm2, Tissue.SAT: comp.sat_cm2, Tissue.VAT: comp.vat_cm2,
                 Tissue.IMAT: comp.imat_cm2}
        for t, area in areas.items():
            meas = _measure(K.AREA, area, K.UNIT_CM2)
            if t is Tissue.MUSCLE:
                meas += _measure(K.MEAN_ATTENUATION, comp.muscle_hu, K.UNIT_HU)
            if not meas:
                continue
            prop, _, label = K.TISSUE_CODES[t]
            groups.append(
                _roi_group(f"{comp.level} {label}", prop, meas, [], seg,
                           segments.tissues.get(t) if segments else None, src_series, algorithm)
            )
    s = result.summary
    summary_meas = _measure(K.BMD_L1_L2, s.bmd_l1_l2_mg_cm3, K.UNIT_MG_CM3)
    if comp is not None:
        summary_meas += _measure(K.VAT_SAT_RATIO, comp.vat_sat_ratio, K.UNIT_RATIO)
        summary_meas += _measure(K.SMI, comp.smi_cm2_m2, K.UNIT_CM2_M2)
    summary_qual = []
    if s.acr_category is not None:
        summary_qual.append(hd.sr.QualitativeEvaluation(K.ACR_CATEGORY, K.ACR_VALUES[s.acr_category.value]))
    if summary_meas or summary_qual:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking("study summary"),
                finding_type=CodedConcept(codes.SCT.LumbarSpine.value, "SCT", codes.SCT.LumbarSpine.meaning),
                algorithm_id=algorithm,
                measurements=summary_meas or None,
                qualitative_evaluations=summary_qual or None,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="osteoscan", manufacturer_name=D.MANUFACTURER, model_name=D.MODEL_NAME,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    evidence = list(source_datasets) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=D.SERIES_NUMBER_SR,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=D.MANUFACTURER,
        is_complete=True,
        is_final=False,  # automated, not verified by a physician
        is_verified=False,
        series_description="osteoscan measurements (research/screening aid)",
    )
    sr.CodingSchemeIdentificationSequence = DicomSequence([K.coding_scheme_identification()])
    sr.save_as(path)
    return sr
