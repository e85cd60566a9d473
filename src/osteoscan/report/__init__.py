"""Clinical outputs of a screened study: report (HTML/PDF), DICOM SEG/SR/PDF/SC, NIfTI maps, 3-D meshes.

Entry point: :func:`write_outputs` (see :mod:`osteoscan.report.outputs` for the output names and files).
"""

from osteoscan.report.outputs import ALL_OUTPUTS, DEFAULT_OUTPUTS, OutputPaths, write_outputs

__all__ = ["ALL_OUTPUTS", "DEFAULT_OUTPUTS", "OutputPaths", "write_outputs"]
