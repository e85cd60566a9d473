"""Bring your own model: import ONNX, TorchScript, OpenVINO IR, TensorFlow SavedModel or
PaddlePaddle, check it against a spec, and register it in the user model folder.

The user model folder has the layout of the shipped weights folder (``<name>.json`` ModelSpec +
``<name>.onnx``), so ``osteoscan.models.registry.get_spec(name, weights_dir=user_model_dir())``
reads an imported model exactly like a shipped one. Formats OpenVINO reads but cannot write as
ONNX (TensorFlow, Paddle) are stored as OpenVINO IR (``<name>.xml/.bin``; the spec's
``onnx_file`` stays empty) and run on the OpenVINO back-end only. ``<name>.import.json`` records
where the model came from and the parity check. Neither TensorFlow nor Paddle needs to be
installed: OpenVINO's own front-ends read them.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.errors import InputError, ModelError
from osteoscan.runtime.config import RuntimeConfig
from osteoscan.runtime.model_source import ModelSource, sha256_of

log = logging.getLogger(__name__)

#: parity tolerance of an imported model against its reference (relative L2, fp32)
PARITY_REL_L2 = 1e-4
#: ONNX opset used when a TorchScript model is exported
ONNX_OPSET = 17
FORMATS = ("onnx", "torchscript", "openvino", "tensorflow", "paddle")


@dataclass(frozen=True)
class UserModel:
    """One registered user model (what ``find_user_model`` returns)."""

    name: str
    directory: Path
    spec: Any  # osteoscan.models.spec.ModelSpec
    record: dict[str, Any]

    @property
    def ir_path(self) -> Path | None:
        ir = self.record.get("ir_file")
        return self.directory / ir if ir else None

    def source(self) -> ModelSource:
        """The ModelSource the runtime runs (ONNX when there is one, else the IR)."""
        if self.spec.onnx_file:
            return ModelSource.from_spec(self.spec)
        assert self.ir_path is not None
        src = ModelSource.from_ir(self.ir_path, name=self.name, version=self.spec.version)
        return ModelSource(
            name=src.name, version=src.version, sha256=src.sha256, ir_path=src.ir_path,
            input_names=tuple(self.spec.input_names), output_names=tuple(self.spec.output_names),
            in_channels=self.spec.in_channels, patch_size=tuple(self.spec.patch_size),
            size_divisor=self.spec.size_divisor, spec=self.spec,
        )


def find_user_model(name: str, model_dir: Path | None = None) -> UserModel | None:
    """The user-imported model ``name`` or ``None``. The models registry can call this (or
    ``get_spec(name, weights_dir=user_model_dir())``) to prefer a site's model over a shipped one."""
    from osteoscan.models.spec import ModelSpec
    from osteoscan.runtime.config import user_model_dir

    folder = Path(model_dir) if model_dir is not None else user_model_dir()
    spec_path = folder / f"{name}.json"
    record_path = folder / f"{name}.import.json"
    if not (spec_path.is_file() and record_path.is_file()):
        return None
    spec = ModelSpec.from_json(spec_path)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{record_path}: unreadable import record ({exc}); re-import the model") from exc
    return UserModel(name=name, directory=folder, spec=spec, record=record)


def list_user_models(model_dir: Path | None = None) -> list[UserModel]:
    """Every registered user model in the folder, by name."""
    from osteoscan.runtime.config import user_model_dir

    folder = Path(model_dir) if model_dir is not None else user_model_dir()
    if not folder.is_dir():
        return []
    names = sorted(p.name.removesuffix(".import.json") for p in folder.glob("*.import.json"))
    return [m for m in (find_user_model(n, folder) for n in names) if m is not None]


def detect_format(path: Path) -> str:
    """Model format from a path: file suffix, or the contents of a folder."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "tensorflow"
        if any(path.glob("*.pdmodel")) or any(path.glob("*.json")) and any(path.glob("*.pdiparams")):
            return "paddle"
        raise InputError(f"{path}: folder is neither a TensorFlow SavedModel (saved_model.pb) nor a Paddle model (*.pdmodel)")
    suffix = path.suffix.lower()
    by_suffix = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
                 ".xml": "openvino", ".pdmodel": "paddle", ".pb": "tensorflow"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise InputError(f"{path}: unknown model format {suffix!r}; import .onnx, TorchScript .pt, OpenVINO .xml, "
                     "a TensorFlow SavedModel folder or a Paddle .pdmodel")


def load_import_spec(spec_path: Path, name: str) -> Any:
    """The ModelSpec of an import from a user's JSON (missing bookkeeping fields are filled in)."""
    from osteoscan.models.spec import ModelSpec

    try:
        data = json.loads(Path(spec_path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read spec {spec_path}: {exc}") from exc
    data.update(name=name, onnx_file="", sha256="", torch_state_file="")
    data.setdefault("version", "user-1")
    data.setdefault("architecture", "imported")
    data.setdefault("arch_params", {})
    required = ("in_channels", "out_channels", "input_names", "output_names", "input_spacing_mm",
                "patch_size", "size_divisor", "normalisation")
    missing = [k for k in required if k not in data]
    if missing:
        raise InputError(f"spec {spec_path} lacks {missing}; see docs/runtime.md (Bring your own model)")
    return ModelSpec.from_dict(data)


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def validate_outputs(spec: Any, outputs: dict[str, np.ndarray], batch: int) -> None:
    """Output names, batch axis, channel count (``out_channels`` over all outputs) and the spatial
    size of dense outputs must match the spec."""
    missing = [n for n in spec.output_names if n not in outputs]
    if missing:
        raise ModelError(f"model outputs {sorted(outputs)} lack the spec's {missing}")
    channels = 0
    for n in spec.output_names:
        arr = outputs[n]
        if arr.ndim < 2 or arr.shape[0] != batch:
            raise ModelError(f"output {n!r} has shape {arr.shape}; expected (batch={batch}, channels, ...)")
        channels += arr.shape[1]
        if arr.ndim == 2 + len(spec.patch_size) and tuple(arr.shape[2:]) != tuple(spec.patch_size):
            raise ModelError(f"dense output {n!r} has spatial shape {arr.shape[2:]}, expected the patch {spec.patch_size}")
    if channels != spec.out_channels:
        raise ModelError(f"outputs {list(spec.output_names)} carry {channels} channels in all; the spec says out_channels={spec.out_channels}")


def check_replaces_shipped(spec: Any) -> None:
    """A model named like a shipped one must keep its interface (the pipeline relies on it)."""
    from osteoscan.models.registry import MODEL_NAMES, get_spec

    if spec.name not in MODEL_NAMES:
        return
    try:
        shipped = get_spec(spec.name, verify=False)
    except ModelError:
        return  # no shipped weights to compare with
    for attr in ("in_channels", "out_channels", "input_names", "output_names", "label_names"):
        if tuple(np.atleast_1d(getattr(spec, attr))) != tuple(np.atleast_1d(getattr(shipped, attr))):
            raise ModelError(
                f"model {spec.name!r} would replace the shipped model but its {attr} "
                f"{getattr(spec, attr)!r} differs from {getattr(shipped, attr)!r}; import it under another name"
            )


def import_model(path: str | Path, name: str, spec_path: str | Path, *, config: RuntimeConfig | None = None,
                 seed: int = 0) -> UserModel:
    """Import, validate, parity-check and register a model; returns the registered UserModel.

    Raises:
        InputError: unreadable file/spec. ModelError: shapes or parity do not match the spec.
    """
    config = config or RuntimeConfig()
    src = Path(path)
    if not src.exists():
        raise InputError(f"model to import not found: {src}")
    fmt = detect_format(src)
    spec = load_import_spec(Path(spec_path), name)
    check_replaces_shipped(spec)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, spec.in_channels, *spec.patch_size)).astype(np.float32) * 0.3 + 0.3
    feed = {spec.input_names[0]: x} if len(spec.input_names) == 1 else None
    if feed is None:
        raise ModelError("import supports single-input models (the cascade's contract); the spec lists several inputs")
    work = config.model_dir / f".import-{name}-{int(time.time() * 1e6)}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        artifact, parity = _convert_and_check(src, fmt, spec, feed, work)
        return _register(spec, fmt, src, artifact, parity, config.model_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ov_run(model_or_path: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import openvino as ov

    from osteoscan.runtime.openvino_backend import get_core

    core = get_core()
    model = core.read_model(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": ov.Type.f32})
    names = [p.get_any_name() for p in compiled.inputs]
    if set(names) != set(feed):
        raise ModelError(f"model inputs are {names}; the spec's input_names are {sorted(feed)}")
    res = compiled(feed)
    return {o.get_any_name(): np.asarray(res[o], dtype=np.float32) for o in compiled.outputs}


def _parity(ref: dict[str, np.ndarray], test: dict[str, np.ndarray], what: str) -> dict[str, Any]:
    errs = {k: _rel_l2(test[k], ref[k]) for k in ref if k in test}
    worst = max(errs.values()) if errs else float("nan")
    if not errs or worst > PARITY_REL_L2:
        raise ModelError(f"parity check failed ({what}): relative L2 {errs} > {PARITY_REL_L2}")
    return {"reference": what, "rel_l2": errs, "tolerance": PARITY_REL_L2, "passed": True}


def _convert_and_check(src: Path, fmt: str, spec: Any, feed: dict[str, np.ndarray], work: Path) -> tuple[Path, dict[str, Any]]:
    """Produce the artifact to register (ONNX or IR) in ``work`` and its parity record."""
    import openvino as ov
    from openvino.frontend import GeneralFailure, OpConversionFailure

    batch = next(iter(feed.values())).shape[0]
    if fmt == "onnx":
        out = work / "model.onnx"
        shutil.copyfile(src, out)
        got = _ov_run(out, feed)
        validate_outputs(spec, got, batch)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        ref = dict(zip(names, sess.run(names, feed)))
        return out, _parity(ref, got, "onnxruntime CPU fp32 vs openvino CPU fp32")
    if fmt == "torchscript":
        import torch

        module = torch.jit.load(str(src), map_location="cpu").eval()
        with torch.inference_mode():
            raw = module(*(torch.from_numpy(v) for v in feed.values()))
        ref = _name_torch_outputs(raw, spec.output_names)
        validate_outputs(spec, ref, batch)
        out = work / "model.onnx"
        _export_onnx(module, spec, feed, out)
        return out, _parity(ref, _ov_run(out, feed), "torchscript CPU fp32 vs exported ONNX on openvino CPU fp32")
    # OpenVINO IR, TensorFlow SavedModel, Paddle: OpenVINO reads them; keep an IR
    if fmt == "paddle" and src.is_dir():  # OpenVINO's Paddle reader takes the graph file itself
        graphs = sorted(src.glob("*.pdmodel")) or sorted(p for p in src.glob("*.json") if p.with_suffix(".pdiparams").is_file())
        src = graphs[0]
    try:
        model = ov.Core().read_model(str(src)) if fmt == "openvino" else ov.convert_model(str(src))
    except (RuntimeError, OpConversionFailure, GeneralFailure) as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"OpenVINO cannot convert {src} ({fmt}): {first}; export the model to ONNX in its framework "
            "and import the .onnx instead"
        ) from exc
    _rename_io(model, spec)
    out = work / "model.xml"
    ov.save_model(model, str(out), compress_to_fp16=False)
    got = _ov_run(out, feed)
    validate_outputs(spec, got, batch)
    ref = _framework_reference(src, fmt, feed, spec)
    if ref is None:  # framework not installed: check the stored IR against OpenVINO's direct read
        ref = _ov_run(model, feed)
        what = f"{fmt} read by OpenVINO vs stored IR (source framework not installed)"
    else:
        what = f"{fmt} framework fp32 vs OpenVINO IR fp32"
    return out, _parity(ref, got, what)


def _rename_io(model: Any, spec: Any) -> None:
    """Give converted single-input models the spec's tensor names (TF/Paddle name them freely)."""
    if len(model.inputs) == 1 and spec.input_names[0] not in model.inputs[0].get_names():
        model.inputs[0].get_tensor().set_names({spec.input_names[0]})
    if len(model.outputs) == len(spec.output_names):
        for out, name in zip(model.outputs, spec.output_names):
            if name not in out.get_names():
                out.get_tensor().set_names({name})


def _framework_reference(src: Path, fmt: str, feed: dict[str, np.ndarray], spec: Any) -> dict[str, np.ndarray] | None:
    """Outputs from the source framework itself when it is installed (TensorFlow), else None."""
    import importlib.util

    if fmt != "tensorflow" or importlib.util.find_spec("tensorflow") is None:
        return None
    import tensorflow as tf

    loaded = tf.saved_model.load(str(src))
    fn = loaded.signatures["serving_default"]
    res = fn(tf.constant(next(iter(feed.values()))))
    values = list(res.values())
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(spec.output_names, values)}


def _name_torch_outputs(raw: Any, names: Any) -> dict[str, np.ndarray]:
    if isinstance(raw, dict):
        return {k: v.float().numpy() for k, v in raw.items()}
    if isinstance(raw, (tuple, list)):
        return {n: v.float().numpy() for n, v in zip(names, raw)}
    return {names[0]: raw.float().numpy()}


def _export_onnx(module: Any, spec: Any, feed: dict[str, np.ndarray], out: Path) -> None:
    import torch

    n_sp = len(spec.patch_size)
    axes = {0: "batch"}
    if spec.dynamic_spatial:
        axes.update({2 + i: f"s{i}" for i in range(n_sp)})
    dyn = {n: dict(axes) for n in spec.input_names}
    for n in spec.output_names:
        dyn[n] = {0: "batch"}
    args = tuple(torch.from_numpy(v) for v in feed.values())
    torch.onnx.export(module, args, str(out), input_names=list(spec.input_names), output_names=list(spec.output_names),
                      dynamic_axes=dyn, opset_version=ONNX_OPSET, dynamo=False)


def _register(spec: Any, fmt: str, src: Path, artifact: Path, parity: dict[str, Any], folder: Path) -> UserModel:
    """Move the artifact into place and write ``<name>.json`` + ``<name>.import.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = spec.name
    for old in folder.glob(f"{name}.*"):
        if old.name.startswith(f"{name}.int8"):
            continue
        old.unlink()
    record: dict[str, Any] = {"format": fmt, "source": str(src.resolve()), "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "parity": parity}
    if artifact.suffix == ".onnx":
        dest = folder / f"{name}.onnx"
        shutil.move(str(artifact), dest)
        spec = spec.replace(onnx_file=dest.name, sha256=sha256_of(dest), weights_dir=str(folder))
    else:
        xml, binp = folder / f"{name}.xml", folder / f"{name}.bin"
        shutil.move(str(artifact), xml)
        shutil.move(str(artifact.with_suffix(".bin")), binp)
        record.update(ir_file=xml.name, ir_sha256=sha256_of(xml, binp))
        spec = spec.replace(weights_dir=str(folder))
    spec.to_json(folder / f"{name}.json")
    (folder / f"{name}.import.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("registered user model %s (%s) in %s; parity %s", name, fmt, folder, parity["rel_l2"])
    found = find_user_model(name, folder)
    assert found is not None
    return found
