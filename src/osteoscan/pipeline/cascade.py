"""The four models of the cascade, loaded once and kept warm.

A ``LoadedModel`` binds a weight file's ``ModelSpec`` (its preprocessing) to an inference session of
the chosen back-end. ``Cascade.load`` is the only place the pipeline creates sessions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

    def model_infos(self) -> tuple[ModelInfo, ...]:
        return tuple(m.info for m in (self.coarse, self.fine, self.bmd, self.tissue))

    def runtime_description(self) -> tuple[str, str, str]:
        """(backend, device, precision) as the sessions report them; distinct values joined by '+'."""
        infos = [m.session.info for m in (self.coarse, self.fine, self.bmd, self.tissue)]

        def join(attr: str) -> str:
            return "+".join(dict.fromkeys(str(getattr(i, attr)) for i in infos))

        return join("backend"), join("device"), join("precision")


def _describe(session: Any) -> str:
    info = session.info
    return f"{info.backend}/{info.device}/{info.precision}"
