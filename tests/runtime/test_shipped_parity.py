"""Parity of every SHIPPED model on every back-end available here against PyTorch fp32 on the same
input, at the issue's tolerances (fp32 relative L2 <= 1e-4; bf16 argmax agreement >= 0.99;
regression outputs at bf16 reported, not gated: see verify.py). Skips a model whose weights are not shipped yet.

The torch back-end takes its weights from the sha256-verified ONNX when the ONNX initialisers map
onto the state dict; otherwise (conv + batch norm folded at export, as in the BMD DenseNet) from the
``.pt``. The models package stores the ``.pt`` in fp16 while the ONNX keeps fp32 weights, so for
such a model the two artifacts differ by fp16 rounding (~2e-4 relative): that is reported as an
expected failure naming the fix, after the ONNX back-ends have been checked against each other.
"""

from __future__ import annotations

import pytest

from osteoscan.errors import ModelError
from osteoscan.runtime import create_session
from osteoscan.runtime.verify import format_verify, smooth_input, verify_model

registry = pytest.importorskip("osteoscan.models.registry")


def pt_is_reduced_precision(spec) -> bool:
    import torch

    state = torch.load(spec.torch_state_path, map_location="cpu", weights_only=True)
    return any(v.is_floating_point() and v.dtype != torch.float32 for v in state.values())


@pytest.mark.parametrize("name", ["spine_coarse", "vertebra_fine", "bmd_regressor", "tissue_2d"])
def test_shipped_model_parity(name, rt_config):
    try:
        spec = registry.get_spec(name)
    except ModelError as exc:
        pytest.skip(f"shipped weights of {name} absent: {exc}")
    if spec.torch_state_path is None or not spec.torch_state_path.is_file():
        pytest.skip(f"{name}: no PyTorch state file shipped, no torch reference")
    # half the patch per axis where the model takes any size (1/8 of the compute in 3-D, same graph)
    d = spec.size_divisor
    shape = [max(d, (p // 2) // d * d) for p in spec.patch_size] if spec.dynamic_spatial else list(spec.patch_size)
    x = smooth_input((1, spec.in_channels, *shape))
    ref = create_session(spec, backend="torch", device="cpu", precision="fp32", config=rt_config)
    if ref.weights_source == "pt" and pt_is_reduced_precision(spec):
        # the torch reference runs other (fp16-rounded) weights than the ONNX: check the back-ends
        # that run the ONNX against ONNX Runtime fp32, then report the torch mismatch as expected
        rows = verify_model(spec, ("openvino", "onnxruntime"), ("fp32", "bf16"), config=rt_config, x=x,
                            reference="onnxruntime")
        assert all(r.passed for r in rows if r.precision == "fp32" or r.metric == "argmax_agreement"), format_verify(rows)
        torch_rows = verify_model(spec, ("openvino", "onnxruntime"), ("fp32",), config=rt_config, x=x)
        if not all(r.passed for r in torch_rows):
            pytest.xfail(
                f"{name}: torch weights come from the fp16-stored {spec.torch_state_file} (the ONNX folds "
                "conv+batch-norm, so they cannot be taken from it) while the ONNX has fp32 weights; fix in "
                "osteoscan.train.export: export the ONNX from the fp16-rounded weights, or store the .pt in "
                "fp32.\n" + format_verify(torch_rows)
            )
        return
    rows = verify_model(spec, ("openvino", "onnxruntime", "torch"), ("fp32", "bf16"), config=rt_config, x=x)
    assert ref.weights_source == "onnx"
    assert any(r.backend == "openvino" and r.precision == "bf16" and r.metric != "n/a" for r in rows)
    # bf16 is gated on class maps (argmax); regression outputs (BMD) run fp32 under precision="auto"
    # because bf16 moves them by about the 1 mg/cm3 tolerance (their max_abs rows are reported only)
    assert all(r.passed for r in rows if r.precision == "fp32" or r.metric == "argmax_agreement"), format_verify(rows)
