"""Meshes (position, volume, exports), the software rendering, figure helpers and report wording."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import trimesh
from PIL import Image

from osteoscan.io import affine_from_spacing
from osteoscan.labels import VertebraLevel, body_label
from osteoscan.report import constants as C
from osteoscan.report import content, figures, mesh
from osteoscan.report.identity import ANONYMOUS, identity_from_datasets
from osteoscan.report.levels import level_map


def test_meshes_sit_where_the_labels_are(study) -> None:
    meshes = mesh.vertebra_meshes(level_map(study.labels), study.ct.affine, figures.vertebra_colors(study.result))
    assert [m.level for m in meshes] == ["T12", "L1", "L2", "L3"]  # cranial to caudal (level order)
    voxel_ml = float(np.prod(study.ct.spacing)) / 1000.0
    lvl = level_map(study.labels)
    for m in meshes:
        value = VertebraLevel[m.level]
        idx = np.argwhere(lvl == value)
        centroid = study.ct.index_to_lps(idx.mean(axis=0))
        assert m.mesh.is_watertight, m.level
        np.testing.assert_allclose(m.mesh.vertices.mean(axis=0), centroid, atol=3.0)
        # smoothing rounds the box edges: the volume stays within 20 % of the voxel count
        assert m.mesh.volume / 1000.0 == pytest.approx(len(idx) * voxel_ml, rel=0.2), m.level
    assert meshes[2].color == C.COLOR_OSTEOPOROSIS  # L2 76.4 mg/cm3
    assert meshes[0].color == C.COLOR_NOT_MEASURED  # T12 has no BMD


def test_glb_and_stl_load_back(study, tmp_path: Path) -> None:
    meshes = mesh.vertebra_meshes(level_map(study.labels), study.ct.affine, figures.vertebra_colors(study.result))
    scene = trimesh.load(mesh.export_glb(meshes, tmp_path / "spine.glb"))
    assert set(scene.geometry) == {"T12", "L1", "L2", "L3"}
    # glTF is Y-up in metres: superior (LPS z) becomes +y
    y = {name: g.vertices[:, 1].mean() for name, g in scene.geometry.items()}
    assert y["T12"] > y["L1"] > y["L2"] > y["L3"]
    stl = trimesh.load(mesh.export_stl(meshes, tmp_path / "spine.stl"))
    assert len(stl.faces) == sum(len(m.mesh.faces) for m in meshes)
    np.testing.assert_allclose(stl.bounds, trimesh.util.concatenate([m.mesh for m in meshes]).bounds, atol=1e-3)


def test_render_is_a_real_picture(study) -> None:
    meshes = mesh.vertebra_meshes(level_map(study.labels), study.ct.affine, figures.vertebra_colors(study.result), step=2)
    img = np.asarray(Image.open(io.BytesIO(mesh.render_png(meshes))).convert("RGB")).astype(int)
    assert img.shape[0] > img.shape[1] > 300  # portrait: the spine is tall
    red = (img[..., 0] > 120) & (img[..., 1] < 90) & (img[..., 2] < 90)  # L2 is drawn in the osteoporosis colour
    assert red.sum() > 1000
    blank = np.asarray(Image.open(io.BytesIO(mesh.render_png([]))).convert("L"))
    assert blank.std() < img.std()


def test_sagittal_follows_a_curved_spine() -> None:
    labels = np.zeros((30, 20, 40), dtype=np.uint16)
    for k in range(30):
        x = 8 + k // 2  # the spine drifts to the left going up (scoliosis)
        labels[k, 5:10, x : x + 3] = body_label(VertebraLevel.L1)
    path = figures._spine_path(level_map(labels))
    expected = np.array([8 + k // 2 + 1 for k in range(30)])
    assert np.abs(path - expected).max() <= 1


def test_acr_colour_bands() -> None:
    assert content.bmd_color(120.1) == C.COLOR_NORMAL
    assert content.bmd_color(120.0) == C.COLOR_OSTEOPENIA
    assert content.bmd_color(80.0) == C.COLOR_OSTEOPENIA
    assert content.bmd_color(79.9) == C.COLOR_OSTEOPOROSIS
    assert content.bmd_color(None) == C.COLOR_NOT_MEASURED


def test_content_says_not_measured_with_reason(study, result_without_composition) -> None:
    c = content.build_content(result_without_composition)
    comp = next(f for f in c.findings if f.title.startswith("Body composition"))
    assert comp.text == "not reported: L3 not in view"
    t12 = next(row for row in c.level_rows if row[0].startswith("T12"))
    assert t12[0] == "T12 (partial)" and t12[1] == content.DASH
    assert content.fmt(None, "mm") == content.NOT_MEASURED and content.fmt(3.14159, "mm") == "3.1 mm"


def test_identity_is_copied_never_invented(dicom_series) -> None:
    info = identity_from_datasets(dicom_series)
    assert info.display_name == "Doe, Jane" and info.patient_id == "PID-0042" and info.sex == "F"
    empty = identity_from_datasets(None)
    assert empty.display_name == ANONYMOUS and empty.patient_id == "" and not empty.from_dicom
    ds = pydicom.Dataset()
    ds.PatientName = ""
    assert identity_from_datasets([ds]).display_name == ANONYMOUS


def test_meshes_follow_the_affine() -> None:
    """A flipped, shifted grid gives the mesh at the same LPS place as the voxels."""
    labels = np.zeros((12, 12, 12), dtype=np.uint16)
    labels[3:9, 2:6, 4:10] = body_label(VertebraLevel.L4)
    affine = affine_from_spacing((2.0, 1.0, 1.5), origin=(10.0, -20.0, 30.0))
    affine[:3, 1] *= -1  # axis 1 now points anterior
    [m] = mesh.vertebra_meshes(level_map(labels), affine)
    idx = np.argwhere(labels > 0)
    lo = idx.min(axis=0) - 0.5
    hi = idx.max(axis=0) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    box = corners @ affine[:3, :3].T + affine[:3, 3]
    # Gaussian pre-smoothing may move the surface a fraction of a voxel; a wrong axis or flip moves it by mm
    np.testing.assert_allclose(m.mesh.bounds, [box.min(axis=0), box.max(axis=0)], atol=0.6)
    np.testing.assert_allclose(m.mesh.bounds.mean(axis=0), box.mean(axis=0), atol=0.3)
    assert m.mesh.is_watertight and m.mesh.volume > 0  # outward normals despite the flipped axis


def test_a_blob_thinner_than_the_marching_step_is_skipped_not_fatal() -> None:
    """A 4-voxel fragment at step 3 has no surface for marching cubes (seen on benchmark cases
    0074/0086/0091, where it failed the whole study); it is skipped and the real vertebra kept."""
    labels = np.zeros((40, 40, 40), dtype=np.uint16)
    labels[4:24, 6:30, 6:30] = body_label(VertebraLevel.L3)
    labels[30:34, 10:14, 10:14] = body_label(VertebraLevel.L2)
    meshes = mesh.vertebra_meshes(level_map(labels), affine_from_spacing((1.0, 1.0, 1.0)), step=3)
    assert [m.level for m in meshes] == ["L3"]


def test_level_map_keeps_vertebrae_only() -> None:
    from osteoscan.labels import Anatomy, disc_label, posterior_label

    labels = np.array([0, int(Anatomy.MUSCLE_OTHER), body_label(VertebraLevel.T9), posterior_label(VertebraLevel.L5),
                       disc_label(VertebraLevel.L1), body_label(VertebraLevel.SACRUM)], dtype=np.uint16)
    assert level_map(labels).tolist() == [0, 0, VertebraLevel.T9, VertebraLevel.L5, 0, VertebraLevel.SACRUM]


def test_similar_qc_notes_are_grouped_and_capped(study) -> None:
    import dataclasses

    warnings_ = tuple(f"dropped a {i}.5 cm3 component at index ({i}.1, 7.0, 3.2)" for i in range(30))
    warnings_ += ("T11 incomplete", "T12 incomplete")
    qc = dataclasses.replace(study.result.qc, warnings=warnings_)
    notes = content.build_content(dataclasses.replace(study.result, qc=qc)).qc_notes
    assert "dropped a 0.5 cm3 component at index (0.1, 7.0, 3.2) (and 29 similar)" in notes
    assert "T11 incomplete" in notes and "T12 incomplete" in notes  # level names are not numbers
    many = tuple(f"warning kind {chr(65 + i)}" for i in range(20))
    qc = dataclasses.replace(study.result.qc, warnings=many)
    notes = content.build_content(dataclasses.replace(study.result, qc=qc)).qc_notes
    assert len(notes) == content.MAX_QC_NOTES and notes[-1].endswith("more notes (qc in result.json).")


def test_composition_colour_follows_positive_flags(study) -> None:
    import dataclasses

    def finding(flags: tuple[str, ...]) -> content.Finding:
        comp = dataclasses.replace(study.result.composition, flags=flags)
        c = content.build_content(dataclasses.replace(study.result, composition=comp))
        return next(f for f in c.findings if f.title.startswith("Body composition"))

    neutral = finding(("no sarcopenia (Prado 2008): SMI 60.0 >= 52.4 cm2/m2 (M)",
                       "myosteatosis not assessable: BMI unknown"))
    assert neutral.color == C.COLOR_NORMAL and "myosteatosis not assessable" in neutral.note
    undecided = finding(("sarcopenia not assessable: SMI unknown", "myosteatosis not assessable: BMI unknown"))
    assert undecided.color == C.COLOR_NOT_MEASURED
    positive = finding(("sarcopenia (Prado 2008): SMI 32.2 < 38.5 cm2/m2 (F)",))
    assert positive.color == C.COLOR_OSTEOPENIA and "sarcopenia (Prado 2008)" in positive.text
