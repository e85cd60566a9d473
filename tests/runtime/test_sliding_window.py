"""sliding_window_inference: exact on point-wise models, covers every voxel, works with sessions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from osteoscan.errors import InputError
from osteoscan.runtime import create_session, sliding_window_inference
from osteoscan.runtime.sliding_window import importance_map, window_starts


def affine_fn(batch: np.ndarray) -> np.ndarray:
    """A point-wise 'model': 2 output channels per input voxel, so blending must reproduce it."""
    return np.concatenate([2 * batch + 1, -batch], axis=1)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("shape,patch", [((1, 37, 50, 23), (16, 32, 16)), ((1, 45, 70), (32, 32)), ((1, 9, 10, 11), (16, 16, 16))])
def test_pointwise_model_is_reproduced_exactly(blend, shape, patch):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = sliding_window_inference(affine_fn, x, patch, overlap=0.5, batch_size=3, blend=blend, size_divisor=8)
    assert out.shape == (2, *shape[1:])
    np.testing.assert_allclose(out, affine_fn(x[None])[0], rtol=1e-5, atol=1e-5)


def test_window_starts_cover_and_overlap():
    for length, patch, ov in [(100, 32, 0.25), (33, 32, 0.5), (32, 32, 0.25), (500, 96, 0.0)]:
        starts = window_starts(length, patch, ov)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + patch] = True
            assert s + patch <= length
        assert covered.all() and starts[0] == 0
        gaps = np.diff(starts)
        assert (gaps <= int(patch * (1 - ov)) + 1).all()


def test_gaussian_map_peaks_in_the_centre():
    w = importance_map((16, 16), "gaussian")
    assert w[8, 8] > w[0, 0] > 0 and w.max() == pytest.approx(1.0, abs=1e-2)
    with pytest.raises(InputError):
        importance_map((4, 4), "median")


def test_dict_outputs_and_session_input(tmp_path, nets, rt_config):
    """A point-wise ONNX model through a session (infer_many path) equals whole-volume inference."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 1), torch.nn.Sigmoid()).eval()
    path = tmp_path / "pw.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8, 8),), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "b", 2: "d", 3: "h", 4: "w"}, "logits": {0: "b", 2: "d", 3: "h", 4: "w"}},
                      dynamo=False)
    s = create_session(path, backend="openvino", precision="fp32", hint="throughput", config=rt_config)
    x = np.random.default_rng(1).random((1, 30, 41, 20), dtype=np.float32)
    whole = s.infer(x[None])["logits"][0]
    via_session = sliding_window_inference(s, x, (16, 16, 16), batch_size=2, output_key="logits")
    via_fn = sliding_window_inference(s.infer, x, (16, 16, 16), batch_size=2)
    np.testing.assert_allclose(via_session, whole, atol=1e-5)
    assert set(via_fn) == {"logits"}
    np.testing.assert_allclose(via_fn["logits"], whole, atol=1e-5)


def test_errors_name_the_problem():
    x = np.zeros((1, 20, 20, 20), np.float32)
    with pytest.raises(InputError, match="spatial dims"):
        sliding_window_inference(affine_fn, x[0], (16, 16, 16))
    with pytest.raises(InputError, match="overlap"):
        sliding_window_inference(affine_fn, x, (16, 16, 16), overlap=1.0)
    with pytest.raises(InputError, match="dense"):
        sliding_window_inference(lambda b: b[:, :, :4], x, (16, 16, 16))


def test_blending_is_fast():
    """A 3 mm whole-CT-sized volume with the coarse model's patch: blending overhead well under 1 s."""
    x = np.zeros((1, 128, 160, 160), np.float32)
    t = time.perf_counter()
    out = sliding_window_inference(lambda b: np.repeat(b, 4, axis=1), x, (96, 96, 96), overlap=0.25, batch_size=4)
    assert out.shape == (4, 128, 160, 160)
    assert time.perf_counter() - t < 3.0


@pytest.mark.parametrize("output_key", [None, "logits"])
def test_single_window_returns_the_cropped_output_without_copy(output_key):
    """One window over the padded volume: exactly fn(padded input), cropped, as a view of fn's output."""
    x = np.random.default_rng(2).standard_normal((1, 37, 21, 30)).astype(np.float32)
    seen = {}

    def fn(batch):
        seen["in"] = batch.copy()
        seen["out"] = {"logits": np.concatenate([2 * batch + 1, -batch, batch**2], axis=1), "aux": batch[:, :1] * 0}
        return seen["out"]

    out = sliding_window_inference(fn, x, (48, 32, 32), overlap=0.25, size_divisor=16, pad_value=-3.0,
                                   output_key=output_key)
    logits = out if output_key else out["logits"]
    padded = np.pad(x, ((0, 0), (0, 11), (0, 11), (0, 2)), constant_values=-3.0)
    np.testing.assert_array_equal(seen["in"], padded[None])  # the reference: one call on the padded volume
    np.testing.assert_array_equal(logits, seen["out"]["logits"][0][:, :37, :21, :30])
    assert np.shares_memory(logits, seen["out"]["logits"])
    if output_key is None:
        assert set(out) == {"logits", "aux"}
    with pytest.raises(InputError, match="dense"):
        sliding_window_inference(lambda b: b[:, :, :4], x, (48, 32, 32), size_divisor=16)
    with pytest.raises(InputError, match="no output"):
        sliding_window_inference(fn, x, (48, 32, 32), size_divisor=16, output_key="probs")
