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


def find_int8_artifact(base: ModelSource, config: RuntimeConfig) -> ModelSource:
    """The int8 ModelSource made from ``base`` (user model folder first, then shipped weights).

    Raises:
        ModelError: no artifact, or one made from other weights (stale).
    """
    searched = []
    for directory in (config.model_dir, WEIGHTS_DIR):
        xml, binp, js = int8_paths(directory, base.name)
        searched.append(str(xml))
        if not (xml.is_file() and binp.is_file() and js.is_file()):
            continue
        spec = Int8Spec.load(js)
        if spec.base_sha256 != base.sha256:
            raise ModelError(
                f"{xml}: int8 artifact was made from other weights (base sha256 {spec.base_sha256[:12]}..., "
                f"model now {base.sha256[:12]}...); re-run `osteoscan models quantize {base.name}`"
            )
        digest = sha256_of(xml, binp)
        if digest != spec.sha256:
            raise ModelError(f"{xml}: sha256 mismatch with {js.name}; the artifact is corrupt: re-quantise")
        return ModelSource(
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
    raise ModelError(
        f"no int8 artifact for model {base.name!r} (looked for {', '.join(searched)}); "
        f"create it with `osteoscan models quantize {base.name}`"
    )
