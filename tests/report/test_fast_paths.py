"""The shortcuts that keep write_outputs fast give exactly what the whole-grid computations give."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from osteoscan.io import affine_from_spacing, write_nifti
from osteoscan.labels import VertebraLevel, body_label, disc_label, posterior_label
from osteoscan.report import figures
from osteoscan.report.levels import level_boxes, level_map, nonzero_box
from osteoscan.report.outputs import _labels_for_nifti
from osteoscan.report.seg import _crop_to_labelled_frames


def _sparse_labels(seed: int = 0) -> np.ndarray:
    """A 30x40x50 grid with a few vertebra/disc blobs away from every edge."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((30, 40, 50), dtype=np.uint16)
    labels[5:9, 12:20, 20:27] = body_label(VertebraLevel.L1)
    labels[10:14, 14:22, 18:26] = body_label(VertebraLevel.L2)
    labels[10:14, 25:29, 21:24] = posterior_label(VertebraLevel.L2)
    labels[9, 13:19, 20:26] = disc_label(VertebraLevel.L1)
    labels[20, 31, 33] = body_label(VertebraLevel.SACRUM)
    noise = rng.random(labels.shape) < 0.002
    labels[noise & (labels == 0)] = body_label(VertebraLevel.L4)
    return labels


def test_nonzero_box_is_the_bounding_box() -> None:
    labels = _sparse_labels()
    idx = np.argwhere(labels)
    expected = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(axis=0), idx.max(axis=0)))
    assert nonzero_box(labels) == expected
    assert nonzero_box(np.zeros((4, 5, 6), dtype=np.uint16)) is None
    one = np.zeros((4, 5, 6), dtype=np.uint8)
    one[3, 0, 5] = 1
    assert nonzero_box(one) == (slice(3, 4), slice(0, 1), slice(5, 6))


def test_level_map_and_boxes_within_the_box_equal_the_whole_grid() -> None:
    labels = _sparse_labels(1)
    whole = level_map(labels.reshape(-1)).reshape(labels.shape)  # 1-D: looked up whole, no box
    box = nonzero_box(labels)
    lvl = level_map(labels, box)
    np.testing.assert_array_equal(lvl, whole)
    np.testing.assert_array_equal(level_map(labels), whole)
    assert level_boxes(lvl, box) == ndimage.find_objects(whole)
    assert level_boxes(np.zeros((3, 3, 3), np.uint8), None) == []


def test_spine_path_within_the_box_equals_the_whole_grid_count() -> None:
    lvl = level_map(_sparse_labels(2))
    counts = np.count_nonzero(lvl, axis=1)  # the whole-grid formula
    total = counts.sum(axis=1)
    have = total > 0
    centre = (counts[have] * np.arange(lvl.shape[2])).sum(axis=1) / total[have]
    path = ndimage.uniform_filter1d(np.interp(np.arange(lvl.shape[0]), np.flatnonzero(have), centre), 5, mode="nearest")
    expected = np.clip(np.round(path).astype(int), 0, lvl.shape[2] - 1)
    np.testing.assert_array_equal(figures._spine_path(lvl), expected)


def test_labels_nifti_is_the_same_file_whatever_the_memory_layout(tmp_path: Path) -> None:
    """labels.nii.gz is written from the (k, j, i) map as is; a NIfTI-ordered copy gives the same bytes."""
    import gzip

    labels = _sparse_labels(3)
    affine = affine_from_spacing((2.5, 0.8, 0.8), (10.0, -20.0, 30.0))
    fast = _labels_for_nifti(labels.astype(np.int32))
    assert fast.dtype == np.uint16 and fast.flags.c_contiguous
    assert _labels_for_nifti(fast) is fast  # no copy of a map that is uint16 already
    in_nifti_order = np.ascontiguousarray(labels.transpose(2, 1, 0)).transpose(2, 1, 0)
    a = write_nifti(fast, affine, tmp_path / "fast.nii.gz")
    b = write_nifti(in_nifti_order, affine, tmp_path / "slow.nii.gz")
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    np.testing.assert_array_equal(np.asanyarray(nib.load(a).dataobj).transpose(2, 1, 0), labels)


@pytest.mark.parametrize("flip", [False, True])
def test_seg_crop_keeps_the_labelled_frames_in_place(flip: bool) -> None:
    seg = np.zeros((12, 6, 7), dtype=np.uint16)
    seg[3, 1, 1] = 1
    seg[8, 4, 5] = 2
    affine = affine_from_spacing((2.0, 1.0, 1.0), (5.0, 6.0, 7.0))
    if flip:
        affine[:3, 0] = -affine[:3, 0]
    cropped, moved = _crop_to_labelled_frames(seg, affine)
    np.testing.assert_array_equal(cropped, seg[3:9])
    for k in range(cropped.shape[0]):  # each kept frame sits where it sat in the whole volume
        np.testing.assert_allclose(moved @ [k, 0, 0, 1], affine @ [k + 3, 0, 0, 1])
    empty = np.zeros((4, 2, 2), np.uint16)
    same, aff = _crop_to_labelled_frames(empty, affine)
    assert same is empty and aff is affine
