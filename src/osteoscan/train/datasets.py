"""Training samples synthesised on the fly from the phantom (numpy/scipy only).

Each model has a sample builder ``(seed, spec, rng) -> list[(x, y)]`` that renders what it needs from
one phantom subject and cuts several augmented samples from it (rendering is the expensive part,
so each render is reused a few times with different crops, guidance masks and noise):

* ``spine_coarse``: the whole scan at ~3 mm (presets cap/chest/abdomen/lumbar), a few patches of
  ``spec.patch_size`` at random z; target = vertebra level per voxel (body + posterior elements).
* ``vertebra_fine``: crops around a few vertebrae (all levels, mostly T10..L5) at the spec spacing,
  centred on the vertebra's centroid with jitter; ch1 = ground-truth mask degraded like a coarse
  mask (:func:`osteoscan.train.augment.degrade_mask`); target = body / posterior of that vertebra.
* ``bmd_regressor``: crops around vertebral bodies (T11..L5 mostly); ch1 = body mask with +-1 voxel
  errors; target = the phantom's trabecular BMD (mg/cm3). No HU-scale augmentation: the phantom's
  own kVp / calibration / contrast randomisation is what the model must see through.
* ``tissue_2d``: axial slices at T12..L5 (half of them mid-L3) at the spec pixel size, centred on
  the scan's field-of-view centre, pixels outside the field of view set to air; target = Tissue.

Seeds: training uses ``TRAIN_SEED_BASE`` upward, the end-of-training check ``VAL_SEED_BASE``,
``osteoscan evaluate`` ``EVAL_SEED_BASE``; the phantom's demo and benchmark cohorts use small seeds,
so none of these overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from osteoscan.labels import BODY_OFFSET, DISC_OFFSET, POSTERIOR_OFFSET, VertebraLevel, VertebraPart
from osteoscan.models.preprocess import extract_crop, normalise_hu
from osteoscan.models.registry import BMD_REGRESSOR, SPINE_COARSE, TISSUE_2D, VERTEBRA_FINE
from osteoscan.models.spec import ModelSpec
from osteoscan.train.augment import degrade_mask, jitter_intensity

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 10_000_000
VAL_SEED_BASE = 5_000_000
EVAL_SEED_BASE = 6_000_000

Sample = tuple[np.ndarray, np.ndarray]

#: Coverage presets drawn for the coarse model and their probabilities.
COARSE_PRESETS = (("cap", 0.4), ("chest", 0.2), ("abdomen", 0.25), ("lumbar", 0.15))
#: Relative frequency of each level in fine-model training (the default fine set T11..L5 weighs most).
_FINE_LEVEL_WEIGHT = {lv: (3.0 if lv >= VertebraLevel.T10 else 1.0) for lv in VertebraLevel if lv is not VertebraLevel.SACRUM}
_BMD_LEVEL_WEIGHT = {lv: (3.0 if VertebraLevel.L1 <= lv <= VertebraLevel.L4 else 1.0)
                     for lv in VertebraLevel if VertebraLevel.T11 <= lv <= VertebraLevel.L6}


# ------------------------------------------------------------------------------ phantom access
def subject_geometry(seed: int, preset: str) -> tuple[Any, dict[VertebraLevel, dict[str, Any]], np.ndarray, np.ndarray]:
    """(subject, truth entry per level, field-of-view centre LPS, FOV half-size (y, x) mm).

    The truth entries (analytic body centres, BMD) do not depend on the grid, so a one-voxel render
    gives them cheaply.
    """
    from osteoscan.phantom import generate_case, sample_subject
    from osteoscan.phantom.generate import default_grid

    subject = sample_subject(seed, preset)
    tiny = generate_case(seed, preset, spacing_mm=4.0, crop_center_lps_mm=(0.0, 0.0, 0.0), crop_size_mm=4.0,
                         subject=subject, noise=False)
    entries = {VertebraLevel.from_name(e["level"]): e for e in tiny.truth["vertebrae"]}
    g = default_grid(subject)
    centre_scan = np.array([g.origin[a] + 0.5 * (g.shape[2 - a] - 1) * g.spacing[2 - a] for a in range(3)])
    centre_lps = centre_scan + np.array([0.0, 0.0, subject.scanner.z_offset_mm])
    half = 0.5 * np.array([g.shape[1] * g.spacing[1], g.shape[2] * g.spacing[2]])
    return subject, entries, centre_lps, half


def render_crop(seed: int, subject: Any, centre_lps: np.ndarray, spacing: tuple[float, float, float],
                shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU float32, labels, affine) of a crop of ``shape`` voxels centred at ``centre_lps`` (x, y, z)."""
    from osteoscan.phantom import generate_case

    size = tuple(n * s for n, s in zip(shape, spacing))
    case = generate_case(seed, subject.preset, spacing_mm=spacing, crop_center_lps_mm=tuple(float(c) for c in centre_lps),
                         crop_size_mm=size, subject=subject)
    return case.volume.array.astype(np.float32), case.labels, case.volume.affine


def level_map_from_labels(labels: np.ndarray) -> np.ndarray:
    """VertebraLevel per voxel (body + posterior elements; discs and everything else 0)."""
    lab = labels.astype(np.int32)
    spine = (lab >= BODY_OFFSET) & (lab < DISC_OFFSET)
    return np.where(spine, lab % 100, 0).astype(np.int64)


def _weighted_levels(weights: dict[VertebraLevel, float], present: set[VertebraLevel], k: int,
                     rng: np.random.Generator) -> list[VertebraLevel]:
    levels = [lv for lv in weights if lv in present]
    if not levels:
        return []
    p = np.array([weights[lv] for lv in levels])
    idx = rng.choice(len(levels), size=min(k, len(levels)), replace=False, p=p / p.sum())
    return [levels[int(i)] for i in idx]


def _lps_to_index(affine: np.ndarray, lps: np.ndarray) -> np.ndarray:
    return np.linalg.solve(affine[:3, :3], np.asarray(lps, dtype=float) - affine[:3, 3])


# ------------------------------------------------------------------------------ spine_coarse
def coarse_samples(seed: int, spec: ModelSpec, rng: np.random.Generator, n_patches: int = 5) -> list[Sample]:
    from osteoscan.phantom import generate_case

    presets, probs = zip(*COARSE_PRESETS)
    preset = str(rng.choice(presets, p=np.array(probs) / sum(probs)))
    sp = float(spec.input_spacing_mm[0]) * float(rng.uniform(0.93, 1.07))
    case = generate_case(seed, preset, spacing_mm=sp)
    hu = case.volume.array.astype(np.float32)
    levels = level_map_from_labels(case.labels)
    patch = tuple(int(p) for p in spec.patch_size)
    out = []
    zs = np.nonzero(levels.any(axis=(1, 2)))[0]
    for _ in range(n_patches):
        centre = []
        for a, (n, p) in enumerate(zip(hu.shape, patch)):
            if a == 0 and n > p:
                # mostly windows that contain spine, sometimes anywhere
                lo, hi = (zs.min(), zs.max()) if zs.size and rng.random() < 0.9 else (0, n - 1)
                c = float(rng.uniform(max(lo, (p - 1) / 2), min(hi, n - 1 - (p - 1) / 2) + 1e-3)) if n > p else (n - 1) / 2
            else:
                c = (n - 1) / 2 + (rng.uniform(-0.1, 0.1) * n if n > p else 0.0)
            centre.append(c)
        x = extract_crop(hu, centre, patch, pad_value=spec.normalisation.pad_hu)
        y = extract_crop(levels, centre, patch, pad_value=0)
        x = jitter_intensity(x, rng, offset_hu=10.0, scale=0.02, noise_hu=10.0, blur_prob=0.15)
        out.append((normalise_hu(x, spec)[None], y))
    return out


# ------------------------------------------------------------------------------ vertebra_fine
def fine_samples(seed: int, spec: ModelSpec, rng: np.random.Generator, n_levels: int = 3, reuse: int = 3) -> list[Sample]:
    subject, entries, _, _ = subject_geometry(seed, "cap")
    present = {lv for lv, e in entries.items()}
    patch = np.array(spec.patch_size, dtype=int)
    margin = np.array([6, 8, 8])
    sp = tuple(float(s) * float(rng.uniform(0.95, 1.05)) for s in spec.input_spacing_mm)
    out: list[Sample] = []
    for level in _weighted_levels(_FINE_LEVEL_WEIGHT, present, n_levels, rng):
        body = np.asarray(entries[level]["center_lps_mm"], dtype=float)
        centre = body + np.array([0.0, 15.0, 0.0])  # the whole vertebra's centroid lies behind the body's
        hu, labels, affine = render_crop(seed, subject, centre, sp, tuple(int(v) for v in patch + 2 * margin))
        target = (labels == BODY_OFFSET + level) | (labels == POSTERIOR_OFFSET + level)
        if target.sum() < 50:
            continue
        com = np.argwhere(target).mean(axis=0)
        neighbour = np.zeros_like(target)
        for nb in (int(level) - 1, int(level) + 1):
            neighbour |= (labels == BODY_OFFSET + nb) | (labels == POSTERIOR_OFFSET + nb)
        parts = np.zeros(labels.shape, dtype=np.int64)
        parts[labels == BODY_OFFSET + level] = VertebraPart.BODY
        parts[labels == POSTERIOR_OFFSET + level] = VertebraPart.POSTERIOR
        for _ in range(reuse):
            c = com + rng.uniform(-3, 3, size=3)
            x = extract_crop(hu, c, patch, pad_value=spec.normalisation.pad_hu)
            y = extract_crop(parts, c, patch, pad_value=0)
            t = extract_crop(target, c, patch, pad_value=False)
            nb = extract_crop(neighbour, c, patch, pad_value=False)
            # the coarse grid: 4 mm for spine_coarse 0.2 (3 mm for 0.1), with some margin either side
            guide = degrade_mask(t, rng, spacing_mm=sp[0], coarse_mm=float(rng.uniform(3.0, 4.5)), neighbour=nb)
            x = jitter_intensity(x, rng)
            xin = np.stack([normalise_hu(x, spec), guide.astype(np.float32)])
            if rng.random() < 0.5:
                xin, y = np.ascontiguousarray(xin[..., ::-1]), np.ascontiguousarray(y[..., ::-1])
            out.append((xin, y))
    return out


# ------------------------------------------------------------------------------ bmd_regressor
def bmd_samples(seed: int, spec: ModelSpec, rng: np.random.Generator, n_levels: int = 5, reuse: int = 3) -> list[Sample]:
    from scipy import ndimage

    preset = "lumbar" if rng.random() < 0.5 else "cap"
    subject, entries, _, _ = subject_geometry(seed, preset)
    patch = np.array(spec.patch_size, dtype=int)
    margin = np.array([4, 4, 4])
    sp = tuple(float(s) * float(rng.uniform(0.97, 1.03)) for s in spec.input_spacing_mm)
    out: list[Sample] = []
    for level in _weighted_levels(_BMD_LEVEL_WEIGHT, set(entries), n_levels, rng):
        e = entries[level]
        body_c = np.asarray(e["center_lps_mm"], dtype=float)
        hu, labels, affine = render_crop(seed, subject, body_c, sp, tuple(int(v) for v in patch + 2 * margin))
        body = labels == BODY_OFFSET + level
        if body.sum() < 50:
            continue
        com = np.argwhere(body).mean(axis=0)
        target = np.array([float(e["bmd_mg_cm3"])], dtype=np.float32)
        for _ in range(reuse):
            c = com + rng.uniform(-1.5, 1.5, size=3)
            x = extract_crop(hu, c, patch, pad_value=spec.normalisation.pad_hu)
            m = extract_crop(body, c, patch, pad_value=False)
            r = rng.random()
            if r < 0.25:
                m = ndimage.binary_dilation(m)
            elif r < 0.5:
                m = ndimage.binary_erosion(m)
            # zero-mean noise only: no HU offset/scale here (that is what the model must measure)
            x = x + rng.normal(0.0, rng.uniform(0.0, 12.0), size=x.shape).astype(np.float32)
            xin = np.stack([normalise_hu(x, spec), m.astype(np.float32)])
            if rng.random() < 0.5:
                xin = np.ascontiguousarray(xin[..., ::-1])
            out.append((xin, target))
    return out


# ------------------------------------------------------------------------------ tissue_2d
def tissue_samples(seed: int, spec: ModelSpec, rng: np.random.Generator, n_slices: int = 3) -> list[Sample]:
    from osteoscan.phantom.truth import tissue_map

    preset = str(rng.choice(["cap", "abdomen", "l3_slice"], p=[0.4, 0.4, 0.2]))
    subject, entries, fov_centre, fov_half = subject_geometry(seed, preset)
    candidates = [lv for lv in (VertebraLevel.T12, VertebraLevel.L1, VertebraLevel.L2, VertebraLevel.L4, VertebraLevel.L5)
                  if lv in entries]
    patch = tuple(int(p) for p in spec.patch_size)
    px = tuple(float(s) for s in spec.input_spacing_mm)
    out: list[Sample] = []
    for i in range(n_slices):
        level = VertebraLevel.L3 if (i == 0 or not candidates or rng.random() < 0.4) else candidates[int(rng.integers(len(candidates)))]
        if level not in entries:
            continue
        e = entries[level]
        z = float(e["center_lps_mm"][2]) + float(rng.uniform(-0.25, 0.25)) * float(e["expected_height_mm"])
        centre = np.array([fov_centre[0], fov_centre[1], z]) + np.array([*rng.uniform(-8, 8, size=2), 0.0])
        hu, labels, affine = render_crop(seed, subject, centre, (2.0, *px), (1, *patch))
        hu, labels = hu[0], labels[0]
        # outside the scan's reconstructed field of view there is only padding (air) in a real image
        yy = (np.arange(patch[0]) - (patch[0] - 1) / 2) * px[0] + (centre[1] - fov_centre[1])
        xx = (np.arange(patch[1]) - (patch[1] - 1) / 2) * px[1] + (centre[0] - fov_centre[0])
        outside = (np.abs(yy)[:, None] > fov_half[0]) | (np.abs(xx)[None, :] > fov_half[1])
        hu[outside] = spec.normalisation.pad_hu
        t = tissue_map(labels).astype(np.int64)
        t[outside] = 0
        x = jitter_intensity(hu, rng, offset_hu=8.0, scale=0.02, noise_hu=10.0, blur_prob=0.2)
        out.append((normalise_hu(x, spec)[None], t))
    return out


BUILDERS: dict[str, Callable[[int, ModelSpec, np.random.Generator], list[Sample]]] = {
    SPINE_COARSE: coarse_samples,
    VERTEBRA_FINE: fine_samples,
    BMD_REGRESSOR: bmd_samples,
    TISSUE_2D: tissue_samples,
}


def build_samples(task: str, spec: ModelSpec, seed: int) -> list[Sample]:
    rng = np.random.default_rng([int(seed), 0x7EA1])
    return BUILDERS[task](seed, spec, rng)


def validation_samples(task: str, spec: ModelSpec, n_cases: int) -> list[Sample]:
    out: list[Sample] = []
    for i in range(n_cases):
        out.extend(build_samples(task, spec, VAL_SEED_BASE + i))
    return out


class _StreamBase:
    pass


try:  # torch is optional here: the stream class is only needed for training
    from torch.utils.data import IterableDataset as _IterableDataset
except ImportError:  # pragma: no cover - the edge install has no torch
    _IterableDataset = _StreamBase  # type: ignore[misc,assignment]


class PhantomSampleStream(_IterableDataset):  # type: ignore[misc,valid-type]
    """Endless stream of samples; each DataLoader worker renders its own seeds.

    A worker keeps a shuffle buffer so that a batch mixes several subjects even though one render
    yields several correlated samples.
    """

    def __init__(self, task: str, spec: ModelSpec, seed_base: int, buffer_size: int = 64) -> None:
        super().__init__()
        self.task, self.spec, self.seed_base, self.buffer_size = task, spec, seed_base, buffer_size

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed_base, wid])
        buffer: list[Sample] = []
        k = 0
        fill = max(1, self.buffer_size // 3)
        while True:
            seed = self.seed_base + wid + k * nw
            k += 1
            try:
                buffer.extend(build_samples(self.task, self.spec, seed))
            except (ValueError, KeyError, IndexError) as exc:
                log.warning("phantom seed %d gave no %s samples (%s); skipped", seed, self.task, exc)
                continue
            while len(buffer) > fill:
                x, y = buffer.pop(int(rng.integers(len(buffer))))
                yield torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
