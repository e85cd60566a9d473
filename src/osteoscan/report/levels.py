"""The vertebra level of every voxel of a label map, computed once and shared by every output."""

from __future__ import annotations

import numpy as np

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


def level_map(labels: np.ndarray) -> np.ndarray:
    """uint8 map of ``VertebraLevel`` values (body + posterior elements), 0 elsewhere (discs too)."""
    lab = labels.astype(np.uint16, copy=False)
    out = np.empty(lab.shape, dtype=np.uint8)
    for k in range(0, lab.shape[0], _CHUNK_SLICES):
        out[k : k + _CHUNK_SLICES] = _LUT[lab[k : k + _CHUNK_SLICES]]
    return out
