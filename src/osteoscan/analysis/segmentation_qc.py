"""Is a fine vertebra mask plausible enough to grade a fracture on?

Genant grading compares a vertebra's heights with its own and its neighbours'. A mask of the wrong
structure (the neighbour segmented again because the crop was centred off the vertebra, a piece of
the sacrum, a prediction in several pieces) also has "lost height", and the grading then reports a
false grade 2-3: on the real ts_example scan the old L5 crop was centred on L4's arch, the fine
model segmented L4 again, and the few voxels left of "L5" graded 3 (docs/VALIDATION.md).

The checks use evidence that a true fracture does not produce, so they do not hide real fractures:

* the mask lies mostly on another level's (or the sacrum's) region of the coarse level map and that
  level has no fine mask of its own (when it has one and the two masks do not overlap, they are two
  bones and the coarse map is what is wrong: on the phantom the coarse model gives a crushed
  vertebra to its neighbour's region, and the fracture must still be graded);
* it overlaps a neighbouring level's fine mask (one bone segmented twice);
* the fine prediction was in several large pieces (a vertebra is one bone);
* it touches the crop's cranial or caudal face (the crop is about twice a vertebra's height and
  centred on it, so a mask reaching both ways out of it is more than one vertebra);
* its volume is more than 2.5x its plausible neighbours' (two vertebrae). A small volume is no
  reason: that is what a crush fracture looks like.

A failed check means "no grade" with the reason, never a changed grade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from osteoscan.analysis.constants import (
    QC_MAX_FOREIGN_COARSE_FRACTION,
    QC_MAX_OVERLAP_FRACTION,
    QC_MAX_VOLUME_RATIO,
    QC_MIN_LARGEST_COMPONENT_FRACTION,
)


@dataclass(frozen=True)
class MaskEvidence:
    """What is known about one fine vertebra mask (all fractions are of its voxels)."""

    level: str
    volume_ml: float
    neighbour_volumes_ml: Sequence[float] = ()
    #: fraction of the mask on each coarse-map region, by level name ("SACRUM" for the sacrum)
    coarse_fractions: Mapping[str, float] = field(default_factory=dict)
    overlap_fraction: float = 0.0  # on other levels' fine masks
    largest_component_fraction: float = 1.0  # of the raw fine prediction
    touches_axial_crop_face: bool = False
    segmented_levels: frozenset[str] = frozenset()  # levels that have a fine mask of their own


def implausibility_reasons(e: MaskEvidence) -> tuple[str, ...]:
    """Why the mask is not a plausible single vertebra of its level (empty when it is)."""
    reasons: list[str] = []
    own = float(e.coarse_fractions.get(e.level, 0.0))
    foreign = {k: v for k, v in e.coarse_fractions.items() if k != e.level and k not in e.segmented_levels}
    if foreign:
        other, frac = max(foreign.items(), key=lambda kv: kv[1])
        if frac > QC_MAX_FOREIGN_COARSE_FRACTION and frac > own:
            reasons.append(
                f"{100 * frac:.0f} % of the mask lies on the coarse model's {other} "
                f"(only {100 * own:.0f} % on {e.level}): the crop segmented a neighbour"
            )
    if e.overlap_fraction > QC_MAX_OVERLAP_FRACTION:
        reasons.append(f"{100 * e.overlap_fraction:.0f} % of the mask overlaps a neighbouring vertebra's mask")
    if e.largest_component_fraction < QC_MIN_LARGEST_COMPONENT_FRACTION:
        reasons.append(
            f"the segmentation was fragmented (largest piece {100 * e.largest_component_fraction:.0f} %)"
        )
    if e.touches_axial_crop_face:
        reasons.append("the mask reaches the cranial or caudal face of its crop (more than one vertebra)")
    if e.neighbour_volumes_ml:
        ref = float(np.median(e.neighbour_volumes_ml))
        if ref > 0 and e.volume_ml > QC_MAX_VOLUME_RATIO * ref:
            reasons.append(f"volume {e.volume_ml:.1f} ml vs {ref:.1f} ml for its neighbours")
    return tuple(reasons)
