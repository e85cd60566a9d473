"""The segmentation-quality gate inside result assembly: synthetic box vertebrae, no models."""

from __future__ import annotations

import dataclasses

import numpy as np

from osteoscan.io import CTVolume, Provenance, affine_from_spacing
from osteoscan.labels import VertebraLevel as V
from osteoscan.labels import VertebraPart
from osteoscan.pipeline.assemble import assemble_result
from osteoscan.pipeline.config import PatientInfo
from osteoscan.pipeline.grid import Grid
from osteoscan.pipeline.stages import VertebraSegment, build_canvas

BODY = (24, 30, 40)  # height, depth, width (mm, 1 mm voxels)
DISC = 8


def _spine(duplicate_l4_as_l5: bool):
    """L3, L4, L5 box bodies with an arch; optionally the "L5" mask is L4 again (a mis-centred crop)."""
    shape = (110, 90, 80)
    ct = np.full(shape, -50.0, dtype=np.float32)
    masks = {}
    z0 = 6
    for level in (V.L5, V.L4, V.L3):  # caudal first: axis 0 grows upward
        parts = np.zeros(shape, dtype=np.uint8)
        parts[z0 : z0 + BODY[0], 20 : 20 + BODY[1], 20 : 20 + BODY[2]] = VertebraPart.BODY
        parts[z0 + 4 : z0 + BODY[0] - 4, 50:75, 45:55] = VertebraPart.POSTERIOR
        ct[parts > 0] = 200.0
        masks[level] = parts
        z0 += BODY[0] + DISC
    if duplicate_l4_as_l5:
        masks[V.L5] = masks[V.L4].copy()
    grid = Grid(shape, affine_from_spacing((1.0, 1.0, 1.0)))
    own = {V.L3: 0.8, V.L4: 0.8, V.L5: 0.8}
    segs = []
    for level in (V.L3, V.L4, V.L5):
        fractions = ((level, own[level]),)
        if duplicate_l4_as_l5 and level is V.L5:
            fractions = ((V.L4, 0.7), (V.L5, 0.1))  # the coarse map says this crop holds L4
        segs.append(
            VertebraSegment(level=level, grid=grid, parts=masks[level], ct=ct, complete=True, coarse_fractions=fractions)
        )
    return CTVolume(ct, grid.affine, Provenance(kvp=120.0)), tuple(segs)


def _assemble(volume, segs):
    return assemble_result(
        volume=volume, localisation=None, segments=segs, bmd=(), canvas=build_canvas(volume, segs),
        tissue_slice=None, patient=PatientInfo(), notes=(), models=(), runtime=("openvino", "CPU", "fp32"),
        timings={},
    )


def test_canvas_records_pairwise_overlap() -> None:
    volume, segs = _spine(duplicate_l4_as_l5=True)
    canvas = build_canvas(volume, segs)
    assert canvas.overlap[(V.L5, V.L4)] == 1.0 and canvas.overlap[(V.L4, V.L5)] == 1.0
    assert canvas.overlap[(V.L3, V.L4)] == 0.0


def test_a_duplicated_neighbour_gets_no_grade_and_a_warning_the_real_one_keeps_its_grade() -> None:
    volume, segs = _spine(duplicate_l4_as_l5=True)
    result = _assemble(volume, segs)
    l4, l5 = result.vertebra("L4"), result.vertebra("L5")
    assert l5 is not None and l5.genant_grade is None
    assert "segmentation implausible" in result.qc.not_reported["vertebrae.L5.genant_grade"]
    assert any(w.startswith("L5: no fracture grade") for w in result.qc.warnings)
    # L4 is the coarse model's L4: the overlap is held against the copy only
    assert l4 is not None and l4.genant_grade == 0
    assert "vertebrae.L4.genant_grade" not in result.qc.not_reported
    assert not result.summary.fractures


def test_plausible_masks_are_graded_as_before() -> None:
    volume, segs = _spine(duplicate_l4_as_l5=False)
    result = _assemble(volume, segs)
    # L5 is outside Genant's T4-L4: heights, no grade
    assert [result.vertebra(n).genant_grade for n in ("L3", "L4", "L5")] == [0, 0, None]
    assert result.vertebra("L5").heights_mm.anterior is not None
    assert not any("implausible" in w for w in result.qc.warnings)


def test_a_fragmented_prediction_is_not_graded() -> None:
    volume, segs = _spine(duplicate_l4_as_l5=False)
    segs = tuple(dataclasses.replace(s, largest_component_fraction=0.5) if s.level is V.L4 else s for s in segs)
    result = _assemble(volume, segs)
    assert result.vertebra("L4").genant_grade is None
    assert "fragmented" in result.qc.not_reported["vertebrae.L4.genant_grade"]


def test_a_sliver_inferred_at_the_edge_is_reported_incomplete_and_never_cropped() -> None:
    from osteoscan.pipeline.config import DEFAULT_FINE_LEVELS
    from osteoscan.pipeline.stages import (
        DetectedLevel,
        SpineLocalisation,
        levels_for_fine_model,
        sliver_levels,
    )

    volume, segs = _spine(duplicate_l4_as_l5=False)
    level_map = np.zeros((8, 8, 8), dtype=np.uint8)
    for i, lv in enumerate((V.L3, V.L4, V.L5)):
        level_map[2 * i : 2 * i + 2] = int(lv)
    detected = tuple(
        DetectedLevel(level=lv, centroid_lps_mm=np.array([0.0, 0.0, float(-10 * i)]), touches_border=lv is V.L2)
        for i, lv in enumerate((V.L2, V.L3, V.L4, V.L5))
    )
    loc = SpineLocalisation(detected=detected, level_map=level_map, grid=Grid((8, 8, 8), np.eye(4)))
    assert sliver_levels(loc) == {V.L2}
    assert [d.level for d in levels_for_fine_model(loc, DEFAULT_FINE_LEVELS, all_levels=False)] == [V.L3, V.L4, V.L5]
    result = assemble_result(
        volume=volume, localisation=loc, segments=segs, bmd=(), canvas=build_canvas(volume, segs),
        tissue_slice=None, patient=PatientInfo(), notes=(), models=(), runtime=("openvino", "CPU", "fp32"),
        timings={},
    )
    assert [v.level for v in result.vertebrae] == ["L2", "L3", "L4", "L5"]
    l2 = result.vertebra("L2")
    assert l2 is not None and not l2.complete and l2.heights_mm.posterior is None and l2.genant_grade is None
    assert l2.centroid_lps_mm is None  # its body is outside the scan: no centroid is claimed
    assert "sliver" in result.qc.not_reported["vertebrae.L2"]
