"""Heights, axes, Genant grading, disc heights and lordosis on synthetic bodies of known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from osteoscan.analysis import (
    disc_height,
    endplate_plane,
    genant_grade,
    lumbar_lordosis_deg,
    measure_heights,
    vertebral_axis,
    vertebral_heights,
)
from osteoscan.analysis.intervertebral import (
    _expected_heights,
    genant_grade_from_loss,
    height_ratio_min,
    plate_below,
    sagittal_tilt_deg,
)
from osteoscan.io.volume import affine_from_spacing
from osteoscan.result import FractureShape, Heights

ISO = (1.0, 1.0, 1.0)
SHAPE = (60, 70, 70)
CENTRE = (30.0, 35.0, 35.0)


def _heights_dict(h: Heights) -> dict[str, float]:
    return {"posterior": h.posterior, "middle": h.middle, "anterior": h.anterior}


BODIES = {
    "normal": {},
    "wedge": {"anterior": 14.0},  # truth loss 1 - Ha/Hp = 33 % -> grade 2 wedge
    "biconcave": {"concavity": 5.5},  # truth loss 1 - Hm/Hp = 28 % -> grade 2 biconcave
    "box_wedge": {"anterior": 18.0, "section": "box"},
}


@pytest.mark.parametrize("tilt", [0.0, 15.0, -15.0])
@pytest.mark.parametrize("kind", list(BODIES))
def test_heights_within_a_voxel_of_truth(synth, kind: str, tilt: float) -> None:
    body = synth.Body(**BODIES[kind])
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=tilt)
    h = _heights_dict(vertebral_heights(mask, ISO))
    truth = body.truth_heights()
    for pos in truth:
        assert h[pos] == pytest.approx(truth[pos], abs=1.0), (kind, tilt, pos, h, truth)


def test_tilted_wedge_is_graded_like_its_truth(synth) -> None:
    body = synth.Body(anterior=14.0)
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=15.0)
    g = genant_grade(vertebral_heights(mask, ISO))
    t = body.truth_heights()
    truth = genant_grade(Heights(anterior=t["anterior"], middle=t["middle"], posterior=t["posterior"]))
    assert (g.grade, g.shape) == (truth.grade, truth.shape) == (2, FractureShape.WEDGE)
    assert g.height_loss_percent == pytest.approx(truth.height_loss_percent, abs=4.0)


def test_biconcave_is_graded_biconcave(synth) -> None:
    body = synth.Body(concavity=5.5)
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=-10.0)
    g = genant_grade(vertebral_heights(mask, ISO))
    assert g.shape is FractureShape.BICONCAVE and g.grade == 2


def test_image_axis_heights_would_be_wrong(synth) -> None:
    """The tilt matters: along the image z axis a 25 mm body tilted 25 deg measures ~27.6 mm."""
    body = synth.Body(section="box")
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=25.0)
    h = vertebral_heights(mask, ISO)
    assert h.middle == pytest.approx(25.0, abs=1.0)
    column = mask[:, 35 - 1 : 35 + 2, 35].any(axis=1).sum()  # a naive image-axis column
    assert abs(column - 25.0) > 1.5


def test_anisotropic_spacing_and_affine_frame(synth) -> None:
    body = synth.Body(anterior=16.0)
    spacing = (2.0, 0.8, 0.8)
    shape = (32, 80, 80)
    mask = synth.voxelise(body, shape, spacing, (32.0, 32.0, 32.0), tilt_deg=12.0)
    truth = body.truth_heights()
    h_sp = _heights_dict(vertebral_heights(mask, spacing))
    h_aff = _heights_dict(vertebral_heights(mask, affine_from_spacing(spacing, origin=(-40.0, 12.0, 900.0))))
    for pos in truth:
        assert h_sp[pos] == pytest.approx(truth[pos], abs=2.0)  # one voxel along z
        assert h_aff[pos] == pytest.approx(h_sp[pos], abs=1e-6)


def test_coronal_roll_does_not_change_heights(synth) -> None:
    body = synth.Body()
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=8.0, roll_deg=12.0)
    h = vertebral_heights(mask, ISO)
    for v in (h.posterior, h.middle, h.anterior):
        assert v == pytest.approx(25.0, abs=1.0)


def test_axis_follows_the_vertebra(synth) -> None:
    s_true, a_true, _ = synth.tilted_axes(15.0)
    mask = synth.voxelise(synth.Body(anterior=15.0), SHAPE, ISO, CENTRE, tilt_deg=15.0)
    ax = vertebral_axis(mask, ISO)
    assert math.degrees(math.acos(np.dot(ax.superior, s_true))) < 2.0
    assert math.degrees(math.acos(np.dot(ax.anterior, a_true))) < 2.0
    assert np.dot(ax.superior, np.cross(ax.anterior, ax.left)) == pytest.approx(1.0, abs=1e-9) or np.dot(
        ax.superior, np.cross(ax.anterior, ax.left)
    ) == pytest.approx(-1.0, abs=1e-9)


def test_axis_from_neighbours(synth) -> None:
    mask = synth.voxelise(synth.Body(), SHAPE, ISO, CENTRE)
    up, down = np.array([60.0, 30.0, 35.0]), np.array([0.0, 40.0, 35.0])  # a line tilted 9.5 deg
    ax = vertebral_axis(mask, ISO, neighbour_centroids_mm=[up, down], align_walls=False)
    expected = (up - down) / np.linalg.norm(up - down)
    assert ax.source == "neighbours"
    np.testing.assert_allclose(ax.superior, expected, atol=1e-9)
    # order does not matter, and anterior stays perpendicular and anterior
    ax2 = vertebral_axis(mask, ISO, neighbour_centroids_mm=[down, up], align_walls=False)
    np.testing.assert_allclose(ax2.superior, expected, atol=1e-9)
    assert abs(np.dot(ax2.anterior, ax2.superior)) < 1e-9 and ax2.anterior[1] < 0
    # by default the walls bring the axis back to the vertebra's own (here the image's) axis
    own = vertebral_axis(mask, ISO, neighbour_centroids_mm=[up, down])
    assert own.source == "neighbours+walls"
    assert math.degrees(math.acos(own.superior[0])) < 1.0


def test_single_neighbour_at_the_end_of_a_curve(synth) -> None:
    """L5 with only L4 above: the centroid line is off by the segmental angle; heights are not."""
    body = synth.Body(anterior=28.0, posterior=24.0)
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=-20.0)
    s, _, _ = synth.tilted_axes(-8.0)  # the neighbour sits along a 12 deg different direction
    above = np.asarray(CENTRE) + 30.0 * s
    h = _heights_dict(vertebral_heights(mask, ISO, neighbour_centroids_mm=[above]))
    for pos, v in body.truth_heights().items():
        assert h[pos] == pytest.approx(v, abs=1.0)


def test_empty_mask_gives_no_heights() -> None:
    empty = np.zeros((10, 10, 10), dtype=bool)
    assert vertebral_heights(empty, ISO) == Heights()
    assert measure_heights(empty, ISO) is None
    assert vertebral_axis(empty, ISO) is None
    with pytest.raises(ValueError, match="3-D"):
        vertebral_heights(np.zeros((4, 4), dtype=bool), ISO)


@pytest.mark.parametrize(
    ("loss", "grade"),
    [(0.0, 0), (0.1999, 0), (0.20, 1), (0.2499, 1), (0.25, 2), (0.40, 2), (0.4001, 3), (0.9, 3)],
)
def test_genant_grade_boundaries(loss: float, grade: int) -> None:
    assert genant_grade_from_loss(loss) == grade


def test_genant_shapes_and_neighbours() -> None:
    assert genant_grade(Heights(anterior=25, middle=25, posterior=25)) == (0, FractureShape.NONE, 0.0)
    w = genant_grade(Heights(anterior=19, middle=22, posterior=25))
    assert (w.grade, w.shape) == (1, FractureShape.WEDGE) and w.height_loss_percent == pytest.approx(24.0)
    b = genant_grade(Heights(anterior=24, middle=16, posterior=25))
    assert (b.grade, b.shape) == (2, FractureShape.BICONCAVE) and b.height_loss_percent == pytest.approx(36.0)
    # a lordotic L5 (anterior taller than posterior) is not a fracture
    assert genant_grade(Heights(anterior=30, middle=26, posterior=24)).grade == 0
    # a uniform collapse is invisible without neighbours ...
    crushed = Heights(anterior=14, middle=14, posterior=14)
    assert genant_grade(crushed).grade == 0
    # ... and a severe crush with them
    nbs = [Heights(25, 25, 25), Heights(27, 26, 27)]
    c = genant_grade(crushed, nbs)
    assert (c.grade, c.shape) == (3, FractureShape.CRUSH)
    assert c.height_loss_percent == pytest.approx(100 * (1 - 14 / 26), abs=1e-6)
    # posterior-only collapse vs neighbours is crush too
    p = genant_grade(Heights(anterior=25, middle=24, posterior=18), nbs)
    assert p.shape is FractureShape.CRUSH and p.grade == 2
    assert genant_grade(Heights()) is None


def test_height_ratio_min() -> None:
    assert height_ratio_min(Heights(20, 25, 25)) == pytest.approx(0.8)
    assert height_ratio_min(Heights(None, 25, 25)) is None


def test_disc_height_axis_aligned(synth) -> None:
    box = synth.Body(section="box")
    shape = (90, 60, 60)
    upper = synth.voxelise(box, shape, ISO, (62.0, 30.0, 30.0))
    lower = synth.voxelise(box, shape, ISO, (30.0, 30.0, 30.0))
    assert disc_height(upper, lower, ISO) == pytest.approx(7.0, abs=0.05)
    # touching bodies: no disc space
    lower2 = synth.voxelise(box, shape, ISO, (37.0, 30.0, 30.0))
    assert disc_height(upper, lower2, ISO) == pytest.approx(0.0, abs=0.05)
    assert disc_height(upper, np.zeros(shape, dtype=bool), ISO) is None


def test_disc_height_along_a_tilted_spine(synth) -> None:
    box = synth.Body(section="box")
    shape = (100, 80, 60)
    s, _, _ = synth.tilted_axes(20.0)
    c_low = np.array([30.0, 40.0, 30.0])
    c_up = c_low + s * (25.0 + 6.0)  # 6 mm disc along the vertebrae's own axis
    upper = synth.voxelise(box, shape, ISO, tuple(c_up), tilt_deg=20.0)
    lower = synth.voxelise(box, shape, ISO, tuple(c_low), tilt_deg=20.0)
    assert disc_height(upper, lower, ISO) == pytest.approx(6.0, abs=0.6)


@pytest.mark.parametrize(("t_up", "t_low"), [(10.0, -10.0), (-12.0, 8.0), (5.0, 5.0), (25.0, -15.0)])
def test_lordosis_angle_and_sign(synth, t_up: float, t_low: float) -> None:
    body = synth.Body()
    upper = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=t_up)
    lower = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=t_low)
    assert lumbar_lordosis_deg(upper, lower, ISO) == pytest.approx(t_up - t_low, abs=1.5)


def test_endplate_plane_of_a_wedge(synth) -> None:
    """The superior plate of a wedge slopes; the inferior one follows the vertebra's tilt."""
    body = synth.Body(anterior=15.0)
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE, tilt_deg=10.0)
    inf = endplate_plane(mask, ISO, "inferior")
    sup = endplate_plane(mask, ISO, "superior")
    assert sagittal_tilt_deg(inf.normal, ISO) == pytest.approx(10.0, abs=1.5)
    slope = math.degrees(math.atan((25.0 - 15.0) / 34.0))  # anterior lower -> normal tilts anteriorly
    assert sagittal_tilt_deg(sup.normal, ISO) == pytest.approx(10.0 - slope, abs=2.0)
    with pytest.raises(ValueError, match="superior"):
        endplate_plane(mask, ISO, "top")


def test_neighbours_give_the_expected_height() -> None:
    """A lumbar vertebra is naturally taller anteriorly: its own Ha/Hp underestimates a wedge."""
    lumbar_wedge = Heights(anterior=19.6, middle=24.0, posterior=25.0)
    alone = genant_grade(lumbar_wedge)
    assert alone.grade == 1 and alone.height_loss_percent == pytest.approx(21.6)
    nbs = [Heights(anterior=28.0, middle=26.0, posterior=25.0), Heights(anterior=28.0, middle=26.5, posterior=25.5)]
    g = genant_grade(lumbar_wedge, nbs)
    assert (g.grade, g.shape) == (2, FractureShape.WEDGE) and g.height_loss_percent == pytest.approx(30.0)
    # unfractured with the same neighbours: grade 0
    assert genant_grade(Heights(anterior=28.0, middle=26.0, posterior=25.2), nbs).grade == 0


def test_a_fractured_neighbour_is_not_the_reference() -> None:
    crushed_neighbour = Heights(15.0, 15.0, 15.0)
    # averaged with the crushed neighbour the reference would be 20 mm and this crush (17 mm,
    # 32 % below the intact neighbour) would pass as normal
    g = genant_grade(Heights(17.0, 17.0, 17.0), [Heights(25.0, 25.0, 25.0), crushed_neighbour])
    assert (g.grade, g.shape) == (2, FractureShape.CRUSH) and g.height_loss_percent == pytest.approx(32.0)
    assert genant_grade(Heights(25.0, 24.5, 25.0), [Heights(25.5, 25.0, 25.5), crushed_neighbour]).grade == 0


def test_mild_crush_and_natural_size_steps() -> None:
    normal = Heights(anterior=26.0, middle=24.0, posterior=25.0)
    # a grade-1 crush: lowest height 23 % below the expected 26 mm, all heights scaled alike
    scale = 26.0 * 0.77 / 24.0
    mild = Heights(anterior=26.0 * scale, middle=24.0 * scale, posterior=25.0 * scale)
    g = genant_grade(mild, [normal, normal])
    assert (g.grade, g.shape) == (1, FractureShape.CRUSH) and g.height_loss_percent == pytest.approx(23.0)
    # L5 is ~7 % lower than L4 everywhere: not a fracture
    l5, l4 = Heights(24.19, 22.34, 22.34), Heights(26.13, 24.12, 24.12)
    assert genant_grade(l5, [l4]).grade == 0


def test_wedged_or_biconcave_neighbours_are_no_reference() -> None:
    """Phantom seed 4: a grade-2 crush between a wedge fracture and a normal vertebra."""
    crush = Heights(anterior=19.28, middle=18.76, posterior=17.71)
    wedge_above = Heights(anterior=18.59, middle=21.16, posterior=23.95)
    normal_below = Heights(anterior=25.36, middle=24.25, posterior=23.24)
    g = genant_grade(crush, [wedge_above, normal_below])
    assert (g.grade, g.shape) == (2, FractureShape.CRUSH)
    assert g.height_loss_percent == pytest.approx(100 * (1 - 17.71 / 25.36))
    # a biconcave neighbour is dropped too: the reference is the normal one alone
    refs, expected = _expected_heights([Heights(24.42, 23.24, 23.58), Heights(25.69, 16.48, 23.63)])
    assert refs == {"anterior": 24.42, "middle": 23.24, "posterior": 23.58} and expected == 24.42


def test_s1_plate_found_under_l5(synth) -> None:
    """A sacrum-like block with wide alae and a 30 deg plate; its own PCA axes would mislead."""
    shape = (110, 80, 110)
    l5 = synth.voxelise(synth.Body(), shape, ISO, (75.0, 40.0, 55.0), tilt_deg=-10.0)
    sacrum_body = synth.Body(posterior=40.0, anterior=40.0, depth=40.0, width=100.0, section="box")
    sacrum = synth.voxelise(sacrum_body, shape, ISO, (35.0, 45.0, 55.0), tilt_deg=-30.0)
    sacrum &= ~l5
    plate = plate_below(l5, sacrum, ISO)
    assert sagittal_tilt_deg(plate.normal, ISO) == pytest.approx(-30.0, abs=1.5)
    l1 = synth.voxelise(synth.Body(), shape, ISO, (75.0, 40.0, 55.0), tilt_deg=12.0)
    angle = lumbar_lordosis_deg(l1, sacrum, ISO, lower_plate="superior", l5_body_mask=l5)
    assert angle == pytest.approx(42.0, abs=2.0)


def test_holes_in_the_segmentation_do_not_cut_heights(synth) -> None:
    """A posterior channel (basivertebral foramen) and an internal cavity left out by a model."""
    body = synth.Body(section="box")
    mask = synth.voxelise(body, SHAPE, ISO, CENTRE)
    holed = mask.copy()
    j_post = np.argwhere(mask)[:, 1].max()
    holed[28:33, j_post - 8 :, 32:39] = False  # 5 mm channel from the posterior wall, mid-height
    holed[20:24, 30:38, 30:40] = False  # enclosed cavity on the middle column
    h = vertebral_heights(holed, ISO)
    for v in (h.posterior, h.middle, h.anterior):
        assert v == pytest.approx(25.0, abs=0.6)
