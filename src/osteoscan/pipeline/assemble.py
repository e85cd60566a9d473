"""From the cascade's arrays to a ``StudyResult``: the analyses, QC and provenance.

Pure computation over the stage outputs (no models, no I/O). Anything that cannot be measured is
``None`` with the reason in ``qc.not_reported`` - never a made-up number.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from osteoscan import __version__
from osteoscan.analysis import composition as comp
from osteoscan.analysis import intervertebral as iv
from osteoscan.analysis import segmentation_qc as sqc
from osteoscan.analysis import vertebral as vb
from osteoscan.analysis.constants import GENANT_GRADED_LEVELS
from osteoscan.io import CTVolume
from osteoscan.labels import Tissue, VertebraLevel
from osteoscan.pipeline.config import PatientInfo
from osteoscan.pipeline.stages import (
    BmdPrediction,
    SpineCanvas,
    SpineLocalisation,
    TissueSlice,
    VertebraSegment,
)
from osteoscan.result import (
    CompositionResult,
    DiscResult,
    FractureFinding,
    FractureShape,
    Heights,
    ModelInfo,
    QualityControl,
    ResultProvenance,
    StudyResult,
    Summary,
    VertebraResult,
)


def assemble_result(
    *,
    volume: CTVolume,
    localisation: SpineLocalisation | None,
    segments: tuple[VertebraSegment, ...],
    bmd: tuple[BmdPrediction, ...],
    canvas: SpineCanvas | None,
    tissue_slice: TissueSlice | None,
    patient: PatientInfo,
    notes: tuple[str, ...],
    models: tuple[ModelInfo, ...],
    runtime: tuple[str, str, str],
    timings: dict[str, float],
) -> StudyResult:
    not_reported: dict[str, str] = {}
    warnings = list(notes)
    prov = volume.provenance
    contrast = _contrast_phase(prov.contrast_agent)

    calibration = None
    if tissue_slice is not None and not tissue_slice.level_assumed:
        calibration = vb.phantomless_calibration(
            tissue_slice.ct[None],
            (tissue_slice.tissue == Tissue.VAT)[None],
            spacing=(1.0, *tissue_slice.pixel_spacing_mm),
        )
        if not calibration.valid:
            not_reported["bmd_calibrated_mg_cm3"] = f"phantomless calibration failed: {calibration.reason}"
    else:
        not_reported["bmd_calibrated_mg_cm3"] = "no L3 slice with air and visceral fat references"

    vertebrae = _vertebra_results(segments, bmd, canvas, calibration, prov.kvp, not_reported, warnings)
    if localisation is not None:
        vertebrae = _with_slivers(vertebrae, localisation, not_reported)
    by_level = {v.level: v for v in vertebrae}
    discs = _disc_results(segments, canvas)
    lordosis = None
    if canvas is not None and _complete(segments, VertebraLevel.L1) and _complete(segments, VertebraLevel.L5):
        lordosis = iv.lumbar_lordosis_deg(
            canvas.body_mask(VertebraLevel.L1), canvas.body_mask(VertebraLevel.L5), canvas.grid.affine
        )
    if lordosis is None:
        not_reported["lordosis_deg"] = "L1 and L5 are not both fully in view"

    bmd_l1_l2 = vb.mean_bmd_for_acr({name: v.bmd_mg_cm3 for name, v in by_level.items()})
    if bmd_l1_l2 is None:
        not_reported["bmd_l1_l2_mg_cm3"] = "L1 and L2 are not both fully in view (lumbar spine not covered)"
    l1 = by_level.get("L1")
    l1_hu = l1.hu_trabecular if l1 is not None else None
    fractures = tuple(
        FractureFinding(
            level=v.level,
            genant_grade=int(v.genant_grade),
            shape=v.fracture_shape or FractureShape.NONE,
            height_loss_percent=float(v.height_loss_percent or 0.0),
        )
        for v in vertebrae
        if v.genant_grade
    )
    summary = Summary(
        bmd_l1_l2_mg_cm3=bmd_l1_l2,
        acr_category=vb.acr_category(bmd_l1_l2) if bmd_l1_l2 is not None else None,
        l1_hu=l1_hu,
        l1_hu_flag=vb.pickhardt_l1_flag(l1_hu, contrast) if l1_hu is not None else None,
        fractures=fractures,
        lordosis_deg=lordosis,
        contrast_phase=contrast,
    )

    composition = _composition(tissue_slice, volume, patient, contrast, not_reported)
    if tissue_slice is not None and tissue_slice.level_assumed:
        warnings.append("body composition measured on the given slice, assumed to be mid-L3")

    coverage = tuple(d.level.name if d.level is not VertebraLevel.SACRUM else "S" for d in (localisation.detected if localisation else ()))
    # "covered" = what the ACR category needs: L1 and L2 both completely inside the scan
    lumbar = all(_complete(segments, lv) for lv in (VertebraLevel.L1, VertebraLevel.L2))
    if localisation is not None and not lumbar:
        partly = [c for c in coverage if c != "S" and VertebraLevel.from_name(c).region == "lumbar"]
        seen = f" (only {', '.join(partly)} partly in view)" if partly else ""
        warnings.append(
            f"lumbar spine not covered by this scan{seen}: L1-L2 BMD (ACR category) and L3 body "
            "composition are not assessable"
        )
    qc = QualityControl(
        coverage=coverage,
        lumbar_covered=lumbar,
        l3_covered=composition is not None and not (tissue_slice is not None and tissue_slice.level_assumed),
        warnings=tuple(warnings),
        not_reported=not_reported,
    )
    backend, device, precision = runtime
    provenance = ResultProvenance(
        osteoscan_version=__version__,
        input=prov.to_dict(),
        geometry={
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 4) for s in volume.spacing],
            "orientation": "".join(volume.orientation),
        },
        models=models,
        backend=backend,
        device=device,
        precision=precision,
    )
    return StudyResult(
        vertebrae=vertebrae,
        discs=discs,
        summary=summary,
        composition=composition,
        qc=qc,
        provenance=provenance,
        timings_s=dict(timings),
    )


def _contrast_phase(agent: str | None) -> str:
    from osteoscan.analysis.constants import (
        CONTRAST_ARTERIAL,
        CONTRAST_NATIVE,
        CONTRAST_PORTAL_VENOUS,
        CONTRAST_UNKNOWN,
    )

    if agent is None:
        return CONTRAST_UNKNOWN
    a = agent.strip().lower()
    if a in ("", "none", "no", "n/a"):
        return CONTRAST_NATIVE
    # a named agent without phase information: portal-venous is the routine abdominal phase
    return CONTRAST_ARTERIAL if "arterial" in a else CONTRAST_PORTAL_VENOUS


def _complete(segments: Sequence[VertebraSegment], level: VertebraLevel) -> bool:
    return any(s.level is level and s.complete for s in segments)


def _vertebra_results(
    segments: tuple[VertebraSegment, ...],
    bmd: tuple[BmdPrediction, ...],
    canvas: SpineCanvas | None,
    calibration: object | None,
    kvp: float | None,
    not_reported: dict[str, str],
    warnings: list[str],
) -> tuple[VertebraResult, ...]:
    bmd_by_level = {b.level: b for b in bmd}
    implausible = _implausible_masks(segments, canvas)
    centroids = {
        s.level: s.grid.index_to_lps(s.body_centroid_index) for s in segments if s.body_centroid_index is not None
    }
    heights: dict[VertebraLevel, Heights] = {}
    for seg in segments:
        if seg.complete and canvas is not None:
            neighbours = [
                centroids[lv] for lv in _neighbour_levels(seg.level) if lv in centroids and lv not in implausible
            ]
            heights[seg.level] = iv.vertebral_heights(
                canvas.body_mask(seg.level), canvas.grid.affine, neighbour_centroids_mm=neighbours or None
            )
    results = []
    for seg in segments:
        spacing = seg.grid.spacing
        voxel_ml = float(np.prod(spacing)) / 1000.0
        name = seg.level.name
        if not seg.complete:
            not_reported[f"vertebrae.{name}"] = "vertebra cut by the edge of the scan: no BMD, HU or heights"
            results.append(
                VertebraResult(level=name, complete=False, centroid_lps_mm=_tuple(centroids.get(seg.level)))
            )
            continue
        roi = vb.trabecular_roi(seg.body, spacing)
        hu_mean, hu_sd, _ = vb.roi_hu_stats(seg.ct, roi)
        pred = bmd_by_level.get(seg.level)
        calibrated = (
            vb.calibrated_bmd(hu_mean, calibration, kvp)
            if calibration is not None and getattr(calibration, "valid", False) and hu_mean is not None
            else None
        )
        h = heights.get(seg.level, Heights())
        # an implausible mask's heights are no reference for its neighbours either
        neighbour_h = [
            heights[lv] for lv in _neighbour_levels(seg.level) if lv in heights and lv not in implausible
        ]
        genant = None
        if seg.level in implausible:
            why = "; ".join(implausible[seg.level])
            not_reported[f"vertebrae.{name}.genant_grade"] = f"segmentation implausible: {why}"
            warnings.append(f"{name}: no fracture grade, the segmentation is implausible ({why})")
        elif name not in GENANT_GRADED_LEVELS:
            not_reported[f"vertebrae.{name}.genant_grade"] = (
                "not graded: Genant's semi-quantitative method covers T4-L4 (L5 is wedge-shaped in health, "
                "C7-T3 are not assessed); heights are reported"
            )
        else:
            genant = iv.genant_grade(h, neighbour_h or None)
        results.append(
            VertebraResult(
                level=name,
                complete=True,
                centroid_lps_mm=_tuple(centroids.get(seg.level)),
                volume_ml=float(seg.vertebra.sum()) * voxel_ml,
                body_volume_ml=float(seg.body.sum()) * voxel_ml,
                hu_trabecular=hu_mean,
                hu_trabecular_sd=hu_sd,
                bmd_mg_cm3=None if pred is None else pred.bmd_mg_cm3,
                bmd_uncertainty_mg_cm3=None if pred is None else pred.sigma_mg_cm3,
                bmd_calibrated_mg_cm3=calibrated,
                heights_mm=h,
                height_ratio_min=iv.height_ratio_min(h),
                genant_grade=None if genant is None else genant.grade,
                fracture_shape=None if genant is None else genant.shape,
                height_loss_percent=None if genant is None else genant.height_loss_percent,
            )
        )
    return tuple(results)


def _with_slivers(
    vertebrae: tuple[VertebraResult, ...], localisation: SpineLocalisation, not_reported: dict[str, str]
) -> tuple[VertebraResult, ...]:
    """Add the levels inferred at the scan's edge (in view as a sliver only) as incomplete vertebrae."""
    from osteoscan.pipeline.stages import sliver_levels

    added = []
    for level in sorted(sliver_levels(localisation), key=int):
        if any(v.level == level.name for v in vertebrae):
            continue
        not_reported[f"vertebrae.{level.name}"] = (
            "only a sliver at the edge of the scan (inferred from the level sequence): not measured"
        )
        # no centroid: its body lies outside the scan (the decoder's point on the edge is not it)
        added.append(VertebraResult(level=level.name, complete=False, centroid_lps_mm=None))
    if not added:
        return vertebrae
    return tuple(sorted((*added, *vertebrae), key=lambda v: int(VertebraLevel.from_name(v.level))))


def _implausible_masks(
    segments: tuple[VertebraSegment, ...], canvas: SpineCanvas | None
) -> dict[VertebraLevel, tuple[str, ...]]:
    """Complete vertebrae whose fine mask fails the segmentation-quality gate, with the reasons."""
    volumes = {
        s.level: float(s.vertebra.sum()) * float(np.prod(s.grid.spacing)) / 1000.0 for s in segments if s.complete
    }
    own = {s.level: dict(s.coarse_fractions).get(s.level, 0.0) for s in segments}
    overlap = {} if canvas is None else dict(canvas.overlap)
    segmented = frozenset(s.level.name for s in segments)
    out: dict[VertebraLevel, tuple[str, ...]] = {}
    # first every check but volume, then volume against the neighbours that passed them
    for volume_pass in (False, True):
        for seg in segments:
            if not seg.complete:
                continue
            # two masks on one bone overlap each other equally; the copy is the one the coarse model
            # less agrees with, so the overlap counts against a mask only when an overlapping
            # neighbour has more coarse support for its own level
            shared = [
                frac for (lv, other), frac in overlap.items()
                if lv is seg.level and own.get(other, 0.0) > own[seg.level]
            ]
            neighbours = [
                volumes[lv] for lv in _neighbour_levels(seg.level) if lv in volumes and lv not in out
            ] if volume_pass else []
            evidence = sqc.MaskEvidence(
                level=seg.level.name,
                volume_ml=volumes[seg.level],
                neighbour_volumes_ml=neighbours,
                coarse_fractions={lv.name: f for lv, f in seg.coarse_fractions},
                overlap_fraction=max(shared, default=0.0),
                largest_component_fraction=seg.largest_component_fraction,
                touches_axial_crop_face=seg.touches_axial_crop_face,
                segmented_levels=segmented,
            )
            reasons = sqc.implausibility_reasons(evidence)
            if reasons and (not volume_pass or seg.level not in out):
                out[seg.level] = reasons
    return out


def _neighbour_levels(level: VertebraLevel) -> list[VertebraLevel]:
    out = []
    for v in (int(level) - 1, int(level) + 1):
        if VertebraLevel.C7 <= v <= VertebraLevel.L6:
            out.append(VertebraLevel(v))
    return out


def _tuple(x: np.ndarray | None) -> tuple[float, float, float] | None:
    return None if x is None else (float(x[0]), float(x[1]), float(x[2]))


def _disc_results(segments: tuple[VertebraSegment, ...], canvas: SpineCanvas | None) -> tuple[DiscResult, ...]:
    if canvas is None:
        return ()
    complete = sorted((s.level for s in segments if s.complete), key=int)
    discs = []
    for upper, lower in itertools.pairwise(complete):
        if int(lower) != int(upper) + 1:
            continue
        h = iv.disc_height(canvas.body_mask(upper), canvas.body_mask(lower), canvas.grid.affine)
        discs.append(DiscResult(upper=upper.name, lower=lower.name, height_mm=h))
    return tuple(discs)


def _composition(
    tissue_slice: TissueSlice | None,
    volume: CTVolume,
    patient: PatientInfo,
    contrast: str,
    not_reported: dict[str, str],
) -> CompositionResult | None:
    if tissue_slice is None:
        not_reported["composition"] = "L3 is not (completely) in view"
        return None
    prov = volume.provenance
    height_m = patient.height_cm / 100.0 if patient.height_cm else prov.patient_height_m
    sex = patient.sex or prov.patient_sex
    bmi = None
    if height_m and prov.patient_weight_kg:
        bmi = prov.patient_weight_kg / height_m**2
    return comp.composition_at_slice(
        tissue_slice.ct,
        tissue_slice.tissue,
        tissue_slice.pixel_spacing_mm,
        height_m=height_m,
        sex=sex,
        bmi=bmi,
        slice_index=tissue_slice.slice_index,
        slice_z_mm=float(volume.index_to_lps(np.array([tissue_slice.slice_index, 0, 0]))[2]),
        kvp=prov.kvp,
        contrast_phase=contrast,
    )
