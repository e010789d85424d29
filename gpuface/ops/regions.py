"""Named FaceMesh regions (PyFAME 1.0.10's, subject-centric, mix-ups fixed) and batched soft-mask rasterisation.

A :class:`Region` is a polygon over FaceMesh landmark indices (a closed ring, filled) or a combination of
regions: ``a | b`` (union), ``a - b`` (difference), ``a & b`` (intersection). :func:`region_masks` rasterises
one region for every face of every frame of a batch into a mask (B, 1, H, W) in one pass: no Python loop over
frames or faces (only over the ring's edges, as row-crossing counts, and over the terms of a combination).

Rings come from PyFAME 1.0.10 ``pyfame/landmark/facial_landmarks.py`` (in its PyPI wheel)
and MediaPipe's canonical FaceMesh contours (``face_mesh_connections.py``). "Left" and "right" are the
subject's (MediaPipe's convention: the left eye, 263 …, is on the image's right in a frontal, non-mirrored
video). Fixes relative to PyFAME:

* v0.7 named the eye contours "irises", swapped left/right for eye regions, cheeks and hemi-faces; 1.0.10
  fixed the names; we follow 1.0.10's names.
* PyFAME's outer-lip ring drops point 0 (1.0.10) or 267 (0.7); MediaPipe's canonical ring has both: we keep both.
* PyFAME splits hemi-faces along the straight chord 10 → 152 and fills with ``fillConvexPoly`` (convex hull);
  we split along the mesh's midline vertices, so the halves follow the nose and lips, are disjoint and cover
  the face oval exactly, and every ring is filled as the polygon it is (no convex hull).
* PyFAME's "face skin" removes eye contours, brows and outer lips from the oval; we do the same (lips, not the
  whole mouth area) and also offer ``forehead`` (not in PyFAME: oval above the brows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gpuface.core.errors import InvalidOptionError


@dataclass(frozen=True)
class Region:
    """A face region: a filled ring of landmark indices, or ``op`` ("|", "-", "&") of two regions."""

    name: str
    ring: tuple[int, ...] = ()
    op: str | None = None
    parts: tuple["Region", ...] = ()

    def __or__(self, other: "Region") -> "Region":
        return Region(f"({self.name}|{other.name})", op="|", parts=(self, other))

    def __sub__(self, other: "Region") -> "Region":
        return Region(f"({self.name}-{other.name})", op="-", parts=(self, other))

    def __and__(self, other: "Region") -> "Region":
        return Region(f"({self.name}&{other.name})", op="&", parts=(self, other))

    def indices(self) -> tuple[int, ...]:
        """Every landmark index the region uses (sorted, unique)."""
        if not self.op:
            return tuple(sorted(set(self.ring)))
        return tuple(sorted(set().union(*(p.indices() for p in self.parts))))

    def named(self, name: str) -> "Region":
        return Region(name, self.ring, self.op, self.parts)


def _ring(name: str, idx: list[int]) -> Region:
    return Region(name, tuple(idx[:-1] if idx[0] == idx[-1] else idx))


# --- rings (PyFAME 1.0.10 / MediaPipe canonical contours) ---------------------------------------------------
FACE_OVAL = _ring("face_oval", [10, 338, 297, 332, 284, 251, 389, 356, 454, 366, 401, 288, 397, 365, 379, 378, 400,
                                377, 152, 148, 176, 149, 150, 136, 172, 58, 177, 137, 234, 127, 162, 21, 54, 103,
                                67, 109])
# PyFAME 0.7's FACE_OVAL_TIGHT_IDX (src/pyfame/utils/landmarks.py, Gavin-Bosman/PyFAME; dropped in 1.x): the oval
# drawn just inside the face's edge (through the cheeks' 345/352/376/433 and 213/147/123/116 instead of the jaw's
# outline) so that colour sampling takes no background
FACE_OVAL_TIGHT = _ring("face_oval_tight", [10, 338, 297, 332, 284, 251, 389, 356, 345, 352, 376, 433, 397, 365, 379,
                                            378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 213, 147, 123, 116, 127,
                                            162, 21, 54, 103, 67, 109, 10])
RIGHT_EYE = _ring("right_eye", [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246])
LEFT_EYE = _ring("left_eye", [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466])
RIGHT_IRIS = _ring("right_iris", [469, 470, 471, 472])
LEFT_IRIS = _ring("left_iris", [474, 475, 476, 477])
RIGHT_EYEBROW = _ring("right_eyebrow", [46, 53, 52, 65, 55, 107, 66, 105, 63, 70])
LEFT_EYEBROW = _ring("left_eyebrow", [276, 283, 282, 295, 285, 336, 296, 334, 293, 300])
RIGHT_EYE_REGION = _ring("right_eye_region", [71, 68, 104, 69, 107, 55, 189, 244, 233, 232, 231, 230, 229, 228,
                                              31, 35, 156])
LEFT_EYE_REGION = _ring("left_eye_region", [301, 298, 333, 299, 336, 285, 413, 464, 453, 452, 451, 450, 449, 448,
                                            261, 265, 383])
NOSE = _ring("nose", [168, 193, 122, 196, 236, 198, 209, 49, 48, 219, 235, 60, 242, 2, 290, 455, 294, 331, 429,
                      420, 456, 419, 351, 417])
NOSE_WIDE = _ring("nose_wide", [168, 193, 122, 196, 174, 217, 209, 49, 129, 64, 98, 167, 164, 393, 327, 294, 278,
                                279, 429, 437, 399, 419, 351, 417])
MOUTH = _ring("mouth", [164, 393, 391, 322, 410, 287, 273, 335, 406, 313, 18, 83, 182, 106, 43, 57, 186, 92, 165,
                        167])
LIPS_OUTER = _ring("lips_outer", [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
                                  40, 185])
LIPS_INNER = _ring("lips_inner", [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81,
                                  80, 191])
LEFT_CHEEK = _ring("left_cheek", [427, 411, 376, 352, 345, 340, 261, 448, 449, 450, 451, 452, 453, 412, 419, 399,
                                  437, 429, 279, 423, 426])
RIGHT_CHEEK = _ring("right_cheek", [207, 187, 147, 123, 116, 111, 31, 228, 229, 230, 231, 232, 233, 188, 196, 174,
                                    217, 209, 49, 203, 206])
CHIN = _ring("chin", [43, 106, 182, 83, 18, 313, 406, 335, 273, 422, 430, 394, 379, 378, 400, 377, 152, 148, 176,
                      149, 150, 169, 210, 202])
#: Facial midline, forehead top (10) to chin (152), along the mesh's sagittal vertices.
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15, 16, 17, 18, 200, 199,
           175, 152)
_OVAL_LEFT = FACE_OVAL.ring[1:18]    # 338 … 377: the subject's left arc, 10 → 152
_OVAL_RIGHT = FACE_OVAL.ring[19:]    # 148 … 109: the subject's right arc, 152 → 10
LEFT_HEMIFACE = Region("left_hemiface", MIDLINE[:1] + _OVAL_LEFT + MIDLINE[::-1][:-1])
RIGHT_HEMIFACE = Region("right_hemiface", MIDLINE[::-1][:1] + _OVAL_RIGHT + MIDLINE[:-1])
TOP_HEMIFACE = _ring("top_hemiface", [10, 338, 297, 332, 284, 251, 389, 356, 454, 366, 137, 234, 127, 162, 21, 54,
                                      103, 67, 109])
BOTTOM_HEMIFACE = _ring("bottom_hemiface", [366, 401, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150,
                                            136, 172, 58, 177, 137])
FOREHEAD = _ring("forehead", [162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 300, 293, 334, 296, 336,
                              9, 107, 66, 105, 63, 70])

EYES = (LEFT_EYE | RIGHT_EYE).named("eyes")
IRISES = (LEFT_IRIS | RIGHT_IRIS).named("irises")
BROWS = (LEFT_EYEBROW | RIGHT_EYEBROW).named("brows")
EYE_REGIONS = (LEFT_EYE_REGION | RIGHT_EYE_REGION).named("eye_regions")
LIPS = (LIPS_OUTER - LIPS_INNER).named("lips")
CHEEKS = (LEFT_CHEEK | RIGHT_CHEEK).named("cheeks")
CHEEKS_NOSE = (CHEEKS | NOSE_WIDE).named("cheeks_nose")
FACE_SKIN = (FACE_OVAL - EYES - BROWS - LIPS_OUTER).named("face_skin")

#: The whole frame (``region: frame``): every pixel of every frame, faces or not; for the ops that may cover it
#: (:data:`FRAME_OPS`); not part of an expression.
FRAME = Region("frame", op="frame")
#: Ops that accept ``region: frame`` (PyFAME can noise the whole frame).
FRAME_OPS = ("noise", "blur")

#: Every named region.
REGIONS: dict[str, Region] = {r.name: r for r in (
    FACE_OVAL, FACE_OVAL_TIGHT, FACE_SKIN, EYES, LEFT_EYE, RIGHT_EYE, EYE_REGIONS, LEFT_EYE_REGION, RIGHT_EYE_REGION,
    BROWS,
    LEFT_EYEBROW, RIGHT_EYEBROW, IRISES, LEFT_IRIS, RIGHT_IRIS, NOSE, NOSE_WIDE, LIPS, LIPS_OUTER, LIPS_INNER,
    MOUTH, CHEEKS, LEFT_CHEEK, RIGHT_CHEEK, CHEEKS_NOSE, CHIN, LEFT_HEMIFACE, RIGHT_HEMIFACE, TOP_HEMIFACE,
    BOTTOM_HEMIFACE, FOREHEAD, FRAME,
)}


def get_region(spec: str | Region | list) -> Region:
    """A region by name, an expression of names with ``|``, ``-``, ``&`` (left to right, no parentheses),
    e.g. ``"face_oval - eyes - lips"``, or a custom ring of FaceMesh landmark indices (PyFAME's ``create_path``):
    a list ``[i, j, k, …]`` (≥ 3 indices in 0–477, closed or not) or a list of such lists (their union).

    Raises:
        InvalidOptionError: unknown region name, ``frame`` inside an expression, a bad index list.
    """
    if isinstance(spec, Region):
        return spec
    if isinstance(spec, (list, tuple)):
        return _custom(spec)
    if not isinstance(spec, str):
        raise InvalidOptionError(f"a region is a name, an expression or a list of landmark indices, got {spec!r}")
    if spec.strip() == "frame":
        return FRAME
    tokens = spec.replace("|", " | ").replace("-", " - ").replace("&", " & ").split()
    out, op = None, None
    for tok in tokens:
        if tok in "|-&":
            op = tok
            continue
        if tok not in REGIONS:
            raise InvalidOptionError(f"unknown region {tok!r}; known: {', '.join(REGIONS)}")
        if tok == "frame":
            raise InvalidOptionError("region frame stands alone: it cannot be combined with | - &")
        r = REGIONS[tok]
        out = r if out is None else {"|": out | r, "-": out - r, "&": out & r}[op]
    if out is None:
        raise InvalidOptionError("empty region expression")
    return out


def _custom(spec: list | tuple) -> Region:
    rings = [spec] if all(isinstance(i, int) and not isinstance(i, bool) for i in spec) else spec
    out = None
    for ring in rings:
        if (not isinstance(ring, (list, tuple)) or len(ring) < 3
                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 478 for i in ring)):
            raise InvalidOptionError(f"a custom region is a list of >= 3 FaceMesh landmark indices (0-477) or a list "
                                     f"of such lists, got {ring!r}")
        r = _ring("custom", list(ring))
        out = r if out is None else out | r
    if out is None:
        raise InvalidOptionError("a custom region needs at least one ring of landmark indices")
    return out.named("custom")


def _fill_ring(points: torch.Tensor, ring: tuple[int, ...], lo: torch.Tensor, hm: int, wm: int) -> torch.Tensor:
    """Even-odd fill of one ring per face on local grids: bool (N, hm, wm); pixel centres at +0.5.

    Edges are oriented bottom-up before intersecting, so two polygons sharing an edge assign every pixel centre
    on either side of it consistently (the hemi-faces partition the oval exactly).
    """
    # local coordinates (one rounding of a translation-invariant value): a mask computed on a window of the
    # frame is then the same as on the whole frame
    pts = points[:, list(ring), :2] - lo[:, None].to(points.dtype)    # (N, P, 2)
    a, b = pts, torch.roll(pts, -1, dims=1)
    swap = a[..., 1] > b[..., 1]
    lo_pt = torch.where(swap[..., None], b, a)
    hi_pt = torch.where(swap[..., None], a, b)
    y = (torch.arange(hm, device=pts.device, dtype=pts.dtype) + 0.5)[None, :, None]                  # (1, hm, 1)
    y0, y1 = lo_pt[:, None, :, 1], hi_pt[:, None, :, 1]
    x0, x1 = lo_pt[:, None, :, 0], hi_pt[:, None, :, 0]
    cross = (y0 <= y) & (y < y1)                                                                     # (N, hm, P)
    t = (y - y0) / torch.where(y1 > y0, y1 - y0, torch.ones_like(y1))
    x = x0 + t * (x1 - x0)
    col = torch.floor(x - 0.5).long() + 1
    col = col.clamp(0, wm)
    toggles = torch.zeros(pts.shape[0], hm, wm + 1, dtype=torch.int32, device=pts.device)
    toggles.scatter_add_(2, col, cross.int())
    return (toggles.cumsum(dim=2)[:, :, :wm] % 2).bool()


def _eval(region: Region, points, lo, hm, wm) -> torch.Tensor:
    if not region.op:
        return _fill_ring(points, region.ring, lo, hm, wm)
    a, b = (_eval(p, points, lo, hm, wm) for p in region.parts)
    return a | b if region.op == "|" else (a & ~b if region.op == "-" else a & b)


def region_masks(landmarks: torch.Tensor, row: torch.Tensor, region: str | Region, batch_size: int,
                 frame_size: tuple[int, int], feather: float = 0.0, compact: bool | None = None) -> torch.Tensor:
    """Rasterise a region for every face of a batch into one mask per frame.

    Args:
        landmarks: float (N, 478, ≥2) FaceMesh landmarks in frame pixels (continuous coordinates: pixel ``i``
            covers ``[i, i+1)``).
        row: int64 (N,) row in the batch of each face.
        region: a :class:`Region` or a name / expression for :func:`get_region`.
        batch_size: B. frame_size: (H, W) in pixels.
        feather: standard deviation in pixels of a Gaussian that softens the mask edge (0: hard 0/1 mask).
        compact: rasterise each face on the smallest grid that holds every face's region (one host sync for its
            size; the default on the CPU) or on a frame-sized grid from each face's corner (no sync; the default on
            other devices). The same mask either way.

    Returns:
        float32 (B, 1, H, W) in [0, 1]; the union (max) over faces of the same frame; zeros for frames
        without faces (ones everywhere for ``frame``).

    Raises:
        InvalidOptionError: unknown region or negative feather.
    """
    if feather < 0:
        raise InvalidOptionError("feather must be >= 0 pixels")
    region = get_region(region)
    h, w = frame_size
    device = landmarks.device
    if region.op == "frame":
        return torch.ones(batch_size, 1, h, w, device=device)
    out = torch.zeros(batch_size * h * w, device=device)
    if landmarks.shape[0] == 0:
        return out.view(batch_size, 1, h, w)
    pts = landmarks[..., :2].float()
    used = pts[:, list(region.indices())]
    pad = int(math.ceil(3 * feather)) + 1
    lo = (used.amin(dim=1).floor().long() - pad).clamp(min=0)
    lo = torch.minimum(lo, torch.tensor([w - 1, h - 1], device=device))
    hi = (used.amax(dim=1).ceil().long() + pad).clamp(max=torch.tensor([w, h], device=device))
    if compact if compact is not None else device.type == "cpu":
        size = (hi - lo).clamp(min=1).amax(dim=0)
        wm, hm = int(size[0]), int(size[1])
    else:   # every region fits a frame-sized grid from its corner: a size known without reading the data
        wm, hm = w, h
    local = _eval(region, pts, lo, hm, wm).float()
    if feather > 0:
        from gpuface.kernels import gaussian_blur

        local = gaussian_blur(local[:, None], 2 * int(math.ceil(3 * feather)) + 1, feather, "constant")[:, 0]
    ys = lo[:, 1, None, None] + torch.arange(hm, device=device)[None, :, None]
    xs = lo[:, 0, None, None] + torch.arange(wm, device=device)[None, None, :]
    valid = (ys < h) & (xs < w)
    flat = row[:, None, None] * (h * w) + ys.clamp(max=h - 1) * w + xs.clamp(max=w - 1)
    spill = batch_size * h * w            # pixels outside the frame go to one extra slot, dropped: no mask indexing
    out = torch.cat([out, out.new_zeros(1)])
    out.scatter_reduce_(0, torch.where(valid, flat, spill).flatten(), local.flatten(), reduce="amax")
    return out[:spill].view(batch_size, 1, h, w)


__all__ = ["Region", "REGIONS", "FRAME", "FRAME_OPS", "MIDLINE", "get_region", "region_masks"]
