"""The vertebra level of every voxel of a label map, computed once and shared by every output."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from osteoscan.labels import BODY_OFFSET, DISC_OFFSET, POSTERIOR_OFFSET, VertebraLevel

#: label value -> VertebraLevel value for body and posterior-element labels, 0 for everything else
#: (discs, phantom anatomy, background). A lookup table: one gather pass over a 512^2 x 300 map.
_LUT = np.zeros(np.iinfo(np.uint16).max + 1, dtype=np.uint8)
for _level in VertebraLevel:
    _LUT[BODY_OFFSET + int(_level)] = int(_level)
    _LUT[POSTERIOR_OFFSET + int(_level)] = int(_level)
assert POSTERIOR_OFFSET + max(VertebraLevel) < DISC_OFFSET


#: Slices per lookup chunk: numpy widens index arrays to intp (8 bytes/voxel), so a whole 512^2 x 400
#: map at once would need a 800 MB temporary.
_CHUNK_SLICES = 16


def nonzero_box(array: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the non-zero voxels of a 3-D array, or None when all are zero.

    The labelled spine fills a few percent of a CT grid; work done within this box instead of over the
    whole grid is what keeps the outputs fast. Costs one reduction along axis 0 (memory-bandwidth
    bound) plus one within the in-plane box.
    """
    in_plane = array.any(axis=0)
    rows = np.flatnonzero(in_plane.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(in_plane.any(axis=0))
    r, c = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    ks = np.flatnonzero(array[:, r, c].any(axis=(1, 2)))
    return slice(int(ks[0]), int(ks[-1]) + 1), r, c


def level_map(labels: np.ndarray, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """uint8 map of ``VertebraLevel`` values (body + posterior elements), 0 elsewhere (discs too).

    ``box``: :func:`nonzero_box` of a 3-D ``labels`` (computed when not given); only voxels within it
    are looked up (everything outside is background by definition).
    """
    lab = labels.astype(np.uint16, copy=False)
    out = np.zeros(lab.shape, dtype=np.uint8)
    if box is None:
        if lab.ndim != 3:  # any other shape: looked up whole
            out[...] = _LUT[lab]
            return out
        box = nonzero_box(lab)
        if box is None:
            return out
    sub, dst = lab[box], out[box]
    for k in range(0, sub.shape[0], _CHUNK_SLICES):
        dst[k : k + _CHUNK_SLICES] = _LUT[sub[k : k + _CHUNK_SLICES]]
    return out


def level_boxes(lvl: np.ndarray, box: tuple[slice, ...] | None) -> list[tuple[slice, ...] | None]:
    """``scipy.ndimage.find_objects(lvl)`` computed within ``box`` (the non-zero box of the labels the
    level map was made from, or None when they are all zero): same list, one small pass."""
    if box is None:
        return []
    offsets = [s.start for s in box]
    return [
        None if b is None else tuple(slice(s.start + o, s.stop + o) for s, o in zip(b, offsets))
        for b in ndimage.find_objects(lvl[box])
    ]
