"""Spatial ops: grid shuffles (PyFAME's scrambles) and the relocation of face parts."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gpuface.core.errors import InvalidOptionError
from gpuface.kernels import masked_blend
from gpuface.ops.geometry import sample_at
from gpuface.ops.regions import region_masks
from gpuface.core.syncs import upload
from gpuface.core.types import rank_in_frame
from gpuface.ops.rng import uniform
from gpuface.ops.base import _first_active_faces, _first_face_width, _may_sync, _normalised_blur, _per_face_blend


def _neighbour_swaps(key: int, size: int, reach: int, device) -> torch.Tensor:
    """PyFAME 0.7's low-level grid scramble as a lattice of ``size`` × ``size`` cell positions: visiting the
    cells in row-major order, each unvisited cell swaps with a random unvisited cell within ± ``reach`` rows and
    columns (itself if none is left). Returns int64 (size·size,) partner indices (an involution), drawn from the
    layer's stream once per video."""
    draws = uniform(key, torch.zeros(1, dtype=torch.long, device="cpu"), (size * size,))[0].tolist()
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
    return upload(torch.tensor(partner, dtype=torch.long, device="cpu"), device)


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
    n, dev = len(faces), x.device
    exact = _may_sync(ctx, x)
    first = torch.zeros(n, 2, dtype=torch.long, device=dev)  # (N, 2): the face's first grid cell that can move
    if grid_dimensions is None:
        sw = sh = square_size
        origin = lo.floor().long()
        ncell = ((hi.ceil().long() - origin) + square_size - 1) // square_size    # (N, 2): columns, rows
        if exact:     # the grid's size, read from the device
            gx, gy = int(ncell[:, 0].max()), int(ncell[:, 1].max())
        else:         # no sync: the cells that fit in the frame, counted from each face's first one inside it
            gx, gy = max(w // sw, 1), max(h // sh, 1)
            first = (-origin).clamp(min=0).add(square_size - 1).div(square_size, rounding_mode="floor")
    else:
        gx, gy = (int(g) for g in grid_dimensions)
        dims = upload(torch.tensor([gx, gy], device="cpu"), dev)
        if "cell" not in ctx.state:  # cell size fixed for the video from the first face the layer acts on
            chosen = _first_active_faces(ctx)
            if not chosen:
                return x
            i = chosen[0]
            ctx.state["cell"] = ((hi[i] - lo[i]) / dims).ceil().clamp(min=1).long().tolist()
        sw, sh = ctx.state["cell"]
        size = upload(torch.tensor([gx * sw, gy * sh], device="cpu"), dev)
        origin = ((lo + hi) / 2 - size / 2).floor().long()
        ncell = dims.expand(n, 2)
    cx = first[:, 0, None] + torch.arange(gx, device=dev)                 # (N, gx) column of each cell in the grid
    cy = first[:, 1, None] + torch.arange(gy, device=dev)                 # (N, gy)
    x0 = origin[:, 0, None, None] + cx[:, None, :] * sw                   # (N, 1, gx)
    y0 = origin[:, 1, None, None] + cy[:, :, None] * sh                   # (N, gy, 1)
    inside = ((x0 >= 0) & (x0 + sw <= w) & (y0 >= 0) & (y0 + sh <= h)
              & (cx[:, None, :] < ncell[:, 0, None, None]) & (cy[:, :, None] < ncell[:, 1, None, None]))
    # overlap of every cell with the region mask of its face's frame (mean of the mask over the cell)
    pooled = F.pad(mask, (0, sw, 0, sh))  # padded so that every cell lies within the tensor
    ys = y0.clamp(0, h)[..., None, None] + torch.arange(sh, device=dev)[:, None]      # (N, gy, 1, sh, 1)
    xs = x0.clamp(0, w)[..., None, None] + torch.arange(sw, device=dev)[None, :]      # (N, 1, gx, 1, sw)
    fr = faces.row[:, None, None, None, None]
    cover = pooled[fr, 0, ys, xs].mean(dim=(-1, -2))                                  # (N, gy, gx)
    active = inside & (cover >= overlap_threshold) & (weight[faces.row] > 0.5)[:, None, None]
    flat_active = active.reshape(n, -1)
    cells = gx * gy
    ids = torch.arange(cells, device=dev).expand(n, -1)       # row-major within each face's grid
    if method == "neighbour":
        if "partner" not in ctx.state:
            ctx.state["partner"] = _neighbour_swaps(ctx.key, _LATTICE, neighbourhood, dev)
        on_lattice = ((cy[:, :, None] < _LATTICE) & (cx[:, None, :] < _LATTICE)).reshape(n, -1)  # the rest stay
        lattice = (cy[:, :, None].clamp(max=_LATTICE - 1) * _LATTICE
                   + cx[:, None, :].clamp(max=_LATTICE - 1)).reshape(n, -1)
        p = ctx.state["partner"][lattice]                                   # partner lattice position per cell
        pr = torch.div(p, _LATTICE, rounding_mode="floor") - first[:, 1, None]
        pc = p % _LATTICE - first[:, 0, None]                               # in this face's grid
        ok = (pr >= 0) & (pr < gy) & (pc >= 0) & (pc < gx) & on_lattice
        partner = torch.where(ok, pr * gx + pc, ids)                        # (N, cells) in this grid's numbering
        both = flat_active & torch.gather(flat_active, 1, partner) & ok
        src_of = torch.where(both, partner, ids)                            # swaps only between moving cells
    else:
        order_dst = torch.argsort(torch.where(flat_active, ids, cells + 1), dim=1, stable=True)  # active first
        if method == "random":  # a fixed random priority per cell position (row, column) for the whole video
            pos_id = (cy[:, :, None] * 65536 + cx[:, None, :]).reshape(n, -1)
            priority = uniform(ctx.key, torch.zeros(1, dtype=torch.long, device=dev), pos_id)[0]
            order_src = torch.argsort(torch.where(flat_active, priority, 2.0), dim=1)
        else:
            k = flat_active.sum(dim=1, keepdim=True).clamp(min=1)
            order_src = torch.gather(order_dst, 1, torch.where(ids < k, (ids - shift) % k, ids))
        src_of = torch.empty_like(ids)
        src_of.scatter_(1, order_dst, order_src)                  # destination cell -> source cell
        src_of = torch.where(flat_active, src_of, ids)
    # move pixels: every active destination cell takes the pixels of its source cell (read from the input)
    moves = flat_active & (src_of != ids)
    if exact:    # only the cells that move
        f_idx, d_cell = torch.nonzero(moves).unbind(1)
        if f_idx.numel() == 0:
            return x
        frame = faces.row[f_idx]
    else:        # every cell; those that stay write to a spill frame past the batch (no sync for a count)
        f_idx, d_cell = torch.arange(n, device=dev).repeat_interleave(cells, output_size=n * cells), ids.reshape(-1)
        frame = torch.where(moves.reshape(-1), faces.row[f_idx], b)
    s_cell = src_of[f_idx, d_cell]
    oy, ox = torch.arange(sh, device=dev), torch.arange(sw, device=dev)

    def pixel(cell):
        px = origin[f_idx, 0] + (first[f_idx, 0] + cell % gx) * sw
        py = origin[f_idx, 1] + (first[f_idx, 1] + torch.div(cell, gx, rounding_mode="floor")) * sh
        return ((py[:, None, None] + oy[None, :, None]).clamp(0, h - 1),
                (px[:, None, None] + ox[None, None, :]).clamp(0, w - 1))
    dy, dx = pixel(d_cell)
    sy, sx = pixel(s_cell)
    frame = frame[:, None, None]
    if not exact or int(rank_in_frame(faces.row).max()) > 0:
        # where cells of two faces overlap, the later face's cell wins (a scatter-max of the write's number per
        # pixel: the same on any device, whatever order the writes run in); the others go to the spill frame
        target = ((frame * h + dy) * w + dx).expand(-1, sh, sw).reshape(-1)
        number = torch.arange(target.numel(), device=dev)
        last = torch.full(((b + 1) * h * w,), -1, dtype=torch.long, device=dev).scatter_reduce_(0, target, number,
                                                                                                  "amax")
        frame = torch.where((last[target] == number).view(-1, sh, sw), frame, b)
    out = torch.cat([x, x[:1]])
    out.permute(0, 2, 3, 1)[frame, dy, dx] = x.permute(0, 2, 3, 1)[frame.clamp(max=b - 1), sy, sx]
    return out[:b]


def relocate(x, mask, weight, ctx, parts=("left_eye_region", "right_eye_region", "nose", "mouth"),
             max_offset: float = 0.15, rotations=(0.0,), feather: float = 2.0):
    """Landmark relocation ("scrambled faces", PyFAME ``layer_spatial_landmark_relocate``): each part (a region)
    is cut out, its hole filled with the surrounding skin (a normalised-convolution fill: a wide Gaussian of
    the face with the parts left out), and pasted back moved by a random offset of up to ``max_offset`` × the
    face width in x and y and rotated by one of ``rotations`` (degrees) about its centre. Offsets and angles are
    drawn once per video and part from the layer's stream, in face-relative units, so the parts follow the
    face. ``mask`` is not used (the parts are the regions); the weight switches the layer on (> 0.5)."""
    from gpuface.ops.regions import get_region

    faces = ctx.faces
    host = ctx.weights if ctx.weights is not None else weight.tolist()
    if len(faces) == 0 or not any(v > 0.5 for v in host):
        return x
    b, _, h, w = x.shape
    dev = x.device
    on = (weight > 0.5).to(x.dtype)[:, None, None, None]
    # frame coordinates (window + origin: exact): a part's centre and where its pixels come from are rounded as in
    # the frame, whatever window (batch) the op runs in
    ox, oy = ctx.origin
    origin = torch.tensor(ctx.origin, dtype=x.dtype, device=dev)
    lm = faces.landmarks[..., :2] + origin
    face_w = (lm[:, 454] - lm[:, 234]).norm(dim=1)
    regions = [get_region(p) for p in parts]
    n = len(faces)
    # each face's own parts (a frame's union would move the other faces' parts with this face's offsets)
    masks = [region_masks(faces.landmarks, torch.arange(n, device=dev), r, n, (h, w), feather) for r in regions]
    holes = x.new_zeros(b, 1, h, w).scatter_reduce_(0, faces.row.view(-1, 1, 1, 1).expand(n, 1, h, w),
                                                    torch.stack(masks).amax(0), "amax")
    skin = region_masks(faces.landmarks, faces.row, "face_oval", b, (h, w))
    keep = skin * (1 - holes)
    fill_rgb = _normalised_blur(x, keep, max(_first_face_width(ctx) * 0.08, 2.0), ctx.origin)
    out = masked_blend(x, fill_rgb, holes, on.view(-1))
    if "moves" not in ctx.state:  # offsets (face widths) and rotations, drawn once per video on the host
        zero = torch.zeros(1, dtype=torch.long, device="cpu")
        draws = uniform(ctx.key, zero, (len(parts), 3))[0]                          # (P, 3): dx, dy, angle
        angles = torch.tensor([float(a) for a in rotations], device="cpu")
        ang = angles[(draws[:, 2] * len(angles)).long().clamp(max=len(angles) - 1)] * math.pi / 180
        cos, sin = torch.cos(ang), torch.sin(ang)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)   # (P, 2, 2)
        ctx.state["moves"] = (upload((draws[:, :2] * 2 - 1) * max_offset, dev), upload(rot, dev))
    offsets, rots = ctx.state["moves"]
    pad = 3 * feather + 2
    x_faces = x[faces.row]
    sync = _may_sync(ctx, x)
    for j, (region, m) in enumerate(zip(regions, masks)):
        part = lm[:, list(region.indices())]                                          # (N, P, 2)
        centre = part.mean(1)                                                         # (N, 2)
        shift, rot = offsets[j] * face_w[:, None], rots[j]
        target = centre + shift                                                       # (N, 2) frame px
        # where the part lands: d = R (s - c) + c + t; on the CPU compute only in the box around that, for all
        # faces (on a GPU in the whole window: reading the box would cost a host sync)
        if sync:
            dest = (part - centre[:, None]) @ rot.T + target[:, None] - origin
            x0, y0 = (dest.amin((0, 1)) - pad).floor().clamp(min=0).long().tolist()
            x1, y1 = (dest.amax((0, 1)) + pad).ceil().long().tolist()
            x1, y1 = min(max(x1, x0), w), min(max(y1, y0), h)
            if x1 <= x0 or y1 <= y0:
                continue
        else:
            x0, y0, x1, y1 = 0, 0, w, h
        gy, gx = torch.meshgrid(torch.arange(y0 + oy, y1 + oy, device=dev, dtype=x.dtype) + 0.5,
                                torch.arange(x0 + ox, x1 + ox, device=dev, dtype=x.dtype) + 0.5, indexing="ij")
        dx_, dy_ = gx[None] - target[:, 0, None, None], gy[None] - target[:, 1, None, None]
        # s = R^-1 (d - c - t) + c, element by element (a batched matmul's algorithm depends on N), then back to
        # the window's pixel-index coordinates (exact), sampled without normalising by the window's size
        sx = dx_ * rot[0, 0] + dy_ * rot[1, 0] + centre[:, 0, None, None] - (ox + 0.5)
        sy = dx_ * rot[0, 1] + dy_ * rot[1, 1] + centre[:, 1, None, None] - (oy + 0.5)
        out[:, :, y0:y1, x0:x1] = _per_face_blend(out[:, :, y0:y1, x0:x1], faces.row, sample_at(x_faces, sx, sy),
                                                  sample_at(m, sx, sy), on.view(-1), sync)
    return out
