"""Spatial ops: grid shuffles (PyFAME's scrambles) and the relocation of face parts."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..errors import InvalidOptionError
from ..kernels import gaussian_blur, masked_blend
from ..regions import region_masks
from .rng import uniform
from .opbase import _first_face_width, _per_face_blend


def _neighbour_swaps(key: int, size: int, reach: int, device) -> torch.Tensor:
    """PyFAME 0.7's low-level grid scramble as a lattice of ``size`` × ``size`` cell positions: visiting the
    cells in row-major order, each unvisited cell swaps with a random unvisited cell within ± ``reach`` rows and
    columns (itself if none is left). Returns int64 (size·size,) partner indices (an involution), drawn from the
    layer's stream once per video."""
    draws = uniform(key, torch.zeros(1, dtype=torch.long), (size * size,))[0].tolist()
    partner = list(range(size * size))
    visited = [False] * (size * size)
    for i in range(size * size):
        if visited[i]:
            continue
        r, c = divmod(i, size)
        options = [rr * size + cc for rr in range(max(r - reach, 0), min(r + reach + 1, size))
                   for cc in range(max(c - reach, 0), min(c + reach + 1, size))
                   if not visited[rr * size + cc] and rr * size + cc != i]
        j = options[min(int(draws[i] * len(options)), len(options) - 1)] if options else i
        partner[i], partner[j] = j, i
        visited[i] = visited[j] = True
    return torch.tensor(partner, dtype=torch.long, device=device)


_LATTICE = 64  # the neighbour lattice covers grids of up to 64 x 64 cells


def grid_shuffle(x, mask, weight, ctx, method: str = "random", square_size: int = 40, grid_dimensions=None,
                 overlap_threshold: float = 0.5, shift: int = 1, neighbourhood: int = 2):
    """Cut each face into a grid of cells; the cells whose overlap with the region is at least
    ``overlap_threshold`` exchange places (PyFAME ``layer_spatial_grid_shuffle`` and 0.7's
    ``facial_scramble``). Whole cells move, so the shuffled pixels are a permutation of the original ones
    (PyFAME clips to the face oval instead).

    The grid: squares of ``square_size`` px from the corner of each face's landmark bounding box, or with
    ``grid_dimensions`` (columns, rows) that many cells of a size fixed per video (the first face's bounding
    box divided by them), centred on each face's bounding box.

    ``method``: ``random`` (the high-level scramble: cells sorted by a random priority fixed per cell position
    for the whole video, so a cell keeps its destination while the face moves), ``neighbour`` (the low-level
    scramble: each cell swaps with a random cell within ± ``neighbourhood`` rows and columns, pairs drawn once
    per video), ``cyclic`` (each moves ``shift`` places along the row-major order of the moving cells),
    ``unchanged``. Random draws: the layer's stream. The weight switches the shuffle on (> 0.5) or off.

    Raises:
        InvalidOptionError: unknown method, square_size < 2, grid dimensions not two integers ≥ 1 (≤ 64),
            threshold outside [0, 1], neighbourhood < 1.
    """
    if (method not in ("random", "neighbour", "cyclic", "unchanged") or square_size < 2
            or not 0 <= overlap_threshold <= 1 or neighbourhood < 1):
        raise InvalidOptionError("grid_shuffle: method random|neighbour|cyclic|unchanged, square_size >= 2, "
                                 "0 <= overlap_threshold <= 1, neighbourhood >= 1")
    if grid_dimensions is not None and (len(grid_dimensions) != 2
                                        or not all(1 <= int(g) <= _LATTICE for g in grid_dimensions)):
        raise InvalidOptionError(f"grid_shuffle: grid_dimensions is (columns, rows), each 1..{_LATTICE}")
    faces = ctx.faces
    if len(faces) == 0 or method == "unchanged":
        return x
    b, c, h, w = x.shape
    lm = faces.landmarks[..., :2]
    lo, hi = lm.amin(1), lm.amax(1)
    if grid_dimensions is None:
        sw = sh = square_size
        origin = lo.floor().long()
        ncell = ((hi.ceil().long() - origin) + square_size - 1) // square_size    # (N, 2): columns, rows
    else:
        dims = torch.tensor([int(g) for g in grid_dimensions], device=x.device)
        if "cell" not in ctx.state:  # cell size fixed for the video from its first face
            ctx.state["cell"] = ((hi[0] - lo[0]) / dims).ceil().clamp(min=1).long().tolist()
        sw, sh = ctx.state["cell"]
        size = dims * torch.tensor([sw, sh], device=x.device)
        origin = ((lo + hi) / 2 - size / 2).floor().long()
        ncell = dims.expand(len(faces), 2)
    gx, gy = int(ncell[:, 0].max()), int(ncell[:, 1].max())
    n = len(faces)
    cx = torch.arange(gx, device=x.device)
    cy = torch.arange(gy, device=x.device)
    x0 = origin[:, 0, None, None] + cx[None, None, :] * sw                  # (N, 1, gx)
    y0 = origin[:, 1, None, None] + cy[None, :, None] * sh                  # (N, gy, 1)
    inside = ((x0 >= 0) & (x0 + sw <= w) & (y0 >= 0) & (y0 + sh <= h)
              & (cx[None, None, :] < ncell[:, 0, None, None]) & (cy[None, :, None] < ncell[:, 1, None, None]))
    # overlap of every cell with the region mask of its face's frame (mean of the mask over the cell)
    pooled = F.pad(mask, (0, sw, 0, sh))  # padded so that every cell lies within the tensor
    ys = y0.clamp(0, h)[..., None, None] + torch.arange(sh, device=x.device)[:, None]      # (N, gy, 1, sh, 1)
    xs = x0.clamp(0, w)[..., None, None] + torch.arange(sw, device=x.device)[None, :]      # (N, 1, gx, 1, sw)
    fr = faces.row[:, None, None, None, None]
    cover = pooled[fr, 0, ys, xs].mean(dim=(-1, -2))                                       # (N, gy, gx)
    active = inside & (cover >= overlap_threshold) & (weight[faces.row] > 0.5)[:, None, None]
    flat_active = active.reshape(n, -1)
    cells = gx * gy
    ids = torch.arange(cells, device=x.device).expand(n, -1)
    if method == "neighbour":
        if "partner" not in ctx.state:
            ctx.state["partner"] = _neighbour_swaps(ctx.key, _LATTICE, neighbourhood, x.device)
        on_lattice = ((cy[:, None] < _LATTICE) & (cx[None, :] < _LATTICE)).reshape(-1)  # larger grids: the rest stay
        lattice = (cy[:, None].clamp(max=_LATTICE - 1) * _LATTICE + cx[None, :].clamp(max=_LATTICE - 1)).reshape(-1)
        p = ctx.state["partner"][lattice]                                   # partner lattice position per cell
        pr, pc = torch.div(p, _LATTICE, rounding_mode="floor"), p % _LATTICE
        ok = (pr < gy) & (pc < gx) & on_lattice
        partner = torch.where(ok, pr * gx + pc, ids[0])                     # (cells,) in this grid's numbering
        both = flat_active & torch.gather(flat_active, 1, partner.expand(n, -1)) & ok
        src_of = torch.where(both, partner.expand(n, -1), ids)              # swaps only between moving cells
    else:
        order_dst = torch.argsort(torch.where(flat_active, ids, cells + 1), dim=1, stable=True)  # active first
        if method == "random":  # a fixed random priority per cell position (row, column) for the whole video
            pos_id = (cy[:, None] * 65536 + cx[None, :]).reshape(-1)
            priority = uniform(ctx.key, torch.zeros(1, dtype=torch.long, device=x.device), pos_id)[0]
            order_src = torch.argsort(torch.where(flat_active, priority.expand(n, -1), 2.0), dim=1)
        else:
            k = flat_active.sum(dim=1, keepdim=True).clamp(min=1)
            pos = torch.arange(cells, device=x.device).expand(n, -1)
            order_src = torch.gather(order_dst, 1, torch.where(pos < k, (pos - shift) % k, pos))
        src_of = torch.empty_like(ids)
        src_of.scatter_(1, order_dst, order_src)                  # destination cell -> source cell
        src_of = torch.where(flat_active, src_of, ids)
    # move pixels: every active destination cell takes the pixels of its source cell
    dst = torch.nonzero(flat_active & (src_of != ids))            # (M, 2): face, cell
    if dst.numel() == 0:
        return x
    f_idx, d_cell = dst[:, 0], dst[:, 1]
    s_cell = src_of[f_idx, d_cell]
    oy, ox = torch.arange(sh, device=x.device), torch.arange(sw, device=x.device)

    def pixel(cell):
        px = origin[f_idx, 0] + (cell % gx) * sw
        py = origin[f_idx, 1] + torch.div(cell, gx, rounding_mode="floor") * sh
        return py[:, None, None] + oy[None, :, None], px[:, None, None] + ox[None, None, :]
    dy, dx = pixel(d_cell)
    sy, sx = pixel(s_cell)
    frame = faces.row[f_idx][:, None, None]
    out = x.clone()
    out.permute(0, 2, 3, 1)[frame, dy, dx] = x.permute(0, 2, 3, 1)[frame, sy, sx]
    return out


def relocate(x, mask, weight, ctx, parts=("left_eye_region", "right_eye_region", "nose", "mouth"),
             max_offset: float = 0.15, rotations=(0.0,), feather: float = 2.0):
    """Landmark relocation ("scrambled faces", PyFAME ``layer_spatial_landmark_relocate``): each part (a region)
    is cut out, its hole filled with the surrounding skin (a normalised-convolution fill: a wide Gaussian of
    the face with the parts left out), and pasted back moved by a random offset of up to ``max_offset`` × the
    face width in x and y and rotated by one of ``rotations`` (degrees) about its centre. Offsets and angles are
    drawn once per video and part from the layer's stream, in face-relative units, so the parts follow the
    face. ``mask`` is not used (the parts are the regions); the weight switches the layer on (> 0.5)."""
    from ..regions import get_region

    faces = ctx.faces
    if len(faces) == 0 or not bool((weight > 0.5).any()):
        return x
    b, _, h, w = x.shape
    on = (weight > 0.5).to(x.dtype)[:, None, None, None]
    lm = faces.landmarks[..., :2]
    face_w = (lm[:, 454] - lm[:, 234]).norm(dim=1)
    regions = [get_region(p) for p in parts]
    masks = [region_masks(faces.landmarks, faces.row, r, b, (h, w), feather) for r in regions]
    holes = torch.stack(masks).amax(0)
    skin = region_masks(faces.landmarks, faces.row, "face_oval", b, (h, w))
    keep = skin * (1 - holes)
    fill_rgb = _smooth_fill(x, keep, max(_first_face_width(ctx) * 0.08, 2.0), ctx.origin)
    out = masked_blend(x, fill_rgb, holes, on.view(-1))
    zero = torch.zeros(1, dtype=torch.long, device=x.device)
    draws = uniform(ctx.key, zero, (len(parts), 3))[0]                                  # (P, 3): dx, dy, angle
    angles = torch.tensor([float(a) for a in rotations], device=x.device)
    pad = 3 * feather + 2
    x_faces = x[faces.row]
    for j, (region, m) in enumerate(zip(regions, masks)):
        dx, dy = (draws[j, :2] * 2 - 1) * max_offset
        ang = angles[min(int(draws[j, 2] * len(angles)), len(angles) - 1)] * math.pi / 180
        part = lm[:, list(region.indices())]                                          # (N, P, 2)
        centre = part.mean(1)                                                         # (N, 2)
        shift = torch.stack([dx * face_w, dy * face_w], dim=1)
        cos, sin = torch.cos(ang), torch.sin(ang)
        rot = torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])
        # where the part lands: d = R (s - c) + c + t; compute only in the box around that, for all faces
        dest = (part - centre[:, None]) @ rot.T + (centre + shift)[:, None]
        x0, y0 = (dest.amin((0, 1)) - pad).floor().clamp(min=0).long().tolist()
        x1, y1 = (dest.amax((0, 1)) + pad).ceil().long().tolist()
        x1, y1 = min(max(x1, x0), w), min(max(y1, y0), h)
        if x1 <= x0 or y1 <= y0:
            continue
        gy, gx = torch.meshgrid(torch.arange(y0, y1, device=x.device, dtype=x.dtype) + 0.5,
                                torch.arange(x0, x1, device=x.device, dtype=x.dtype) + 0.5, indexing="ij")
        d = torch.stack([gx, gy], -1)[None] - (centre + shift)[:, None, None]        # (N, hc, wc, 2)
        src = d @ rot + centre[:, None, None]                                        # s = R^-1 (d - c - t) + c
        grid = src / torch.tensor([w / 2, h / 2], device=x.device, dtype=x.dtype) - 1
        sample = functools.partial(F.grid_sample, grid=grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)
        out[:, :, y0:y1, x0:x1] = _per_face_blend(out[:, :, y0:y1, x0:x1], faces.row, sample(x_faces),
                                                  sample(m[faces.row]), on.view(-1))
    return out


_FILL_SCALE = 4  # the skin fill is smooth: computed on a 4x coarser grid


def _smooth_fill(x: torch.Tensor, keep: torch.Tensor, sigma: float, origin: tuple[int, int]) -> torch.Tensor:
    """Normalised-convolution fill: Gaussian(x · keep) / Gaussian(keep), σ px, computed on a grid 4× coarser
    aligned to the frame (``origin``: x's top-left corner in the frame), so that a window gives the frame's
    values."""
    s = _FILL_SCALE
    h, w = x.shape[-2:]
    px, py = origin[0] % s, origin[1] % s
    pad = (px, -(w + px) % s, py, -(h + py) % s)
    both = F.avg_pool2d(F.pad(torch.cat([x * keep, keep], dim=1), pad), s)
    sc = max(sigma / s, 0.5)
    k = 2 * int(3 * sc) + 1
    both = gaussian_blur(both, k, sc, "constant")
    fill = both[:, :3] / both[:, 3:].clamp(min=1e-4)
    return F.interpolate(fill, scale_factor=s, mode="bilinear", align_corners=False)[..., py:py + h, px:px + w]
