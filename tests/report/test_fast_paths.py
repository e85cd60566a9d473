"""The shortcuts that keep write_outputs fast give exactly what the whole-grid computations give."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from osteoscan.io import affine_from_spacing, write_nifti
from osteoscan.labels import VertebraLevel, body_label, disc_label, posterior_label
from osteoscan.report import figures
from osteoscan.report.levels import level_boxes, level_map, nonzero_box
from osteoscan.report.outputs import _labels_for_nifti
from osteoscan.report.seg import _crop_to_labelled_frames


def _sparse_labels(seed: int = 0) -> np.ndarray:
    """A 30x40x50 grid with a few vertebra/disc blobs away from every edge."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((30, 40, 50), dtype=np.uint16)
    labels[5:9, 12:20, 20:27] = body_label(VertebraLevel.L1)
    labels[10:14, 14:22, 18:26] = body_label(VertebraLevel.L2)
    labels[10:14, 25:29, 21:24] = posterior_label(VertebraLevel.L2)
    labels[9, 13:19, 20:26] = disc_label(VertebraLevel.L1)
    labels[20, 31, 33] = body_label(VertebraLevel.SACRUM)
    noise = rng.random(labels.shape) < 0.002
    labels[noise & (labels == 0)] = body_label(VertebraLevel.L4)
    return labels


def test_nonzero_box_is_the_bounding_box() -> None:
    labels = _sparse_labels()
    idx = np.argwhere(labels)
    expected = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(axis=0), idx.max(axis=0)))
    assert nonzero_box(labels) == expected
    assert nonzero_box(np.zeros((4, 5, 6), dtype=np.uint16)) is None
    one = np.zeros((4, 5, 6), dtype=np.uint8)
    one[3, 0, 5] = 1
    assert nonzero_box(one) == (slice(3, 4), slice(0, 1), slice(5, 6))


def test_level_map_and_boxes_within_the_box_equal_the_whole_grid() -> None:
    labels = _sparse_labels(1)
    whole = level_map(labels.reshape(-1)).reshape(labels.shape)  # 1-D: looked up whole, no box
    box = nonzero_box(labels)
    lvl = level_map(labels, box)
    np.testing.assert_array_equal(lvl, whole)
    np.testing.assert_array_equal(level_map(labels), whole)
    assert level_boxes(lvl, box) == ndimage.find_objects(whole)
    assert level_boxes(np.zeros((3, 3, 3), np.uint8), None) == []


def test_spine_path_within_the_box_equals_the_whole_grid_count() -> None:
    lvl = level_map(_sparse_labels(2))
    counts = np.count_nonzero(lvl, axis=1)  # the whole-grid formula
    total = counts.sum(axis=1)
    have = total > 0
    centre = (counts[have] * np.arange(lvl.shape[2])).sum(axis=1) / total[have]
    path = ndimage.uniform_filter1d(np.interp(np.arange(lvl.shape[0]), np.flatnonzero(have), centre), 5, mode="nearest")
    expected = np.clip(np.round(path).astype(int), 0, lvl.shape[2] - 1)
    np.testing.assert_array_equal(figures._spine_path(lvl), expected)


def test_labels_nifti_is_the_same_file_whatever_the_memory_layout(tmp_path: Path) -> None:
    """labels.nii.gz is written from the (k, j, i) map as is; a NIfTI-ordered copy gives the same bytes."""
    import gzip

    labels = _sparse_labels(3)
    affine = affine_from_spacing((2.5, 0.8, 0.8), (10.0, -20.0, 30.0))
    fast = _labels_for_nifti(labels.astype(np.int32))
    assert fast.dtype == np.uint16 and fast.flags.c_contiguous
    assert _labels_for_nifti(fast) is fast  # no copy of a map that is uint16 already
    in_nifti_order = np.ascontiguousarray(labels.transpose(2, 1, 0)).transpose(2, 1, 0)
    a = write_nifti(fast, affine, tmp_path / "fast.nii.gz")
    b = write_nifti(in_nifti_order, affine, tmp_path / "slow.nii.gz")
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    np.testing.assert_array_equal(np.asanyarray(nib.load(a).dataobj).transpose(2, 1, 0), labels)


@pytest.mark.parametrize("flip", [False, True])
def test_seg_crop_keeps_the_labelled_frames_in_place(flip: bool) -> None:
    seg = np.zeros((12, 6, 7), dtype=np.uint16)
    seg[3, 1, 1] = 1
    seg[8, 4, 5] = 2
    affine = affine_from_spacing((2.0, 1.0, 1.0), (5.0, 6.0, 7.0))
    if flip:
        affine[:3, 0] = -affine[:3, 0]
    cropped, moved = _crop_to_labelled_frames(seg, affine)
    np.testing.assert_array_equal(cropped, seg[3:9])
    for k in range(cropped.shape[0]):  # each kept frame sits where it sat in the whole volume
        np.testing.assert_allclose(moved @ [k, 0, 0, 1], affine @ [k + 3, 0, 0, 1])
    empty = np.zeros((4, 2, 2), np.uint16)
    same, aff = _crop_to_labelled_frames(empty, affine)
    assert same is empty and aff is affine


def _seg_content(ds: pydicom.Dataset) -> list[tuple[str, object]]:
    """Every element of a SEG, nested, without the fresh UIDs (instance, series, tracking) and times."""
    kept_uids = {"SOPClassUID", "ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "FrameOfReferenceUID",
                 "StudyInstanceUID", "SeriesInstanceUID"}
    out: list[tuple[str, object]] = []
    for el in ds:
        if el.VR == "SQ":
            for n, item in enumerate(el.value):
                out += [(f"{el.keyword}[{n}].{k}", v) for k, v in _seg_content(item)]
        elif el.VR in ("DA", "TM", "DT") or (el.VR == "UI" and el.keyword not in kept_uids):
            continue
        else:
            out.append((el.keyword, el.value))
    return out


@pytest.mark.parametrize("order", ["as_read", "reversed", "shuffled"])
def test_seg_on_the_source_grid_equals_the_matched_volume(study, dicom_series, order: str) -> None:
    """The plain-array input (source grid) gives the same SEG as the volume highdicom matches plane by plane."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from osteoscan.report.seg import build_label_volume, on_source_grid, segmentation_pixels

    source = {"as_read": dicom_series, "reversed": dicom_series[::-1],
              "shuffled": [dicom_series[i] for i in np.random.default_rng(0).permutation(len(dicom_series))]}[order]
    seg_map, levels, tissues, _ = build_label_volume(level_map(study.labels), study.tissue, 6)
    fast = segmentation_pixels(seg_map, study.ct.affine, source)
    matched = segmentation_pixels(seg_map, study.ct.affine, source, allow_source_grid=False)
    assert isinstance(matched, hd.Volume)
    assert isinstance(fast, np.ndarray) is (order != "shuffled")  # shuffled: not on the grid, same path
    assert on_source_grid(fast if isinstance(fast, np.ndarray) else seg_map, study.ct.affine, source) is (order == "as_read")
    algo = hd.AlgorithmIdentificationSequence(name="t", family=codes.cid7162.ArtificialIntelligence, version="1")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=f"s{n}", segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Bone, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo, tracking_uid="1.2.3." + str(n), tracking_id=f"s{n}",
        )
        for n in range(1, len(levels) + len(tissues) + 1)
    ]

    def build(pixels: np.ndarray | hd.Volume) -> pydicom.Dataset:
        return hd.seg.Segmentation(
            source_images=list(source), pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid="1.2.3.4", series_number=1,
            sop_instance_uid="1.2.3.5", instance_number=1, manufacturer="m", manufacturer_model_name="m",
            software_versions="1", device_serial_number="1",
        )

    a, b = build(fast), build(matched)
    assert int(a.NumberOfFrames) == int(b.NumberOfFrames) > 0
    assert _seg_content(a) == _seg_content(b)


def _tight_png(fig) -> bytes:  # type: ignore[no-untyped-def]
    """matplotlib's own trimmed PNG (two draws, default zlib level): what png_bytes must reproduce."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=figures.DPI, facecolor="white", bbox_inches="tight",
                pad_inches=figures.PAD_INCHES)
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def test_png_bytes_draws_the_pixels_of_savefig_tight(study, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every report figure, drawn once with the measured box and a faster PNG level, has exactly the
    pixels of matplotlib's bbox_inches="tight" (which draws twice)."""
    from osteoscan.report import mesh

    lvl = level_map(study.labels)
    colors = figures.vertebra_colors(study.result)
    meshes = mesh.vertebra_meshes(lvl, study.ct.affine, colors)
    draw = {
        "sagittal": lambda: figures.sagittal_png(study.ct, lvl, study.result),
        "axial": lambda: figures.axial_tissue_png(study.ct, study.tissue, 6, study.result),
        "chart": lambda: figures.bmd_chart_png(study.result),
        "chart_empty": lambda: figures.bmd_chart_png(dataclasses.replace(study.result, vertebrae=())),
        "render": lambda: mesh.render_png(meshes, captions={m.level: f"{m.level}  95  G2" for m in meshes}),
        "render_empty": lambda: mesh.render_png([]),
    }
    fast = {name: fn() for name, fn in draw.items()}
    monkeypatch.setattr(figures, "png_bytes", _tight_png)
    monkeypatch.setattr(mesh, "png_bytes", _tight_png)
    for name, fn in draw.items():
        reference = fn()
        assert fast[name] != reference, name  # really the other code path ...
        np.testing.assert_array_equal(_pixels(fast[name]), _pixels(reference), err_msg=name)  # ... same image


def test_meshes_exported_from_the_child_are_full_resolution(study, tmp_path: Path) -> None:
    """On a fine grid the rendering uses coarser meshes and spine.stl/.glb come from another process: they
    must still be the full-resolution meshes, the same as exported directly."""
    from osteoscan.io import CTVolume
    from osteoscan.report import mesh, write_outputs
    from osteoscan.report.outputs import _render_step

    fine = CTVolume(array=study.ct.array, affine=affine_from_spacing((3.0, 0.75, 0.75), (0.0, 0.0, 0.0)),
                    provenance=study.ct.provenance)
    assert _render_step(fine) > 1  # the path under test: meshes exported apart from the rendering
    paths = write_outputs(study.result, fine, study.labels, None, tmp_path / "out", outputs=("mesh",))
    full = mesh.vertebra_meshes(level_map(study.labels), fine.affine, figures.vertebra_colors(study.result))
    assert paths["stl"].read_bytes() == mesh.export_stl(full, tmp_path / "direct.stl").read_bytes()
    assert paths["glb"].read_bytes() == mesh.export_glb(full, tmp_path / "direct.glb").read_bytes()
    assert paths.timings_s["mesh export"] > 0.0
