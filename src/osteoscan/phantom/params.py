"""Random subject, anatomy and scanner parameters of one phantom case (deterministic by seed).

Everything random about a case is drawn here, in :func:`sample_subject`, from one
``numpy.random.Generator`` seeded by the case seed; rasterisation then only evaluates shapes. The
few random *fields* (textures, noise) are drawn at rasterisation time from a generator seeded by
the same seed, so a case is a pure function of (seed, preset, grid).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from osteoscan.labels import VertebraLevel
from osteoscan.physics import CONTRAST_PHASES

GENERATOR_VERSION = "1.0.0"

#: Coverage presets: name -> (description, first landmark, last landmark). Landmarks are resolved in
#: :mod:`osteoscan.phantom.anatomy` once the spine has been built.
PRESETS: dict[str, str] = {
    "cap": "chest-abdomen-pelvis: lung apices to below the pubic symphysis",
    "chest": "chest: lung apices to the upper abdomen (about L1-L2)",
    "abdomen": "abdomen-pelvis: diaphragm domes to below the pubic symphysis",
    "lumbar": "lumbar spine: T11 to the sacrum",
    "l3_slice": "one axial slice through the middle of L3 (body-composition studies)",
}

#: Genant semi-quantitative grade -> (min, max) height-loss fraction that the phantom draws from.
#: Grade limits are 20-25 / 25-40 / > 40 % (REFERENCE.md); the phantom keeps a 1-2 % margin to the
#: limits so that measured heights on a voxel grid land in the stated grade.
FRACTURE_LOSS_RANGE: dict[int, tuple[float, float]] = {1: (0.215, 0.24), 2: (0.27, 0.38), 3: (0.42, 0.58)}
FRACTURE_SHAPES: tuple[str, ...] = ("wedge", "biconcave", "crush")

# Mean adult vertebral body dimensions (mm) by level, posterior height / AP depth / LR width, and the
# height of the disc below; smoothed from published morphometry (Panjabi et al., Spine 1991/1992:
# thoracic and lumbar vertebral body geometry), scaled per subject.
_LEVEL_DIMS: dict[str, tuple[float, float, float, float]] = {
    #       height depth width disc_below
    "C7": (14.0, 16.0, 24.0, 4.5),
    "T1": (15.0, 17.0, 26.0, 3.5),
    "T2": (16.0, 18.0, 26.0, 3.5),
    "T3": (16.5, 19.0, 26.5, 3.5),
    "T4": (17.0, 21.0, 27.0, 3.5),
    "T5": (17.5, 23.0, 28.0, 4.0),
    "T6": (18.0, 24.0, 29.0, 4.0),
    "T7": (18.5, 25.0, 30.0, 4.5),
    "T8": (19.0, 27.0, 32.0, 4.5),
    "T9": (20.0, 28.0, 33.0, 5.0),
    "T10": (21.0, 29.0, 35.0, 5.5),
    "T11": (22.0, 30.0, 38.0, 6.5),
    "T12": (23.0, 31.0, 40.0, 7.5),
    "L1": (24.5, 32.0, 42.0, 8.5),
    "L2": (25.5, 33.5, 44.0, 9.5),
    "L3": (26.0, 34.5, 47.0, 10.0),
    "L4": (26.0, 35.0, 49.0, 11.0),
    "L5": (25.0, 34.5, 50.0, 11.5),
    "L6": (24.5, 34.0, 50.0, 11.0),
}


@dataclass(frozen=True)
class VertebraSpec:
    """One vertebra as drawn: nominal dimensions (mm), BMD, fracture and the disc below."""

    level: VertebraLevel
    height_mm: float  # unfractured body height (mean of anterior and posterior, before wedging)
    depth_mm: float  # antero-posterior depth of the body at the mid-sagittal plane
    width_mm: float  # left-right width
    disc_below_mm: float  # disc height below (mean), before degeneration
    bmd_mg_cm3: float
    physiological_wedge_deg: float = 0.0  # + = anterior shorter (thoracic kyphosis)
    fracture_grade: int = 0
    fracture_shape: str | None = None
    fracture_loss: float = 0.0  # fraction of the expected height lost (Genant)
    disc_degeneration: float = 0.0  # fraction of the disc below's height lost
    lumbar_rib: bool = False


@dataclass(frozen=True)
class ScannerParams:
    """Acquisition and reconstruction (all lengths in mm)."""

    kvp: float
    pixel_spacing_mm: float
    slice_thickness_mm: float
    slice_spacing_mm: float
    kernel: str  # "soft", "standard", "sharp"
    blur_sigma_mm: float  # in-plane Gaussian PSF sigma of the reconstruction
    noise_sd_hu: float  # noise SD in water of ~ 30 cm diameter at this slice thickness
    contrast_phase: str
    matrix: int  # in-plane matrix size (512 usually)
    fov_center_offset_mm: tuple[float, float]  # (x, y) offset of the reconstruction centre
    roll_deg: float  # patient rotation about the long axis
    hu_offset: float  # scanner calibration drift added to every HU
    hu_gain: float  # multiplicative calibration drift (about 1)
    circle_padding: int | None  # value outside the scan circle (e.g. -2048), None = no mask
    table: bool
    manufacturer: str
    kernel_name: str
    z_offset_mm: float  # table position: LPS z of the anatomy origin


@dataclass(frozen=True)
class SubjectParams:
    """Every random parameter of one case (anatomy, physiology, pathology, scanner)."""

    seed: int
    preset: str
    sex: str  # "M" / "F"
    age_years: float
    height_m: float
    weight_kg: float
    habitus: str  # "cachectic", "slim", "normal", "overweight", "obese"
    size_factor: float  # skeletal scale (1 = average adult male)
    sat_mm: float  # mean subcutaneous fat thickness at the abdomen
    vat_factor: float  # 0..1 fraction of the abdominal cavity's free space that is fat
    muscle_factor: float  # muscle bulk (1 = average)
    myosteatosis: float  # 0..1: fatty infiltration of muscle (lowers muscle HU, more IMAT)
    marrow_fat_fraction: float
    vertebrae: tuple[VertebraSpec, ...]  # C7 ... L5 (L6) in cranio-caudal order, sacrum excluded
    rib_pairs: int  # 11, 12 or 13 (13: a cervical-side extra pair is not drawn; T12 has ribs + L1 rib)
    transitional: str  # "none", "L6", "sacralised_L5"
    sacral_slope_deg: float
    lordosis_deg: float
    kyphosis_deg: float
    scoliosis_deg: float  # Cobb-like total lateral curvature (signed: + convex to the left)
    scoliosis_apex: float  # index along the spine (0 = sacrum) of the apex, in vertebrae
    tissue_hu_jitter: dict[str, float]  # per-tissue HU offsets of this subject (texture realism)
    contrast_scale: float  # bolus strength multiplier
    organ_jitter: dict[str, float]  # small shape/position randomisation of organs (mm / factors)
    z_range_mm: tuple[float, float]  # anatomy-frame z coverage [low, high]
    scanner: ScannerParams
    generator_version: str = GENERATOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vertebrae"] = [
            {**dataclasses.asdict(v), "level": v.level.name} for v in self.vertebrae
        ]
        return d

    @property
    def bmi(self) -> float:
        return self.weight_kg / self.height_m**2


def _habitus_from_bmi(bmi: float) -> str:
    if bmi < 18.5:
        return "cachectic"
    if bmi < 22.0:
        return "slim"
    if bmi < 25.0:
        return "normal"
    if bmi < 30.0:
        return "overweight"
    return "obese"


def _age_bmd(age: float, sex: str, rng: np.random.Generator) -> float:
    """QCT-equivalent trabecular BMD (mg/cm3) for an age: peak ~ 175 at 25-30 years, falling ~1.5/year
    (women faster after 50), SD ~ 25 (QCT normative curves; REFERENCE.md: ACR categories)."""
    peak = 180.0 if sex == "F" else 175.0
    loss = 1.3 * max(age - 28.0, 0.0)
    if sex == "F":
        loss += 1.0 * max(age - 50.0, 0.0)
    return float(np.clip(peak - loss + rng.normal(0.0, 25.0), 20.0, 260.0))


def sample_subject(seed: int, preset: str = "cap", **overrides: Any) -> SubjectParams:
    """Draw every random parameter of a case from ``seed`` (deterministic).

    Args:
        seed: case seed (any non-negative int).
        preset: coverage preset, one of :data:`PRESETS`.
        overrides: fields of :class:`SubjectParams` to force (e.g. ``age_years=80``), or of the scanner
            with a ``scanner_`` prefix (``scanner_kvp=80``), or ``fracture={"L1": (2, "wedge")}``,
            ``bmd_mg_cm3=60``, ``transitional="L6"``: used by cohort specs and tests.

    Raises:
        ValueError: unknown preset or override name.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r}; expected one of {', '.join(PRESETS)}")
    rng = np.random.default_rng([int(seed), 0x05735CA])
    ov = dict(overrides)

    sex = ov.pop("sex", "F" if rng.random() < 0.5 else "M")
    age = float(ov.pop("age_years", np.clip(rng.normal(62.0, 14.0), 20.0, 95.0)))
    height_m = float(ov.pop("height_m", rng.normal(1.63 if sex == "F" else 1.76, 0.07)))
    bmi_draw = float(np.clip(rng.lognormal(np.log(26.0), 0.2), 15.0, 48.0))
    weight = float(ov.pop("weight_kg", bmi_draw * height_m**2))
    bmi = weight / height_m**2
    habitus = ov.pop("habitus", _habitus_from_bmi(bmi))
    size = float(np.clip(height_m / 1.76, 0.82, 1.15) * rng.normal(1.0, 0.03))
    # SAT thickness (mm) grows with BMI; women carry more subcutaneous fat
    sat = float(np.clip((bmi - 17.0) * (2.6 if sex == "F" else 1.9) * rng.lognormal(0.0, 0.25) + 3.0, 2.0, 75.0))
    sat = float(ov.pop("sat_mm", sat))
    vat = float(np.clip((bmi - 16.0) / 22.0 * (0.75 if sex == "F" else 1.0) + rng.normal(0, 0.1), 0.05, 1.0))
    vat = float(ov.pop("vat_factor", vat))
    muscle = float(np.clip(rng.normal(1.0 if sex == "M" else 0.82, 0.12) * (1.0 - max(age - 60, 0) * 0.006)
                           * (0.8 if habitus == "cachectic" else 1.0), 0.5, 1.4))
    muscle = float(ov.pop("muscle_factor", muscle))
    myo = float(np.clip(rng.normal(0.15 + 0.006 * max(age - 40, 0) + 0.01 * max(bmi - 25, 0), 0.1), 0.0, 1.0))
    myo = float(ov.pop("myosteatosis", myo))

    base_bmd = float(ov.pop("bmd_mg_cm3", _age_bmd(age, sex, rng)))
    marrow_fat = float(np.clip(0.22 + 0.006 * (age - 20.0) + rng.normal(0, 0.07) - (base_bmd - 120) * 0.0008,
                               0.1, 0.8))
    marrow_fat = float(ov.pop("marrow_fat_fraction", marrow_fat))

    # spine variants: 11/12/13 rib pairs, lumbar rib, transitional vertebrae
    transitional = ov.pop("transitional", "L6" if rng.random() < 0.04 else ("sacralised_L5" if rng.random() < 0.04 else "none"))
    u = rng.random()
    rib_pairs = int(ov.pop("rib_pairs", 11 if u < 0.05 else (13 if u < 0.09 else 12)))
    names = ["C7"] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    if transitional == "L6":
        names.append("L6")
    fracture_over: dict[str, tuple[int, str]] = ov.pop("fracture", None) or {}
    # fracture probability rises steeply as BMD falls below ~ 100 mg/cm3
    p_frac = float(np.clip(0.03 + 0.5 * np.clip((110.0 - base_bmd) / 90.0, 0.0, 1.0), 0.0, 0.55))
    has_fractures = fracture_over == {} and rng.random() < p_frac and not ov.pop("no_fractures", False)
    frac_levels: dict[str, tuple[int, str]] = dict(fracture_over)
    if has_fractures:
        n = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
        candidates = [f"T{i}" for i in range(5, 13)] + ["L1", "L2", "L3", "L4"]
        weights = np.array([1, 1, 1.5, 2, 2, 2.5, 4, 5, 5, 3, 2, 1.2], dtype=float)
        picks = rng.choice(len(candidates), size=n, replace=False, p=weights / weights.sum())
        for p in picks:
            grade = int(rng.choice([1, 2, 3], p=[0.45, 0.38, 0.17]))
            shape = str(rng.choice(FRACTURE_SHAPES, p=[0.55, 0.3, 0.15]))
            frac_levels[candidates[int(p)]] = (grade, shape)

    kyph = float(ov.pop("kyphosis_deg", np.clip(rng.normal(36.0 + 0.15 * max(age - 40, 0), 9.0), 10.0, 75.0)))
    vertebrae = []
    for idx, name in enumerate(names):
        h, d, w, disc = _LEVEL_DIMS[name]
        jit = rng.normal(1.0, 0.025, size=4)
        level_bmd = base_bmd * (1.0 + 0.012 * (idx - 13)) * rng.normal(1.0, 0.03)  # lumbar slightly lower
        lname = name
        grade, shape = frac_levels.get(lname, (0, None))
        loss = float(rng.uniform(*FRACTURE_LOSS_RANGE[grade])) if grade else 0.0
        degen = 0.0
        if name.startswith("L") or name in ("T11", "T12"):
            degen = float(np.clip(rng.normal(0.004 * max(age - 35, 0), 0.08), 0.0, 0.6)) if rng.random() < 0.6 else 0.0
        phys_wedge = 0.0
        if name.startswith("T"):
            ti = int(name[1:])
            phys_wedge = kyph * 0.45 / 12.0 * (1.0 + 0.5 * np.sin(np.pi * (ti - 1) / 11.0)) / 1.32
        vertebrae.append(
            VertebraSpec(
                level=VertebraLevel.from_name(name),
                height_mm=float(h * size * jit[0]),
                depth_mm=float(d * size * jit[1]),
                width_mm=float(w * size * jit[2]),
                disc_below_mm=float(disc * size * jit[3]),
                bmd_mg_cm3=float(np.clip(level_bmd, 15.0, 280.0)),
                physiological_wedge_deg=float(phys_wedge),
                fracture_grade=grade,
                fracture_shape=shape,
                fracture_loss=loss,
                disc_degeneration=degen,
                lumbar_rib=bool(name == "L1" and rib_pairs == 13),
            )
        )

    scanner = _sample_scanner(rng, preset, bmi, ov)
    tissue_jitter = {
        k: float(rng.normal(0.0, s))
        for k, s in (("fat", 6.0), ("muscle", 5.0), ("liver", 7.0), ("spleen", 4.0), ("kidney", 4.0),
                     ("blood", 4.0), ("bowel", 6.0), ("lung", 30.0), ("cortical", 120.0), ("disc", 12.0))
    }
    organ_jitter = {k: float(v) for k, v in zip(
        ("liver_size", "spleen_size", "kidney_size", "heart_size", "stomach_fill", "bladder_fill",
         "kidney_l_dz", "kidney_r_dz", "diaphragm_dz", "colon_gas", "bowel_gas", "heart_rot"),
        (rng.normal(1.0, 0.1), rng.lognormal(0, 0.2), rng.normal(1.0, 0.08), rng.normal(1.0, 0.08),
         rng.uniform(0.2, 1.0), rng.uniform(0.1, 1.0), rng.normal(0, 10), rng.normal(0, 10),
         rng.normal(0, 12), rng.uniform(0.05, 0.8), rng.uniform(0.0, 0.4), rng.normal(0, 6)))}
    organ_jitter["bowel_seed"] = float(rng.integers(0, 2**31))

    params: dict[str, Any] = dict(  # noqa: C408 - keyword form mirrors the dataclass fields
        seed=int(seed),
        preset=preset,
        sex=sex,
        age_years=age,
        height_m=height_m,
        weight_kg=weight,
        habitus=habitus,
        size_factor=size,
        sat_mm=sat,
        vat_factor=vat,
        muscle_factor=muscle,
        myosteatosis=myo,
        marrow_fat_fraction=marrow_fat,
        vertebrae=tuple(vertebrae),
        rib_pairs=rib_pairs,
        transitional=transitional,
        sacral_slope_deg=float(np.clip(rng.normal(36.0, 7.0), 18.0, 55.0)),
        lordosis_deg=float(np.clip(rng.normal(44.0, 10.0), 15.0, 75.0)),
        kyphosis_deg=kyph,
        scoliosis_deg=float(rng.normal(0.0, 14.0) if rng.random() < 0.15 else rng.normal(0.0, 2.0)),
        scoliosis_apex=float(rng.uniform(4.0, 13.0)),
        tissue_hu_jitter=tissue_jitter,
        contrast_scale=float(np.clip(rng.lognormal(0.0, 0.2), 0.5, 1.8)),
        organ_jitter=organ_jitter,
        z_range_mm=(0.0, 0.0),  # resolved below once the spine exists
        scanner=scanner,
    )
    z_range = ov.pop("z_range_mm", None)
    for k, v in ov.items():
        if k not in params:
            raise ValueError(f"unknown subject override {k!r}; SubjectParams fields are {', '.join(params)}")
        params[k] = v
    subject = SubjectParams(**params)  # type: ignore[arg-type]
    from osteoscan.phantom.anatomy import coverage_range  # local import: anatomy imports params

    zr = tuple(z_range) if z_range is not None else coverage_range(subject, rng)
    subject = dataclasses.replace(subject, z_range_mm=(float(zr[0]), float(zr[1])))
    if "scanner_pixel_spacing_mm" not in overrides:
        # the display field of view is chosen to fit the patient (with a margin), sometimes too small
        # (truncation) and limited to 0.6..1.0 mm pixels
        width = body_width_mm(subject)
        margin = float(rng.uniform(1.08, 1.35)) if rng.random() > 0.08 else float(rng.uniform(0.85, 1.0))
        fov = width * margin + 2.0 * max(abs(c) for c in subject.scanner.fov_center_offset_mm)
        pix = float(np.clip(fov / subject.scanner.matrix, 0.6, 1.0))
        subject = dataclasses.replace(subject, scanner=dataclasses.replace(subject.scanner, pixel_spacing_mm=pix))
    return subject


def body_width_mm(s: SubjectParams) -> float:
    """Largest skin-to-skin left-right width of the trunk within the subject's z coverage."""
    from osteoscan.phantom.anatomy import build_spine, build_torso

    torso = build_torso(s, build_spine(s))
    z = np.linspace(s.z_range_mm[0], s.z_range_mm[1], 24) if s.z_range_mm[1] > s.z_range_mm[0] else np.array([s.z_range_mm[0]])
    p = torso.at(z)
    return float(np.max(2.0 * (p["a"] + p["sat"] * 1.35 + 2.0)))


def _sample_scanner(rng: np.random.Generator, preset: str, bmi: float, ov: dict[str, Any]) -> ScannerParams:
    def pick(key: str, value: Any) -> Any:
        return ov.pop(f"scanner_{key}", value)

    kvp = float(pick("kvp", rng.choice([80.0, 100.0, 120.0, 140.0], p=[0.08, 0.22, 0.58, 0.12])))
    if preset == "l3_slice":
        thk = float(pick("slice_thickness_mm", rng.choice([1.0, 2.5, 3.0, 5.0], p=[0.15, 0.25, 0.3, 0.3])))
    else:
        thk = float(pick("slice_thickness_mm", rng.choice([0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0],
                                                     p=[0.08, 0.17, 0.15, 0.1, 0.1, 0.12, 0.16, 0.12])))
    spacing = float(pick("slice_spacing_mm", thk if rng.random() < 0.75 else thk * rng.choice([0.5, 0.8])))
    kernel = str(pick("kernel", rng.choice(["soft", "standard", "sharp"], p=[0.35, 0.5, 0.15])))
    blur = {"soft": 0.65, "standard": 0.5, "sharp": 0.3}[kernel] * float(rng.uniform(0.8, 1.25))
    # noise: standard dose ~ 10-15 HU at 5 mm, low dose higher; thinner slices noisier; obese noisier
    dose_noise = float(rng.lognormal(np.log(11.0), 0.35))
    noise = dose_noise * np.sqrt(5.0 / thk) * {"soft": 0.8, "standard": 1.0, "sharp": 1.8}[kernel]
    noise *= float(np.clip(1.0 + (bmi - 25.0) * 0.03, 0.75, 1.8))
    noise = float(pick("noise_sd_hu", float(np.clip(noise, 4.0, 120.0))))
    phase = str(pick("contrast_phase", rng.choice(CONTRAST_PHASES, p=[0.4, 0.15, 0.45])))
    pix = float(pick("pixel_spacing_mm", rng.uniform(0.6, 1.0)))
    manufacturer = str(rng.choice(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA", "UIH"]))
    kernel_names = {
        "SIEMENS": {"soft": "B30f", "standard": "B40f", "sharp": "B70f"},
        "GE MEDICAL SYSTEMS": {"soft": "SOFT", "standard": "STANDARD", "sharp": "BONE"},
        "Philips": {"soft": "B", "standard": "C", "sharp": "D"},
        "TOSHIBA": {"soft": "FC08", "standard": "FC18", "sharp": "FC30"},
        "UIH": {"soft": "B_SOFT_B", "standard": "B_SOFT_C", "sharp": "B_SHARP_C"},
    }
    return ScannerParams(
        kvp=kvp,
        pixel_spacing_mm=pix,
        slice_thickness_mm=thk,
        slice_spacing_mm=float(spacing),
        kernel=kernel,
        blur_sigma_mm=float(pick("blur_sigma_mm", blur)),
        noise_sd_hu=noise,
        contrast_phase=phase,
        matrix=int(pick("matrix", 512)),
        fov_center_offset_mm=(float(rng.normal(0, 8)), float(rng.normal(0, 10))),
        roll_deg=float(pick("roll_deg", rng.normal(0.0, 2.5))),
        hu_offset=float(pick("hu_offset", rng.normal(0.0, 3.0))),
        hu_gain=float(pick("hu_gain", rng.normal(1.0, 0.015))),
        circle_padding=pick("circle_padding", int(rng.choice([-2048, -3024, -1024])) if rng.random() < 0.35 else None),
        table=bool(pick("table", rng.random() < 0.9)),
        manufacturer=manufacturer,
        kernel_name=kernel_names[manufacturer][kernel],
        z_offset_mm=float(pick("z_offset_mm", rng.uniform(-900.0, 100.0))),
    )
