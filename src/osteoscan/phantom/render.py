"""Rasterise a subject's analytic anatomy on a grid: a label map and a noise-free HU map.

Painting order is back to front (later paint wins): table, body layers and muscles, thoracic and
abdominal organs, vessels, bowel, then the skeleton (discs, vertebral bodies, posterior elements,
ribs, sternum, pelvis, sacrum). Each structure is evaluated only inside its bounding box.
HU values come from :mod:`osteoscan.physics` for the scan's kV and contrast phase, with this
subject's tissue offsets; bone gets a cortical shell with analytic partial volume and a trabecular
texture whose mean is exactly the BMD's HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteoscan.labels import Anatomy, VertebraLevel, body_label, disc_label, posterior_label
from osteoscan.phantom.anatomy import (
    POSTERIOR_FLATTENING,
    Spine,
    TorsoProfile,
    VertebraGeom,
    build_spine,
    build_torso,
)
from osteoscan.phantom.fields import mask_points, wave_field, white_texture
from osteoscan.phantom.params import SubjectParams
from osteoscan.phantom.raster import Grid, capsule_chain, ellipsoid_depth, local_coords, rotation
from osteoscan.physics import TissueClass as T
from osteoscan.physics import contrast_enhancement_hu, tissue_hu, trabecular_hu

SKIN_MM = 2.0
CORTEX_BODY_MM = 1.0  # vertebral body cortical shell (issue #3: ~1 mm)
CORTEX_ENDPLATE_MM = 0.7
CORTEX_OTHER_MM = 1.0  # posterior elements, ribs, pelvis
VERTEBRAL_CORTEX_FACTOR = 0.8  # vertebral shell HU relative to solid compact bone
LABEL_LUT_SIZE = 512  # > every label value (DISC_OFFSET + levels)


@dataclass
class Canvas:
    grid: Grid
    labels: np.ndarray
    hu: np.ndarray

    @classmethod
    def empty(cls, grid: Grid) -> Canvas:
        return cls(grid, np.zeros(grid.shape, np.uint16), np.full(grid.shape, -1000.0, np.float32))

    def paint(self, sl: tuple[slice, slice, slice], mask: np.ndarray, label: int, value: float | np.ndarray) -> None:
        lab = self.labels[sl]
        mask = np.broadcast_to(mask, lab.shape)
        np.copyto(lab, np.uint16(label), where=mask)
        np.copyto(self.hu[sl], np.asarray(value, dtype=np.float32), where=mask)

    def allowed(self, sl: tuple[slice, slice, slice], labels: list[int]) -> np.ndarray:
        """Boolean mask of the voxels of ``sl`` whose current label is one of ``labels`` (LUT, fast)."""
        lut = np.zeros(LABEL_LUT_SIZE, bool)
        lut[np.asarray(labels, dtype=np.intp)] = True
        return lut[self.labels[sl]]


#: SD (HU) of the smooth per-tissue texture added on top of each label's mean HU (fat septa, organ
#: parenchyma, lung vessels): randomises what the models must ignore (SynthSeg spirit).
TEXTURE_SD_HU: dict[int, float] = {
    Anatomy.SAT: 9.0, Anatomy.VAT: 12.0, Anatomy.IMAT: 10.0, Anatomy.SKIN: 6.0,
    Anatomy.MUSCLE_RECTUS: 7.0, Anatomy.MUSCLE_OBLIQUES: 7.0, Anatomy.MUSCLE_ERECTOR: 7.0,
    Anatomy.MUSCLE_QUADRATUS: 7.0, Anatomy.MUSCLE_PSOAS: 7.0, Anatomy.MUSCLE_OTHER: 7.0,
    Anatomy.LUNG: 45.0, Anatomy.HEART: 5.0, Anatomy.LIVER: 6.0, Anatomy.SPLEEN: 5.0, Anatomy.KIDNEY: 8.0,
    Anatomy.STOMACH: 10.0, Anatomy.BOWEL: 14.0, Anatomy.BLADDER: 3.0, Anatomy.OTHER_SOFT_TISSUE: 8.0,
}


def texture_lut(scale: float = 1.0) -> np.ndarray:
    """Per-label texture SD as a lookup table indexed by label value."""
    lut = np.zeros(LABEL_LUT_SIZE, np.float32)
    for lab, sd in TEXTURE_SD_HU.items():
        lut[int(lab)] = sd * scale
    return lut


def hu_table(s: SubjectParams) -> dict[str, float]:
    """Mean HU per tissue for this subject and scan (kV, contrast phase, bolus, subject offsets)."""
    kvp, ph, cs, j = s.scanner.kvp, s.scanner.contrast_phase, s.contrast_scale, s.tissue_hu_jitter

    def t(cls: T, jitter: str | None = None, enh: str | T | None = None) -> float:
        base = tissue_hu(cls, kvp) + (j.get(jitter, 0.0) if jitter else 0.0)
        return base + cs * contrast_enhancement_hu(enh if enh is not None else cls, ph, kvp)

    fat = t(T.FAT, "fat")
    muscle = t(T.MUSCLE, "muscle") - 25.0 * s.myosteatosis  # fatty infiltration lowers muscle HU
    return {
        "air": -1000.0,
        "lung": t(T.LUNG, "lung"),
        "fat": fat,
        "muscle": muscle,
        "skin": t(T.SKIN),
        "blood_art": t(T.BLOOD, "blood", T.BLOOD),
        "blood_ven": t(T.BLOOD, "blood", "venous_blood"),
        "myocardium": t(T.MYOCARDIUM, "blood"),
        "liver": t(T.LIVER, "liver"),
        "spleen": t(T.SPLEEN, "spleen"),
        "kidney": t(T.KIDNEY, "kidney"),
        "bowel_wall": t(T.BOWEL_WALL, "bowel"),
        "fluid": t(T.FLUID),
        "feces": t(T.FECES),
        "soft": t(T.SOFT_TISSUE),
        "csf": tissue_hu(T.FLUID, kvp) + 3.0,
        "disc": t(T.DISC, "disc"),
        "cartilage": t(T.CARTILAGE) + 3.0 * max(s.age_years - 40.0, 0.0),
        "cortical": t(T.CORTICAL_BONE, "cortical"),
        "red_marrow": t(T.RED_MARROW),
        "table": t(T.TABLE),
        "pad": t(T.PAD),
    }


def shell_fraction(depth: np.ndarray, shell_mm: float, vox_mm: float) -> np.ndarray:
    """Fraction of the inside part of a voxel (centre at ``depth`` mm below the surface) that lies
    within the outer ``shell_mm`` of the solid: an analytic partial volume for thin cortices."""
    half = 0.5 * vox_mm
    lo = np.maximum(depth - half, 0.0)
    hi = depth + half
    inside = np.maximum(hi - lo, 1e-3)
    return np.clip((np.minimum(hi, shell_mm) - lo) / inside, 0.0, 1.0).astype(np.float32)


class Renderer:
    """Paints one subject on one grid (see module docstring)."""

    def __init__(self, s: SubjectParams, grid: Grid, seed_stream: int = 0):
        self.s = s
        self.grid = grid
        self.spine: Spine = build_spine(s)
        self.torso: TorsoProfile = build_torso(s, self.spine)
        self.lm = self.torso.landmarks
        self.hu = hu_table(s)
        self.rng = np.random.default_rng([int(s.seed), 0x7E47, int(seed_stream)])
        self.c = Canvas.empty(grid)
        # supine on a flat pad: the back is flattened where it rests on it. The pad top sits at the
        # 90th percentile of the free posterior skin line over the trunk (buttocks and upper back touch,
        # the lumbar lordosis leaves a gap).
        zs = np.linspace(self.lm["femoral_head"], self.lm["T2"], 60)
        pz = self.torso.at(zs)
        self.table_y = float(np.quantile(pz["yc"] + pz["b_post"] + pz["sat"] * 0.7 + SKIN_MM, 0.9))
        self.vox = float(min(grid.spacing[1], grid.spacing[2]))
        kvp = s.scanner.kvp
        self.cortical = self.hu["cortical"]
        self.kvp = kvp

    # ------------------------------------------------------------------------------------------------
    def render(self) -> Canvas:
        self._table()
        self._torso()
        self._breasts()
        self._thorax_organs()
        self._abdominal_organs()
        self._vessels()
        self._bowel()
        self._imat()
        self._canal()
        self._discs()
        for v in self.spine.vertebrae:
            self._vertebra(v)
        self._sacrum()
        self._pelvis()
        self._ribs()
        self._sternum()
        return self.c

    # ------------------------------------------------------------------------------------------------
    def _spine_xy(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.spine.center_at(z)

    def _spine_halfdepth(self, z: np.ndarray) -> np.ndarray:
        zs = np.array([v.center[2] for v in self.spine.vertebrae])[::-1]
        bs = np.array([v.b for v in self.spine.vertebrae])[::-1]
        return np.interp(z, zs, bs)

    def _table(self) -> None:
        if not self.s.scanner.table:
            return
        g = self.grid
        x, y = g.anatomy_xy()
        top = self.table_y
        pad = (y >= top) & (y < top + 20.0) & (np.abs(x) < 230.0)
        curve = 0.0009 * x**2
        ytab = top + 24.0 - curve
        shell1 = (y >= ytab) & (y < ytab + 2.5) & (np.abs(x) < 240.0)
        core = (y >= ytab + 2.5) & (y < ytab + 30.0) & (np.abs(x) < 225.0)
        shell2 = (y >= ytab + 30.0) & (y < ytab + 33.0) & (np.abs(x) < 240.0)
        full = (slice(None), slice(None), slice(None))
        self.c.paint(full, pad[None], Anatomy.TABLE, self.hu["pad"])
        self.c.paint(full, core[None], Anatomy.TABLE, -880.0)
        self.c.paint(full, (shell1 | shell2)[None], Anatomy.TABLE, self.hu["table"])

    # ------------------------------------------------------------------------------------------------
    def _torso(self) -> None:
        """Skin, SAT, the fat-free trunk (VAT by default), lungs, diaphragm, muscle walls and the
        erector spinae, slab by slab (slabs small enough to stay in cache), painted in one pass."""
        g, s, lm, hu = self.grid, self.s, self.lm, self.hu
        nz = g.shape[0]
        mf = s.muscle_factor
        sz = s.size_factor
        lut = np.zeros(64, np.float32)
        for lab, key in ((Anatomy.SKIN, "skin"), (Anatomy.SAT, "fat"), (Anatomy.VAT, "fat"), (Anatomy.IMAT, "fat"),
                         (Anatomy.LUNG, "lung"),
                         (Anatomy.MUSCLE_OTHER, "muscle"), (Anatomy.MUSCLE_RECTUS, "muscle"),
                         (Anatomy.MUSCLE_OBLIQUES, "muscle"), (Anatomy.MUSCLE_ERECTOR, "muscle"),
                         (Anatomy.OTHER_SOFT_TISSUE, "soft")):
            lut[int(lab)] = hu[key]
        dome_hi = max(lm["diaphragm_dome_r"], lm["diaphragm_dome_l"]) + s.organ_jitter["diaphragm_dz"] + 2.0
        dome_lo = dome_hi - 110.0 * sz
        ty = np.float32(self.table_y)
        f32 = np.float32
        zprof = self.torso.z
        chunk = max(1, int(300_000 // max(g.shape[1] * g.shape[2] // 2, 1)))
        for k0 in range(0, nz, chunk):
            k1 = min(nz, k0 + chunk)
            z = g.z[k0:k1]
            if z.max() < zprof[0] - 30 or z.min() > zprof[-1] + 30:
                continue
            p = self.torso.at(z)
            ext = float(np.max(p["a"] + p["sat"] * 1.8 + 10))
            y_lo = float(np.min(p["yc"] - p["b_ant"] - p["sat"] * 1.8 - 10))
            y_hi = float(min(np.max(p["yc"] + p["b_post"] + p["sat"] * 1.5 + 10), self.table_y + 1.0))
            box = g.box(np.array([-ext, y_lo, z.min()]), np.array([ext, y_hi, z.max()]))
            if box is None:
                continue
            sl = (slice(k0, k1), box[1], box[2])
            X, Y = g.anatomy_xy(box[1], box[2])
            X, Y = X[None], Y[None]
            Z = z.astype(np.float32)[:, None, None]
            col = lambda v: np.asarray(v, np.float32)[:, None, None]
            yc = col(p["yc"])
            dy = Y - yc
            post = dy > 0
            inv_by = np.where(post, col(1.0 / p["b_post"]), col(1.0 / p["b_ant"]))
            q = X * col(1.0 / p["a"])
            q *= q
            r = dy * inv_by
            r *= r
            box_term = np.minimum(q, f32(1.0)) * np.minimum(r, f32(1.0))
            box_term *= np.where(post, f32(0.45), f32(0.1))
            rho2 = q + r
            rho2 -= box_term
            np.maximum(rho2, f32(1e-6), out=rho2)
            pr = np.sqrt(X * X + dy * dy)
            pr += f32(1e-3)
            d_out = pr * (f32(1.0) - f32(1.0) / np.sqrt(rho2))  # radial distance outside the fat-free outline
            cy = dy / pr
            cx2 = X * X / (pr * pr)
            sat_t = col(p["sat"]) * (f32(1.0) + f32(0.35) * cx2 + f32(0.3) * np.maximum(-cy, f32(0)) - f32(0.3) * np.maximum(cy, f32(0)))
            L = np.zeros(d_out.shape, np.uint16)
            body = (d_out <= sat_t + f32(SKIN_MM)) & (Y <= ty)
            np.copyto(L, np.uint16(Anatomy.SKIN), where=body)
            np.copyto(L, np.uint16(Anatomy.SAT), where=body & (d_out <= sat_t) & (Y <= ty - f32(SKIN_MM)))
            inner = (d_out <= 0) & (Y <= ty - f32(SKIN_MM + 2.0))
            np.copyto(L, np.uint16(Anatomy.VAT), where=inner)
            depth = -d_out
            sx, sy = self._spine_xy(z)
            sx, sy = col(sx), col(sy)
            sb = col(self._spine_halfdepth(z))
            wall = col(p["wall"])
            zmin, zmax = float(z.min()), float(z.max())
            if zmax > dome_lo and zmin < lm["lung_apex"]:
                # lungs above the diaphragm, inside the chest wall, beside the mediastinum; the
                # diaphragm height is evaluated only on the candidate voxels
                chest_wall = wall * (f32(1.0) + f32(0.6) * np.maximum(-cy, f32(0)) * (Z > lm["T6"]))
                cand = inner & (depth > wall) & (Y < sy + f32(3.2) * sb) & (Z < lm["lung_apex"])
                med_half = np.where(Z > lm["T4"], f32(18.0 * sz), f32(26.0 * sz))
                cand &= ~((np.abs(X - sx * f32(0.5) - f32(6.0)) < med_half) & (Y < sy + f32(0.3) * sb))
                # each apex is a dome centred about 55 mm from the midline
                apex_d = (np.abs(X) - f32(55.0 * sz)) / f32(40.0 * sz)
                cand &= Z < f32(lm["lung_apex"]) - f32(28.0) * apex_d * apex_d
                kk, jj, ii = np.nonzero(cand)
                if kk.size:
                    xc, yv, zc = X[0, jj, ii], Y[0, jj, ii], Z[kk, 0, 0]
                    zd = self._diaphragm_z(xc, yv, yc[kk, 0, 0])
                    dep = depth[kk, jj, ii]
                    lung = (zc > zd) & (dep > chest_wall[kk, jj, ii] + f32(2.0))
                    L[kk[lung], jj[lung], ii[lung]] = Anatomy.LUNG
                    diaph = (zc <= zd) & (zc > zd - f32(5.0)) & (yv < sy[kk, 0, 0] + f32(2.5) * sb[kk, 0, 0]) & (zc < lm["T8"])
                    L[kk[diaph], jj[diaph], ii[diaph]] = Anatomy.MUSCLE_OTHER
            # muscle walls: chest wall above the costal margin, abdominal wall, gluteal in the pelvis
            z_cost = f32(lm["T9"]) + f32(lm["L2"] - lm["T9"]) * np.clip(f32(1.0) + cy, 0.0, 1.0)
            # the wall is thicker postero-laterally (latissimus, posterior obliques, serratus)
            in_wall = inner & (depth <= wall * (f32(1.0) + f32(0.5) * cx2 + f32(1.6) * np.maximum(cy, f32(0)) ** 2))
            chest = Z > z_cost
            np.copyto(L, np.uint16(Anatomy.MUSCLE_OTHER), where=in_wall & chest)
            rectus_w = f32(45.0 * sz)
            ax_ = np.abs(X)
            front = (cy < f32(-0.3)) & (ax_ < rectus_w)
            if zmax > lm["iliac_crest"] and zmin < lm["L2"]:
                abdo = in_wall & ~chest & (Z >= lm["iliac_crest"])
                np.copyto(L, np.uint16(Anatomy.MUSCLE_RECTUS), where=abdo & front & (ax_ > 3.0))
                obl = abdo & ~front & (cy <= 0.55) & (ax_ >= 3.0)
                np.copyto(L, np.uint16(Anatomy.MUSCLE_OBLIQUES), where=obl)
                # thin fat planes between external oblique, internal oblique and transversus (IMAT)
                wall_t = wall * (f32(1.0) + f32(0.5) * cx2 + f32(1.6) * np.maximum(cy, f32(0)) ** 2)
                rel = depth / wall_t
                plane_w = f32(0.5) / wall_t * f32(self.s.myosteatosis * 1.5 + 0.5)
                planes = (np.abs(rel - f32(0.38)) < plane_w) | (np.abs(rel - f32(0.7)) < plane_w)
                np.copyto(L, np.uint16(Anatomy.IMAT), where=obl & planes & (cx2 > f32(0.45)))
                np.copyto(L, np.uint16(Anatomy.MUSCLE_OTHER), where=abdo & (cy > 0.55))
                np.copyto(L, np.uint16(Anatomy.OTHER_SOFT_TISSUE), where=abdo & (ax_ < 3.0) & (cy < 0))
            if zmin < lm["iliac_crest"]:
                pelvis = inner & (Z < lm["iliac_crest"])
                glut = pelvis & (depth <= wall * (f32(1.2) + f32(2.5) * np.maximum(cy, f32(0)) * (Z < lm["S1_top"])))
                np.copyto(L, np.uint16(Anatomy.MUSCLE_OTHER), where=glut & ~front)
                np.copyto(L, np.uint16(Anatomy.MUSCLE_RECTUS), where=pelvis & (depth <= wall) & front)
            # back muscles: erector spinae behind the vertebral bodies beside the spinous processes
            er_w = col(np.interp(z, [lm["S1_top"] - 80, lm["L3"], lm["T12"], lm["T6"], lm["T1_top"]],
                                 [35.0, 58.0, 50.0, 42.0, 38.0]) * mf ** 0.5 * sz)
            # (rounded masses: the lateral border curves in towards the back surface); what is left of
            # the posterior compartment between the back muscles is intermuscular fat
            y0 = sy + f32(1.25) * sb
            back = inner & (Y > y0) & (Z > lm["S1_top"] - 60)
            dxs = np.abs(X - sx)
            y_back = yc + col(p["b_post"])
            tb = np.clip((Y - y0) / np.maximum(y_back - y0, f32(1.0)), 0.0, 1.0)
            er_lat = er_w * (f32(1.0) - f32(0.45) * tb * tb) * (f32(0.75) + f32(0.25) * np.minimum(tb * 4, f32(1.0)))
            np.copyto(L, np.uint16(Anatomy.IMAT), where=back & (L == Anatomy.VAT) & (dxs < er_w * f32(1.2)))
            np.copyto(L, np.uint16(Anatomy.MUSCLE_ERECTOR), where=back & (dxs < er_lat) & (dxs > 2.0))
            np.copyto(L, np.uint16(Anatomy.OTHER_SOFT_TISSUE), where=back & (dxs <= 2.0))
            paint = L > 0
            np.copyto(self.c.labels[sl], L, where=paint)
            np.copyto(self.c.hu[sl], lut[L], where=paint)

    def _diaphragm_z(self, X: np.ndarray, Y: np.ndarray, yc: np.ndarray) -> np.ndarray:
        lm, oj = self.lm, self.s.organ_jitter
        zr = lm["diaphragm_dome_r"] + oj["diaphragm_dz"]
        zl = lm["diaphragm_dome_l"] + oj["diaphragm_dz"]
        x0 = 65.0 * self.s.size_factor
        # domes over each hemithorax, falling towards the lateral and (deeper) posterior recesses
        r_r = ((X + x0) / 80.0) ** 2 + ((Y - yc + 10.0) / 110.0) ** 2
        r_l = ((X - x0) / 80.0) ** 2 + ((Y - yc + 10.0) / 110.0) ** 2
        fall = 40.0 * self.s.size_factor
        z_r = zr - fall * np.minimum(r_r, 3.0)
        z_l = zl - fall * np.minimum(r_l, 3.0)
        return np.maximum(z_r, z_l)

    # ------------------------------------------------------------------------------------------------
    def _ellipsoid(self, center, frame, semi, label, value, where=None) -> tuple | None:
        """Paint an oriented ellipsoid (restricted to labels in ``where`` if given); returns (sl, depth, mask)."""
        center = np.asarray(center, float)
        ext = np.abs(frame) @ np.asarray(semi, float)
        sl = self.grid.box(center - ext, center + ext)
        if sl is None:
            return None
        x, y, z = self.grid.coords(sl)
        d = ellipsoid_depth(x, y, z, center, frame, np.asarray(semi, float))
        m = d > 0
        if where is not None:
            m &= self.c.allowed(sl, where)
        self.c.paint(sl, m, label, value)
        return sl, d, m

    def _breasts(self) -> None:
        """Female breasts: skin-covered fatty ellipsoids with a glandular core on the anterior chest,
        larger with BMI (they widen the body outline of chest scans)."""
        s, lm, hu = self.s, self.lm, self.hu
        if s.sex != "F":
            return
        zc = 0.5 * (lm["T5"] + lm["T6"])
        p = self.torso.at(np.array([zc]))
        size = float(np.clip(0.55 + 0.035 * (s.bmi - 20.0), 0.45, 1.4)) * s.size_factor
        semi = np.array([52.0, 36.0, 46.0]) * size
        y_front = float(p["yc"][0] - p["b_ant"][0] - p["sat"][0] * 0.6)
        frame = rotation("x", 15.0)
        for side in (-1, 1):
            c = np.array([side * float(p["a"][0]) * 0.42, y_front + semi[1] * 0.45, zc - 10.0])
            self._ellipsoid(c, frame, semi, Anatomy.SAT, hu["fat"], where=[Anatomy.BACKGROUND, Anatomy.SKIN])
            self._ellipsoid(c, frame, semi + SKIN_MM, Anatomy.SKIN, hu["skin"], where=[Anatomy.BACKGROUND])
            self._ellipsoid(c + np.array([0.0, -5.0, 0.0]), frame, semi * 0.45, Anatomy.OTHER_SOFT_TISSUE,
                            hu["soft"] * 0.6 + hu["fat"] * 0.4, where=[Anatomy.SAT])

    def _thorax_organs(self) -> None:
        s, lm, hu, oj = self.s, self.lm, self.hu, self.s.organ_jitter
        sz = s.size_factor
        p = self.torso.at(np.array([lm["T8"]]))
        yc = float(p["yc"][0])
        hs = oj["heart_size"] * sz
        # the heart rests on the central tendon, just above the left dome
        semi_z = 50.0 * oj["heart_size"] * sz
        z_heart = lm["diaphragm_dome_l"] + oj["diaphragm_dz"] + 0.7 * semi_z
        center = np.array([18.0 * sz, yc - 0.25 * float(p["b_ant"][0]), z_heart])
        frame = rotation("z", -35.0 + oj["heart_rot"]) @ rotation("x", 25.0)
        where = [Anatomy.LUNG, Anatomy.VAT, Anatomy.OTHER_SOFT_TISSUE]
        semi = np.array([56.0, 42.0, 50.0]) * hs
        self._ellipsoid(center, frame, semi + 5.0, Anatomy.VAT, hu["fat"], where=where)  # pericardial fat
        self._ellipsoid(center, frame, semi, Anatomy.HEART, hu["myocardium"], where=[Anatomy.VAT])
        self._ellipsoid(center + frame @ np.array([0, 0, 4.0]), frame, semi - 10.0, Anatomy.HEART,
                        hu["blood_art"] if s.scanner.contrast_phase != "none" else hu["myocardium"] - 4.0,
                        where=[Anatomy.HEART])
        # trachea and main bronchi (airway: LUNG label), oesophagus
        tz_top = lm["T1_top"] + 80.0
        carina = lm["T5"]
        ty = float(self._spine_xy(np.array([lm["T3"]]))[1][0]) - self._spine_halfdepth(np.array([lm["T3"]]))[0] - 14.0
        pts = np.array([[0, ty - 8, tz_top], [0, ty, lm["T2"]], [2.0, ty + 4, carina]])
        self._tube(pts, np.array([9.5, 9.0, 8.5]) * sz, Anatomy.OTHER_SOFT_TISSUE, hu["soft"], where=None)
        self._tube(pts, np.array([7.5, 7.2, 6.8]) * sz, Anatomy.LUNG, -990.0, where=None)
        for side in (-1, 1):
            b = np.array([[2.0, ty + 4, carina], [side * 28.0 * sz, ty + 10, carina - 22.0],
                          [side * 50.0 * sz, ty + 16, carina - 35.0]])
            self._tube(b, np.array([6.0, 5.0, 3.5]) * sz, Anatomy.LUNG, -985.0, where=[Anatomy.LUNG, Anatomy.VAT, Anatomy.OTHER_SOFT_TISSUE])
        ey = ty + 14.0
        eso = np.array([[6.0, ey, tz_top], [8.0, ey + 2, lm["T6"]], [20.0, ey, lm["T10"]], [45.0, ey - 15, lm["T11"]]])
        self._tube(eso, np.array([7.0, 7.0, 7.0, 8.0]) * sz, Anatomy.OTHER_SOFT_TISSUE, hu["soft"],
                   where=[Anatomy.VAT, Anatomy.LUNG])

    def _tube(self, pts, radii, label, value, where=None) -> None:
        """Paint a tube along a polyline (restricted to labels in ``where`` if given)."""
        for sl, depth in capsule_chain(self.grid, pts, radii):
            m = depth > 0
            if where is not None:
                m &= self.c.allowed(sl, where)
            self.c.paint(sl, m, label, value)

    def _abdominal_organs(self) -> None:
        s, lm, hu, oj, g = self.s, self.lm, self.hu, self.s.organ_jitter, self.grid
        sz = s.size_factor
        soft = [Anatomy.VAT]
        # liver: under the right dome, above a sloping lower border, right of a left-lobe limit
        z_lo_box = lm["L3"] - 20
        z_hi_box = lm["diaphragm_dome_r"] + oj["diaphragm_dz"] + 5
        box = g.box(np.array([-200.0, -250.0, z_lo_box]), np.array([120.0, 250.0, z_hi_box]))
        if box is not None:
            # evaluated on the free (fat) voxels of the box only
            kk, jj, ii = np.nonzero(self.c.allowed(box, soft))
            x0, y0 = g.anatomy_xy(box[1], box[2])
            x, y = x0[jj, ii], y0[jj, ii]
            zz = g.z[box[0]].astype(np.float32)
            z = zz[kk]
            p = self.torso.at(zz)
            yc = p["yc"][kk]
            sy = self._spine_xy(zz)[1].astype(np.float32)[kk]
            ls = oj["liver_size"]
            # lower border: lowest at the right lobe's tip, rising to the left and curving up laterally
            z_low = (lm["L2"] + 10.0 + (x + 90.0 * sz) * 0.45 / ls + np.maximum(y - yc, 0) * 0.1
                     + 0.004 * (x + 75.0 * sz) ** 2 / ls)
            # medial border: the left lobe reaches across the midline anteriorly, the border curves
            # back towards the right near the IVC and the spine
            x_left = (-15.0 + 95.0 / (1.0 + np.exp(-(yc - y - 10.0) / 22.0))) * ls * sz
            # the left lobe sits high: below the domes the border moves to the right
            x_left = x_left - 0.9 * np.clip(z_hi_box - 45.0 - z, 0.0, None)
            cand = (z > z_low) & (x < x_left) & (y < sy + 20.0)
            zd = self._diaphragm_z(x[cand], y[cand], yc[cand])
            sel = np.flatnonzero(cand)[z[cand] < zd - 5.0]
            self.c.labels[box][kk[sel], jj[sel], ii[sel]] = Anatomy.LIVER
            self.c.hu[box][kk[sel], jj[sel], ii[sel]] = np.float32(hu["liver"])
            # spleen tucked under the left dome, posterior
        spc = np.array([78.0 * sz, float(self.torso.at(np.array([lm["T11"]]))["yc"][0]) + 45.0 * sz, lm["T11"] - 5.0])
        ssz = oj["spleen_size"]
        self._ellipsoid(spc, rotation("z", 35.0) @ rotation("x", -15.0), np.array([22.0, 50.0, 50.0]) * sz * ssz ** (1 / 3),
                        Anatomy.SPLEEN, hu["spleen"], where=soft + [Anatomy.MUSCLE_OTHER])
        # stomach: left upper quadrant, anterior to the spleen; gas anteriorly
        stc = np.array([55.0 * sz, float(self.torso.at(np.array([lm["T12"]]))["yc"][0]) - 25.0 * sz, lm["T12"] + 5.0])
        fill = oj["stomach_fill"]
        sfr = rotation("z", -30.0) @ rotation("y", 30.0)
        st_semi = np.array([35.0, 28.0, 60.0]) * sz * (0.7 + 0.5 * fill)
        res = self._ellipsoid(stc, sfr, st_semi, Anatomy.STOMACH, hu["bowel_wall"], where=soft)
        if res is not None:
            sl, d, m = res
            x, y, z = g.coords(sl)
            lumen = m & (d > 4.0)
            gas_level = stc[1] - st_semi[1] * (0.6 - 0.8 * self.rng.random())
            gas = lumen & (y < gas_level)
            self.c.paint(sl, lumen & ~gas, Anatomy.STOMACH, hu["fluid"] + 15.0)
            self.c.paint(sl, gas, Anatomy.BOWEL_GAS, -995.0)
        # kidneys, beside the psoas, left higher than right, upper poles medial/posterior
        for side, zlev, dz in ((-1, 0.5 * (lm["L1"] + lm["L2"]) - 8.0, oj["kidney_r_dz"]),
                               (1, 0.5 * (lm["T12"] + lm["L1"]) + 5.0, oj["kidney_l_dz"])):
            zc = zlev + dz
            sxk, syk = self._spine_xy(np.array([zc]))
            ks = oj["kidney_size"] * sz
            kc = np.array([float(sxk[0]) + side * 72.0 * sz, float(syk[0]) + 16.0 * sz, zc])
            kf = rotation("y", -side * 12.0) @ rotation("x", -15.0) @ rotation("z", side * 25.0)
            where = soft + [Anatomy.LIVER, Anatomy.SPLEEN, Anatomy.MUSCLE_OTHER]
            self._ellipsoid(kc, kf, np.array([32.0, 27.0, 58.0]) * ks + 5.0, Anatomy.VAT, hu["fat"], where=where)
            self._ellipsoid(kc, kf, np.array([29.0, 24.0, 55.0]) * ks, Anatomy.KIDNEY, hu["kidney"], where=[Anatomy.VAT])
            sinus = kc + kf @ np.array([-side * 10.0, -6.0, 0.0])
            self._ellipsoid(sinus, kf, np.array([10.0, 9.0, 25.0]) * ks, Anatomy.KIDNEY, hu["fat"] * 0.6 + hu["fluid"] * 0.4,
                            where=[Anatomy.KIDNEY])
        # bladder
        bf = oj["bladder_fill"]
        pb = self.torso.at(np.array([lm["symphysis"] + 35.0]))
        bc = np.array([0.0, float(pb["yc"][0]) - float(pb["b_ant"][0]) * 0.45, lm["symphysis"] + 30.0 + 15 * bf])
        self._ellipsoid(bc, np.eye(3), np.array([45.0, 35.0, 35.0]) * sz * (0.45 + 0.6 * bf), Anatomy.BLADDER, hu["fluid"],
                        where=soft + [Anatomy.MUSCLE_OTHER])
        # psoas and quadratus lumborum
        self._psoas_ql()

    def _psoas_ql(self) -> None:
        s, lm, hu = self.s, self.lm, self.hu
        mf = s.muscle_factor ** 0.5 * s.size_factor
        lumbar = [v for v in self.spine.vertebrae if v.level.region == "lumbar" or v.level == VertebraLevel.T12]
        for side in (-1, 1):
            pts, rad = [], []
            for v in lumbar:
                r = {"T12": 5.0, "L1": 8.0, "L2": 11.0, "L3": 14.0, "L4": 17.0, "L5": 19.0, "L6": 19.0}[v.level.name] * mf
                pts.append([v.center[0] + side * (v.a + r * 0.85), v.center[1] - 0.2 * v.b + r * 0.1, v.center[2]])
                rad.append(r)
            fh = lm["femoral_head"]
            y_fh = float(self.torso.at(np.array([fh]))["yc"][0]) - 35.0
            pts.append([side * 55.0 * s.size_factor, pts[-1][1] - 20.0, lm["S1_top"] - 25.0])
            rad.append(rad[-1])
            pts.append([side * 70.0 * s.size_factor, y_fh, fh + 25.0])
            rad.append(rad[-1] * 0.9)
            self._tube(np.array(pts), np.array(rad), Anatomy.MUSCLE_PSOAS, hu["muscle"],
                       where=[Anatomy.VAT, Anatomy.MUSCLE_OTHER, Anatomy.BOWEL, Anatomy.KIDNEY])
            # quadratus lumborum: lateral to the erector spinae, behind the kidney
            t12 = self.spine.by_level(VertebraLevel.T12)
            l4 = self.spine.by_level(VertebraLevel.L4)
            q = np.array([[t12.center[0] + side * 45 * s.size_factor, t12.center[1] + 24, t12.center[2]],
                          [l4.center[0] + side * 66 * s.size_factor, l4.center[1] + 24, l4.center[2]],
                          [side * 72 * s.size_factor, l4.center[1] + 30, lm["iliac_crest"]]])
            self._tube(q, np.array([8.0, 15.0, 11.0]) * mf, Anatomy.MUSCLE_QUADRATUS, hu["muscle"],
                       where=[Anatomy.VAT, Anatomy.MUSCLE_OTHER, Anatomy.IMAT])

    def _vessels(self) -> None:
        s, lm, hu = self.s, self.lm, self.hu
        sz = s.size_factor
        verts = {v.level.name: v for v in self.spine.vertebrae}
        where = [Anatomy.VAT, Anatomy.LUNG, Anatomy.OTHER_SOFT_TISSUE, Anatomy.LIVER, Anatomy.HEART, Anatomy.MUSCLE_OTHER,
                 Anatomy.MUSCLE_PSOAS]
        # descending aorta: left-anterior of the bodies, from T4 to the bifurcation at L4
        age_r = 1.0 + 0.004 * max(s.age_years - 40, 0)
        pts, rad = [], []
        for name in ["T4", "T6", "T8", "T10", "T12", "L1", "L2", "L3", "L4"]:
            v = verts[name]
            r = (11.5 if name.startswith("T") else 9.5) * sz * age_r
            side = 0.55 if name.startswith("T") else 0.35
            pts.append([v.center[0] + v.a * side + 6.0, v.center[1] - v.b - r + (6.0 if name.startswith("T") else -1.0), v.center[2]])
            rad.append(r)
        # arch and ascending aorta from the heart
        heart_top = lm["T6"]
        t4 = verts["T4"]
        asc = [[8.0 * sz, t4.center[1] - 55 * sz, heart_top], [10.0 * sz, t4.center[1] - 55 * sz, lm["T3"]],
               [14.0 * sz, t4.center[1] - 30 * sz, lm["T2"] + 5], [pts[0][0], pts[0][1] - 5, lm["T3"]]]
        a_pts = np.array(asc + pts)
        a_rad = np.array([15.0, 15.0, 14.0, 12.5] + rad) * np.r_[[sz * age_r] * 4, [1.0] * len(rad)]
        art = hu["blood_art"]
        self._tube(a_pts, a_rad, Anatomy.AORTA, art, where=where)
        # iliac arteries
        l4 = verts["L4"]
        for side in (-1, 1):
            il = np.array([pts[-1], [side * 35.0 * sz, l4.center[1] - l4.b - 5, lm["S1_top"]],
                           [side * 70.0 * sz, l4.center[1] - l4.b - 30, lm["femoral_head"] + 20]])
            self._tube(il, np.array([8.0, 6.5, 5.5]) * sz, Anatomy.AORTA, art, where=where)
        # IVC: right-anterior of the bodies, from L4 to the right atrium at T10
        pts, rad = [], []
        for name in ["L4", "L3", "L2", "L1", "T12", "T11", "T10"]:
            v = verts[name]
            pts.append([v.center[0] - v.a * 0.55 - 8.0, v.center[1] - v.b - 11.0 * sz - (8.0 if name in ("T11", "T10") else 0.0), v.center[2]])
            rad.append(11.0 * sz)
        self._tube(np.array(pts), np.array(rad), Anatomy.IVC, hu["blood_ven"], where=where)

    def _bowel(self) -> None:
        """Colon frame as a tube with gas and stool; small bowel as thresholded smooth noise."""
        s, lm, hu, oj, g = self.s, self.lm, self.hu, self.s.organ_jitter, self.grid
        sz = s.size_factor
        where = [Anatomy.VAT]
        py = lambda z, f: float(self.torso.at(np.array([z]))["yc"][0] - f * self.torso.at(np.array([z]))["b_ant"][0])
        pa = lambda z, f: float(f * self.torso.at(np.array([z]))["a"][0])
        zc = [lm["L5"] - 10, lm["L3"], lm["L1"] + 5, lm["L2"], lm["L1"] + 10, lm["L3"], lm["S1_top"] - 20, lm["symphysis"] + 40]
        pts = np.array([
            [-pa(zc[0], 0.55), py(zc[0], 0.2), zc[0]],  # caecum
            [-pa(zc[1], 0.68), py(zc[1], -0.1), zc[1]],  # ascending
            [-pa(zc[2], 0.55), py(zc[2], 0.2), zc[2]],  # hepatic flexure
            [0.0, py(zc[3], 0.7), zc[3] - 25],  # transverse (sagging)
            [pa(zc[4], 0.62), py(zc[4], 0.05), zc[4]],  # splenic flexure
            [pa(zc[5], 0.7), py(zc[5], -0.15), zc[5]],  # descending
            [pa(zc[6], 0.35), py(zc[6], 0.4), zc[6]],  # sigmoid
            [0.0, py(zc[7], -0.45), zc[7]],  # rectum
        ])
        rng = np.random.default_rng(int(oj["bowel_seed"]))
        pts[:, :2] += rng.normal(0, 6, size=(len(pts), 2))
        # densify with a smooth curve
        tt = np.linspace(0, len(pts) - 1, 120)
        dense = np.stack([np.interp(tt, np.arange(len(pts)), pts[:, k]) for k in range(3)], axis=1)
        r = np.full(len(dense), 22.0 * sz)
        gas_frac = oj["colon_gas"]
        for sl, depth, centre in capsule_chain(g, dense, r, with_centre=True):
            m = (depth > 0) & self.c.allowed(sl, where + [Anatomy.BOWEL, Anatomy.BOWEL_GAS])
            if not m.any():
                continue
            _, y, _ = g.coords(sl)
            wall = m & (depth <= 3.0) & self.c.allowed(sl, where)
            lumen = m & (depth > 3.0)
            self.c.paint(sl, wall, Anatomy.BOWEL, hu["bowel_wall"])
            # gas rises anteriorly (patient supine): a horizontal gas-stool level in the lumen
            if not lumen.any():
                continue
            gas = lumen & (y < np.float32(centre[1] + 22.0 * sz * (1.0 - 2.0 * gas_frac)))
            self.c.paint(sl, lumen & ~gas, Anatomy.BOWEL, hu["feces"])
            self.c.paint(sl, gas, Anatomy.BOWEL_GAS, -990.0)
        # small bowel inside the remaining peritoneal fat
        z_hi = lm["L1"]
        z_lo = lm["symphysis"] + 20.0
        box = g.box(np.array([-200.0, -300.0, z_lo]), np.array([200.0, 300.0, z_hi]))
        if box is None:
            return
        lab = self.c.labels[box]
        coords = g.coords(box)
        sy = self._spine_xy(coords[2][:, 0, 0])[1].astype(np.float32)[:, None, None]
        cand = (lab == Anatomy.VAT) & (coords[1] < sy + 10.0)
        if cand.sum() < 10:
            return
        px, py_, pz = mask_points(coords, cand)
        # loops as tubes: where two independent smooth fields are both near zero (the intersection of
        # two thickened level surfaces is a thickened curve); the band width sets the bowel fraction
        f1 = np.abs(wave_field(self.rng, px, py_, pz, 22.0 * sz, n_waves=8))
        f2 = np.abs(wave_field(self.rng, px, py_, pz, 22.0 * sz, n_waves=8))
        tube = np.maximum(f1, f2)
        frac = float(np.clip(0.75 - 0.55 * s.vat_factor, 0.15, 0.7))
        thr = float(np.quantile(tube, frac))
        bowel = tube < thr
        lumen = tube < thr * 0.7
        # small bowel holds little gas (a few pockets), mostly fluid and chyme
        gas = lumen & (wave_field(self.rng, px, py_, pz, 9.0 * sz, n_waves=6) > 2.3 - 2.0 * oj["bowel_gas"])
        oral = self.rng.random() < 0.15
        vals = np.where(lumen, np.float32(250.0 if oral else hu["fluid"] + 15.0), np.float32(hu["bowel_wall"]))
        vals = np.where(gas, np.float32(-990.0), vals)
        labs = np.where(gas, Anatomy.BOWEL_GAS, Anatomy.BOWEL).astype(np.uint16)
        k, j, i = np.nonzero(cand)
        sel = bowel
        lab[k[sel], j[sel], i[sel]] = labs[sel]
        self.c.hu[box][k[sel], j[sel], i[sel]] = vals[sel]

    def _imat(self) -> None:
        """Intermuscular fat: fat streaks inside muscles, more with myosteatosis and obesity."""
        s, g = self.s, self.grid
        frac = float(np.clip(0.02 + 0.12 * s.myosteatosis + 0.004 * max(s.bmi - 25, 0), 0.01, 0.25))
        z_lo, z_hi = self.lm["S1_top"] - 40.0, self.lm["T12"]
        box = g.box(np.array([-300.0, -300.0, z_lo]), np.array([300.0, 300.0, z_hi]))
        if box is None:
            return
        lab = self.c.labels[box]
        musc = np.isin(lab, [Anatomy.MUSCLE_ERECTOR, Anatomy.MUSCLE_PSOAS, Anatomy.MUSCLE_QUADRATUS,
                             Anatomy.MUSCLE_OBLIQUES, Anatomy.MUSCLE_RECTUS, Anatomy.MUSCLE_OTHER])
        if not musc.any():
            return
        coords = g.coords(box)
        px, py_, pz = mask_points(coords, musc)
        fld = wave_field(self.rng, px, py_, pz, 3.0, n_waves=8)
        thr = float(np.quantile(fld, 1.0 - frac))
        sel = fld > thr
        k, j, i = np.nonzero(musc)
        lab[k[sel], j[sel], i[sel]] = Anatomy.IMAT
        self.c.hu[box][k[sel], j[sel], i[sel]] = np.float32(self.hu["fat"] + 15.0)

    # ------------------------------------------------------------------------------------------------
    # skeleton

    def _canal(self) -> None:
        """Spinal canal content (thecal sac, cord, epidural fat) along the canal centres."""
        pts, rad = [], []
        for v in self.spine.vertebrae[::-1]:
            d = _post_dims(v)
            pts.append(v.center + v.frame @ np.array([0.0, d["vc"], 0.0]))
            rad.append(0.85 * min(d["ca"], d["cb"]))
        self._tube(np.array(pts[::-1]), np.array(rad[::-1]), Anatomy.OTHER_SOFT_TISSUE, self.hu["csf"] + 8.0)

    def _discs(self) -> None:
        hu = self.hu
        bic = {v.level: v.biconcave / 2.0 for v in self.spine.vertebrae}
        for d in self.spine.discs:
            bulge = bic.get(d.upper, 0.0) + bic.get(d.lower, 0.0)  # fills biconcave fracture depressions
            half = np.array([d.a + 2, d.b * 1.8 + 2, max(d.ha, d.hp) / 2 + 5 + bulge])
            ext = np.abs(d.frame) @ half
            sl = self.grid.box(d.center - ext, d.center + ext)
            if sl is None:
                continue
            x, y, z = self.grid.coords(sl)
            u, v, w = local_coords(x, y, z, d.center, d.frame)
            D = d.b * (1.0 + POSTERIOR_FLATTENING)
            t = (v + d.b) / D
            hd = d.ha + (d.hp - d.ha) * (t - 0.15) / 0.7
            r2 = (u / d.a) ** 2 + (v / d.b) ** 2
            xsec = (r2 <= 1.0) & (v <= d.b * (POSTERIOR_FLATTENING + (1 - POSTERIOR_FLATTENING) * (u / d.a) ** 2) + 1.0)
            margin = np.where(r2 < 0.85, 3.5 + bulge, 0.5)
            m = xsec & (np.abs(w) <= hd / 2 + margin)
            val = hu["disc"] + 20.0 * (np.sqrt(r2) - 0.6)  # annulus denser than the nucleus
            self.c.paint(sl, m, disc_label(d.upper), val)

    def _vertebra(self, vg: VertebraGeom) -> None:
        """Body (cortical shell + trabecular core with texture, exact mean HU from the BMD) and the
        posterior elements, evaluated only on the voxels inside each part's local envelope."""
        s, hu = self.s, self.hu
        d = _post_dims(vg)
        if s.transitional == "sacralised_L5" and vg.level == VertebraLevel.L5:
            # sacralisation: broad "butterfly" transverse processes reaching down to the sacral alae
            d.update(tp_tip=d["tp_tip"] * 1.25, tp_rv=7.0, tp_rw=11.0, tp_drop=8.0)
        reach_v = d["vc"] + d["cb"] + d["lam"] + d["sp_len"] + 6.0
        reach_u = max(vg.a, d["tp_tip"]) + 8.0
        reach_w = max(vg.ha, vg.hp) / 2 + 14.0 + d["sp_len"] * d["sp_tilt"]
        corners = np.array([[su * reach_u, sv, sw * reach_w] for su in (-1, 1) for sv in (-vg.b - 3, reach_v) for sw in (-1, 1)])
        world = corners @ vg.frame.T + vg.center
        sl = self.grid.box(world.min(0), world.max(0))
        if sl is None:
            return
        x, y, z = self.grid.coords(sl)
        u, v, w = local_coords(x, y, z, vg.center, vg.frame)
        a, b = vg.a, vg.b
        PF = POSTERIOR_FLATTENING
        D = b * (1.0 + PF)
        lab_view = self.c.labels[sl]
        hu_view = self.c.hu[sl]
        trab = trabecular_hu(vg.spec.bmd_mg_cm3, self.kvp, s.marrow_fat_fraction, s.scanner.contrast_phase)
        tex_sd = (10.0 + 0.12 * abs(trab)) * min(1.0, 1.0 / self.vox)
        # ---- posterior elements (painted first; the body wins where they touch)
        env_p = (v >= b * PF - 4.0) & (v <= reach_v) & (np.abs(w) <= reach_w) & (np.abs(u) <= reach_u)
        ip = np.nonzero(env_p)
        if ip[0].size:
            up, vp, wp = u[ip], v[ip], w[ip]
            pd = _posterior_depth(up, vp, wp, vg, d)
            canal = ((up / d["ca"]) ** 2 + ((vp - d["vc"]) / d["cb"]) ** 2) < 1.0
            xsec_p = ((up / a) ** 2 + (vp / b) ** 2 <= 1.0) & (vp <= b * (PF + (1 - PF) * (up / a) ** 2))
            sel = (pd > 0) & ~canal & ~xsec_p
            post_marrow = trab * 1.05 + 20.0
            fp = shell_fraction(pd[sel], CORTEX_OTHER_MM * 0.8, self.vox)
            noise = self.rng.standard_normal(int(sel.sum())).astype(np.float32) * np.float32(tex_sd * 0.5)
            pval = post_marrow + noise + fp * (self.cortical * 0.8 - post_marrow)
            kk, jj, ii = ip[0][sel], ip[1][sel], ip[2][sel]
            lab_view[kk, jj, ii] = posterior_label(vg.level)
            hu_view[kk, jj, ii] = pval
        # ---- body
        hmax = max(vg.ha, vg.hp) / 2 + 1.0
        env_b = (np.abs(u) <= a) & (v >= -b) & (v <= b) & (np.abs(w) <= hmax)
        ib = np.nonzero(env_b)
        if not ib[0].size:
            return
        ub, vb, wb = u[ib], v[ib], w[ib]
        t = (vb + b) / D
        h = vg.height_profile(ub, t)
        r = np.sqrt((ub / a) ** 2 + (vb / b) ** 2)
        post_wall = b * (PF + (1 - PF) * (ub / a) ** 2)
        body = (r <= 1.0) & (vb <= post_wall) & (np.abs(wb) <= h / 2)
        if not body.any():
            return
        d_wall = np.minimum((1.0 - r) * min(a, b), post_wall - vb)[body]
        d_end = (h / 2 - np.abs(wb))[body]
        f = np.maximum(shell_fraction(d_wall, CORTEX_BODY_MM, self.vox), shell_fraction(d_end, CORTEX_ENDPLATE_MM, self.vox))
        kk, jj, ii = ib[0][body], ib[1][body], ib[2][body]
        # trabecular texture: smoothed white noise on the body's index box, zero mean over the core
        k0, j0, i0 = kk.min(), jj.min(), ii.min()
        tex_box = white_texture(self.rng, (int(kk.max() - k0 + 1), int(jj.max() - j0 + 1), int(ii.max() - i0 + 1)),
                                0.7 / self.vox)
        tex = tex_box[kk - k0, jj - j0, ii - i0]
        core = f < 0.05
        if core.sum() > 10:
            tex = tex - float(tex[core].mean())
        val = trab + tex_sd * tex
        # vertebral cortex is thin and porous: denser than the core but below compact long-bone cortex
        val = val + f * (VERTEBRAL_CORTEX_FACTOR * self.cortical - val)
        # basivertebral vein: small hypodense channel at the centre of the posterior wall
        pw = post_wall[body]
        bv = (np.abs(ub[body]) < 2.5) & (vb[body] > pw - 7.0) & (vb[body] < pw - 1.2) & (np.abs(wb[body]) < 2.5)
        val = np.where(bv, hu["blood_ven"] * 0.5 + trab * 0.5, val)
        lab_view[kk, jj, ii] = body_label(vg.level)
        hu_view[kk, jj, ii] = val

    def _sacrum(self) -> None:
        s = self.s
        sc = self.spine.sacrum
        lab = body_label(VertebraLevel.SACRUM)
        bmd = s.vertebrae[-1].bmd_mg_cm3 * 0.85
        trab = trabecular_hu(bmd, self.kvp, s.marrow_fat_fraction, s.scanner.contrast_phase)
        for k in range(5):
            c, fr = sc.centers[k], sc.frames[k]
            a, b, h = sc.widths[k] / 2, sc.depths[k] / 2, sc.heights[k]
            half = np.array([a + 60 * (k < 2), b + 35, h / 2 + 15])
            ext = np.abs(fr) @ half
            sl = self.grid.box(c - ext, c + ext)
            if sl is None:
                continue
            x, y, z = self.grid.coords(sl)
            u, v, w = local_coords(x, y, z, c, fr)
            body_d = np.minimum((1 - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * min(a, b), h / 2 + 1.0 - np.abs(w))
            dep = body_d
            if k < 3:  # alae (lateral masses) and the posterior arch with the median crest
                al = 45.0 * s.size_factor * (1.0 - 0.3 * k)
                for side in (-1, 1):
                    ad = 1 - np.sqrt(((u - side * (a + al * 0.45)) / (al * 0.6)) ** 2 + ((v - b * 0.3) / (b * 1.1)) ** 2
                                     + (w / (h * 0.75)) ** 2)
                    dep = np.maximum(dep, ad * min(al * 0.5, h * 0.7))
                arch = 1 - np.sqrt((u / (a * 0.9)) ** 2 + ((v - b - 14.0) / 9.0) ** 2 + (w / (h * 0.6)) ** 2)
                dep = np.maximum(dep, arch * 8.0)
                canal = ((u / 10.0) ** 2 + ((v - b - 5.0) / 5.0) ** 2) < 1.0
                dep = np.where(canal, -1.0, dep)
            m = (dep > 0) & (self.c.labels[sl] != lab)
            f = shell_fraction(dep, CORTEX_OTHER_MM, self.vox)
            self.c.paint(sl, m, lab, trab + f * (self.cortical * 0.85 - trab))

    def _bone_value(self, depth: np.ndarray, bmd_factor: float = 1.0) -> np.ndarray:
        s = self.s
        marrow = trabecular_hu(s.vertebrae[-1].bmd_mg_cm3 * 0.8 * bmd_factor, self.kvp, s.marrow_fat_fraction,
                               s.scanner.contrast_phase)
        f = shell_fraction(depth, CORTEX_OTHER_MM * 1.3, self.vox)
        return marrow + f * (self.cortical - marrow)

    def _pelvis(self) -> None:
        s, lm = self.s, self.lm
        sz = s.size_factor * (1.05 if s.sex == "F" else 1.0)
        sc = self.spine.sacrum
        s1 = sc.centers[0]
        fh = lm["femoral_head"]
        crest = lm["iliac_crest"]
        yb = float(self.torso.at(np.array([fh]))["yc"][0])
        for side in (-1, 1):
            # iliac wing: a curved plate from the sacro-iliac joint forwards-outwards to the ASIS
            si = np.array([side * (sc.widths[0] / 2 + 38.0 * s.size_factor), s1[1] + 10.0, s1[2] - 5.0])
            direction = np.array([side * np.sin(np.deg2rad(52)), -np.cos(np.deg2rad(52)), 0.0])
            length = 105.0 * sz
            zt, zb = crest, fh + 30.0
            box_lo = np.minimum(si, si + direction * length) - np.array([65, 65, 0]) + np.array([0, 0, zb - si[2] - 5])
            box_hi = np.maximum(si, si + direction * length) + np.array([65, 65, 0]) + np.array([0, 0, zt - si[2] + 5])
            sl = self.grid.box(box_lo, box_hi)
            if sl is not None:
                x, y, z = self.grid.coords(sl)
                px = (x - si[0]) * direction[0] + (y - si[1]) * direction[1]  # along the wing
                nx = (x - si[0]) * (-direction[1] * side) + (y - si[1]) * (direction[0] * side)  # across
                tp = px / length
                bow = 18.0 * sz * tp * (1 - tp) * 4 * 0.6
                top = zt - 28.0 * (tp - 0.35) ** 2 * 4
                thick = 4.5 + 5.0 * np.clip((z - (top - 12)) / 12, 0, 1) + 6.0 * np.clip(1 - tp / 0.15, 0, 1)
                # the wing bows postero-laterally (iliac fossa faces antero-medially) and flares out
                # laterally towards the crest
                across = nx - bow - 0.35 * np.clip(z - zb, 0, None)
                dep = np.minimum(np.minimum(thick / 2 - np.abs(across), top - z), z - zb)
                dep = np.minimum(dep, np.minimum(px + 5.0, length - px))
                m = (dep > 0) & ~self.c.allowed(sl, [body_label(VertebraLevel.SACRUM)])
                self.c.paint(sl, m, Anatomy.PELVIS, self._bone_value(dep))
            # acetabulum / femoral head and neck, pubic and ischial rami as tubes
            ac = np.array([side * 88.0 * sz, yb - 20.0, fh])
            head_r = 23.0 * s.size_factor
            for pts, rad in (
                (np.array([ac, ac + np.array([side * 30.0, 5.0, -30.0]) * s.size_factor,
                           ac + np.array([side * 42.0, 8.0, -160.0]) * s.size_factor]),
                 np.array([head_r, 15.0, 14.0]) * np.array([1.0, s.size_factor, s.size_factor])),
                (np.array([si + np.array([side * 10.0, -10.0, -40.0]), ac + np.array([-side * 5.0, 10.0, 20.0]), ac]),
                 np.array([16.0, 16.0, 20.0]) * s.size_factor),
                (np.array([ac, np.array([side * 40.0 * sz, yb - 65.0 * sz, lm["symphysis"] + 12.0]),
                           np.array([side * 5.0, yb - 72.0 * sz, lm["symphysis"]])]),
                 np.array([14.0, 9.0, 10.0]) * s.size_factor),
                (np.array([ac, ac + np.array([side * 5.0, 25.0, -45.0]) * sz,
                           np.array([side * 30.0 * sz, yb - 40.0 * sz, lm["symphysis"] - 20.0]),
                           np.array([side * 5.0, yb - 72.0 * sz, lm["symphysis"]])]),
                 np.array([14.0, 13.0, 8.0, 9.0]) * s.size_factor),
            ):
                for sl, depth in capsule_chain(self.grid, pts, rad):
                    m = (depth > 0) & ~self.c.allowed(sl, [body_label(VertebraLevel.SACRUM)])
                    self.c.paint(sl, m, Anatomy.PELVIS, self._bone_value(depth, 1.1))

    def _ribs(self) -> None:
        s, lm, hu = self.s, self.lm, self.hu
        thor = [v for v in self.spine.vertebrae if v.level.region == "thoracic"]
        n_pairs = s.rib_pairs
        rib_levels = [v for v in thor][: min(n_pairs, 12)]
        if n_pairs == 13:  # a lumbar rib on L1
            rib_levels.append(self.spine.by_level(VertebraLevel.L1))
        for idx, v in enumerate(rib_levels):
            k = idx + 1  # rib number
            d = _post_dims(v)
            zc = float(v.center[2])
            p = self.torso.at(np.array([zc - 20.0]))
            a_in = float(p["a"][0] - p["wall"][0] * 0.6)
            b_ant = float(p["b_ant"][0] - p["wall"][0] * 0.6)
            b_post = float(p["b_post"][0] - p["wall"][0] * 0.6)
            yc = float(p["yc"][0])
            scale = min(1.0, 0.45 + 0.14 * k) if k <= 4 else 1.0
            if k >= 11 or v.level == VertebraLevel.L1:
                end = 100.0 if k == 11 else 70.0
            elif k >= 8:
                end = 150.0
            else:
                end = 168.0
            if v.level == VertebraLevel.L1:
                end = 45.0
            drop = 30.0 + 45.0 * np.sin(np.pi * min(k, 12) / 13.0)
            rad = (3.2 + 0.25 * min(k, 8)) * s.size_factor
            for side in (-1, 1):
                head = v.center + v.frame @ np.array([side * (v.a * 0.85), v.b * 0.45, v.hp * 0.35])
                tub = v.center + v.frame @ np.array([side * (d["tp_tip"] - 3.0), d["vc"] + 3.0, 0.0])
                pts = [head, tub]
                psi = np.deg2rad(np.linspace(22.0, end, 28))
                for j, ps in enumerate(psi):
                    frac = (np.rad2deg(ps) - 22.0) / max(end - 22.0, 1.0)
                    bb = b_post if np.cos(ps) > 0 else b_ant
                    xx = side * a_in * scale * np.sin(ps) * (1.0 - 0.05 * np.cos(ps))
                    yy = yc + bb * np.cos(ps) * (0.92 if np.cos(ps) > 0 else 1.0)
                    zz = zc - drop * frac**0.95
                    pts.append(np.array([xx, yy, zz]))
                pts = np.array(pts)
                radii = np.full(len(pts), rad)
                radii[0] = rad * 1.2
                for sl, depth in capsule_chain(self.grid, pts, radii, seg_len_mm=15.0):
                    m = (depth > 0) & ~self.c.allowed(sl, _SPINE_LABELS)
                    self.c.paint(sl, m, Anatomy.RIB, self._bone_value(depth, 0.9))
                # costal cartilage to the sternum for ribs 1-10
                if k <= 10 and v.level != VertebraLevel.L1:
                    ster_y = yc - b_ant * 0.98
                    last = pts[-1]
                    tgt_z = zc - drop * 0.9 if k <= 7 else last[2] + 15.0 * (k - 7)
                    cart = np.array([last, [side * (12.0 + 3 * k) * s.size_factor, ster_y + 4, min(tgt_z + 10, lm["T1_top"])]])
                    for sl, depth in capsule_chain(self.grid, cart, np.array([rad, rad * 0.9])):
                        m = (depth > 0) & self.c.allowed(sl, [Anatomy.MUSCLE_OTHER, Anatomy.VAT, Anatomy.LUNG,
                                                                     Anatomy.OTHER_SOFT_TISSUE, Anatomy.LIVER, Anatomy.HEART])
                        self.c.paint(sl, m, Anatomy.OTHER_SOFT_TISSUE, hu["cartilage"])

    def _sternum(self) -> None:
        """Manubrium and body of the sternum: a flat plate (elliptic cross-section) behind the
        anterior chest wall, narrowing caudally."""
        s, lm, g = self.s, self.lm, self.grid
        top, bot = lm["T2"] + 5.0, lm["T9"]
        p = self.torso.at(np.array([top, bot]))
        y_front = p["yc"] - p["b_ant"] + p["wall"] * 0.5 + 7.0
        box = g.box(np.array([-30.0, float(y_front.min()) - 12.0, bot]), np.array([30.0, float(y_front.max()) + 12.0, top]))
        if box is None:
            return
        x, y, z = g.coords(box)
        zz = z[:, 0, 0]
        pz = self.torso.at(zz)
        yst = (pz["yc"] - pz["b_ant"] + pz["wall"] * 0.5 + 7.0).astype(np.float32)[:, None, None]
        frac = np.clip((top - zz) / max(top - bot, 1.0), 0.0, 1.0)
        half_w = ((17.0 - 6.0 * frac) * s.size_factor).astype(np.float32)[:, None, None]
        half_t = np.float32(5.5 * s.size_factor)
        rho = np.sqrt((x / half_w) ** 2 + ((y - yst) / half_t) ** 2)
        depth = (1.0 - rho) * half_t
        m = depth > 0
        self.c.paint(box, m, Anatomy.STERNUM, self._bone_value(depth, 0.9))


_SPINE_LABELS = [body_label(v) for v in VertebraLevel] + [posterior_label(v) for v in VertebraLevel]


def _post_dims(v: VertebraGeom) -> dict[str, float]:
    """Posterior-element dimensions (mm, local frame) by region, scaled with the body size."""
    name = v.level.name
    sz = v.spec.depth_mm / 30.0
    region = v.level.region
    if region == "lumbar":
        ca, cb, ped, lam, sp_len, sp_h, sp_tilt = 11.5, 8.0, 7.0, 6.5, 30.0, 19.0, 0.05
        tp_tip = {"L1": 35.0, "L2": 40.0, "L3": 46.0, "L4": 42.0, "L5": 44.0, "L6": 44.0}[name]
        tp_back = 0.0
    elif region == "thoracic":
        ti = int(name[1:])
        ca, cb, ped, lam, sp_len = 8.5, 8.0, 6.0, 6.0, 38.0
        sp_h = 8.0
        sp_tilt = 0.5 if ti < 5 else (1.1 if ti < 10 else 0.5)
        tp_tip = 42.0 - 1.3 * max(ti - 6, 0) if ti < 12 else 26.0
        tp_back = 0.55
    else:  # C7
        ca, cb, ped, lam, sp_len, sp_h, sp_tilt, tp_tip, tp_back = 12.0, 7.5, 5.0, 5.0, 42.0, 8.0, 0.3, 36.0, 0.2
    s = min(max(sz, 0.8), 1.25)
    ca, cb, ped, lam, sp_len, sp_h, tp_tip = (ca * s, cb * s, ped * s, lam * s, sp_len * s, sp_h * s, tp_tip * s)
    vc = v.b * POSTERIOR_FLATTENING + ped + cb
    return {"ca": ca, "cb": cb, "ped": ped, "lam": lam, "sp_len": sp_len, "sp_h": sp_h, "sp_tilt": sp_tilt,
            "tp_tip": tp_tip, "tp_back": tp_back, "vc": vc}


def _posterior_depth(u, v, w, vg: VertebraGeom, d: dict[str, float]) -> np.ndarray:
    """Inside depth (mm) of the union of the posterior-element primitives in the local frame."""
    h = 0.5 * (vg.ha + vg.hp)
    ca, cb, vc, lam = d["ca"], d["cb"], d["vc"], d["lam"]
    w0 = 0.1 * h  # arch sits slightly cranial
    au = np.abs(u)
    # pedicles: elliptic bars from the posterior body wall to the canal's mid-depth
    ped_w, ped_h = 0.42 * ca + 3.0, 0.6 * h
    pv0, pv1 = vg.b * POSTERIOR_FLATTENING - 3.0, vc
    ped = np.minimum(
        (1 - np.sqrt(((au - ca - ped_w * 0.35) / (ped_w / 2)) ** 2 + ((w - w0) / (ped_h / 2)) ** 2)) * (ped_w / 2),
        np.minimum(v - pv0, pv1 - v),
    )
    # laminae: ring segment behind the canal
    ring_out = 1 - np.sqrt((u / (ca + lam)) ** 2 + ((v - vc) / (cb + lam)) ** 2)
    ring_in = np.sqrt((u / ca) ** 2 + ((v - vc) / cb) ** 2) - 1
    lam_h = 0.55 * h
    lamina = np.minimum(np.minimum(ring_out * lam, ring_in * lam), np.minimum(lam_h / 2 - np.abs(w - w0 + 0.1 * (v - vc)), v - vc + 2.0))
    # spinous process: a plate going back (and down in the thorax) from the lamina junction
    sv0 = vc + cb + lam * 0.3
    sv = v - sv0
    wc = w0 - d["sp_tilt"] * np.clip(sv, 0, None)
    # the plate is thicker at its base than at the tip
    sp_th = (3.0 + 0.8 * (vg.level.region == "lumbar")) * (1.0 - 0.3 * np.clip(sv / d["sp_len"], 0.0, 1.0))
    spin = np.minimum(np.minimum(sp_th - au, d["sp_h"] / 2 - np.abs(w - wc)), np.minimum(sv + lam, d["sp_len"] - sv))
    # transverse processes: bars going out laterally from the pedicle-lamina junction
    tv = vc + d["tp_back"] * np.clip(au - ca, 0, None)
    # lumbar processes are flat plates (thin antero-posteriorly, taller cranio-caudally)
    tp_rv, tp_rw = (2.8, 5.0) if vg.level.region == "lumbar" else (4.0, 4.5)
    tp_rv, tp_rw = d.get("tp_rv", tp_rv), d.get("tp_rw", tp_rw)
    lat = np.clip((au - ca) / max(d["tp_tip"] - ca, 1.0), 0.0, 1.0)
    taper = 1.0 - 0.35 * lat
    tw = w0 - d.get("tp_drop", 0.0) * lat
    tp = np.minimum(1 - np.sqrt(((v - tv) / (tp_rv * taper)) ** 2 + ((w - tw) / (tp_rw * taper)) ** 2), 1.0) * tp_rv
    tp = np.minimum(tp, np.minimum(d["tp_tip"] - au, au - ca))
    # articular processes: blobs above and below the pedicle-lamina junction (facet joints)
    fu = ca + 3.0
    fv = vc + 1.0
    art = np.maximum(
        (1 - np.sqrt(((au - fu) / 5.5) ** 2 + ((v - fv) / 6.0) ** 2 + ((w - (h * 0.5 + 1.0)) / 7.0) ** 2)) * 5.5,
        (1 - np.sqrt(((au - fu - 1.0) / 5.5) ** 2 + ((v - fv - 4.0) / 6.0) ** 2 + ((w + h * 0.35) / 7.0) ** 2)) * 5.5,
    )
    return np.maximum.reduce([ped, lamina, spin, tp, art]).astype(np.float32)
