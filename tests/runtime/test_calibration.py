"""Phantom calibration through the pipeline's own stages, and the quantize CLI on its output.

Slow (phantom generation + four models), hence ``-m slow``. With untrained tiny models the coarse
model finds no vertebrae, so only the coarse and tissue models receive batches: that is what is
asserted; the crop models are calibrated once trained weights exist."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.runtime.calibration import RecordingSession, phantom_calibration_inputs, split_batches

registry = pytest.importorskip("osteoscan.models.registry")
pytest.importorskip("osteoscan.phantom")
pytest.importorskip("osteoscan.pipeline.stages")


def export_tiny_as_real_names(out):
    import torch

    from osteoscan.models.spec import sha256_file

    for name in registry.MODEL_NAMES:
        torch.manual_seed(0)
        recipe = registry.recipe(name, tiny=True).replace(name=name)
        net = registry.build_torch_model(recipe).eval()
        onnx_path = out / f"{name}.onnx"
        spatial = {i + 2: f"s{i}" for i in range(len(recipe.patch_size))} if recipe.dynamic_spatial else {}
        dense = len(recipe.output_names) == 1
        axes = {n: {0: "N", **spatial} for n in recipe.input_names}
        axes.update({n: {0: "N", **(spatial if dense else {})} for n in recipe.output_names})
        torch.onnx.export(net, (torch.zeros(1, recipe.in_channels, *recipe.patch_size),), str(onnx_path),
                          input_names=list(recipe.input_names), output_names=list(recipe.output_names),
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        recipe.replace(onnx_file=onnx_path.name, sha256=sha256_file(onnx_path)).to_json(out / f"{name}.json")


def test_split_batches_and_recording(tiny3d, rt_config):
    from osteoscan.runtime import create_session

    path, _ = tiny3d
    rec = RecordingSession(create_session(path, backend="onnxruntime", config=rt_config), max_batches=2)
    x = np.zeros((3, 1, 16, 16, 16), np.float32)
    out = rec.infer(x)
    assert out["logits"].shape == (3, 3, 16, 16, 16) and len(rec.recorded) == 1
    rec.infer(x), rec.infer(x)
    assert len(rec.recorded) == 2  # capped
    assert [f["image"].shape[0] for f in split_batches(rec.recorded)] == [1] * 6


@pytest.mark.slow
def test_phantom_calibration_feeds_real_preprocessing(tmp_path, rt_config):
    export_tiny_as_real_names(tmp_path)
    inputs = phantom_calibration_inputs(1, config=rt_config, weights_dir=tmp_path)
    coarse = registry.get_spec("spine_coarse", weights_dir=tmp_path)
    assert inputs["spine_coarse"] and inputs["tissue_2d"]
    x = inputs["spine_coarse"][0]["image"]
    assert x.shape == (1, 1, *coarse.patch_size) and 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.01
    t = inputs["tissue_2d"][0]["image"]
    assert t.shape[:2] == (1, 1) and t.std() > 0.01
    # the int8 artifacts made from these inputs run through create_session(precision="int8")
    from osteoscan.runtime import create_session
    from osteoscan.runtime.quantize import quantize

    for name in ("spine_coarse", "tissue_2d"):
        spec = registry.get_spec(name, weights_dir=tmp_path)
        res = quantize(spec, inputs[name], config=rt_config, calibration_info={"source": "phantom", "n_cases": 1})
        assert res.spec.calibration["n_batches"] == len(inputs[name])
        s = create_session(spec, precision="int8", config=rt_config)
        sample = inputs[name][0]["image"]
        assert s.info.precision == "int8" and s.infer(sample)["logits"].shape[1] == spec.out_channels
