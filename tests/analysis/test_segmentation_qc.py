"""The segmentation-quality gate before Genant grading, on synthetic mask evidence."""

from __future__ import annotations

import pytest

from osteoscan.analysis.constants import QC_MAX_VOLUME_RATIO
from osteoscan.analysis.segmentation_qc import MaskEvidence, implausibility_reasons


def _good(**changes) -> MaskEvidence:
    base = {
        "level": "L5",
        "volume_ml": 40.0,
        "neighbour_volumes_ml": (42.0,),
        "coarse_fractions": {"L5": 0.6, "SACRUM": 0.15},
        "overlap_fraction": 0.02,
        "largest_component_fraction": 0.97,
        "touches_axial_crop_face": False,
    }
    base.update(changes)
    return MaskEvidence(**base)


def test_a_plausible_vertebra_passes() -> None:
    assert implausibility_reasons(_good()) == ()


def test_a_crushed_vertebra_is_not_hidden() -> None:
    # a Genant grade 3 crush can keep only ~0.35 of its neighbours' volume (phantom validation_0019)
    assert implausibility_reasons(_good(volume_ml=0.3 * 42.0)) == ()
    # ... and the coarse model may give it to its neighbour's region: the neighbour has its own fine
    # mask and the two do not overlap, so they are two bones and the grade stands
    crushed_l1 = _good(level="L1", volume_ml=14.2, neighbour_volumes_ml=(39.9,),
                       coarse_fractions={"L1": 0.06, "L2": 0.67}, segmented_levels=frozenset({"L1", "L2"}))
    assert implausibility_reasons(crushed_l1) == ()


def test_a_mask_lying_on_the_neighbours_coarse_region_is_the_neighbour() -> None:
    # ts_example before the decoder fix: the "L5" crop held L4 (67 % on L4's coarse region)
    reasons = implausibility_reasons(_good(coarse_fractions={"L5": 0.12, "L4": 0.67}))
    assert len(reasons) == 1 and "L4" in reasons[0] and "neighbour" in reasons[0]


def test_a_mask_mostly_on_the_sacrum_is_rejected_but_some_sacrum_contact_is_not() -> None:
    assert implausibility_reasons(_good(coarse_fractions={"L5": 0.25, "SACRUM": 0.45}))
    # L5 rests on the sacrum: a minority of its voxels on the sacrum's coarse region is normal
    assert implausibility_reasons(_good(coarse_fractions={"L5": 0.4, "SACRUM": 0.29})) == ()


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"overlap_fraction": 0.5}, "overlaps"),
        ({"largest_component_fraction": 0.5}, "fragmented"),
        ({"touches_axial_crop_face": True}, "face of its crop"),
        ({"volume_ml": 42.0 * QC_MAX_VOLUME_RATIO * 1.1}, "volume"),
    ],
)
def test_each_implausible_shape_gives_its_reason(change: dict, word: str) -> None:
    reasons = implausibility_reasons(_good(**change))
    assert len(reasons) == 1 and word in reasons[0], reasons


def test_without_neighbours_volume_is_not_judged() -> None:
    assert implausibility_reasons(_good(volume_ml=5.0, neighbour_volumes_ml=())) == ()
