"""The int8 artifact: an NNCF-quantised OpenVINO IR with its own JSON spec, kept apart from the
fp32 ONNX it was made from (``<name>.int8.xml/.bin/.json``).

The spec records the base model's sha256 so a quantised model is never used with weights it was
not made from: after re-training, a stale int8 artifact is refused with a message to re-quantise.
Whether int8 is *accepted* for screening is decided by the pipeline's accuracy gate (vertebra
Dice drop <= 0.01, BMD MAE increase <= 1 mg/cm3, tissue Dice drop <= 0.01); its measurement can
be stored in ``gate``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osteoscan.errors import ModelError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.model_source import WEIGHTS_DIR, ModelSource, sha256_of

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8"


@dataclass(frozen=True)
class Int8Spec:
    """JSON sidecar of an int8 artifact (``<name>.int8.json``)."""

    name: str
    version: str
    base_sha256: str
    xml_file: str
    bin_file: str
    sha256: str
    input_names: list[str]
    output_names: list[str]
    calibration: dict[str, Any]
    nncf_version: str
    openvino_version: str
    gate: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Int8Spec:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: not a valid int8 spec ({exc}); re-run `osteoscan models quantize`") from exc


def int8_paths(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """(xml, bin, json) of ``name``'s int8 artifact in ``directory``."""
    stem = f"{name}{INT8_SUFFIX}"
    return directory / f"{stem}.xml", directory / f"{stem}.bin", directory / f"{stem}.json"


#: The pipeline-level accuracy gate of issue #6 (int8 vs the model's auto precision, measured by the
#: pipeline on held-out phantom cases of the validation cohort against the phantom truth).
GATE_MAX_VERTEBRA_DICE_DROP = 0.01
GATE_MAX_BMD_MAE_INCREASE_MG_CM3 = 1.0
GATE_MAX_TISSUE_DICE_DROP = 0.01


def load_int8_artifact(base: ModelSource, xml: Path, binp: Path, js: Path) -> tuple[ModelSource, Int8Spec]:
    """Read and check one int8 artifact made from ``base``.

    Raises:
        ModelError: made from other weights (stale), or its IR does not match its spec's sha256
            (tampered or corrupt).
    """
    spec = Int8Spec.load(js)
    if spec.base_sha256 != base.sha256:
        raise ModelError(
            f"{xml}: int8 artifact was made from other weights (base sha256 {spec.base_sha256[:12]}..., "
            f"model now {base.sha256[:12]}...); re-run `osteoscan models quantize {base.name}`"
        )
    digest = sha256_of(xml, binp)
    if digest != spec.sha256:
        raise ModelError(f"{xml}: sha256 mismatch with {js.name}; the artifact is corrupt or was altered: re-quantise")
    source = ModelSource(
        name=base.name,
        version=spec.version,
        sha256=digest,
        ir_path=xml,
        input_names=tuple(spec.input_names),
        output_names=tuple(spec.output_names),
        in_channels=base.in_channels,
        patch_size=base.patch_size,
        size_divisor=base.size_divisor,
        native_precision="int8",
        spec=base.spec,
    )
    return source, spec


def find_int8_artifact(base: ModelSource, config: RuntimeConfig) -> ModelSource:
    """The int8 ModelSource made from ``base`` (user model folder first, then shipped weights).

    Raises:
        ModelError: no artifact, or one made from other weights (stale) or altered.
    """
    searched = []
    for directory in (config.model_dir, WEIGHTS_DIR):
        xml, binp, js = int8_paths(directory, base.name)
        searched.append(str(xml))
        if xml.is_file() and binp.is_file() and js.is_file():
            return load_int8_artifact(base, xml, binp, js)[0]
    raise ModelError(
        f"no int8 artifact for model {base.name!r} (looked for {', '.join(searched)}); "
        f"create it with `osteoscan models quantize {base.name}`"
    )


def gate_verdict(gate: dict[str, Any]) -> tuple[bool, str]:
    """(passed, why) of an artifact's stored gate measurement; an empty gate has not passed."""
    if not gate:
        return False, "never measured (run `osteoscan models gate NAME`)"
    if gate.get("passed") is not True:
        return False, f"failed on {gate.get('cases', '?')} cases: {gate.get('why', 'see its gate figures')}"
    return True, f"passed on {gate.get('cases', '?')} {gate.get('cohort', '')} cases ({gate.get('date', '?')})"


@dataclass(frozen=True)
class Int8Choice:
    """What ``select_gated_int8`` found for one model: the artifact to run, or why there is none."""

    source: ModelSource | None
    reason: str


def select_gated_int8(base: ModelSource, directories: tuple[Path, ...]) -> Int8Choice:
    """The first int8 artifact of ``base`` in ``directories``, if it passed the accuracy gate.

    The pipeline's ``precision="int8"`` uses this: a model without an artifact, with one made from
    other weights, or with one that did not pass the gate runs at its auto precision instead
    (the caller logs that). An artifact whose IR does not match its spec is never skipped silently.

    Raises:
        ModelError: an artifact whose IR does not match its spec's sha256 (tampered or corrupt).
    """
    for directory in directories:
        xml, binp, js = int8_paths(directory, base.name)
        if not (xml.is_file() and binp.is_file() and js.is_file()):
            continue
        spec = Int8Spec.load(js)
        if spec.base_sha256 != base.sha256:
            log.warning("%s: made from other weights (base sha256 %s..., model %s...): refused",
                        xml, spec.base_sha256[:12], base.sha256[:12])
            return Int8Choice(None, f"{xml.name} was made from other weights (re-quantise and re-gate)")
        source, spec = load_int8_artifact(base, xml, binp, js)
        passed, why = gate_verdict(spec.gate)
        if not passed:
            return Int8Choice(None, f"{xml.name}: accuracy gate {why}")
        return Int8Choice(source, f"{xml}: accuracy gate {why}")
    return Int8Choice(None, f"no int8 artifact in {', '.join(str(d) for d in directories)}")
