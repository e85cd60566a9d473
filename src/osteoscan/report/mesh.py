"""3-D reconstruction of the segmented spine: one smoothed surface mesh per vertebra.

Meshes come from marching cubes on each level's mask (body + posterior elements), lightly
Gaussian-blurred first and Taubin-smoothed after (smoothing without shrinkage), with vertices in
patient LPS millimetres. Exports: ``spine.stl`` (one mesh, LPS mm, as 3-D printing and planning tools
expect) and ``spine.glb`` (one named, BMD-coloured node per vertebra; glTF is Y-up in metres, so
vertices are mapped LPS mm -> (x=Left, y=Superior, z=Anterior) m).

The rendering for the report is a software renderer (orthographic projection, painter's algorithm,
Lambert shading, drawn by matplotlib's Agg canvas). It was chosen over VTK off-screen rendering because
VTK needs an EGL/OSMesa library from the operating system, which CI images and edge boxes lack;
this one needs nothing but numpy and matplotlib and gives the same picture everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from scipy import ndimage
from skimage import measure

from osteoscan.labels import VertebraLevel
from osteoscan.report.figures import png_bytes, spread_labels

log = logging.getLogger(__name__)

#: Gaussian blur of each binary mask before marching cubes, in mm (removes voxel staircase).
MASK_SMOOTHING_MM = 1.0
#: Taubin smoothing iterations after marching cubes.
TAUBIN_ITERATIONS = 10
#: Marching-cubes step for the rendered image only (fewer faces, same shape); exported meshes use 1.
RENDER_STEP = 2

#: LPS mm -> glTF (x = Left, y = Superior, z = Anterior), metres. Right-handed (det = +1).
LPS_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) * 1e-3


@dataclass(frozen=True)
class VertebraMesh:
    level: str
    mesh: trimesh.Trimesh  # vertices in LPS mm
    color: str  # hex colour (ACR band of its BMD)


def vertebra_meshes(
    lvl: np.ndarray,
    affine: np.ndarray,
    colors: dict[str, str] | None = None,
    step: int = 1,
    boxes: list[tuple[slice, ...] | None] | None = None,
) -> list[VertebraMesh]:
    """Marching-cubes surface of every level in a level map (:func:`~osteoscan.report.levels.level_map`),
    cranial to caudal. ``boxes``: ``scipy.ndimage.find_objects(lvl)`` when the caller has it already."""
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    sigma = MASK_SMOOTHING_MM / spacing
    objects = ndimage.find_objects(lvl) if boxes is None else boxes
    out: list[VertebraMesh] = []
    for value, box in enumerate(objects, start=1):
        if box is None:
            continue
        level = VertebraLevel(value).name
        pad = 2
        lo = np.array([max(0, s.start - pad) for s in box])
        hi = np.array([min(n, s.stop + pad) for s, n in zip(box, lvl.shape)])
        crop = (lvl[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == value).astype(np.float32)
        crop = np.pad(crop, 1)  # close the surface where the vertebra touches the crop/volume edge
        field = ndimage.gaussian_filter(crop, sigma=sigma)
        if field.max() <= 0.5 or min(field.shape) < 2:
            log.info("vertebra %s too small for a surface mesh; skipped", level)
            continue
        try:
            verts, faces, _, _ = measure.marching_cubes(field, level=0.5, step_size=step, allow_degenerate=False)
        except RuntimeError as exc:  # "No surface found": a blob thinner than the marching step
            log.info("vertebra %s has no surface at step %d (%s); skipped", level, step, exc)
            continue
        verts = verts + lo - 1  # back to full-volume array indices (minus the 1-voxel pad)
        lps = verts @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
        mesh = trimesh.Trimesh(vertices=lps, faces=faces, process=True)
        trimesh.smoothing.filter_taubin(mesh, iterations=TAUBIN_ITERATIONS)
        if _signed_volume(mesh) < 0:  # marching cubes winds consistently; only the grid's sign can flip it
            mesh.invert()
        out.append(VertebraMesh(level, mesh, (colors or {}).get(level, "#d9d4c7")))
    return out


def _signed_volume(mesh: trimesh.Trimesh) -> float:
    """Enclosed volume, negative for inward-facing normals (divergence theorem over the faces).

    The sign is all the caller needs; ``Trimesh.volume`` computes the full mass properties (centre,
    inertia) for it, 25 ms per vertebra.
    """
    tri = mesh.triangles
    return float(np.einsum("ij,ij->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))) / 6.0


def export_stl(meshes: list[VertebraMesh], path: Path) -> Path:
    """All vertebrae as one binary STL, LPS millimetres."""
    combined = trimesh.util.concatenate([m.mesh for m in meshes])
    combined.export(path, file_type="stl")
    return path


def export_glb(meshes: list[VertebraMesh], path: Path) -> Path:
    """One glTF binary scene, a named node per vertebra, coloured by its BMD band; Y-up metres."""
    scene = trimesh.Scene()
    for m in meshes:
        mesh = m.mesh.copy()
        mesh.vertices = mesh.vertices @ LPS_TO_GLTF.T
        rgba = np.array([*to_rgb(m.color), 1.0]) * 255
        mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=np.tile(rgba.astype(np.uint8), (len(mesh.faces), 1)))
        scene.add_geometry(mesh, node_name=m.level, geom_name=m.level)
    path.write_bytes(scene.export(file_type="glb"))
    return path


def render_png(
    meshes: list[VertebraMesh],
    title: str = "3-D reconstruction of the segmented spine",
    captions: dict[str, str] | None = None,
) -> bytes:
    """Left-anterior-oblique view of the meshes, shaded, as PNG bytes (software renderer)."""
    fig = Figure(figsize=(3.4, 5.2))
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.94))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    if not meshes:
        ax.text(0.5, 0.5, "no vertebra segmented", ha="center", transform=ax.transAxes)
        return png_bytes(fig)
    # View: from the patient's left-anterior (45 deg), head up. Screen axes in LPS:
    view = np.array([0.7071, -0.7071, 0.0])  # direction from the object towards the viewer (L + A)
    up = np.array([0.0, 0.0, 1.0])  # superior
    right = np.cross(up, view)
    right /= np.linalg.norm(right)
    light = view * 0.8 + up * 0.45 + right * 0.2
    light /= np.linalg.norm(light)
    polys, shades, depths = [], [], []
    for m in meshes:
        v = m.mesh.vertices
        f = m.mesh.faces
        tri = v[f]  # (F, 3, 3)
        normals = m.mesh.face_normals
        facing = normals @ view > 0  # back-face culling
        tri, normals = tri[facing], normals[facing]
        screen = np.stack([tri @ right, tri @ up], axis=-1)  # (F, 3, 2)
        lambert = np.clip(normals @ light, 0.0, 1.0)
        base = np.array(to_rgb(m.color))
        shade = base[None, :] * (0.30 + 0.70 * lambert[:, None])
        polys.append(screen)
        shades.append(np.clip(shade, 0, 1))
        depths.append((tri @ view).mean(axis=1))
    screen = np.concatenate(polys)
    shade = np.concatenate(shades)
    depth = np.concatenate(depths)
    order = np.argsort(depth)  # far first
    coll = PolyCollection(screen[order], facecolors=shade[order], edgecolors=shade[order], linewidths=0.15)
    ax.add_collection(coll, autolim=False)  # limits are set below: no data-limit pass over every triangle
    pts = screen.reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.05 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ys = spread_labels([float(m.mesh.vertices.mean(axis=0) @ up) for m in meshes], (hi[1] - lo[1]) * 0.035)
    for m, y in zip(meshes, ys):
        extent_right = (m.mesh.vertices @ right).max()
        ax.text(extent_right + pad * 0.3, y, (captions or {}).get(m.level, m.level), fontsize=7, va="center",
                ha="left", color="#222222")
    ax.set_xlim(lo[0] - pad, hi[0] + pad * 4)
    return png_bytes(fig)

