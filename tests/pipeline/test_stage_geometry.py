"""The geometry inside the stages (cut-vertebra test, canvas pasting, label map on the CT grid) against
the plain full-grid computations they replace: same masks, labels and overlaps, voxel for voxel."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from osteoscan.io import CTVolume, Provenance, affine_from_spacing
from osteoscan.io.resample import resample_to_grid
from osteoscan.labels import BODY_OFFSET, POSTERIOR_OFFSET, VertebraLevel, VertebraPart
from osteoscan.models.spine_decoding import first_argmax
from osteoscan.pipeline.grid import Grid, centered_grid
from osteoscan.pipeline.stages import (
    FIELD_EDGE_MARGIN_VOXELS,
    VertebraSegment,
    _largest_component_parts,
    _near_field_edge,
    build_canvas,
    labels_on_ct_grid,
)

CANONICAL = np.eye(3)[:, [2, 1, 0]]  # axis 0 -> z (S), axis 2 -> x


def _volume(rng: np.random.Generator, shape=(40, 36, 36), spacing=(2.5, 0.8, 0.8)) -> CTVolume:
    aff = affine_from_spacing(spacing, origin=(-14.0, -14.0, 0.0))
    ct = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    return CTVolume(ct, aff, Provenance())


def _reference_near_edge(mask: np.ndarray, volume: CTVolume, grid: Grid) -> bool:
    ones = np.ones(volume.shape, dtype=np.uint8)
    inside = resample_to_grid(ones, volume.affine, grid.shape, grid.affine, order=0).astype(bool)
    near = ndimage.binary_dilation(~inside, iterations=FIELD_EDGE_MARGIN_VOXELS)
    return bool(np.any(near & mask))


def test_near_field_edge_matches_the_dilated_outside() -> None:
    rng = np.random.default_rng(3)
    volume = _volume(rng)
    extent = np.asarray(volume.shape) * np.asarray(volume.spacing)
    seen = set()
    for _ in range(150):
        # crops anywhere from well inside to half outside, masks from a few voxels to blobs near the faces
        centre_index = rng.uniform(-0.2, 1.2, size=3) * np.asarray(volume.shape)
        centre = volume.index_to_lps(centre_index)
        grid = centered_grid(centre, (12, 14, 10), (1.25, 1.25, 1.25), volume.direction)
        mask = np.zeros(grid.shape, dtype=bool)
        lo = rng.integers(0, 8, size=3)
        mask[
            lo[0] : lo[0] + rng.integers(1, 6),
            lo[1] : lo[1] + rng.integers(1, 8),
            lo[2] : lo[2] + rng.integers(1, 5),
        ] = True
        expected = _reference_near_edge(mask, volume, grid)
        assert _near_field_edge(mask, volume, grid) == expected, (centre_index, extent)
        seen.add(expected)
    assert seen == {True, False}


def _segments(rng: np.random.Generator, volume: CTVolume) -> tuple[VertebraSegment, ...]:
    """Four fine crops stacked along the spine at non-integer offsets, overlapping their neighbours."""
    segs = []
    levels = (VertebraLevel.L4, VertebraLevel.L3, VertebraLevel.L2, VertebraLevel.L1)
    for n, level in enumerate(levels):
        centre = volume.index_to_lps(np.array([8.0 + 6.3 * n, 17.7, 18.2]))
        grid = centered_grid(centre, (16, 20, 20), (1.25, 1.25, 1.25), volume.direction)
        parts = rng.choice(
            np.array([VertebraPart.BACKGROUND, VertebraPart.BODY, VertebraPart.POSTERIOR], dtype=np.uint8),
            size=grid.shape,
            p=[0.5, 0.3, 0.2],
        )
        segs.append(
            VertebraSegment(
                level=level, grid=grid, parts=parts, ct=np.zeros(grid.shape, np.float32), complete=True
            )
        )
    return tuple(segs)


def test_canvas_and_label_map_match_full_grid_pasting() -> None:
    rng = np.random.default_rng(11)
    volume = _volume(rng)
    segs = _segments(rng, volume)
    canvas = build_canvas(volume, segs)
    assert canvas is not None
    # the reference: every mask sampled on the whole canvas, first come first kept
    labels = np.zeros(canvas.grid.shape, dtype=np.uint16)
    pasted = []
    for seg in segs:
        enc = np.zeros(seg.parts.shape, dtype=np.uint16)
        enc[seg.parts == VertebraPart.BODY] = BODY_OFFSET + int(seg.level)
        enc[seg.parts == VertebraPart.POSTERIOR] = POSTERIOR_OFFSET + int(seg.level)
        p = resample_to_grid(enc, seg.grid.affine, canvas.grid.shape, canvas.grid.affine, order=0)
        labels = np.where((p > 0) & (labels == 0), p, labels)
        pasted.append(p > 0)
    np.testing.assert_array_equal(canvas.labels, labels)
    overlap = {}
    for (a, ma), (b, mb) in itertools.permutations(zip(segs, pasted), 2):
        if abs(int(a.level) - int(b.level)) <= 2:
            overlap[(a.level, b.level)] = float((ma & mb).sum()) / max(int(ma.sum()), 1)
    assert canvas.overlap == overlap
    # neighbours overlap in part, levels two apart not at all: both ways of counting are exercised
    assert max(overlap.values()) < 1 and {v > 0 for v in overlap.values()} == {True, False}
    ref_ct = resample_to_grid(
        volume.array, volume.affine, canvas.grid.shape, canvas.grid.affine, order=1, cval=-1024.0, threads=1
    )
    np.testing.assert_array_equal(canvas.ct, ref_ct)
    on_ct = labels_on_ct_grid(volume, canvas)
    np.testing.assert_array_equal(
        on_ct, resample_to_grid(canvas.labels, canvas.grid.affine, volume.shape, volume.affine, order=0)
    )
    assert on_ct.dtype == np.uint16 and on_ct.any() and not on_ct.all()


# ------------------------------------------------------------------------- fine-model post-processing
def test_fine_model_argmax_is_numpys_argmax_with_ties_and_nan() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(3, 9, 10, 11)).astype(np.float32)
    scores[1, :3] = scores[0, :3]  # ties between the first two classes: the first wins
    scores[2, 3:5] = scores[1, 3:5] = scores[0, 3:5].max() + 1.0  # a tie between the last two
    np.testing.assert_array_equal(first_argmax(scores), np.argmax(scores, axis=0).astype(np.uint8))
    assert first_argmax(scores).dtype == np.uint8
    scores[1, 0, 0, 0] = np.nan  # numpy takes a NaN as the maximum
    np.testing.assert_array_equal(first_argmax(scores), np.argmax(scores, axis=0).astype(np.uint8))
    five = rng.normal(size=(5, 4, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(first_argmax(five), np.argmax(five, axis=0).astype(np.uint8))


def _reference_largest_component(parts: np.ndarray) -> np.ndarray:
    fg = parts > 0
    lab, n = ndimage.label(fg)
    if n <= 1:
        return parts
    sizes = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
    return np.where(lab == int(np.argmax(sizes)) + 1, parts, 0).astype(np.uint8)


def test_largest_component_matches_labelling_the_whole_crop() -> None:
    rng = np.random.default_rng(9)
    for _ in range(40):
        parts = np.zeros((20, 24, 24), dtype=np.uint8)
        for _blob in range(rng.integers(0, 4)):  # blobs of equal size too: the first in raster order wins
            lo = rng.integers(0, 16, size=3)
            size = rng.integers(1, 5, size=3)
            parts[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = rng.integers(
                1, 3
            )
        out = _largest_component_parts(parts)
        np.testing.assert_array_equal(out, _reference_largest_component(parts))
        assert out.dtype == np.uint8
    two = np.zeros((6, 6, 6), dtype=np.uint8)
    two[0, 0, 0] = two[4:, 4:, 4:] = VertebraPart.BODY
    assert _largest_component_parts(two).sum() == 8 * int(VertebraPart.BODY)


def test_body_centroid_is_argwheres_mean_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    grid = Grid((30, 40, 50), affine_from_spacing((1.25, 1.25, 1.25)))
    for p_body in (0.001, 0.3, 0.9):
        parts = np.where(rng.random(grid.shape) < p_body, VertebraPart.BODY, VertebraPart.POSTERIOR).astype(
            np.uint8
        )
        seg = VertebraSegment(VertebraLevel.L1, grid, parts, np.zeros(grid.shape, np.float32), complete=True)
        expected = np.argwhere(seg.body).mean(axis=0)
        assert seg.body_centroid_index is not None
        assert seg.body_centroid_index.tobytes() == expected.tobytes()
    empty = VertebraSegment(
        VertebraLevel.L1, grid, np.zeros(grid.shape, np.uint8), np.zeros(grid.shape, np.float32), True
    )
    assert empty.body_centroid_index is None
