"""Architectures (tiny variants), ModelSpec round trip + sha256 check, preprocessing, ONNX export."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from osteoscan.errors import ModelError
from osteoscan.labels import NUM_SPINE_CLASSES, Tissue, VertebraPart
from osteoscan.models import registry
from osteoscan.models.preprocess import extract_crop, normalise_hu
from osteoscan.models.spec import ModelSpec, Normalisation

torch = pytest.importorskip("torch")


def test_models_package_imports_without_torch() -> None:
    import subprocess

    code = (
        "import sys; import osteoscan.models, osteoscan.models.registry, osteoscan.models.preprocess, "
        "osteoscan.models.spine_decoding; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", registry.MODEL_NAMES)
def test_tiny_output_shapes(name: str) -> None:
    spec = registry.recipe(name, tiny=True)
    model = registry.build_torch_model(spec).eval()
    x = torch.randn(3, spec.in_channels, *spec.patch_size)
    with torch.no_grad():
        out = model(x)
    if name == registry.BMD_REGRESSOR:
        bmd, sigma = out
        assert bmd.shape == (3, 1) and sigma.shape == (3, 1)
        assert bool((sigma > 0).all())
    else:
        n_out = {registry.SPINE_COARSE: NUM_SPINE_CLASSES, registry.VERTEBRA_FINE: len(VertebraPart),
                 registry.TISSUE_2D: len(Tissue)}[name]
        assert out.shape == (3, n_out, *spec.patch_size)


def test_full_size_recipes_are_fully_convolutional() -> None:
    spec = registry.recipe(registry.VERTEBRA_FINE)
    model = registry.build_torch_model(spec).eval()
    # any multiple of the size divisor works, not only the training patch
    shape = (spec.size_divisor * 2, spec.size_divisor * 3, spec.size_divisor * 2)
    with torch.no_grad():
        y = model(torch.zeros(1, spec.in_channels, *shape))
    assert y.shape[2:] == shape
    assert model.size_divisor == spec.size_divisor


def test_spec_round_trip_and_sha256(tmp_path) -> None:
    from osteoscan.train.export import export_model

    spec = registry.recipe(registry.TISSUE_2D, tiny=True)
    model = registry.build_torch_model(spec)
    exported = export_model(model, spec, tmp_path, training={"steps": 0}, metrics={"x": 1.0})
    again = registry.get_spec(spec.name, tmp_path)
    assert again == exported
    assert again.sha256 == exported.sha256 and len(again.sha256) == 64
    assert again.flops_per_patch > 0 and again.params == sum(p.numel() for p in model.parameters())
    loaded = registry.load_torch_model(again)
    x = torch.randn(1, 1, *spec.patch_size)
    with torch.no_grad():
        # the shipped state dict is float16: equal up to that rounding
        assert torch.allclose(loaded(x), model.eval()(x), atol=2e-2, rtol=2e-2)
    # corrupt the ONNX file: loading the spec must fail with a ModelError naming the file
    onnx_path = tmp_path / exported.onnx_file
    onnx_path.write_bytes(onnx_path.read_bytes() + b"x")
    with pytest.raises(ModelError, match="sha256"):
        registry.get_spec(spec.name, tmp_path)
    # unknown fields in a spec are rejected
    d = json.loads((tmp_path / f"{spec.name}.json").read_text())
    d["surprise"] = 1
    (tmp_path / f"{spec.name}.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="unknown fields"):
        registry.get_spec(spec.name, tmp_path, verify=False)


def test_onnx_dynamic_spatial_axes(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from osteoscan.train.export import export_model

    spec = registry.recipe(registry.SPINE_COARSE, tiny=True)
    exported = export_model(registry.build_torch_model(spec), spec, tmp_path)
    sess = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 1, 8, 12, 20), dtype=np.float32)
    (y,) = sess.run(["logits"], {"image": x})
    assert y.shape == (2, NUM_SPINE_CLASSES, 8, 12, 20)


def test_get_spec_missing_names_the_fix(tmp_path) -> None:
    with pytest.raises(ModelError, match="osteoscan train"):
        registry.get_spec("spine_coarse", tmp_path)
    with pytest.raises(ModelError, match="unknown model"):
        registry.recipe("nope")


def test_normalise_hu_window_and_padding() -> None:
    norm = Normalisation(hu_min=-500.0, hu_max=1500.0)
    x = normalise_hu(np.array([-2000.0, -500.0, 500.0, 1500.0, 3000.0, np.nan]), norm)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [0.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        Normalisation(hu_min=0.0, hu_max=-1.0)
    with pytest.raises(ValueError, match="pad_hu"):
        Normalisation(hu_min=-1000.0, hu_max=100.0, pad_hu=0.0)


def test_extract_crop_centre_and_padding() -> None:
    a = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    crop = extract_crop(a, (2, 3, 3), (3, 3, 3), pad_value=-1)
    np.testing.assert_array_equal(crop, a[1:4, 2:5, 2:5])
    edge = extract_crop(a, (0, 0, 0), (3, 4, 3), pad_value=-1)
    assert edge.shape == (3, 4, 3) and edge.dtype == np.int16
    assert edge[0, 0, 0] == -1 and edge[1, 1, 1] == a[0, 0, 0]
    outside = extract_crop(a, (50, 50, 50), (2, 2, 2), pad_value=7)
    assert (outside == 7).all()
    with pytest.raises(ValueError):
        extract_crop(a, (1, 1), (2, 2))


def test_spec_validation() -> None:
    spec = registry.recipe(registry.VERTEBRA_FINE)
    with pytest.raises(ValueError, match="multiple"):
        spec.replace(patch_size=(63, 96, 96))
    assert isinstance(ModelSpec.from_dict(spec.to_dict()), ModelSpec)
