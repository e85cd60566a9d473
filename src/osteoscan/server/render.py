"""Slice images for the web viewer: windowed CT slices and colour overlays, rendered as PNG.

Why on the server: the browser then needs no DICOM/NIfTI decoder and nothing from the internet; a
slice is a few tens of kB. Views follow the canonical orientation (``osteoscan.io``): axial slices
are shown as stored (anterior up, patient right on the left); sagittal slices are flipped so that
superior is up, and stretched to the physical aspect ratio.

Overlays: vertebral bodies and posterior elements coloured per level with the level name written at
the body's centre, and on the body-composition slice the tissues (muscle, SAT, VAT, IMAT).
"""

from __future__ import annotations

import colorsys
import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from osteoscan.labels import Tissue, VertebraLevel, level_of

log = logging.getLogger(__name__)

#: Display windows (width, level) in HU: the usual radiology presets.
WINDOWS: dict[str, tuple[float, float]] = {"bone": (1800.0, 400.0), "soft": (400.0, 40.0)}
PLANES = ("axial", "sagittal")
#: Overlay colours (RGBA) of the body-composition tissues.
TISSUE_RGBA: dict[Tissue, tuple[int, int, int, int]] = {
    Tissue.MUSCLE: (220, 40, 40, 120),
    Tissue.SAT: (250, 220, 60, 110),
    Tissue.VAT: (250, 130, 20, 120),
    Tissue.IMAT: (40, 200, 90, 140),
}
#: Label values at or above this are vertebral structures (body 100+, posterior 200+, disc 300+).
_VERTEBRA_LABEL_MIN = 100
_CACHE_SIZE = 2


def level_rgb(level: VertebraLevel) -> tuple[int, int, int]:
    """A distinct, stable colour per level (golden-ratio hue steps: neighbours differ clearly)."""
    h = (int(level) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class StudyImages:
    """A job's canonical CT array, label map and tissue slice, ready to cut into slices."""

    ct: np.ndarray  # (S, P, L) HU
    spacing: tuple[float, float, float]
    labels: np.ndarray | None  # same shape as ct
    tissue: np.ndarray | None  # 2-D (P, L) Tissue map
    tissue_index: int | None  # axial index of the tissue slice
    spine_index: int | None = None  # sagittal index through the middle of the vertebral bodies

    def n_slices(self, plane: str) -> int:
        return self.ct.shape[0] if plane == "axial" else self.ct.shape[2]

    def info(self) -> dict[str, object]:
        return {
            "shape": list(self.ct.shape),
            "spacing_mm": [round(s, 4) for s in self.spacing],
            "slices": {p: self.n_slices(p) for p in PLANES},
            "has_labels": self.labels is not None,
            "tissue_index": self.tissue_index,
            "spine_index": self.spine_index,
        }


def load_study_images(input_path: Path, series_uid: str | None, out_dir: Path,
                      tissue_index: int | None) -> StudyImages:
    """Read the job's input as the pipeline did and its label outputs, all in canonical orientation."""
    from osteoscan.io import CANONICAL_ORIENTATION, load_ct, reorient_array
    from osteoscan.io.nifti import read_nifti_array

    vol = load_ct(input_path, series_uid=series_uid)
    ct = np.asarray(vol.array)
    labels = tissue = None
    lab_path = out_dir / "labels.nii.gz"
    if lab_path.is_file():
        arr, aff = read_nifti_array(lab_path)
        arr, _ = reorient_array(np.asarray(arr), aff, CANONICAL_ORIENTATION)
        if arr.shape == ct.shape:
            labels = arr.astype(np.int32)
        else:
            log.warning("%s has shape %s, the CT %s: no label overlay", lab_path, arr.shape, ct.shape)
    tissue_files = sorted(out_dir.glob("tissue*.nii.gz"))
    if tissue_files and tissue_index is not None:
        arr, aff = read_nifti_array(tissue_files[0])
        arr = np.asarray(arr)
        if arr.ndim == 3 and arr.shape == ct.shape:
            tissue = arr[tissue_index]
        else:
            squeezed = np.squeeze(arr)
            if squeezed.ndim == 3 and squeezed.shape[1:] == ct.shape[1:]:
                squeezed = squeezed[0]
            if squeezed.ndim == 2:
                if squeezed.shape != ct.shape[1:] and squeezed.T.shape == ct.shape[1:]:
                    squeezed = squeezed.T
                if squeezed.shape == ct.shape[1:]:
                    tissue = squeezed
        if tissue is None:
            log.warning("%s (shape %s) does not fit the CT slice %s: no tissue overlay", tissue_files[0],
                        arr.shape, ct.shape[1:])
    spine_index = None
    if labels is not None:
        cols = np.nonzero((labels >= _VERTEBRA_LABEL_MIN).any(axis=(0, 1)))[0]
        if cols.size:
            spine_index = int(np.median(cols))
    return StudyImages(ct=ct, spacing=tuple(float(s) for s in vol.spacing), labels=labels,
                       tissue=None if tissue is None else tissue.astype(np.int32), tissue_index=tissue_index,
                       spine_index=spine_index)


class ImageCache:
    """Keeps the last few studies in memory (a study is tens to hundreds of MB)."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._items: OrderedDict[str, StudyImages] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.size = size

    def get(self, key: str, load: callable[[], StudyImages]) -> StudyImages:  # type: ignore[valid-type]
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:  # one load per study even when the browser asks for many slices at once
            with self._lock:
                if key in self._items:
                    return self._items[key]
            item = load()
            with self._lock:
                self._items[key] = item
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
        return item

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


def _cut(arr: np.ndarray, plane: str, index: int) -> np.ndarray:
    if plane == "axial":
        return arr[index]
    return arr[::-1, :, index]  # (S, P) with superior up


def _physical_size(plane: str, shape: tuple[int, int], spacing: tuple[float, float, float]) -> tuple[int, int]:
    """(width, height) in pixels so that one pixel covers the same mm in both directions."""
    rows, cols = shape
    if plane == "axial":
        row_mm, col_mm = spacing[1], spacing[2]
    else:
        row_mm, col_mm = spacing[0], spacing[1]
    if row_mm >= col_mm:
        return cols, max(1, round(rows * row_mm / col_mm))
    return max(1, round(cols * col_mm / row_mm)), rows


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def render_slice(images: StudyImages, plane: str, index: int, window: str = "soft") -> bytes:
    """The CT slice as an 8-bit grey PNG at physical aspect ratio."""
    if plane not in PLANES:
        raise ValueError(f"plane {plane!r}: use one of {PLANES}")
    if not 0 <= index < images.n_slices(plane):
        raise IndexError(f"{plane} slice {index} outside 0..{images.n_slices(plane) - 1}")
    if window not in WINDOWS:
        raise ValueError(f"window {window!r}: use one of {sorted(WINDOWS)}")
    width, level = WINDOWS[window]
    sl = _cut(images.ct, plane, index).astype(np.float32)
    grey = np.clip((sl - (level - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    img = Image.fromarray(grey, mode="L")
    return _png(img.resize(_physical_size(plane, grey.shape, images.spacing), Image.Resampling.BILINEAR))


def render_overlay(images: StudyImages, plane: str, index: int) -> bytes:
    """A transparent RGBA PNG (same size as the slice) with vertebra labels and L3 tissues."""
    if not 0 <= index < images.n_slices(plane):
        raise IndexError(f"{plane} slice {index} outside 0..{images.n_slices(plane) - 1}")
    shape = _cut(images.ct, plane, index).shape
    rgba = np.zeros((*shape, 4), np.uint8)
    names: list[tuple[str, float, float]] = []
    if images.labels is not None:
        lab = _cut(images.labels, plane, index)
        for value in np.unique(lab[lab >= _VERTEBRA_LABEL_MIN]):
            level = level_of(int(value))
            if level is None:
                continue
            mask = lab == value
            alpha = 120 if value < 200 else 70 if value < 300 else 50
            rgba[mask] = (*level_rgb(level), alpha)
            if value < 200:  # write the level name at the body's centre
                rr, cc = np.nonzero(mask)
                names.append((level.name, float(cc.mean()), float(rr.mean())))
    if images.tissue is not None and plane == "axial" and index == images.tissue_index:
        for tissue, colour in TISSUE_RGBA.items():
            rgba[images.tissue == tissue] = colour
    img = Image.fromarray(rgba, mode="RGBA")
    size = _physical_size(plane, shape, images.spacing)
    img = img.resize(size, Image.Resampling.NEAREST)
    if names:
        draw = ImageDraw.Draw(img)
        sx, sy = size[0] / shape[1], size[1] / shape[0]
        for name, x, y in names:
            draw.text((x * sx + 1, y * sy + 1), name, fill=(0, 0, 0, 255), anchor="mm")
            draw.text((x * sx, y * sy), name, fill=(255, 255, 255, 255), anchor="mm")
    return _png(img)
