"""``--precision int8`` end to end: gated int8 models where shipped, logged fallback elsewhere.

Issue #6 acceptance: the pipeline with int8 gives the same levels and BMD within the stated
tolerance as the pipeline at auto precision; a model without a gated artifact runs at its auto
precision, says so in one log line and records the precision it really ran at; an altered artifact
is refused.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from osteoscan.errors import BackendError, ModelError
from osteoscan.runtime.int8 import GATE_MAX_BMD_MAE_INCREASE_MG_CM3, Int8Spec, gate_verdict, int8_paths
from osteoscan.runtime.model_source import WEIGHTS_DIR

MODEL_NAMES = ("spine_coarse", "vertebra_fine", "bmd_regressor", "tissue_2d")
#: The stated tolerance is the gate's: BMD MAE vs the truth rises by <= 1 mg/cm3 (checked on this case
#: too). Single vertebrae move more (int8 masks shift a crop's trabecular ROI by a voxel; 3.9 mg/cm3 at
#: T12 of this 2 mm case, measured 2026-11-24), so each is held only to this sanity bound, an eighth
#: of the 40 mg/cm3 width of the ACR osteopenia band.
BMD_PER_LEVEL_TOLERANCE_MG_CM3 = 5.0


def _shipped_gated() -> set[str]:
    out = set()
    for name in MODEL_NAMES:
        js = int8_paths(WEIGHTS_DIR, name)[2]
        if js.is_file() and gate_verdict(Int8Spec.load(js).gate)[0]:
            out.add(name)
    return out


@pytest.fixture(scope="module")
def lumbar_case():
    from osteoscan.phantom import generate_case

    return generate_case(900123, "lumbar", spacing_mm=2.0)  # test seed range, never calibrated on


def test_int8_same_levels_and_bmd_as_auto_with_logged_fallbacks(lumbar_case, caplog) -> None:
    from osteoscan.pipeline import Pipeline, PipelineConfig

    gated = _shipped_gated()
    if not gated:
        pytest.skip("no shipped int8 artifact passed the accuracy gate")
    try:
        auto = Pipeline(PipelineConfig(outputs=("json",)))
    except ModelError as exc:
        pytest.skip(f"shipped weights unavailable: {exc}")
    with caplog.at_level(logging.INFO, logger="osteoscan.pipeline.cascade"):
        int8 = Pipeline(PipelineConfig(precision="int8", outputs=("json",)))
    fallback = {r.getMessage().split(":")[0] for r in caplog.records
                if "no int8 artifact passed the accuracy gate" in r.getMessage()}
    assert fallback == set(MODEL_NAMES) - gated
    precisions = int8.cascade.precisions()
    assert {n for n, p in precisions.items() if p == "int8"} == gated
    assert precisions["bmd_regressor"] == "int8" or precisions["bmd_regressor"] == "fp32"  # its auto is fp32

    ra = auto.screen(lumbar_case.volume).result
    ri = int8.screen(lumbar_case.volume).result
    assert [v.level for v in ri.vertebrae] == [v.level for v in ra.vertebrae]
    assert [v.complete for v in ri.vertebrae] == [v.complete for v in ra.vertebrae]
    diffs = {a.level: abs(a.bmd_mg_cm3 - b.bmd_mg_cm3) for a, b in zip(ra.vertebrae, ri.vertebrae, strict=True)
             if a.bmd_mg_cm3 is not None and b.bmd_mg_cm3 is not None}
    assert diffs and max(diffs.values()) <= BMD_PER_LEVEL_TOLERANCE_MG_CM3, diffs
    truth = {v["level"]: v["bmd_mg_cm3"] for v in lumbar_case.truth["vertebrae"] if v.get("complete")}
    err_a = [abs(v.bmd_mg_cm3 - truth[v.level]) for v in ra.vertebrae if v.level in truth and v.bmd_mg_cm3 is not None]
    err_i = [abs(v.bmd_mg_cm3 - truth[v.level]) for v in ri.vertebrae if v.level in truth and v.bmd_mg_cm3 is not None]
    assert float(np.mean(err_i)) - float(np.mean(err_a)) <= GATE_MAX_BMD_MAE_INCREASE_MG_CM3
    # provenance: the mixed precision and, per model, the artifact that ran
    assert "int8" in ri.provenance.precision.split("+") and "int8" not in ra.provenance.precision
    for m in ri.provenance.models:
        assert m.version.endswith("+int8") == (m.name in gated), m


def test_int8_on_other_backends_is_an_error_naming_openvino() -> None:
    from osteoscan.pipeline import Pipeline, PipelineConfig

    for backend in ("onnxruntime", "torch"):
        with pytest.raises(BackendError, match="openvino"):
            Pipeline(PipelineConfig(backend=backend, precision="int8", outputs=("json",)))


def test_altered_int8_artifact_is_refused(tmp_path) -> None:
    from osteoscan.pipeline import Pipeline, PipelineConfig

    gated = sorted(_shipped_gated())
    if not gated:
        pytest.skip("no shipped int8 artifact to alter")
    for name in MODEL_NAMES:  # a weights folder like the shipped one (links: the fp32 files are large)
        for suffix in (".onnx", ".json"):
            (tmp_path / f"{name}{suffix}").symlink_to(WEIGHTS_DIR / f"{name}{suffix}")
    for src in int8_paths(WEIGHTS_DIR, gated[0]):
        shutil.copy(src, tmp_path / src.name)
    binp = int8_paths(tmp_path, gated[0])[1]
    data = bytearray(binp.read_bytes())
    data[len(data) // 2] ^= 0x01
    binp.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        Pipeline(PipelineConfig(precision="int8", outputs=("json",), weights_dir=tmp_path))
