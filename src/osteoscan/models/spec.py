"""ModelSpec: the contract that binds a weight file to its preprocessing and output semantics.

One frozen dataclass per weight file, stored as a JSON sidecar ``weights/<name>.json`` next to the
ONNX file (the timm ``_pretrained.py`` idea). Everything a caller needs to feed the network the way
it was trained (spacing, patch size, HU window, padding value) is read from here and never
hard-coded twice. The sha256 of the ONNX file is recorded at export and checked at load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteoscan.errors import ModelError

#: Version of the JSON layout written by :meth:`ModelSpec.to_json`.
SPEC_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Normalisation:
    """HU window mapped linearly to [0, 1]; values outside are clipped (air and padding -> 0).

    ``pad_hu`` is the value given to voxels outside the scanned field of view (air), before
    normalisation, so that padding looks like what the network saw in training.
    """

    hu_min: float
    hu_max: float
    pad_hu: float = -1024.0

    def __post_init__(self) -> None:
        if not self.hu_max > self.hu_min:
            raise ValueError(f"HU window must have hu_max > hu_min, got [{self.hu_min}, {self.hu_max}]")
        if self.pad_hu > self.hu_min:
            raise ValueError(
                f"pad_hu {self.pad_hu} must not exceed hu_min {self.hu_min}: padding must normalise to 0 (air)"
            )

    def to_dict(self) -> dict[str, float]:
        return {"hu_min": self.hu_min, "hu_max": self.hu_max, "pad_hu": self.pad_hu}


@dataclass(frozen=True)
class ModelSpec:
    """Everything about one trained network that is not its weights.

    ``weights_dir`` is where the files were found (not serialised). Shapes and spacings are in
    canonical array order (z, y, x) for 3-D models and (y, x) for the 2-D tissue model.
    """

    name: str
    version: str
    architecture: str
    arch_params: dict[str, Any]
    in_channels: int
    out_channels: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_spacing_mm: tuple[float, ...]
    patch_size: tuple[int, ...]
    size_divisor: int
    normalisation: Normalisation
    label_names: tuple[str, ...] = ()
    output_semantics: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    flops_per_patch: int = 0
    params: int = 0
    onnx_file: str = ""
    sha256: str = ""
    torch_state_file: str = ""
    licence: str = "Apache-2.0"
    dynamic_spatial: bool = True
    #: True when the output at a voxel does not depend on the window the input was cut to (no
    #: per-instance normalisation): the whole scan may then go through in one call. False: the
    #: network must see windows of its ``patch_size`` (instance norm computes statistics per window).
    window_invariant: bool = False
    weights_dir: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.input_spacing_mm) != len(self.patch_size):
            raise ValueError(
                f"spec {self.name}: input_spacing_mm {self.input_spacing_mm} and patch_size "
                f"{self.patch_size} must have the same number of axes"
            )
        if any(p % self.size_divisor for p in self.patch_size):
            raise ValueError(
                f"spec {self.name}: patch_size {self.patch_size} is not a multiple of size_divisor "
                f"{self.size_divisor}"
            )
        for name in ("arch_params", "output_semantics", "training", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"spec {self.name}: {name} must be a dict")

    # ----------------------------------------------------------------------------- files
    @property
    def onnx_path(self) -> Path:
        """Absolute path of the ONNX file (``weights_dir / onnx_file``)."""
        if not self.onnx_file:
            raise ModelError(f"spec {self.name} names no ONNX file; export the model first")
        return Path(self.weights_dir) / self.onnx_file

    @property
    def torch_state_path(self) -> Path | None:
        return Path(self.weights_dir) / self.torch_state_file if self.torch_state_file else None

    def verify(self) -> Path:
        """Check that the ONNX file exists and its sha256 matches; return its path.

        Raises:
            ModelError: file missing or its content differs from what the spec was written for.
        """
        path = self.onnx_path
        if not path.is_file():
            raise ModelError(
                f"model file {path} for spec {self.name} is missing; reinstall osteoscan or retrain "
                f"with `osteoscan train {self.name}`"
            )
        digest = sha256_file(path)
        if self.sha256 and digest != self.sha256:
            raise ModelError(
                f"model file {path} has sha256 {digest[:12]}..., but its spec {self.name}.json expects "
                f"{self.sha256[:12]}...: the file is corrupt or was replaced without its spec; "
                "re-export it (osteoscan train) or restore both files together"
            )
        return path

    # ------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("weights_dir")
        d["normalisation"] = self.normalisation.to_dict()
        d["spec_format_version"] = SPEC_FORMAT_VERSION
        for key in ("input_names", "output_names", "input_spacing_mm", "patch_size", "label_names"):
            d[key] = list(d[key])
        return d

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any], weights_dir: str | Path = "") -> ModelSpec:
        d = dict(d)
        fmt = d.pop("spec_format_version", SPEC_FORMAT_VERSION)
        if fmt != SPEC_FORMAT_VERSION:
            raise ModelError(
                f"model spec {d.get('name')!r} has format version {fmt}; this osteoscan reads "
                f"version {SPEC_FORMAT_VERSION}: upgrade osteoscan or re-export the model"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"model spec {d.get('name')!r} has unknown fields {sorted(unknown)}")
        d["normalisation"] = Normalisation(**d["normalisation"])
        for key in ("input_names", "output_names", "label_names"):
            d[key] = tuple(d.get(key, ()))
        d["input_spacing_mm"] = tuple(float(v) for v in d["input_spacing_mm"])
        d["patch_size"] = tuple(int(v) for v in d["patch_size"])
        d["weights_dir"] = str(weights_dir)
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model spec {d.get('name')!r} is invalid: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | Path) -> ModelSpec:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model spec {p}: {exc}; restore the file or re-export") from exc
        return cls.from_dict(d, weights_dir=p.parent.resolve())

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
