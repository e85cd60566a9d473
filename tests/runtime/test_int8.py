"""NNCF int8: a separate artifact with its own spec, found by precision='int8', refused when stale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osteoscan.errors import BackendError, ModelError
from osteoscan.runtime import ModelSource, create_session
from osteoscan.runtime.quantize import quantize


def test_quantize_writes_artifact_that_runs_close_to_fp32(tiny3d, rt_config, smooth_input):
    path, _ = tiny3d
    cal = [smooth_input((1, 1, 16, 16, 16), seed=s) for s in range(12)]
    res = quantize(path, cal, config=rt_config, calibration_info={"source": "test"})
    assert res.xml.name == "tiny3d.int8.xml" and res.bin.is_file() and res.xml.parent == rt_config.model_dir
    spec = json.loads(res.spec_json.read_text())
    assert spec["base_sha256"] == ModelSource.from_onnx(path).sha256 and spec["calibration"]["n_batches"] == 12
    xml = res.xml.read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml or "i8" in xml  # quantisation really inserted
    s = create_session(path, precision="int8", config=rt_config)
    assert (s.info.backend, s.info.precision) == ("openvino", "int8") and s.info.model_version.endswith("+int8")
    x = smooth_input((2, 1, 16, 16, 16), seed=99)
    ref = create_session(path, backend="onnxruntime", config=rt_config).infer(x)["logits"]
    out = s.infer(x)["logits"]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.95
    with pytest.raises(BackendError, match="openvino"):
        create_session(path, backend="torch", precision="int8", config=rt_config)


def test_stale_int8_artifact_is_refused(tmp_path, tiny3d, rt_config, nets, smooth_input):
    path, _ = tiny3d
    quantize(path, [smooth_input((1, 1, 16, 16, 16))], config=rt_config)
    nets.export_onnx(nets.make_net(seed=5), path, 1, (16, 16, 16))  # "re-trained" weights, same name
    with pytest.raises(ModelError, match="re-run `osteoscan models quantize"):
        create_session(path, precision="int8", config=rt_config)
