"""End-to-end checks of the shipped weights on small phantom cases (ONNX Runtime, CPU).

Floors are set well below the model card's numbers (docs/MODEL_CARD.md) so that they catch broken
weights or preprocessing, not run-to-run noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.labels import BODY_OFFSET, POSTERIOR_OFFSET, Tissue, VertebraLevel, VertebraPart
from osteoscan.models import registry

pytest.importorskip("onnxruntime")

FINE_DICE_FLOOR = 0.90
TISSUE_DICE_FLOOR = {Tissue.MUSCLE: 0.85, Tissue.SAT: 0.90}


@pytest.fixture(scope="module")
def runners():
    from osteoscan.train.inference import open_runner

    return {n: open_runner(n) for n in registry.MODEL_NAMES}


def test_shipped_specs_verify() -> None:
    specs = {s.name: s for s in registry.list_specs(verify=True)}
    assert set(registry.MODEL_NAMES) <= set(specs)
    total = sum(p.stat().st_size for p in registry.WEIGHTS_DIR.iterdir())
    assert total < 40 * 2**20, "shipped weights exceed the 40 MB budget"
    for s in specs.values():
        assert s.params > 0 and s.flops_per_patch > 0 and s.training.get("steps", 0) > 0


def test_fine_model_segments_a_phantom_vertebra(runners) -> None:
    from osteoscan.models.preprocess import extract_crop, normalise_hu
    from osteoscan.train.augment import degrade_mask
    from osteoscan.train.datasets import render_crop, subject_geometry

    fine = runners[registry.VERTEBRA_FINE]
    spec = fine.spec
    seed, level = 6_100_001, VertebraLevel.L2
    subject, entries, _, _ = subject_geometry(seed, "lumbar")
    patch = np.array(spec.patch_size)
    centre = np.asarray(entries[level]["center_lps_mm"]) + np.array([0.0, 15.0, 0.0])
    hu, labels, _ = render_crop(seed, subject, centre, tuple(spec.input_spacing_mm), tuple(int(v) for v in patch + 12))
    target = (labels == BODY_OFFSET + level) | (labels == POSTERIOR_OFFSET + level)
    com = np.argwhere(target).mean(axis=0)
    t = extract_crop(target, com, patch, pad_value=False)
    guide = degrade_mask(t, np.random.default_rng(1), spacing_mm=spec.input_spacing_mm[0])
    x = np.stack([normalise_hu(extract_crop(hu, com, patch, pad_value=-1024.0), spec), guide.astype(np.float32)])
    pred = np.argmax(fine(x[None])["logits"][0], axis=0)
    dice = 2 * ((pred > 0) & t).sum() / ((pred > 0).sum() + t.sum())
    assert dice > FINE_DICE_FLOOR
    body_t = extract_crop(labels == BODY_OFFSET + level, com, patch, pad_value=False)
    body_dice = 2 * ((pred == VertebraPart.BODY) & body_t).sum() / ((pred == VertebraPart.BODY).sum() + body_t.sum())
    assert body_dice > FINE_DICE_FLOOR


def test_tissue_model_on_a_phantom_l3_slice(runners) -> None:
    from osteoscan.train.evaluate import evaluate_tissue

    out = evaluate_tissue(runners[registry.TISSUE_2D], n_cases=1, seed_base=6_100_010)
    assert out["muscle_dice"] > TISSUE_DICE_FLOOR[Tissue.MUSCLE]
    assert out["sat_dice"] > TISSUE_DICE_FLOOR[Tissue.SAT]


@pytest.mark.slow
def test_coarse_model_labels_the_lumbar_spine_of_a_phantom_scan(runners) -> None:
    """Lumbar levels are right on held-out phantom scans (thoracic ones are not yet: MODEL_CARD.md)."""
    from osteoscan.phantom import generate_case
    from osteoscan.train.inference import localise

    case = generate_case(6_100_033, "lumbar", spacing_mm=3.0)  # 12 rib pairs, no transitional vertebra
    decoding, _ = localise(runners[registry.SPINE_COARSE], case.volume)
    found = {v.level: np.asarray(v.centroid_lps_mm) for v in decoding.vertebrae}
    for e in case.truth["vertebrae"]:
        level = VertebraLevel.from_name(e["level"])
        if level.region != "lumbar" or not e["complete"]:
            continue
        assert level in found, f"{level.name} not decoded; got {sorted(v.name for v in found)}"
        assert np.linalg.norm(found[level] - np.asarray(e["centroid_lps_mm"])) < 20.0
