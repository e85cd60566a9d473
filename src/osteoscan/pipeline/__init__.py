"""The screening pipeline: ``Pipeline(config).run_study(input, outdir)`` or ``screen(volume, config)``."""

from osteoscan.pipeline.config import ALL_OUTPUTS, PatientInfo, PipelineConfig
from osteoscan.pipeline.screen import Pipeline, Screening, screen

__all__ = ["ALL_OUTPUTS", "PatientInfo", "Pipeline", "PipelineConfig", "Screening", "screen"]
