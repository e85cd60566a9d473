"""The level-sequence decoder on synthetic coarse probability maps (no network needed)."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.labels import NUM_SPINE_CLASSES
from osteoscan.labels import VertebraLevel as V
from osteoscan.models.spine_decoding import _STEP_MM, _STEP_TO_SACRUM_MM, decode_spine

SPACING = 3.0


def _column(levels: list[V], confusions: dict[V, tuple[V, float]] | None = None, top_margin: int = 4,
            shape_yx: tuple[int, int] = (24, 24)) -> tuple[np.ndarray, dict[V, float]]:
    """Probabilities (C, D, H, W) of boxes stacked cranio-caudally; returns also each box's z centre.

    ``confusions[level] = (other, p)``: that box votes ``other`` with probability p (and its own level
    with 0.9 - p), as a coarse network that confuses neighbours would.
    """
    confusions = confusions or {}
    steps = [(_STEP_TO_SACRUM_MM if b is V.SACRUM else _STEP_MM[a]) for a, b in zip(levels[:-1], levels[1:])]
    total = sum(steps) / SPACING
    depth = int(total + 2 * top_margin + 12)
    probs = np.zeros((NUM_SPINE_CLASSES, depth, *shape_yx), dtype=np.float32)
    probs[0] = 1.0
    z = depth - top_margin - 4.0 if top_margin else depth - 2.0  # most cranial centre (axis 0: superior)
    centres = {}
    for i, lv in enumerate(levels):
        half = max(2, int(0.32 * (steps[i - 1] if i else steps[0]) / SPACING))
        zs = slice(max(0, int(round(z)) - half), int(round(z)) + half + 1)
        box = (slice(None), zs, slice(6, 18), slice(7, 17))
        p = np.zeros(NUM_SPINE_CLASSES, dtype=np.float32)
        p[0] = 0.1
        if lv in confusions:
            other, q = confusions[lv]
            p[int(other)] = q
            p[int(lv)] = 0.9 - q
        else:
            p[int(lv)] = 0.9
        probs[box] = p[:, None, None, None]
        centres[lv] = z
        if i < len(levels) - 1:
            z -= steps[i] / SPACING
    return probs, centres


def _affine() -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] *= SPACING
    aff[:3, 3] = (-100.0, -50.0, -40.0)
    return aff


def test_clean_column_is_kept() -> None:
    levels = [V(v) for v in range(V.T9, V.L5 + 1)] + [V.SACRUM]
    probs, centres = _column(levels)
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels
    for v in out.vertebrae:
        assert abs(v.centroid_index[0] - centres[v.level]) < 1.0
        np.testing.assert_allclose(v.centroid_lps_mm, _affine()[:3, :3] @ v.centroid_index + _affine()[:3, 3])
        assert v.confidence > 0.85
    # level map relabelled with the decoded levels only
    assert set(np.unique(out.level_map)) == {0, *[int(v) for v in levels]}


def test_duplicate_level_is_resolved_by_order() -> None:
    levels = [V(v) for v in range(V.T10, V.L5 + 1)] + [V.SACRUM]
    # the L3 box votes L2 more than L3: raw argmax has two L2s and no L3
    probs, _ = _column(levels, confusions={V.L3: (V.L2, 0.55)})
    raw = np.argmax(probs, axis=0)
    assert int(V.L3) not in np.unique(raw)
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels
    l3 = next(v for v in out.vertebrae if v.level is V.L3)
    assert l3.raw_level is V.L2
    assert any("L2->L3" in n for n in out.notes)


def test_logits_and_probabilities_give_the_same_answer() -> None:
    levels = [V.T12, V.L1, V.L2, V.L3, V.L4]
    probs, _ = _column(levels)
    logits = np.log(np.clip(probs, 1e-4, 1.0)) * 3.0
    a = decode_spine(probs, _affine())
    b = decode_spine(logits[None], _affine())
    assert [v.level for v in a.vertebrae] == [v.level for v in b.vertebrae] == levels


def test_chest_only_scan_keeps_thoracic_labels_and_marks_the_cut() -> None:
    levels = [V(v) for v in range(V.T1, V.T12 + 1)]
    probs, _ = _column(levels, top_margin=0)
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels
    assert out.vertebrae[0].touches_border  # T1 reaches the top slice
    assert not out.vertebrae[5].touches_border


def test_shifted_votes_are_overruled_by_the_sacrum_anchor_and_neighbours() -> None:
    levels = [V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    # a weak T12 vote on L1 should not create a gap or a second T12
    probs, _ = _column(levels, confusions={V.L1: (V.T12, 0.5), V.L4: (V.L5, 0.5)})
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels


def test_missing_vertebra_leaves_a_gap_only_where_the_distance_says_so() -> None:
    levels = [V.T11, V.T12, V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    probs, centres = _column(levels)
    # erase L2 entirely (e.g. not detected): the decoder must not shift L1 down
    z = int(round(centres[V.L2]))
    probs[:, z - 6: z + 7] = 0.0
    probs[0, z - 6: z + 7] = 1.0
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == [lv for lv in levels if lv is not V.L2]


def test_bad_input_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected coarse scores"):
        decode_spine(np.zeros((3, 4, 4, 4), dtype=np.float32), _affine())


def test_empty_volume_gives_no_vertebrae() -> None:
    probs = np.zeros((NUM_SPINE_CLASSES, 10, 10, 10), dtype=np.float32)
    probs[0] = 1
    out = decode_spine(probs, _affine())
    assert out.vertebrae == () and not out.level_map.any()


def _lumbar_column_with_mislabelled_arch(bridge: bool) -> tuple[np.ndarray, dict[V, float]]:
    """L1..L5 + sacrum whose L4 has a posterior arch voted "L5" (as on the real ts_example scan).

    The arch sits behind L4's body at L4's axial level and touches it; with ``bridge`` a thin strip of
    "L5" voxels joins it to the L5 body, so that the raw "L5" region is one component longer than
    1.8 vertebra steps, which the decoder splits (the arch then comes off as its own piece).
    """
    levels = [V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    probs, centres = _column(levels, shape_yx=(36, 24))
    p = np.zeros(NUM_SPINE_CLASSES, dtype=np.float32)
    p[0], p[int(V.L5)] = 0.1, 0.9
    z4, z5 = round(centres[V.L4]), round(centres[V.L5])
    probs[:, z4 - 4: z4 + 7, 18:28, 9:15] = p[:, None, None, None]  # L4's arch, voted L5
    if bridge:
        probs[:, z5 - 3: z4 - 4, 18:20, 11:13] = p[:, None, None, None]
    return probs, centres


@pytest.mark.parametrize("bridge", [False, True])
def test_an_arch_voted_as_the_next_level_stays_with_its_own_vertebra(bridge: bool) -> None:
    probs, centres = _lumbar_column_with_mislabelled_arch(bridge)
    out = decode_spine(probs, _affine())
    by_level = {v.level: v for v in out.vertebrae}
    assert [v.level for v in out.vertebrae] == [V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    # L5 is the L5 body (not the arch beside L4): its centroid is at L5's axial level
    assert abs(by_level[V.L5].centroid_index[0] - centres[V.L5]) < 2.0
    # the arch went back to L4 (same axial level, touching): L4 keeps its axial centre
    assert abs(by_level[V.L4].centroid_index[0] - centres[V.L4]) < 1.5
    assert by_level[V.L4].mask_bbox[1][1] >= 27  # reaches the arch's posterior end


def test_a_separate_structure_at_the_same_level_is_not_merged() -> None:
    """Touching is required: an untouching lateral blob at L3's level stays a separate candidate."""
    levels = [V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    probs, centres = _column(levels, shape_yx=(24, 40))
    z3 = round(centres[V.L3])
    p = np.zeros(NUM_SPINE_CLASSES, dtype=np.float32)
    p[0], p[int(V.L4)] = 0.1, 0.9
    probs[:, z3 - 3: z3 + 4, 8:16, 30:38] = p[:, None, None, None]  # 13 voxels lateral: not touching
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels
    l3 = next(v for v in out.vertebrae if v.level is V.L3)
    assert l3.mask_bbox[2][1] <= 17  # the blob was not pulled into L3
    assert any("dropped" in n for n in out.notes)


def _cut_at_top(levels: list[V], keep_above_centroid_of: V, extra_mm: float) -> np.ndarray:
    """A column cut ``extra_mm`` above the centroid of ``keep_above_centroid_of`` (top slices removed).

    As the coarse network does on a real scan (ts_example), the few slices of the cut vertebra's
    cranial neighbour are voted as the cut vertebra, which therefore reaches the top face.
    """
    probs, centres = _column(levels, top_margin=0)
    top = int(centres[keep_above_centroid_of] + extra_mm / SPACING)
    probs = probs[:, : top + 1].copy()
    cut = levels[levels.index(keep_above_centroid_of) - 1]
    zc = round(centres[cut])
    p = np.zeros(NUM_SPINE_CLASSES, dtype=np.float32)
    p[0], p[int(cut)] = 0.1, 0.9
    probs[:, zc:, 6:18, 7:17] = p[:, None, None, None]
    return probs


def test_a_cut_t12_with_its_upper_end_plate_in_view_implies_a_t11_sliver() -> None:
    levels = [V.T10, V.T11, V.T12, V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    # the top of the scan lies 1.7 T12 steps above L1's centroid: T12 cut above its upper end plate
    probs = _cut_at_top(levels, V.L1, 1.7 * _STEP_MM[V.T12])
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae][:3] == [V.T11, V.T12, V.L1]
    t11 = out.vertebrae[0]
    assert t11.touches_border and t11.voxel_count == 0 and t11.confidence == 0.0
    assert t11.centroid_index[0] == probs.shape[1] - 1
    assert not (out.level_map == int(V.T11)).any()  # never measured: no voxels of its own
    assert any("T11 inferred at the cranial edge" in n for n in out.notes)


def test_no_sliver_when_the_cut_is_below_the_upper_end_plate() -> None:
    levels = [V.T11, V.T12, V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    probs = _cut_at_top(levels, V.L1, 1.2 * _STEP_MM[V.T12])  # T12's upper end plate not in view
    out = decode_spine(probs, _affine())
    assert out.vertebrae[0].level is V.T12 and out.vertebrae[0].touches_border
    assert not any("inferred" in n for n in out.notes)


def test_no_sliver_when_the_top_vertebra_is_not_cut() -> None:
    levels = [V.T12, V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    out = decode_spine(_column(levels)[0], _affine())
    assert [v.level for v in out.vertebrae] == levels


def test_a_long_thin_process_is_not_split_off_as_a_vertebra() -> None:
    """A spinous process reaching far down makes T12's region over-long; its tip is no vertebra."""
    levels = [V.T10, V.T11, V.T12, V.L1, V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    probs, centres = _column(levels, shape_yx=(30, 24))
    p = np.zeros(NUM_SPINE_CLASSES, dtype=np.float32)
    p[0], p[int(V.T12)] = 0.1, 0.9
    z12, z1 = round(centres[V.T12]), round(centres[V.L1])
    # a 2x2-voxel process, joined to T12's body at T12's level, running down behind (not touching)
    # the L1 body to below L1's centre: the region is then over 1.8 steps long and gets cut, and
    # the piece below the cut (under 1.5 cm3) must not become a vertebra candidate
    probs[:, z12 - 2: z12 + 1, 18:20, 11:13] = p[:, None, None, None]
    probs[:, z1 - 6: z12 + 1, 20:22, 11:13] = p[:, None, None, None]
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels
    t12 = next(v for v in out.vertebrae if v.level is V.T12)
    assert abs(t12.centroid_index[0] - centres[V.T12]) < 2.5
    # the tip stayed with T12: no fragment candidate was made (and then dropped, or worse, labelled)
    assert not any("dropped" in n for n in out.notes), out.notes
    assert t12.mask_bbox[0][0] == z1 - 6


def test_a_sacrum_in_two_pieces_is_one_sacrum_not_a_transitional_l6() -> None:
    """S1's body and the fused lower segments are often separate components on the 4 mm grid; with
    a faint L6 vote on the upper piece they were decoded as L6 + sacrum (7 of 24 validation cases)."""
    levels = [V.L2, V.L3, V.L4, V.L5, V.SACRUM]
    probs, centres = _column(levels)
    # move the column up 8 slices and put a second sacrum component below the first, separated by
    # a background gap
    probs = np.concatenate([np.broadcast_to(probs[:, :1], (NUM_SPINE_CLASSES, 8, *probs.shape[2:])), probs], axis=1).copy()
    z_s1 = round(centres[V.SACRUM]) + 8
    upper = probs[:, z_s1 - 2 : z_s1 + 3, 6:18, 7:17]
    upper[int(V.L6)] = 0.07
    upper[int(V.SACRUM)] = 0.83
    z_low = z_s1 - 6
    piece = np.zeros(NUM_SPINE_CLASSES, dtype=np.float32)
    piece[0], piece[int(V.SACRUM)] = 0.1, 0.9
    probs[:, z_low - 4 : z_low + 1, 4:20, 5:19] = piece[:, None, None, None]
    out = decode_spine(probs, _affine())
    assert [v.level for v in out.vertebrae] == levels
    sacrum = out.vertebrae[-1]
    # both pieces belong to it
    assert sacrum.mask_bbox[0][0] <= z_low - 4
    assert not any("L6" in n for n in out.notes)
