"""Analytic anatomy of one subject in anatomy millimetres: the spine chain and the torso profile.

The spine is built as a *chain* from the sacrum upwards: each vertebral body and disc is a wedge
with an anterior and a posterior height, and the local frame turns by the wedge angle after each
element. Physiological curvature therefore comes from where anatomy puts it (lumbar lordosis mostly
from the discs, thoracic kyphosis from vertebral and disc wedging), a wedge fracture kinks the spine
as it does in patients, and scoliosis comes from lateral wedging. Frames are 3x3 matrices whose
columns are the local axes u (patient left), v (posterior), w (cranial) in anatomy coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from osteoscan.labels import VertebraLevel
from osteoscan.phantom.params import SubjectParams, VertebraSpec
from osteoscan.phantom.raster import rotation

#: Share of the posterior body wall in the AP half-depth: the posterior wall sits at ``v = PF * b``
#: (it is flattened/concave towards the canal), the anterior wall at ``v = -b``.
POSTERIOR_FLATTENING = 0.72
#: Normal endplate concavity at the centre, per endplate, as a fraction of the body height (about
#: 0.5 mm in the lumbar spine; keeps the normal middle/anterior height ratio near 0.95).
ENDPLATE_CONCAVITY_FRACTION = 0.022
#: Positions (fraction of the AP extent from the anterior wall) where heights are measured
#: (TotalSegmentator convention, REFERENCE.md).
HEIGHT_POSITIONS = {"anterior": 0.15, "middle": 0.5, "posterior": 0.85}


@dataclass(frozen=True)
class VertebraGeom:
    """A placed vertebra: frame, centre, shape parameters of the body and the posterior elements."""

    spec: VertebraSpec
    center: np.ndarray  # body centre, anatomy mm
    frame: np.ndarray  # 3x3, columns u, v, w
    a: float  # LR half-width of the body
    b: float  # anterior half-depth (v = -b is the anterior wall)
    ha: float  # linear height profile value at t = 0.15 (before concavity), mm
    hp: float  # ... at t = 0.85
    concavity: float  # normal endplate concavity, mm
    biconcave: float  # extra central depression of the two endplates together, mm
    expected_height: float  # Genant reference height (unfractured), mm

    @property
    def depth(self) -> float:
        return self.b * (1.0 + POSTERIOR_FLATTENING)

    def height_profile(self, u: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Body height (mm) at local left-right position u and AP fraction t (0 anterior, 1 posterior)."""
        h = self.ha + (self.hp - self.ha) * (t - 0.15) / 0.7
        r2 = (u / self.a) ** 2 + ((t - 0.5) / 0.5) ** 2
        h = h - 2.0 * self.concavity * np.clip(1.0 - r2, 0.0, None)
        h = h - self.biconcave * np.clip(1.0 - r2 / 0.49, 0.0, None)
        return h

    def heights(self) -> dict[str, float]:
        return {k: float(self.height_profile(np.float64(0.0), np.float64(t))) for k, t in HEIGHT_POSITIONS.items()}

    @property
    def level(self) -> VertebraLevel:
        return self.spec.level


@dataclass(frozen=True)
class DiscGeom:
    upper: VertebraLevel  # the level above the disc (disc label = DISC_OFFSET + upper)
    lower: VertebraLevel  # the level below (SACRUM for the lumbosacral disc)
    center: np.ndarray
    frame: np.ndarray
    a: float
    b: float
    ha: float  # anterior height at t = 0.15 (endplate to endplate, before concavities)
    hp: float
    concavity_mm: float  # the adjacent endplates' central concavities (and fracture depressions) together

    @property
    def heights(self) -> dict[str, float]:
        """Disc heights between the endplates, including the normal endplate concavities at the centre."""
        mid = 0.5 * (self.ha + self.hp) + self.concavity_mm
        return {"anterior": float(self.ha), "middle": float(mid), "posterior": float(self.hp)}


@dataclass(frozen=True)
class SacrumGeom:
    centers: tuple[np.ndarray, ...]  # S1..S5 segment centres
    frames: tuple[np.ndarray, ...]
    heights: tuple[float, ...]
    widths: tuple[float, ...]
    depths: tuple[float, ...]
    top_center: np.ndarray
    top_frame: np.ndarray


@dataclass(frozen=True)
class Spine:
    vertebrae: tuple[VertebraGeom, ...]  # cranial -> caudal
    discs: tuple[DiscGeom, ...]
    sacrum: SacrumGeom

    def by_level(self, level: VertebraLevel) -> VertebraGeom:
        for v in self.vertebrae:
            if v.level == level:
                return v
        raise KeyError(level)

    def centerline(self) -> tuple[np.ndarray, np.ndarray]:
        """(z, x, y) samples of the body-centre line, sorted by z, for interpolation."""
        pts = [self.sacrum.centers[0]] + [d.center for d in self.discs] + [v.center for v in self.vertebrae]
        p = np.array(pts)
        order = np.argsort(p[:, 2])
        return p[order, 2], p[order]

    def center_at(self, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated body-centre (x, y) at height z (clamped at the ends)."""
        zs, p = self.centerline()
        return np.interp(z, zs, p[:, 0]), np.interp(z, zs, p[:, 1])


def _wedge(depth: float, angle_deg: float) -> float:
    """Height difference posterior - anterior (measured 0.7 depth apart) for a wedge angle."""
    return 0.7 * depth * np.tan(np.deg2rad(angle_deg))


def build_spine(s: SubjectParams) -> Spine:
    """Place every vertebra, disc and the sacrum (see module docstring)."""
    verts = list(s.vertebrae)  # cranial -> caudal
    n = len(verts)
    lumbar = [i for i, v in enumerate(verts) if v.level.region == "lumbar"]
    lowest = n - 1
    # --- sagittal angles per element, walking upwards (index 0 = disc above the sacrum) ----------
    # lordosis: 75 % in the lumbar discs (weighted caudally), 25 % as reverse wedging of the lowest 3 bodies
    lum_disc_w = np.array([0.45, 0.25, 0.15, 0.1, 0.05, 0.03])[: len(lumbar)]
    lum_disc_w = lum_disc_w / lum_disc_w.sum()
    # kyphosis: vertebral share given by spec.physiological_wedge_deg, the rest in thoracic discs
    thor = [i for i, v in enumerate(verts) if v.level.region == "thoracic"]
    vert_kyph = sum(verts[i].physiological_wedge_deg for i in thor)
    disc_kyph = max(s.kyphosis_deg - vert_kyph, 0.0)
    # scoliosis: lateral wedging with a Gaussian profile around the apex (index from the bottom)
    elem_pos = np.arange(n)[::-1]  # position of vertebra i counted from the bottom
    lat = np.exp(-0.5 * ((elem_pos - s.scoliosis_apex) / 2.5) ** 2)
    lat = lat / lat.sum() * s.scoliosis_deg if lat.sum() > 0 else lat

    geoms: dict[int, VertebraGeom] = {}
    discs: list[DiscGeom] = []
    frame = rotation("x", s.sacral_slope_deg)
    anchor = np.zeros(3)
    sacrum_top_frame = frame.copy()
    for step, i in enumerate(range(lowest, -1, -1)):
        spec = verts[i]
        below_spec = verts[i + 1] if i + 1 < n else None
        # ---- disc below this vertebra
        disc_depth = spec.depth_mm if below_spec is None else 0.5 * (spec.depth_mm + below_spec.depth_mm)
        disc_h = spec.disc_below_mm * (1.0 - spec.disc_degeneration)
        if below_spec is None and s.transitional == "sacralised_L5":
            disc_h = 2.0
        disc_angle = 0.0
        if i in lumbar:  # lordotic discs, the lumbosacral one first
            disc_angle = -0.75 * s.lordosis_deg * lum_disc_w[len(lumbar) - 1 - lumbar.index(i)]
        elif i in thor and spec.level != VertebraLevel.T12:  # T1/T2 .. T11/T12: kyphotic discs
            disc_angle = disc_kyph / max(len(thor) - 1, 1)
        dpost_minus_ant = _wedge(disc_depth, disc_angle)
        d_ha = max(disc_h - dpost_minus_ant / 2.0, 1.0)
        d_hp = max(disc_h + dpost_minus_ant / 2.0, 1.0)
        d_angle = np.rad2deg(np.arctan((d_hp - d_ha) / (0.7 * disc_depth)))
        mid = frame @ rotation("x", d_angle / 2.0) @ rotation("y", lat[i] * 0.25)
        d_mean = 0.5 * (d_ha + d_hp)
        d_center = anchor + mid[:, 2] * d_mean / 2.0
        lower_level = below_spec.level if below_spec is not None else VertebraLevel.SACRUM
        w_disc = spec.width_mm if below_spec is None else 0.5 * (spec.width_mm + below_spec.width_mm)
        conc_pair = ENDPLATE_CONCAVITY_FRACTION * (spec.height_mm + (below_spec.height_mm if below_spec else 0.0))
        discs.append(DiscGeom(spec.level, lower_level, d_center, mid, w_disc / 2.0 * 1.02,
                              disc_depth / (1.0 + POSTERIOR_FLATTENING) * 1.02, d_ha, d_hp, conc_pair))
        anchor = anchor + mid[:, 2] * d_mean
        frame = frame @ rotation("x", d_angle) @ rotation("y", lat[i] * 0.5)
        # ---- the vertebral body
        wedge = spec.physiological_wedge_deg
        if i in lumbar and lumbar.index(i) >= len(lumbar) - 3:
            wedge -= 0.25 * s.lordosis_deg / 3.0
        diff = _wedge(spec.depth_mm, wedge)
        ha0 = spec.height_mm - diff / 2.0
        hp0 = spec.height_mm + diff / 2.0
        b = spec.depth_mm / (1.0 + POSTERIOR_FLATTENING)
        a = spec.width_mm / 2.0
        conc = ENDPLATE_CONCAVITY_FRACTION * spec.height_mm
        geo = VertebraGeom(spec, np.zeros(3), np.eye(3), a, b, ha0, hp0, conc, 0.0, 0.0)
        h_nofrac = geo.heights()
        expected = max(h_nofrac.values())
        ha, hp, bic = ha0, hp0, 0.0
        if spec.fracture_grade:
            target = expected * (1.0 - spec.fracture_loss)
            if spec.fracture_shape == "wedge":
                # anterior height to target, posterior kept
                ha = ha0 - (h_nofrac["anterior"] - target)
            elif spec.fracture_shape == "biconcave":
                bic = h_nofrac["middle"] - target
            else:  # crush: the whole body shortened so that its lowest height is the target
                scale = target / min(h_nofrac.values())
                ha, hp = ha0 * scale, hp0 * scale
                conc = conc * scale
        geo_angle = np.rad2deg(np.arctan((hp - ha) / (0.7 * spec.depth_mm)))
        mid = frame @ rotation("x", geo_angle / 2.0) @ rotation("y", lat[i] * 0.5)
        h_center = ha + (hp - ha) * (0.5 - 0.15) / 0.7  # linear height at t = 0.5
        center = anchor + mid[:, 2] * h_center / 2.0
        geoms[i] = VertebraGeom(spec, center, mid, a, b, ha, hp, conc, bic, expected)
        anchor = anchor + mid[:, 2] * h_center
        frame = frame @ rotation("x", geo_angle) @ rotation("y", lat[i] * 0.5)
    vertebrae = tuple(geoms[i] for i in range(n))
    # a biconcave fracture depresses both endplates by half its central loss; the discs fill the
    # depressions, so their central height grows by that much
    bic = {v.level: v.biconcave / 2.0 for v in vertebrae}
    discs = [replace(d, concavity_mm=d.concavity_mm + bic.get(d.upper, 0.0) + bic.get(d.lower, 0.0)) for d in discs]
    sacrum = _build_sacrum(s, verts[-1], sacrum_top_frame)
    spine = Spine(vertebrae, tuple(discs[::-1]), sacrum)
    return _align_upright(spine, s)


def _build_sacrum(s: SubjectParams, lowest: VertebraSpec, top_frame: np.ndarray) -> SacrumGeom:
    """S1..S5 as shrinking segments going down and back from the S1 endplate, curving forward."""
    heights = np.array([26.0, 22.0, 18.0, 14.0, 11.0]) * s.size_factor
    widths = np.array([lowest.width_mm * 1.0, 38.0, 30.0, 24.0, 18.0]) * np.array([1, s.size_factor, s.size_factor, s.size_factor, s.size_factor])
    depths = np.array([lowest.depth_mm * 0.95, 26.0, 20.0, 15.0, 11.0]) * np.array([1, s.size_factor, s.size_factor, s.size_factor, s.size_factor])
    frame = top_frame.copy()
    anchor = np.zeros(3)
    centers, frames = [], []
    for k in range(5):
        mid = frame @ rotation("x", -6.0)
        centers.append(anchor - mid[:, 2] * heights[k] / 2.0)
        frames.append(mid)
        anchor = anchor - mid[:, 2] * heights[k]
        frame = frame @ rotation("x", -12.0)
    return SacrumGeom(tuple(centers), tuple(frames), tuple(heights), tuple(widths), tuple(depths),
                      np.zeros(3), top_frame)


def _transform_spine(spine: Spine, R: np.ndarray, t: np.ndarray) -> Spine:
    verts = tuple(replace(v, center=R @ v.center + t, frame=R @ v.frame) for v in spine.vertebrae)
    discs = tuple(replace(d, center=R @ d.center + t, frame=R @ d.frame) for d in spine.discs)
    sc = spine.sacrum
    sac = replace(
        sc,
        centers=tuple(R @ c + t for c in sc.centers),
        frames=tuple(R @ f for f in sc.frames),
        top_center=R @ sc.top_center + t,
        top_frame=R @ sc.top_frame,
    )
    return Spine(verts, discs, sac)


def _align_upright(spine: Spine, s: SubjectParams) -> Spine:
    """Rotate the whole chain about the S1 endplate centre so that the S1 -> T4 line is vertical
    (supine on the table) and centred at x = 0."""
    top = next((v for v in spine.vertebrae if v.level == VertebraLevel.T4), spine.vertebrae[0])
    d = top.center - spine.sacrum.top_center
    # sagittal: rotate about x so that d has no y component
    ang_x = np.rad2deg(np.arctan2(d[1], d[2]))
    R1 = rotation("x", ang_x)
    d1 = R1 @ d
    ang_y = -np.rad2deg(np.arctan2(d1[0], d1[2]))
    R = rotation("y", ang_y) @ R1
    return _transform_spine(spine, R, np.zeros(3))


# ---------------------------------------------------------------------------------------------------
# torso profile


@dataclass(frozen=True)
class TorsoProfile:
    """Fat-free torso cross-section as a function of z (sampled, interpolated linearly).

    At height z the fat-free outline is a two-part super-ellipse centred at (0, yc): half-width
    ``a``, anterior half-depth ``b_ant`` (exponent 2.0) and posterior half-depth ``b_post``
    (exponent ``n_post``, flatter back). SAT of thickness ``sat`` (angular profile applied by the
    renderer) lies outside it.
    """

    z: np.ndarray
    a: np.ndarray
    b_ant: np.ndarray
    b_post: np.ndarray
    yc: np.ndarray
    sat: np.ndarray
    wall: np.ndarray  # muscle wall thickness (abdominal wall / chest wall)
    landmarks: dict[str, float]

    def at(self, z: np.ndarray) -> dict[str, np.ndarray]:
        return {
            k: np.interp(z, self.z, getattr(self, k)).astype(np.float32)
            for k in ("a", "b_ant", "b_post", "yc", "sat", "wall")
        }


def landmarks(spine: Spine) -> dict[str, float]:
    """Anatomy-frame z of landmarks used for coverage, organs and the torso profile."""
    z = {v.level.name: float(v.center[2]) for v in spine.vertebrae}
    top = {v.level.name: float(v.center[2] + v.hp / 2) for v in spine.vertebrae}
    lm = dict(z)
    lm["S1"] = float(spine.sacrum.centers[0][2])
    lm["S1_top"] = float(spine.sacrum.top_center[2])
    lm["T1_top"] = top["T1"]
    lm["lung_apex"] = top["T1"] + 25.0
    lm["symphysis"] = lm["S1_top"] - 125.0
    lm["femoral_head"] = lm["S1_top"] - 95.0
    lm["iliac_crest"] = 0.5 * (z["L4"] + z[_lowest_lumbar(spine)]) + 5.0
    lm["diaphragm_dome_r"] = 0.5 * (z["T9"] + z["T10"])
    lm["diaphragm_dome_l"] = z["T10"]
    return lm


def _lowest_lumbar(spine: Spine) -> str:
    return [v.level.name for v in spine.vertebrae if v.level.region == "lumbar"][-1]


def build_torso(s: SubjectParams, spine: Spine) -> TorsoProfile:
    """Torso dimensions along z from landmark rows, scaled by size, sex and habitus."""
    lm = landmarks(spine)
    sz = s.size_factor
    fem = s.sex == "F"
    hip_w = 1.08 if fem else 1.0
    chest_w = 0.93 if fem else 1.0
    mf = 0.85 + 0.15 * s.muscle_factor
    belly = 38.0 * s.vat_factor * (0.7 if fem else 1.0)
    #          z,                    a(LR)               b_ant             b_post  sat_scale belly wall
    rows = [
        (lm["symphysis"] - 60.0, 150 * hip_w, 80, 85, 1.15, 0.0, 1.0),
        (lm["femoral_head"], 155 * hip_w, 88, 88, 1.15, 0.15, 1.0),
        (lm["S1_top"] - 30, 150 * hip_w, 92, 80, 1.1, 0.5, 1.0),
        (lm["iliac_crest"], 142 * hip_w, 96, 74, 1.05, 0.9, 1.0),
        (lm["L3"], 136, 99, 72, 1.0, 1.0, 1.0),
        (lm["L1"], 140, 102, 74, 0.95, 0.8, 1.0),
        (lm["T11"], 145 * chest_w, 106, 76, 0.8, 0.35, 1.0),
        (lm["T8"], 150 * chest_w, 106, 78, 0.65, 0.0, 1.0),
        (lm["T5"], 150 * chest_w, 96, 76, 0.6, 0.0, 1.0),
        (lm["T2"], 135 * chest_w, 80, 70, 0.55, 0.0, 1.0),
        (lm["T1_top"] + 25.0, 98, 58, 55, 0.5, 0.0, 0.8),
        (lm["T1_top"] + 70.0, 55, 45, 45, 0.5, 0.0, 0.6),
    ]
    r = np.array(rows, dtype=np.float64)
    z = r[:, 0]
    order = np.argsort(z)
    r = r[order]
    z = r[:, 0]
    a = r[:, 1] * sz * mf
    b_ant = r[:, 2] * sz * mf + r[:, 5] * belly
    b_post = r[:, 3] * sz * mf
    sat = s.sat_mm * r[:, 4]
    if fem:
        sat = sat * np.where(z < lm["iliac_crest"], 1.2, 1.0)
    wall = np.where(z < lm["T11"], 12.0, 16.0) * s.muscle_factor * r[:, 6]
    # place the back: fat-free posterior surface behind the vertebral body centre by the spine's
    # posterior elements + back muscles (lumbar deeper), then the centre
    _, cy = spine.center_at(z)
    back = np.interp(z, [lm["S1_top"] - 60, lm["L3"], lm["T12"], lm["T6"], lm["T1_top"] + 60],
                     [96.0, 88.0, 80.0, 72.0, 60.0]) * sz * (0.8 + 0.2 * s.muscle_factor)
    yc = cy + back - b_post
    return TorsoProfile(z, a, b_ant, b_post, yc, sat, wall, lm)


def coverage_range(s: SubjectParams, rng: np.random.Generator) -> tuple[float, float]:
    """Anatomy-frame z range [low, high] (mm) covered by the preset, with random margins."""
    spine = build_spine(s)
    lm = landmarks(spine)
    m = lambda lo, hi: float(rng.uniform(lo, hi))
    if s.preset == "cap":
        return lm["symphysis"] - m(10, 50), lm["lung_apex"] + m(0, 30)
    if s.preset == "chest":
        return lm["L2"] - m(-20, 30), lm["lung_apex"] + m(0, 30)
    if s.preset == "abdomen":
        return lm["symphysis"] - m(10, 40), lm["diaphragm_dome_r"] + m(10, 40)
    if s.preset == "lumbar":
        return lm["S1_top"] - m(30, 60), lm["T11"] + m(0, 20)
    if s.preset == "l3_slice":
        return lm["L3"], lm["L3"]
    raise ValueError(f"unknown preset {s.preset!r}")
