"""Result assembly on synthetic segmentations with known geometry (no models involved)."""

from __future__ import annotations

import numpy as np

from osteoscan.io import CTVolume, Provenance, affine_from_spacing
from osteoscan.labels import VertebraLevel, VertebraPart
from osteoscan.pipeline.assemble import assemble_result
from osteoscan.pipeline.config import PatientInfo
from osteoscan.pipeline.grid import Grid
from osteoscan.pipeline.stages import BmdPrediction, VertebraSegment, build_canvas
from osteoscan.result import AcrCategory, FractureShape

SPACING = (1.0, 1.0, 1.0)
BODY_HEIGHT = 24  # mm
BODY_DEPTH = 30  # AP, mm
BODY_WIDTH = 40  # LR, mm
TRABECULAR_HU = 150.0


def _volume_and_segments(wedge_level: VertebraLevel | None = None):
    """A 1 mm canonical CT with L1..L3 box bodies (+ a posterior block), 8 mm discs."""
    shape = (120, 90, 80)
    ct = np.full(shape, -50.0, dtype=np.float32)  # soft tissue
    affine = affine_from_spacing(SPACING)
    segments = []
    z0 = 10
    for level in (VertebraLevel.L3, VertebraLevel.L2, VertebraLevel.L1):  # caudal first: z grows upward
        parts = np.zeros(shape, dtype=np.uint8)
        body = (slice(z0, z0 + BODY_HEIGHT), slice(20, 20 + BODY_DEPTH), slice(20, 20 + BODY_WIDTH))
        parts[body] = VertebraPart.BODY
        if level is wedge_level:
            # anterior 40 % of the body loses its top 40 %: a wedge of about 40 % anterior height loss
            cut_z = z0 + int(BODY_HEIGHT * 0.6)
            parts[cut_z : z0 + BODY_HEIGHT, 20 : 20 + int(BODY_DEPTH * 0.3)] = 0
        parts[z0 + 4 : z0 + BODY_HEIGHT - 4, 20 + BODY_DEPTH : 20 + BODY_DEPTH + 25, 45:55] = VertebraPart.POSTERIOR
        ct[parts == VertebraPart.BODY] = TRABECULAR_HU
        ct[parts == VertebraPart.POSTERIOR] = 400.0
        segments.append((level, parts))
        z0 += BODY_HEIGHT + 8
    volume = CTVolume(ct, affine, Provenance(kvp=120.0))
    grid = Grid(shape, affine)
    segs = tuple(
        VertebraSegment(level=lv, grid=grid, parts=p, ct=ct, complete=True) for lv, p in reversed(segments)
    )
    return volume, segs


def _assemble(volume, segs, bmd_values):
    bmd = tuple(BmdPrediction(level=s.level, bmd_mg_cm3=b, sigma_mg_cm3=5.0) for s, b in zip(segs, bmd_values))
    return assemble_result(
        volume=volume,
        localisation=None,
        segments=segs,
        bmd=bmd,
        canvas=build_canvas(volume, segs),
        tissue_slice=None,
        patient=PatientInfo(),
        notes=(),
        models=(),
        runtime=("openvino", "CPU", "fp32"),
        timings={},
    )


def test_heights_hu_volumes_and_acr_category_from_box_vertebrae() -> None:
    volume, segs = _volume_and_segments()
    result = _assemble(volume, segs, [70.0, 85.0, 90.0])  # L1, L2, L3
    l1 = result.vertebra("L1")
    assert l1 is not None and l1.complete
    for h in (l1.heights_mm.anterior, l1.heights_mm.middle, l1.heights_mm.posterior):
        assert h is not None and abs(h - BODY_HEIGHT) <= 1.0
    assert l1.hu_trabecular is not None and abs(l1.hu_trabecular - TRABECULAR_HU) < 1.0
    assert abs(l1.body_volume_ml - BODY_HEIGHT * BODY_DEPTH * BODY_WIDTH / 1000.0) < 0.5
    assert l1.genant_grade == 0
    assert result.summary.bmd_l1_l2_mg_cm3 == 77.5
    assert result.summary.acr_category is AcrCategory.OSTEOPOROSIS
    assert [d.upper for d in result.discs] == ["L1", "L2"]
    for d in result.discs:
        assert d.height_mm is not None and abs(d.height_mm - 8.0) <= 1.0
    assert result.composition is None and "composition" in result.qc.not_reported


def test_wedge_vertebra_is_graded_and_listed_as_fracture() -> None:
    volume, segs = _volume_and_segments(wedge_level=VertebraLevel.L2)
    result = _assemble(volume, segs, [130.0, 125.0, 128.0])
    l2 = result.vertebra("L2")
    assert l2 is not None and l2.genant_grade is not None and l2.genant_grade >= 2
    assert l2.fracture_shape is FractureShape.WEDGE
    assert [f.level for f in result.summary.fractures] == ["L2"]
    assert result.summary.acr_category is AcrCategory.NORMAL
