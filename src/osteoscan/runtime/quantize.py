"""INT8 post-training quantisation of a model with NNCF (OpenVINO), stored as its own artifact.

Calibration inputs must look like what the model sees in the pipeline (normalised CT patches and
crops from phantom cases: :mod:`osteoscan.runtime.calibration`), otherwise the activation ranges
and hence the int8 scales are wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.errors import InputError, ModelError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.int8 import Int8Spec, int8_paths
from osteoscan.runtime.model_source import ModelSource, resolve_model, sha256_of

log = logging.getLogger(__name__)

#: NNCF default calibration subset is 300 samples; our models converge with far fewer crops
DEFAULT_SUBSET = 64


@dataclass(frozen=True)
class QuantizeResult:
    """Where the int8 artifact went and what it was made from."""

    xml: Path
    bin: Path
    spec_json: Path
    spec: Int8Spec
    seconds: float
    size_bytes: int


def quantize(
    model: Any,
    calibration_inputs: Iterable[np.ndarray | Mapping[str, np.ndarray]],
    out_dir: str | Path | None = None,
    *,
    config: RuntimeConfig | None = None,
    subset_size: int = DEFAULT_SUBSET,
    calibration_info: dict[str, Any] | None = None,
) -> QuantizeResult:
    """Quantise ``model`` (spec/name/ONNX path) to int8 with NNCF and write
    ``<out_dir>/<name>.int8.xml/.bin/.json`` (default ``out_dir``: the user model folder, where
    ``create_session(..., precision="int8")`` finds it).

    Each calibration input is one batch ``(N, C, *patch)`` (or a dict by input name).

    Raises:
        InputError: no calibration inputs. ModelError: no ONNX artifact to quantise.
    """
    import nncf
    import openvino as ov

    from osteoscan.runtime.openvino_backend import get_core

    config = config or RuntimeConfig()
    source: ModelSource = resolve_model(model, config)
    if source.onnx_path is None:
        raise ModelError(f"model {source.label} has no fp32 ONNX artifact to quantise")
    items = [_as_feed(x, source) for x in calibration_inputs]
    if not items:
        raise InputError("quantize: no calibration inputs; give at least one batch of real-looking inputs")
    t0 = time.perf_counter()
    ov_model = get_core().read_model(str(source.onnx_path))
    dataset = nncf.Dataset(items)
    qmodel = nncf.quantize(ov_model, dataset, subset_size=min(subset_size, len(items)),
                           preset=nncf.QuantizationPreset.PERFORMANCE)
    folder = Path(out_dir) if out_dir is not None else config.model_dir
    folder.mkdir(parents=True, exist_ok=True)
    xml, binp, js = int8_paths(folder, source.name)
    ov.save_model(qmodel, str(xml), compress_to_fp16=False)
    spec = Int8Spec(
        name=source.name,
        version=f"{source.version}+int8",
        base_sha256=source.sha256,
        xml_file=xml.name,
        bin_file=binp.name,
        sha256=sha256_of(xml, binp),
        input_names=[p.get_any_name() for p in qmodel.inputs],
        output_names=[p.get_any_name() for p in qmodel.outputs],
        calibration={"n_batches": len(items), "subset_size": min(subset_size, len(items)),
                     "preset": "performance", **(calibration_info or {})},
        nncf_version=nncf.__version__,
        openvino_version=ov.get_version(),
    )
    spec.save(js)
    seconds = time.perf_counter() - t0
    size = xml.stat().st_size + binp.stat().st_size
    log.info("int8 artifact of %s: %s (%.1f MB, %.1f s)", source.label, xml, size / 1e6, seconds)
    return QuantizeResult(xml=xml, bin=binp, spec_json=js, spec=spec, seconds=seconds, size_bytes=size)


def _as_feed(x: np.ndarray | Mapping[str, np.ndarray], source: ModelSource) -> Any:
    if isinstance(x, Mapping):
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in x.items()}
    return np.ascontiguousarray(x, dtype=np.float32)
