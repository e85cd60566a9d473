"""The four models of the cascade, loaded once and kept warm.

A ``LoadedModel`` binds a weight file's ``ModelSpec`` (its preprocessing) to an inference session of
the chosen back-end. ``Cascade.load`` is the only place the pipeline creates sessions.

``precision="int8"`` is per model: a model runs its NNCF int8 artifact only when one made from its
weights passed the pipeline's accuracy gate (``osteoscan models gate``); every other model runs at
its auto precision, with one log line saying so, and the precision each model really ran at is in
``runtime_description`` and in the model's recorded version (``<version>+int8``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.pipeline.config import PipelineConfig
from osteoscan.result import ModelInfo

log = logging.getLogger(__name__)

MODEL_NAMES = ("spine_coarse", "vertebra_fine", "bmd_regressor", "tissue_2d")


@dataclass(frozen=True)
class LoadedModel:
    spec: Any  # osteoscan.models.spec.ModelSpec
    session: Any  # osteoscan.runtime.InferenceSession

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.session.infer(np.ascontiguousarray(x, dtype=np.float32))

    @property
    def info(self) -> ModelInfo:
        """The weights that really ran: for an int8 session its artifact (version ``...+int8``)."""
        session_info = getattr(self.session, "info", None)
        if session_info is not None and session_info.precision == "int8":
            return ModelInfo(name=self.spec.name, version=session_info.model_version, sha256=session_info.model_sha256)
        return ModelInfo(name=self.spec.name, version=self.spec.version, sha256=self.spec.sha256)


@dataclass(frozen=True)
class Cascade:
    coarse: LoadedModel
    fine: LoadedModel
    bmd: LoadedModel
    tissue: LoadedModel

    @classmethod
    def load(cls, config: PipelineConfig) -> Cascade:
        from osteoscan.models.registry import get_spec
        from osteoscan.runtime import create_session

        loaded = {}
        for name in MODEL_NAMES:
            spec = get_spec(name, weights_dir=config.weights_dir)
            if config.precision == "int8":
                session = _int8_or_auto_session(spec, config)
            else:
                session = create_session(
                    spec, backend=config.backend, device=config.device, precision=config.precision
                )
            loaded[name] = LoadedModel(spec=spec, session=session)
            log.info("loaded %s %s on %s", name, spec.version, _describe(session))
        return cls(
            coarse=loaded["spine_coarse"],
            fine=loaded["vertebra_fine"],
            bmd=loaded["bmd_regressor"],
            tissue=loaded["tissue_2d"],
        )

    def with_model(self, name: str, model: LoadedModel) -> Cascade:
        """This cascade with model ``name`` replaced (the int8 gate swaps one model at a time)."""
        field_name = {"spine_coarse": "coarse", "vertebra_fine": "fine", "bmd_regressor": "bmd", "tissue_2d": "tissue"}
        if name not in field_name:
            raise ValueError(f"unknown cascade model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
        return replace(self, **{field_name[name]: model})

    def precisions(self) -> dict[str, str]:
        """Model name -> the precision its session runs at."""
        return {m.spec.name: str(m.session.info.precision) for m in (self.coarse, self.fine, self.bmd, self.tissue)}

    def model_infos(self) -> tuple[ModelInfo, ...]:
        return tuple(m.info for m in (self.coarse, self.fine, self.bmd, self.tissue))

    def runtime_description(self) -> tuple[str, str, str]:
        """(backend, device, precision) as the sessions report them; distinct values joined by '+'."""
        infos = [m.session.info for m in (self.coarse, self.fine, self.bmd, self.tissue)]

        def join(attr: str) -> str:
            return "+".join(dict.fromkeys(str(getattr(i, attr)) for i in infos))

        return join("backend"), join("device"), join("precision")


def int8_search_dirs(config: PipelineConfig) -> tuple[Path, ...]:
    """Where the pipeline looks for int8 artifacts: beside the chosen weights, the user model
    folder, the shipped weights (an artifact is used only if made from the weights in use)."""
    from osteoscan.runtime.config import RuntimeConfig
    from osteoscan.runtime.model_source import WEIGHTS_DIR

    dirs = [Path(config.weights_dir)] if config.weights_dir is not None else []
    dirs += [RuntimeConfig().model_dir, WEIGHTS_DIR]
    return tuple(dict.fromkeys(dirs))


def _int8_or_auto_session(spec: Any, config: PipelineConfig) -> Any:
    """The model's gated int8 artifact on OpenVINO, else its auto precision (logged once).

    int8 artifacts are OpenVINO IR, so ``--precision int8`` with ``--backend onnxruntime|torch`` is an
    error rather than a silent run without any int8 model.

    Raises:
        BackendError: int8 asked for on a back-end other than OpenVINO.
        ModelError: an int8 artifact whose IR does not match its spec (tampered or corrupt).
    """
    from osteoscan.errors import BackendError
    from osteoscan.runtime import create_session
    from osteoscan.runtime.int8 import select_gated_int8
    from osteoscan.runtime.model_source import ModelSource

    if config.backend not in ("auto", "openvino"):
        raise BackendError(
            f"{config.backend}: precision int8 runs on backend 'openvino' only (NNCF-quantised OpenVINO IR); "
            "use --backend openvino (or auto), or another precision"
        )
    choice = select_gated_int8(ModelSource.from_spec(spec), int8_search_dirs(config))
    if choice.source is not None:
        log.info("%s: int8 (%s)", spec.name, choice.reason)
        return create_session(choice.source, backend="openvino", device=config.device, precision="int8")
    session = create_session(spec, backend=config.backend, device=config.device, precision="auto")
    log.warning("%s: no int8 artifact passed the accuracy gate (%s); running %s",
                spec.name, choice.reason, session.info.precision)
    return session


def _describe(session: Any) -> str:
    info = session.info
    return f"{info.backend}/{info.device}/{info.precision}"
