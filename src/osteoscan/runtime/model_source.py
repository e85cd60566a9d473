"""Resolve "what model to run" (a ModelSpec, a name, a file) into one :class:`ModelSource`.

Every back-end works from a ``ModelSource``: the artifact files (ONNX, OpenVINO IR, TorchScript),
the model's identity for provenance (name, version, sha256) and, for the PyTorch back-end, how
to build the ``nn.Module``. Specs are read duck-typed (attributes of the models package's
``ModelSpec``) so this module never imports torch or the models package at import time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from osteoscan.errors import ModelError
from osteoscan.runtime.config import RuntimeConfig

log = logging.getLogger(__name__)

#: folder of the shipped weights (``<name>.onnx`` + ``<name>.pt`` + ``<name>.json``)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def sha256_of(*paths: Path) -> str:
    """SHA-256 of the concatenated bytes of ``paths`` (memoised by path, size and mtime)."""
    key_parts = []
    for p in paths:
        st = p.stat()
        key_parts.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    key = (repr(key_parts), 0, 0)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
    return digest


@dataclass(frozen=True)
class ModelSource:
    """One model as the back-ends see it.

    At least one of ``onnx_path`` / ``ir_path`` / ``torchscript_path`` / ``torch_factory`` is set.
    ``native_precision`` is "int8" for a quantised OpenVINO artifact (which only OpenVINO runs).
    """

    name: str
    version: str
    sha256: str
    onnx_path: Path | None = None
    ir_path: Path | None = None
    torchscript_path: Path | None = None
    torch_factory: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    in_channels: int | None = None
    patch_size: tuple[int, ...] | None = None
    size_divisor: int | None = None
    native_precision: str | None = None
    spec: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """``name@version`` for log lines and error messages."""
        return f"{self.name}@{self.version}"

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        version: str = "unversioned",
        torch_factory: Callable[[], Any] | None = None,
    ) -> ModelSource:
        """A bare ONNX file; ``torch_factory`` (returning an ``nn.Module`` with loaded weights)
        enables the PyTorch back-end for it."""
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"ONNX model not found: {p}; check the path")
        ins, outs = onnx_io_names(p)
        return cls(
            name=name or p.stem,
            version=version,
            sha256=sha256_of(p),
            onnx_path=p,
            input_names=ins,
            output_names=outs,
            torch_factory=torch_factory,
        )

    @classmethod
    def from_ir(cls, xml_path: str | Path, *, name: str | None = None, version: str = "unversioned",
                native_precision: str | None = None) -> ModelSource:
        """An OpenVINO IR (``.xml`` with its ``.bin`` beside it)."""
        xml = Path(xml_path)
        binp = xml.with_suffix(".bin")
        if not xml.is_file() or not binp.is_file():
            raise ModelError(f"OpenVINO IR incomplete: need both {xml} and {binp}")
        return cls(
            name=name or xml.stem,
            version=version,
            sha256=sha256_of(xml, binp),
            ir_path=xml,
            native_precision=native_precision,
        )

    @classmethod
    def from_spec(cls, spec: Any, *, verify_sha256: bool = True) -> ModelSource:
        """A ModelSpec of the models registry (duck-typed: name, version, onnx_file, sha256 ...)."""
        name = str(_req(spec, "name"))
        onnx_path = spec_artifact_path(spec, "onnx_file")
        if onnx_path is None or not onnx_path.is_file():
            raise ModelError(
                f"weights of model {name!r} not found (expected {onnx_path}); "
                "train/export it (`osteoscan models export NAME`) or install the weights"
            )
        digest = sha256_of(onnx_path)
        expected = getattr(spec, "sha256", None)
        if verify_sha256 and expected and expected != digest:
            raise ModelError(
                f"{onnx_path}: sha256 {digest[:12]}... does not match the spec's {str(expected)[:12]}...; "
                "the file is corrupt or the spec is stale: re-export the model"
            )
        patch = getattr(spec, "patch_size", None)
        return cls(
            name=name,
            version=str(getattr(spec, "version", "unversioned")),
            sha256=digest,
            onnx_path=onnx_path,
            input_names=_tuple_or_none(getattr(spec, "input_names", None)),
            output_names=_tuple_or_none(getattr(spec, "output_names", None)),
            in_channels=getattr(spec, "in_channels", None),
            patch_size=tuple(int(v) for v in patch) if patch else None,
            size_divisor=getattr(spec, "size_divisor", None),
            spec=spec,
        )

    def with_spec(self, spec: Any) -> ModelSource:
        """Same artifact, with the spec (preprocessing, torch builder) attached."""
        return replace(self, spec=spec)


def _req(spec: Any, attr: str) -> Any:
    value = getattr(spec, attr, None)
    if value is None:
        raise ModelError(f"model spec {spec!r} has no {attr!r}; it is not a ModelSpec")
    return value


def _tuple_or_none(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(str(v) for v in value) if value else None


def spec_artifact_path(spec: Any, attr: str) -> Path | None:
    """Path of a spec's artifact: a ``<attr>_path``/``<stem>_path`` property if the spec has one,
    else the ``attr`` file name taken as absolute or relative to the shipped weights folder."""
    stem = attr.removesuffix("_file")
    for prop in (f"{stem}_path", f"{attr}_path"):
        value = getattr(spec, prop, None)
        if callable(value):
            value = value()
        if value:
            return Path(value)
    value = getattr(spec, attr, None)
    if not value:
        return None
    p = Path(value)
    if p.is_absolute():
        return p
    base = getattr(spec, "weights_dir", None) or getattr(spec, "root", None)
    return (Path(base) if base else WEIGHTS_DIR) / p


def onnx_io_names(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Graph input names (initialisers excluded) and output names of an ONNX file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc}); re-export it") from exc
    inits = {i.name for i in model.graph.initializer}
    ins = tuple(i.name for i in model.graph.input if i.name not in inits)
    outs = tuple(o.name for o in model.graph.output)
    return ins, outs


def resolve_model(model: Any, config: RuntimeConfig) -> ModelSource:
    """Turn a ModelSource / ModelSpec / file path / model name into a ModelSource.

    Names resolve to a user-imported model first (so a site can replace a shipped model), then
    to the shipped registry.
    """
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, (str, Path)):
        p = Path(model)
        if p.exists():
            return source_from_file(p)
        if isinstance(model, str) and "/" not in model and not p.suffix:
            return source_from_name(model, config)
        raise ModelError(f"model file not found: {p}; give an existing .onnx/.xml/.pt path or a model name")
    if hasattr(model, "onnx_file") or hasattr(model, "onnx_path"):
        return ModelSource.from_spec(model)
    raise ModelError(
        f"cannot run {type(model).__name__!r}: pass a ModelSpec, a model name, or a path to an "
        ".onnx / OpenVINO .xml / TorchScript file"
    )


def source_from_file(path: Path) -> ModelSource:
    """A model file by its extension: ONNX, OpenVINO IR, TorchScript."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ModelSource.from_onnx(path)
    if suffix == ".xml":
        return ModelSource.from_ir(path)
    if suffix in (".pt", ".pth", ".ts", ".torchscript"):
        return ModelSource(name=path.stem, version="unversioned", sha256=sha256_of(path), torchscript_path=path)
    raise ModelError(
        f"{path}: unsupported model file type {suffix!r}; runtime sessions take .onnx, OpenVINO .xml "
        "or TorchScript .pt (import other formats with `osteoscan models import`)"
    )


def source_from_name(name: str, config: RuntimeConfig) -> ModelSource:
    """A user-imported model of that name, else the shipped model from the registry."""
    from osteoscan.runtime.user_models import find_user_model

    user = find_user_model(name, config.model_dir)
    if user is not None:
        log.info("model %r: using the user-imported model in %s", name, user.directory)
        return user.source()
    try:
        from osteoscan.models.registry import get_spec
    except ImportError as exc:
        raise ModelError(f"model {name!r}: the models registry is not available ({exc})") from exc
    return ModelSource.from_spec(get_spec(name))
