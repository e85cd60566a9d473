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


def _spec(window_invariant: bool):
    from osteoscan.models import registry

    spec = registry.recipe(registry.SPINE_COARSE)
    return spec.replace(window_invariant=window_invariant)


def test_a_window_invariant_model_gets_the_body_box_and_the_whole_scan_in_one_window() -> None:
    from osteoscan.pipeline.body_crop import MAX_WHOLE_WINDOW_Z, coarse_windows

    hu = _volume_with_body((150, 128, 128), rows=(30, 101), cols=(10, 110))
    window, patch = coarse_windows(hu, _spec(True))
    assert window == (slice(0, 150), slice(30, 101), slice(10, 110))
    # padded to the network's multiple of 16, one window along z
    assert patch == (160, 80, 112)
    # a whole-body scan goes in slabs of MAX_WHOLE_WINDOW_Z
    long = _volume_with_body((400, 64, 64), rows=(10, 50), cols=(10, 50))
    _, patch = coarse_windows(long, _spec(True))
    assert patch[0] == MAX_WHOLE_WINDOW_Z


def test_a_window_dependent_model_keeps_its_training_patch() -> None:
    from osteoscan.pipeline.body_crop import coarse_windows

    spec = _spec(False)
    hu = _volume_with_body((150, 200, 200), rows=(30, 101), cols=(10, 110))
    window, patch = coarse_windows(hu, spec)
    assert patch == tuple(spec.patch_size)
    assert window == inplane_window(hu, spec.patch_size)


def test_coarse_logits_on_the_body_box_match_the_whole_field_away_from_the_box_edges() -> None:
    """The point of batch norm: cutting the field to the body's box changes nothing beyond the
    network's receptive field from the box's edges (instance norm would change every voxel)."""
    torch = __import__("pytest").importorskip("torch")
    from osteoscan.models import registry
    from osteoscan.pipeline.body_crop import coarse_logits

    spec = registry.recipe(registry.SPINE_COARSE, tiny=True)
    torch.manual_seed(0)
    model = registry.build_torch_model(spec).eval()

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    hu = _volume_with_body((16, 80, 80), rows=(10, 70), cols=(12, 68))
    hu[4:12, 36:44, 36:44] = 700.0  # a "vertebra" in the middle of the body
    logits, window = coarse_logits(infer, hu, spec)
    assert window[1:] == (slice(10, 70), slice(12, 68))
    from osteoscan.models.preprocess import normalise_hu

    whole = infer(normalise_hu(hu, spec)[None, None])[0][(slice(None), *window)]
    margin = 20  # > the tiny network's receptive field radius
    inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    np.testing.assert_allclose(logits[inner], whole[inner], rtol=1e-4, atol=1e-5)
    # and the instance-norm variant of the same network is not invariant
    inorm = registry.build_torch_model(spec.replace(arch_params={**spec.arch_params, "norm": "instance"})).eval()
    with torch.no_grad():
        a = inorm(torch.from_numpy(normalise_hu(hu[window], spec)[None, None].copy())).numpy()[0]
        b = inorm(torch.from_numpy(normalise_hu(hu, spec)[None, None].copy())).numpy()[0][(slice(None), *window)]
    assert np.abs(a[inner] - b[inner]).max() > 1e-3
