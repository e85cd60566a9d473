"""Viewer slice rendering: orientation, physical aspect ratio, label and tissue overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from osteoscan.labels import Tissue, VertebraLevel, body_label, posterior_label
from osteoscan.server.render import StudyImages, level_rgb, render_overlay, render_slice


def _images() -> StudyImages:
    ct = np.full((10, 40, 30), -1000, np.int16)  # (S, P, L), 3 mm slices, 1 mm pixels
    ct[:, 10:30, 5:25] = 40
    ct[9, 0, 0] = 1000  # superior-most slice, most anterior row, patient-right column
    labels = np.zeros(ct.shape, np.int32)
    labels[2:5, 20:26, 12:18] = body_label(VertebraLevel.L1)
    labels[2:5, 27:30, 13:17] = posterior_label(VertebraLevel.L1)
    labels[6:9, 20:26, 12:18] = body_label(VertebraLevel.T12)
    tissue = np.zeros(ct.shape[1:], np.int32)
    tissue[10:14, 5:25] = Tissue.SAT
    tissue[15:19, 8:12] = Tissue.MUSCLE
    return StudyImages(ct=ct, spacing=(3.0, 1.0, 1.0), labels=labels, tissue=tissue, tissue_index=3,
                       spine_index=15)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_slices_have_physical_aspect_and_orientation() -> None:
    im = _images()
    axial = _png(render_slice(im, "axial", 9, "bone"))
    assert axial.shape == (40, 30) and axial[0, 0] > 200  # anterior up, patient right on the left
    sag = _png(render_slice(im, "sagittal", 0, "soft"))
    assert sag.shape == (30, 40)  # 10 slices x 3 mm stretched to 30 px, superior up
    assert sag[0, 0] == 255 and sag[-1, 0] == 0
    with pytest.raises(IndexError):
        render_slice(im, "axial", 10)
    with pytest.raises(ValueError, match="window"):
        render_slice(im, "axial", 0, "lung")


def test_overlays_colour_levels_and_tissues() -> None:
    im = _images()
    ov = _png(render_overlay(im, "axial", 3))
    assert ov.shape == (40, 30, 4)
    assert tuple(ov[21, 12, :3]) == level_rgb(VertebraLevel.L1) and ov[21, 12, 3] == 120  # body
    assert ov[28, 13, 3] == 70  # posterior elements fainter
    assert ov[11, 6, 3] > 0 and ov[16, 9, 0] > 200  # SAT and muscle on the tissue slice
    other = _png(render_overlay(im, "axial", 4))
    assert other[11, 6, 3] == 0  # no tissue off the composition slice
    assert not _png(render_overlay(im, "axial", 0))[..., 3].any()  # nothing labelled there
    sag = _png(render_overlay(im, "sagittal", 15))
    assert sag.shape == (30, 40, 4) and (sag[..., 3] > 0).sum() > 50
    assert level_rgb(VertebraLevel.L1) != level_rgb(VertebraLevel.T12)
