"""The coarse model's in-plane window: centred on the body, never cutting it off."""

from __future__ import annotations

import numpy as np

from osteoscan.pipeline.body_crop import embed, inplane_window, window_affine


def _volume_with_body(shape: tuple[int, int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[:, rows[0] : rows[1], cols[0] : cols[1]] = 40.0
    return hu


def test_window_is_patch_wide_and_centred_on_an_off_centre_body() -> None:
    hu = _volume_with_body((20, 200, 180), rows=(100, 190), cols=(10, 90))
    window = inplane_window(hu, (16, 160, 160))
    assert window[0] == slice(0, 20)
    rows, cols = window[1], window[2]
    assert rows.stop - rows.start == 160 and cols.stop - cols.start == 160
    assert rows.start <= 100 and rows.stop >= 190  # the whole body is inside
    assert rows.start == 200 - 160  # centred on the body (145) would overrun the field: clamped
    assert cols.start == 0  # centred on the body (50) would start before the field: clamped


def test_axes_no_longer_than_the_patch_are_left_whole() -> None:
    hu = _volume_with_body((20, 150, 200), rows=(20, 130), cols=(60, 120))
    window = inplane_window(hu, (16, 160, 160))
    assert window[1] == slice(0, 150)
    assert window[2] == slice(10, 170)  # centred on the body's columns (60..119)


def test_a_body_wider_than_the_patch_keeps_its_whole_extent() -> None:
    hu = _volume_with_body((10, 200, 200), rows=(5, 195), cols=(50, 150))
    window = inplane_window(hu, (16, 160, 160))
    assert window[1].start <= 5 and window[1].stop >= 195


def test_window_affine_and_embedding_put_the_window_back_in_place() -> None:
    affine = np.array([[0, 0, 3, -100], [0, 3, 0, -50], [3, 0, 0, 20], [0, 0, 0, 1]], dtype=float)
    window = (slice(0, 4), slice(2, 7), slice(1, 7))
    sub = window_affine(affine, window)
    # index (0, 0, 0) of the window is index (0, 2, 1) of the whole array
    np.testing.assert_allclose(sub @ [0, 0, 0, 1], affine @ [0, 2, 1, 1])
    labels = np.arange(1, 4 * 5 * 6 + 1, dtype=np.uint8).reshape(4, 5, 6)
    full = embed(labels, window, (4, 10, 10))
    np.testing.assert_array_equal(full[window], labels)
    assert full.sum() == labels.sum()  # zero outside
