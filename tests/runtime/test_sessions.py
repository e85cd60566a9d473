"""create_session on every back-end available here: parity, batching, precision, caching, errors."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.errors import BackendError, InputError, ModelError
from osteoscan.runtime import ModelSource, create_session


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_backends_agree_fp32_and_bf16_argmax(tiny3d, rt_config, smooth_input):
    path, factory = tiny3d
    x = smooth_input((3, 1, 16, 24, 16))  # dynamic spatial axes: not the export shape
    src = ModelSource.from_onnx(path, torch_factory=factory)
    ref = create_session(src, backend="torch", device="cpu", precision="fp32", config=rt_config).infer(x)["logits"]
    import torch

    with torch.inference_mode():
        direct = factory()(torch.from_numpy(x)).numpy()
    assert rel_l2(ref, direct) < 1e-6
    for backend in ("openvino", "onnxruntime"):
        out = create_session(src, backend=backend, device="cpu", precision="fp32", config=rt_config).infer(x)["logits"]
        assert out.shape == (3, 3, 16, 24, 16)
        assert rel_l2(out, ref) <= 1e-4, backend
    bf16 = create_session(src, backend="openvino", precision="bf16", config=rt_config).infer(x)["logits"]
    assert (bf16.argmax(1) == ref.argmax(1)).mean() >= 0.99
    tbf = create_session(src, backend="torch", device="cpu", precision="bf16", config=rt_config).infer(x)["logits"]
    assert (tbf.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_openvino_precision_hint_is_explicit(tiny3d, rt_config):
    """OpenVINO's CPU default here is bf16: asking for fp32 must really run fp32."""
    path, _ = tiny3d
    s = create_session(path, backend="openvino", device="cpu", precision="fp32", config=rt_config)
    assert str(s.compiled_model.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32", "float32")
    assert s.info.precision == "fp32" and s.info.backend == "openvino" and s.info.device == "CPU"
    assert s.info.model_sha256 == ModelSource.from_onnx(path).sha256
    assert s.info.compile_time_s > 0


def test_batches_split_and_reassemble(tiny3d, rt_config, smooth_input):
    path, _ = tiny3d
    x = smooth_input((7, 1, 16, 16, 16), seed=3)
    one = create_session(path, backend="openvino", precision="fp32", config=rt_config, max_batch=1)
    three = create_session(path, backend="openvino", precision="fp32", config=rt_config, max_batch=3, hint="throughput")
    ort = create_session(path, backend="onnxruntime", config=rt_config, max_batch=2)
    a, b, c = one.infer(x)["logits"], three.infer(x)["logits"], ort.infer(x)["logits"]
    assert a.shape[0] == 7 and three.batch_size == 3
    assert rel_l2(b, a) < 1e-5 and rel_l2(c, a) < 1e-4
    singles = np.concatenate([one.infer(x[i : i + 1])["logits"] for i in range(7)])
    assert np.allclose(a, singles, atol=1e-5)
    many = three.infer_many([x[:2], x[2:], {"image": x[:1]}])
    assert [m["logits"].shape[0] for m in many] == [2, 5, 1]
    assert np.allclose(np.concatenate([many[0]["logits"], many[1]["logits"]]), a, atol=1e-5)


def test_input_errors_name_the_fix(tiny3d, rt_config):
    path, _ = tiny3d
    s = create_session(path, backend="onnxruntime", config=rt_config)
    with pytest.raises(InputError, match=r"x\[None\]"):
        s.infer(np.zeros((1, 16, 16, 16), np.float32))
    with pytest.raises(InputError, match="missing"):
        s.infer({"img": np.zeros((1, 1, 16, 16, 16), np.float32)})


@pytest.mark.parametrize(
    "backend,precision,match",
    [
        ("onnxruntime", "bf16", "openvino"),
        ("onnxruntime", "fp16", "openvino"),
        ("torch", "fp16", "bf16"),
        ("onnxruntime", "int8", "openvino"),
    ],
)
def test_unsupported_precision_names_alternative(tiny3d, rt_config, backend, precision, match):
    path, factory = tiny3d
    src = ModelSource.from_onnx(path, torch_factory=factory)
    with pytest.raises(BackendError, match=match):
        create_session(src, backend=backend, device="cpu", precision=precision, config=rt_config)


def test_int8_without_artifact_says_how_to_make_one(tiny3d, rt_config):
    path, _ = tiny3d
    with pytest.raises(ModelError, match="osteoscan models quantize"):
        create_session(path, precision="int8", config=rt_config)


def test_unknown_choices_rejected(tiny3d, rt_config):
    path, _ = tiny3d
    with pytest.raises(BackendError, match="precision"):
        create_session(path, precision="fp8", config=rt_config)
    with pytest.raises(BackendError, match="backend"):
        create_session(path, backend="tensorflow", config=rt_config)
    with pytest.raises(BackendError, match="unknown device"):
        create_session(path, device="tpu", config=rt_config)


def test_ir_cache_keyed_and_reused(tiny3d, rt_config):
    path, _ = tiny3d
    sha = ModelSource.from_onnx(path).sha256
    first = create_session(path, backend="openvino", precision="fp32", config=rt_config)
    dirs = sorted(p.name for p in rt_config.ir_dir.iterdir())
    assert len(dirs) == 1 and sha[:16] in dirs[0] and dirs[0].endswith("-CPU-fp32") and "-ov20" in dirs[0]
    assert "converted" in first.info.reason
    again = create_session(path, backend="openvino", precision="fp32", config=rt_config)
    assert "cached IR" in again.info.reason
    create_session(path, backend="openvino", precision="bf16", config=rt_config)
    assert len(list(rt_config.ir_dir.iterdir())) == 2
    assert any(rt_config.ov_blob_dir.iterdir())  # OpenVINO's compiled-blob cache is in use


def test_corrupt_spec_sha_is_refused(tiny3d, tmp_path):
    path, _ = tiny3d

    class FakeSpecFile:  # the duck-typed fields ModelSource.from_spec reads
        name = "tiny"
        version = "1"
        onnx_file = str(path)
        sha256 = "0" * 64

    with pytest.raises(ModelError, match="sha256"):
        ModelSource.from_spec(FakeSpecFile())


def test_two_output_model(tmp_path, rt_config, smooth_input, nets):
    """BMD-regressor-like model: two (N, 1) outputs, names kept, batch split works."""
    net = nets.make_net(seed=1, in_ch=2, out_ch=2, two_heads=True)
    path = nets.export_onnx(net, tmp_path / "reg.onnx", 2, (8, 16, 16), output_names=("bmd", "sigma"))
    x = smooth_input((5, 2, 8, 16, 16))
    src = ModelSource.from_onnx(path, torch_factory=lambda: net)
    outs = {b: create_session(src, backend=b, device="cpu", precision="fp32", config=rt_config, max_batch=2).infer(x)
            for b in ("openvino", "onnxruntime", "torch")}
    for b, o in outs.items():
        assert set(o) == {"bmd", "sigma"} and o["bmd"].shape == (5, 1), b
        assert np.allclose(o["bmd"], outs["torch"]["bmd"], rtol=1e-4, atol=1e-5), b
        assert (o["sigma"] > 0).all()
