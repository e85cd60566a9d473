"""Parity of every SHIPPED model on every back-end available here against PyTorch fp32 on the same
input, at the issue's tolerances (fp32 relative L2 <= 1e-4; bf16 argmax agreement >= 0.99;
regression outputs at bf16 relative L2 <= 2 %). Skips a model whose weights are not shipped yet."""

from __future__ import annotations

import pytest

from osteoscan.errors import ModelError
from osteoscan.runtime.verify import format_verify, verify_model

registry = pytest.importorskip("osteoscan.models.registry")


@pytest.mark.parametrize("name", ["spine_coarse", "vertebra_fine", "bmd_regressor", "tissue_2d"])
def test_shipped_model_parity(name, rt_config):
    try:
        spec = registry.get_spec(name)
    except ModelError as exc:
        pytest.skip(f"shipped weights of {name} absent: {exc}")
    if spec.torch_state_path is None or not spec.torch_state_path.is_file():
        pytest.skip(f"{name}: no PyTorch state file shipped, no torch reference")
    rows = verify_model(spec, ("openvino", "onnxruntime", "torch"), ("fp32", "bf16"), config=rt_config, batch=1)
    assert all(r.passed for r in rows), format_verify(rows)
    assert any(r.backend == "openvino" and r.precision == "bf16" and r.metric != "n/a" for r in rows)
