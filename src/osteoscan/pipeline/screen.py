"""The stage graph of one screening, written down in one place.

    load -> localise spine (coarse, 3 mm) -> segment vertebrae (fine, 1 mm crops, one batch)
         -> regress BMD (one batch) -> find mid-L3 -> segment tissue (2-D) -> analyse -> write outputs

``screen`` runs the models and the analyses on a volume; ``Pipeline.run_study`` adds reading the
input and writing the outputs. Both are safe to call repeatedly on one ``Pipeline`` (models stay warm).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.io import CTVolume
from osteoscan.labels import VertebraLevel
from osteoscan.pipeline import stages
from osteoscan.pipeline.assemble import assemble_result
from osteoscan.pipeline.cascade import Cascade
from osteoscan.pipeline.config import DEFAULT_FINE_LEVELS, PatientInfo, PipelineConfig
from osteoscan.pipeline.timing import ProgressCallback, StageTimer
from osteoscan.result import StudyResult

log = logging.getLogger(__name__)

#: Stages whose time counts as "pure AI inference" (model execution incl. its pre/post-processing).
INFERENCE_STAGES = ("localise_spine", "segment_vertebrae", "regress_bmd", "segment_tissue")


@dataclass(frozen=True)
class Screening:
    """Everything one screening produced: the result and the arrays the outputs are drawn from."""

    result: StudyResult
    volume: CTVolume
    labels: np.ndarray  # uint16 on the CT grid (body/posterior encoding)
    tissue: np.ndarray | None  # 2-D Tissue map of the composition slice
    source_datasets: tuple[Any, ...] | None


class Pipeline:
    """The screening pipeline with its four models loaded once (``Cascade.load``)."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.cascade = Cascade.load(self.config)

    def screen(
        self,
        volume: CTVolume,
        patient: PatientInfo | None = None,
        *,
        source_datasets: tuple[Any, ...] | None = None,
        timer: StageTimer | None = None,
    ) -> Screening:
        """Run the cascade and the analyses on a canonical CT volume."""
        timer = timer or StageTimer()
        patient = patient or PatientInfo()
        cascade = self.cascade
        notes: list[str] = []
        localisation: stages.SpineLocalisation | None = None
        segments: tuple[stages.VertebraSegment, ...] = ()
        bmd: tuple[stages.BmdPrediction, ...] = ()
        canvas = None
        tissue_slice: stages.TissueSlice | None = None

        if stages.z_extent_mm(volume) >= stages.MIN_Z_EXTENT_FOR_SPINE_MM:
            with timer.stage("localise_spine"):
                localisation = stages.localise_spine(volume, cascade.coarse)
            notes.extend(localisation.notes)
            with timer.stage("segment_vertebrae"):
                chosen = stages.levels_for_fine_model(localisation, DEFAULT_FINE_LEVELS, self.config.all_levels)
                segments = stages.segment_vertebrae(volume, localisation, chosen, cascade.fine)
            with timer.stage("regress_bmd"):
                bmd = stages.regress_bmd(volume, segments, cascade.bmd)
            with timer.stage("canvas"):
                canvas = stages.build_canvas(volume, segments)
            l3 = next((s for s in segments if s.level is VertebraLevel.L3 and s.complete), None)
            if l3 is not None:
                with timer.stage("segment_tissue"):
                    centre = l3.grid.index_to_lps(l3.body_centroid_index)
                    k = round(volume.lps_to_index(centre)[0])
                    tissue_slice = stages.segment_tissue(volume, k, cascade.tissue, level_assumed=False)
        else:
            notes.append(
                f"the scan covers only {stages.z_extent_mm(volume):.0f} mm in z: treated as a single L3 "
                "slice for body composition (level assumed, not verified); no vertebral analysis"
            )
            with timer.stage("segment_tissue"):
                tissue_slice = stages.segment_tissue(volume, volume.shape[0] // 2, cascade.tissue, level_assumed=True)

        with timer.stage("analyse"):
            backend, device, precision = cascade.runtime_description()
            result = assemble_result(
                volume=volume,
                localisation=localisation,
                segments=segments,
                bmd=bmd,
                canvas=canvas,
                tissue_slice=tissue_slice,
                patient=patient,
                notes=tuple(notes),
                models=cascade.model_infos(),
                runtime=(backend, device, precision),
                timings=timer.timings,
            )
        with timer.stage("label_map"):
            labels = stages.labels_on_ct_grid(volume, canvas)
        return Screening(
            result=result,
            volume=volume,
            labels=labels,
            tissue=None if tissue_slice is None else tissue_slice.tissue,
            source_datasets=source_datasets,
        )

    def run_study(
        self,
        input_path: str | Path,
        outdir: str | Path,
        *,
        series_uid: str | None = None,
        patient_height_cm: float | None = None,
        patient_sex: str | None = None,
        patient_age: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> StudyResult:
        """Read a study, screen it, and write every configured output into ``outdir``.

        ``progress`` is called as each stage starts with (stage name, fraction done).

        Raises:
            InputError: the input was rejected (unreadable, not a CT, ...): nothing is written.
        """
        from osteoscan.pipeline.outputs import write_all

        timer = StageTimer(progress)
        with timer.stage("load"):
            study = stages.load_study(input_path, series_uid)
        patient = PatientInfo(height_cm=patient_height_cm, sex=patient_sex, age_years=patient_age)
        screening = self.screen(study.volume, patient, source_datasets=study.source_datasets, timer=timer)
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        return write_all(screening, outdir, self.config.outputs, timer)


    def screen_path(self, input_path: str | Path, series_uid: str | None = None) -> Screening:
        """Read and screen a study without writing anything (validation, notebooks)."""
        timer = StageTimer()
        with timer.stage("load"):
            study = stages.load_study(input_path, series_uid)
        return self.screen(study.volume, source_datasets=study.source_datasets, timer=timer)


def screen(volume: CTVolume, config: PipelineConfig | None = None, patient: PatientInfo | None = None) -> StudyResult:
    """Screen one canonical CT volume with a fresh pipeline (loads the models: for many studies keep a
    ``Pipeline`` instead)."""
    return Pipeline(config).screen(volume, patient).result
