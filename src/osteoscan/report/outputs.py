"""``write_outputs``: every clinical output of one screened study, in one call from the pipeline.

Output names (``outputs=``) and the files they give:

=========  ==================================================================================
``json``   ``result.json``
``html``   ``report.html`` (self-contained)
``pdf``    ``report.pdf``; with a DICOM source also ``report_pdf.dcm`` (Encapsulated PDF)
``nifti``  ``labels.nii.gz`` and ``tissue_L3.nii.gz`` (also written for ``seg``)
``seg``    the NIfTI label maps; with a DICOM source also ``seg.dcm``
``sr``     ``sr.dcm`` (DICOM source only)
``sc``     ``sc/*.dcm`` key images (DICOM source only)
``mesh``   ``spine.glb``, ``spine.stl`` and ``spine_render.png``
=========  ==================================================================================

The returned :class:`OutputPaths` maps a key per file to its path (keys: ``json``, ``html``, ``pdf``,
``pdf_dicom``, ``labels_nifti``, ``tissue_nifti``, ``seg``, ``sr``, ``sc_sagittal``, ``sc_axial_L3``,
``glb``, ``stl``, ``render_png``); ``.skipped`` maps each output that was asked for but not written to
the reason (also logged), e.g. DICOM objects from a NIfTI input; ``.timings_s``/``.cpu_s`` give the
wall/CPU seconds per step.

Speed (2-core edge CPU): work on the label map is done within its non-zero bounding box; seg.dcm and
sr.dcm are written by a forked child process (:mod:`osteoscan.report.parallel`), spine.glb/.stl (from
full-resolution meshes) by another, while this process draws the figures, the rendering and the
documents, and labels.nii.gz is gzipped on a thread. All are joined before ``write_outputs`` returns.
Steps overlap, so their wall times add up to more than the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from osteoscan.errors import GeometryError, InputError, OsteoscanError
from osteoscan.io import CTVolume
from osteoscan.result import CompositionResult, StudyResult

if TYPE_CHECKING:
    from osteoscan.report.mesh import VertebraMesh

log = logging.getLogger(__name__)

ALL_OUTPUTS: tuple[str, ...] = ("json", "html", "pdf", "nifti", "seg", "sr", "sc", "mesh")
DEFAULT_OUTPUTS: tuple[str, ...] = ("json", "html", "pdf", "seg", "sr", "sc", "mesh")
#: Voxel size (mm) the report's 3-D rendering is meshed at (exported meshes use the full grid).
RENDER_VOXEL_MM = 2.0
NOT_DICOM = "input was not DICOM: there is no source series (Study, Frame of Reference) to reference"


class OutputPaths(dict[str, Path]):
    """Written files by key, plus ``skipped``: output name -> why it was not written."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}
        #: wall and CPU seconds per step (figures, mesh, html, pdf, seg, sr, ...), for benchmarks; CPU is
        #: that of the thread or child process that ran the step
        self.timings_s: dict[str, float] = {}
        self.cpu_s: dict[str, float] = {}

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall and CPU time of the block to ``step``; CPU is the calling thread's own (steps run
        on several threads at once, so process CPU would count the others' too)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.timings_s[step] = self.timings_s.get(step, 0.0) + time.perf_counter() - t0
            self.cpu_s[step] = self.cpu_s.get(step, 0.0) + time.thread_time() - c0

    def merge(self, other: OutputPaths) -> None:
        """Add the files, skips and times of ``other`` (written elsewhere, e.g. in a child process)."""
        self.update(other)
        self.skipped.update(other.skipped)
        for step, seconds in other.timings_s.items():
            self.timings_s[step] = self.timings_s.get(step, 0.0) + seconds
            self.cpu_s[step] = self.cpu_s.get(step, 0.0) + other.cpu_s.get(step, 0.0)

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason
        log.info("output %s not written: %s", name, reason)


def _check_inputs(ct: CTVolume, labels: np.ndarray, tissue: np.ndarray | None, outputs: Collection[str]) -> None:
    unknown = sorted(set(outputs) - set(ALL_OUTPUTS))
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(ALL_OUTPUTS)}")
    if labels.shape != ct.shape:
        raise GeometryError(f"label map shape {labels.shape} differs from the CT's {ct.shape}; pass labels on the CT grid")
    if tissue is not None and tissue.shape != ct.shape[1:]:
        raise GeometryError(
            f"tissue map shape {tissue.shape} differs from the CT's axial slice shape {ct.shape[1:]}"
        )


def resolve_imat(ct: CTVolume, tissue: np.ndarray, comp: CompositionResult) -> np.ndarray:
    """The tissue map the areas were measured on: IMAT pixels made explicit.

    When the tissue model has no IMAT class, ``osteoscan.analysis.composition`` counts IMAT as the
    fat-range pixels of the muscle compartment and removes them from the muscle area. The same rule
    (same constants) is applied here, so that tissue_L3.nii.gz, the overlay and the SEG segments add
    up to the areas in result.json; a remaining difference is logged.
    """
    from osteoscan.analysis.constants import FAT_HU_RANGE
    from osteoscan.labels import Tissue

    out = tissue
    if not (tissue == Tissue.IMAT).any() and comp.imat_cm2:
        hu = ct.array[comp.slice_index]
        fat = (hu >= FAT_HU_RANGE[0]) & (hu <= FAT_HU_RANGE[1])
        out = tissue.copy()
        out[(tissue == Tissue.MUSCLE) & fat] = Tissue.IMAT
    px_cm2 = ct.spacing[1] * ct.spacing[2] / 100.0
    for t, area in ((Tissue.MUSCLE, comp.sma_cm2), (Tissue.IMAT, comp.imat_cm2), (Tissue.SAT, comp.sat_cm2),
                    (Tissue.VAT, comp.vat_cm2)):
        if area is not None and abs(float((out == t).sum()) * px_cm2 - area) > 1.5 * px_cm2:
            log.warning("tissue map %s area %.1f cm2 differs from the result's %.1f cm2", t.name,
                        float((out == t).sum()) * px_cm2, area)
    return out


def _labels_for_nifti(labels: np.ndarray) -> np.ndarray:
    """The label map as C-contiguous uint16 (k, j, i) - the layout NIfTI stores fastest.

    NIfTI's voxel order (i fastest, then j, then k) is the C order of the (k, j, i) map, so nibabel
    writes each axial slice with a plain copy; any other layout makes it transpose slice by slice while
    holding the GIL (0.4 s for 512x512x543), which stalls the figures being drawn on the main thread.
    """
    return np.ascontiguousarray(labels, dtype=np.uint16)


def _slice_affine(ct: CTVolume, k: int) -> np.ndarray:
    aff = ct.affine.copy()
    aff[:3, 3] = ct.index_to_lps(np.array([k, 0.0, 0.0]))
    return aff


def write_outputs(
    result: StudyResult,
    ct: CTVolume,
    labels: np.ndarray,
    tissue: np.ndarray | None,
    outdir: Path,
    outputs: Collection[str] = DEFAULT_OUTPUTS,
    source_datasets: Sequence[pydicom.Dataset] | None = None,
) -> OutputPaths:
    """Write the requested outputs of one study into ``outdir`` (see the module docstring).

    Args:
        result: the study's measurements.
        ct: the canonical (S, P, L) CT in HU the measurements were made on.
        labels: uint16 label map on the CT grid (``osteoscan.labels`` encoding).
        tissue: ``osteoscan.labels.Tissue`` map of axial slice ``result.composition.slice_index``, or None.
        outdir: output folder (created).
        outputs: names from ``ALL_OUTPUTS``.
        source_datasets: header datasets of the source CT series in axis-0 order; None for NIfTI input.

    Raises:
        InputError: an unknown output name or an unusable set of source datasets.
        GeometryError: labels/tissue not on the CT grid.
    """
    started = time.perf_counter()
    wanted = set(outputs)
    _check_inputs(ct, labels, tissue, wanted)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = OutputPaths()
    comp = result.composition
    slice_index = comp.slice_index if comp is not None else None
    if slice_index is not None and not 0 <= slice_index < ct.shape[0]:
        raise GeometryError(
            f"result.composition.slice_index {slice_index} is outside the CT's {ct.shape[0]} slices; it must index "
            "axis 0 of the canonical volume given here"
        )
    if tissue is not None and slice_index is None:
        log.warning("a tissue map was given but result.composition has no slice_index; it is not used")
        tissue = None
    if tissue is not None and comp is not None:
        tissue = resolve_imat(ct, tissue, comp)

    if "json" in wanted:
        with paths.timed("json"):
            paths["json"] = outdir / "result.json"
            result.to_json(paths["json"])

    from osteoscan.report.levels import level_boxes, level_map, nonzero_box
    from osteoscan.report.parallel import ForkedCall

    with paths.timed("level_map"):
        box = nonzero_box(labels)
        lvl = level_map(labels, box)
        boxes = level_boxes(lvl, box)
    dicom_source = _dicom_source(paths, wanted, source_datasets)
    # seg.dcm + sr.dcm (highdicom) in a forked child while this process draws the figures, meshes and
    # documents: both sides are GIL-bound Python, so a thread would not run them side by side. Forked
    # before the NIfTI thread starts, so that the child is a copy of a single-threaded writer.
    seg_sr: ForkedCall[OutputPaths] | None = None
    if dicom_source is not None and wanted & {"seg", "sr"}:
        with paths.timed("seg+sr (fork)"):
            seg_sr = ForkedCall(_write_seg_sr, wanted, result, ct, lvl, boxes, tissue, outdir, dicom_source,
                                name="osteoscan-seg-sr")
    # spine.glb/.stl need full-resolution meshes, a second set beside the report's coarser rendering
    # meshes: made in another child, so that this process (the longer side) keeps only the rendering.
    mesh_export: ForkedCall[OutputPaths] | None = None
    if "mesh" in wanted and _render_step(ct) > 1:
        from osteoscan.report.figures import vertebra_colors

        with paths.timed("mesh export (fork)"):
            mesh_export = ForkedCall(_export_meshes, lvl, ct.affine, vertebra_colors(result), boxes, outdir,
                                     name="osteoscan-mesh")
    # labels.nii.gz is mostly gzip time, which releases the GIL: write it on a second thread while the
    # figures, meshes and DICOM objects are made (2-core edge boxes gain its whole duration).
    nifti_job: Future[Path] | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="osteoscan-nifti")
    try:
        if wanted & {"nifti", "seg"}:
            from osteoscan.io import write_nifti

            nifti_job = pool.submit(
                lambda: write_nifti(_labels_for_nifti(labels), ct.affine, outdir / "labels.nii.gz")
            )
            if tissue is not None and slice_index is not None:
                paths["tissue_nifti"] = write_nifti(
                    tissue.astype(np.uint8)[None], _slice_affine(ct, slice_index), outdir / "tissue_L3.nii.gz"
                )
            else:
                paths.skip("tissue_nifti", "no tissue map (body composition not measured)")
        _write_rest(paths, wanted, result, ct, lvl, boxes, tissue, outdir, source_datasets, dicom_source,
                    export_meshes=mesh_export is None)
        if seg_sr is not None:
            with paths.timed("seg+sr (wait)"):
                paths.merge(seg_sr.result())  # re-raises the child's error, if any
        if mesh_export is not None:
            with paths.timed("mesh export (wait)"):
                paths.merge(mesh_export.result())
    finally:  # on an error too: never leave a half-written file being written
        for child in (seg_sr, mesh_export):
            if child is not None:
                child.close()
        pool.shutdown(wait=True)
    if nifti_job is not None:
        with paths.timed("nifti (wait)"):
            paths["labels_nifti"] = nifti_job.result()  # re-raises the writer's error, if any
    log.info(
        "wrote %d outputs to %s (%d skipped) in %.1f s; steps (wall/CPU s, overlapping): %s", len(paths), outdir,
        len(paths.skipped), time.perf_counter() - started,
        ", ".join(f"{k} {v:.2f}/{paths.cpu_s[k]:.2f}" for k, v in paths.timings_s.items()),
    )
    return paths


def _write_rest(
    paths: OutputPaths,
    wanted: set[str],
    result: StudyResult,
    ct: CTVolume,
    lvl: np.ndarray,
    boxes: list[tuple[slice, ...] | None],
    tissue: np.ndarray | None,
    outdir: Path,
    source_datasets: Sequence[pydicom.Dataset] | None,
    dicom_source: Sequence[pydicom.Dataset] | None,
    export_meshes: bool = True,
) -> None:
    """Figures, meshes, HTML/PDF, the Encapsulated PDF and the SC images (not the NIfTI maps, SEG, SR).

    ``lvl``/``boxes``: the level map and its ``find_objects``; ``dicom_source``: the usable source
    instances (:func:`_dicom_source`), None when DICOM outputs are not written; ``export_meshes``:
    False when spine.glb/.stl are written elsewhere (:func:`_export_meshes` in a child process).
    """
    from osteoscan.report import content as content_mod
    from osteoscan.report import figures, mesh
    from osteoscan.report.identity import identity_from_datasets

    comp = result.composition
    slice_index = comp.slice_index if comp is not None else None
    images: dict[str, bytes | None] = {"sagittal": None, "axial": None, "chart": None, "render": None}
    if wanted & {"html", "pdf", "sc"}:
        with paths.timed("figures"):
            images["sagittal"] = figures.sagittal_png(ct, lvl, result)
            images["chart"] = figures.bmd_chart_png(result)
            if tissue is not None and slice_index is not None:
                images["axial"] = figures.axial_tissue_png(ct, tissue, slice_index, result)
    if wanted & {"html", "pdf", "mesh"}:
        colors = figures.vertebra_colors(result)
        with paths.timed("mesh"):
            step = _render_step(ct)
            render_meshes = mesh.vertebra_meshes(lvl, ct.affine, colors, step=step, boxes=boxes)
        with paths.timed("render"):
            by_level = {v.level: v for v in result.vertebrae}
            captions = {m.level: figures.level_caption(by_level.get(m.level), m.level) for m in render_meshes}
            images["render"] = mesh.render_png(render_meshes, captions=captions)
        if "mesh" in wanted:
            with paths.timed("mesh"):
                if export_meshes:
                    full = render_meshes if step == 1 else mesh.vertebra_meshes(lvl, ct.affine, colors, boxes=boxes)
                    _write_meshes(paths, full, outdir)
                paths["render_png"] = outdir / "spine_render.png"
                paths["render_png"].write_bytes(images["render"])

    info = identity_from_datasets(source_datasets)
    content = content_mod.build_content(result)
    if "html" in wanted:
        from osteoscan.report.html import render_html

        with paths.timed("html"):
            paths["html"] = outdir / "report.html"
            paths["html"].write_text(render_html(result, content, info, images), encoding="utf-8")
    if "pdf" in wanted:
        from osteoscan.report.pdf import render_pdf

        with paths.timed("pdf"):
            paths["pdf"] = render_pdf(outdir / "report.pdf", result, content, info, images)
    if dicom_source is not None and wanted & {"pdf", "sc"}:
        from osteoscan.report.dicom_common import no_phi_warnings

        with no_phi_warnings():
            _write_dicom_documents(paths, wanted, outdir, dicom_source, images)


def _dicom_source(
    paths: OutputPaths, wanted: set[str], source_datasets: Sequence[pydicom.Dataset] | None
) -> list[pydicom.Dataset] | None:
    """The source series the DICOM outputs reference (one dataset per instance), or None (each
    DICOM output asked for is then recorded as skipped, with the reason)."""
    from osteoscan.report.dicom_common import check_source, unique_instances

    dicom_wanted = sorted(wanted & {"seg", "sr", "sc"}) + (["pdf_dicom"] if "pdf" in wanted else [])
    if not dicom_wanted:
        return None
    if source_datasets is None:
        for name in dicom_wanted:
            paths.skip(name, NOT_DICOM)
        return None
    try:
        check_source(source_datasets)
    except OsteoscanError as exc:
        for name in dicom_wanted:
            paths.skip(name, f"source series unusable for DICOM outputs: {exc}")
        return None
    return unique_instances(source_datasets)


def _render_step(ct: CTVolume) -> int:
    """Marching-cubes step of the report's rendering meshes (exported meshes use 1)."""
    return max(1, round(RENDER_VOXEL_MM / min(ct.spacing)))


def _write_meshes(paths: OutputPaths, meshes: Sequence[VertebraMesh], outdir: Path) -> None:
    from osteoscan.report import mesh

    if meshes:
        paths["glb"] = mesh.export_glb(list(meshes), outdir / "spine.glb")
        paths["stl"] = mesh.export_stl(list(meshes), outdir / "spine.stl")
    else:
        paths.skip("mesh", "no vertebra in the label map")


def _export_meshes(
    lvl: np.ndarray,
    affine: np.ndarray,
    colors: dict[str, str],
    boxes: list[tuple[slice, ...] | None],
    outdir: Path,
) -> OutputPaths:
    """spine.glb and spine.stl from full-resolution meshes; returns what it wrote (run in a child
    process: see :class:`osteoscan.report.parallel.ForkedCall`)."""
    from osteoscan.report import mesh

    paths = OutputPaths()
    with paths.timed("mesh export"):
        _write_meshes(paths, mesh.vertebra_meshes(lvl, affine, colors, boxes=boxes), outdir)
    return paths


def _write_seg_sr(
    wanted: set[str],
    result: StudyResult,
    ct: CTVolume,
    lvl: np.ndarray,
    boxes: list[tuple[slice, ...] | None],
    tissue: np.ndarray | None,
    outdir: Path,
    source_datasets: Sequence[pydicom.Dataset],
) -> OutputPaths:
    """seg.dcm, then sr.dcm (which references the SEG's segments when there is one); returns what it
    wrote (run in a child process: see :class:`osteoscan.report.parallel.ForkedCall`)."""
    from osteoscan.report.dicom_common import no_phi_warnings
    from osteoscan.report.seg import write_seg
    from osteoscan.report.sr import write_sr

    paths = OutputPaths()
    seg_ds = segments = None
    with no_phi_warnings():
        if "seg" in wanted and not any(b is not None for b in boxes) and tissue is None:
            paths.skip("seg", "nothing segmented: no vertebra in the label map and no tissue map")
        elif "seg" in wanted:
            with paths.timed("seg"):
                paths["seg"] = outdir / "seg.dcm"
                segments = write_seg(paths["seg"], result, ct, lvl, tissue, source_datasets, boxes)
                seg_ds = segments.dataset
        if "sr" in wanted:
            with paths.timed("sr"):
                paths["sr"] = outdir / "sr.dcm"
                write_sr(paths["sr"], result, source_datasets, seg_ds, segments)
    return paths


def _write_dicom_documents(
    paths: OutputPaths,
    wanted: set[str],
    outdir: Path,
    source_datasets: Sequence[pydicom.Dataset],
    images: dict[str, bytes | None],
) -> None:
    """The Encapsulated PDF and the Secondary Capture key images."""
    from osteoscan.report.dicom_docs import write_encapsulated_pdf, write_secondary_captures

    if "pdf" in wanted:
        with paths.timed("pdf_dicom"):
            paths["pdf_dicom"] = outdir / "report_pdf.dcm"
            write_encapsulated_pdf(paths["pdf_dicom"], paths["pdf"], source_datasets)
    if "sc" in wanted:
        key_images = {}
        if images["sagittal"]:
            key_images["sagittal"] = (images["sagittal"], ("P", "F"), "SPINE")
        if images["axial"]:
            key_images["axial_L3"] = (images["axial"], ("L", "P"), "ABDOMEN")
        with paths.timed("sc"):
            for name, path in write_secondary_captures(outdir / "sc", key_images, source_datasets).items():
                paths[f"sc_{name}"] = path
