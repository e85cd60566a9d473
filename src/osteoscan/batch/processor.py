"""What a batch worker does with one study, and the production implementation: the Pipeline.

The orchestration (pool, Ray actors, retries, resume, tables) takes a :data:`ProcessorFactory` as a
parameter. A factory is called once per worker with the worker's device ("cpu", "cuda:1", ...) and
returns a :class:`StudyProcessor` holding warm models. Production always uses
:class:`PipelineProcessorFactory`; other factories exist so that the orchestration can be driven by
any real study function (the tests use a small one that reads the CT and computes statistics).

A factory must be picklable (a module-level class or function), because it travels to worker
processes and Ray actors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from osteoscan.batch.tasks import StudyTask
from osteoscan.result import StudyResult

log = logging.getLogger(__name__)


@runtime_checkable
class StudyProcessor(Protocol):
    """Screens one study into a folder; lives in one worker and keeps its models warm.

    ``fingerprint`` identifies everything besides the input that determines the result (model
    names, versions and checksums, precision, outputs): a finished study is skipped only when both
    its input hash and this fingerprint are unchanged.
    """

    fingerprint: str

    def process(self, task: StudyTask, outdir: Path) -> StudyResult:
        """Screen ``task`` and write its outputs into ``outdir`` (which exists and is empty).

        Raises:
            osteoscan.errors.InputError: the input was rejected; other errors are internal failures.
        """
        ...


#: device string -> processor (called once per worker / actor)
ProcessorFactory = Callable[[str], StudyProcessor]


def make_fingerprint(payload: dict) -> str:
    """Short stable hash of a JSON-able description (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PipelineProcessor:
    """The production processor: one :class:`osteoscan.pipeline.Pipeline` per worker."""

    def __init__(self, pipeline, fingerprint_payload: dict) -> None:  # pipeline: osteoscan.pipeline.Pipeline
        self.pipeline = pipeline
        self.fingerprint_payload = fingerprint_payload
        self.fingerprint = make_fingerprint(fingerprint_payload)

    def process(self, task: StudyTask, outdir: Path) -> StudyResult:
        return self.pipeline.run_study(
            task.input_path,
            outdir,
            series_uid=task.series_uid,
            patient_height_cm=task.patient_height_cm,
            patient_sex=task.patient_sex,
            patient_age=task.patient_age,
        )


@dataclass(frozen=True)
class PipelineProcessorFactory:
    """Builds a :class:`PipelineProcessor` on a given device with the batch's pipeline settings.

    The fingerprint holds the models actually loaded (name, version, sha256, as the pipeline's
    cascade reports them) and the settings that change results: precision, fine-model levels and
    the outputs written. The device and the back-end are not in it: a study screened on GPU 0 need
    not be redone on GPU 1.
    """

    backend: str = "auto"
    precision: str = "auto"
    outputs: tuple[str, ...] = ("json",)
    all_levels: bool = False
    weights_dir: str | None = None

    def __call__(self, device: str) -> PipelineProcessor:
        from osteoscan import __version__
        from osteoscan.pipeline import Pipeline, PipelineConfig

        config = PipelineConfig(
            backend=self.backend,
            device=device,
            precision=self.precision,
            outputs=self.outputs,
            all_levels=self.all_levels,
            weights_dir=Path(self.weights_dir) if self.weights_dir else None,
        )
        pipeline = Pipeline(config)
        models = [
            {"name": m.name, "version": m.version, "sha256": m.sha256} for m in pipeline.cascade.model_infos()
        ]
        payload = {
            "osteoscan": __version__,
            "models": models,
            "precision": self.precision,
            "all_levels": self.all_levels,
            "outputs": sorted(self.outputs),
        }
        log.info("pipeline ready on %s (fingerprint %s)", device, make_fingerprint(payload))
        return PipelineProcessor(pipeline, payload)
