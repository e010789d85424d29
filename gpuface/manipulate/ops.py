"""Stimulus manipulations as batched tensor ops (PyFAME 1.0.10's layers, on whole batches, any device).

Every op has the signature ``op(x, mask, weight, ctx, **params) -> x'``:

* ``x``: float32 (B, 3, H, W) RGB in [0, 1]; ``mask``: float32 (B, 1, H, W) in [0, 1], the layer's region for
  every face of the frame (zeros where a frame has no face); ``weight``: float32 (B,) timing weights in [0, 1];
  ``ctx``: :class:`Context` (landmarks of the batch, frame numbers, random-stream key, per-video state).
* It returns the manipulated batch. Frames whose weight is 0 are returned unchanged, and so are pixels where
  ``mask`` is 0 (bit-exact after the uint8 round trip) — except for the ops whose point is to paint outside a
  region: ``mask`` (the background), ``bar``, ``point_light``, ``overlay`` and ``relocate``, which place
  their result from the landmarks.

Semantics follow PyFAME 1.0.10 (``pyfame/layer/manipulations``, read from its PyPI wheel), fixed where it is
wrong: colour shifts are in CIELAB a*/b* (recolour) or HSV S/V (saturation, brightness) with magnitudes in per
cent, "relative" scales taking the head-room from the region's mean in the first frame of the video; values
are clipped before uint8 (PyFAME 0.7 wrapped). Colour conversions: ``kornia.color``.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import kornia
import torch
import torch.nn.functional as F

from ..draw import discs, segments
from ..errors import InvalidOptionError
from ..kernels import masked_blend, masked_gaussian_blur
from ..geometry import window_slices
from ..regions import Region, region_masks
from ..types import Faces, rank_in_frame
from .rng import normal, uniform


@dataclass
class Context:
    """What an op may need besides pixels.

    Attributes:
        faces: the batch's faces with ``landmarks`` (N, 478, 3) px and ``frame`` (N,).
        frames: int64 (B,) frame numbers in the video (for random streams). pts: float64 (B,) seconds.
        key: the layer's random-stream key (seed, video, layer). state: per-video, per-layer memory
            (e.g. the colour sampled on the first frame, a grid permutation).
        origin: (x0, y0) px of ``x``'s top-left corner in the frame and size: (H, W) of the whole frame, when
            ``x`` is a window of the frame (:class:`~gpuface.manipulate.layers.LayerStack` computes local ops
            only around the faces); ops whose output depends on absolute position (noise) use them.
    """

    faces: Faces
    frames: torch.Tensor
    pts: torch.Tensor
    key: int = 0
    state: dict = field(default_factory=dict)
    origin: tuple[int, int] = (0, 0)
    size: tuple[int, int] | None = None


def _region_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, 1, H, W) over mask > 0.5 in the first frame where the mask is not empty (nan if none),
    so that what is sampled does not depend on how the video is cut into batches."""
    m = mask > 0.5
    has = m.flatten(1).any(dim=1)
    if not bool(has.any()):
        return torch.tensor(float("nan"), device=values.device)
    i = int(torch.nonzero(has)[0])
    return values[i][m[i]].mean()


def _window(mask: torch.Tensor, pad: int) -> tuple[slice, slice]:
    """Rows and columns of the batch's mask bounding box, padded (the only part an op needs to compute); one sync."""
    h, w = mask.shape[-2:]
    on = mask > 0
    rows, cols = on.any(dim=3).flatten(0, 1).any(dim=0), on.any(dim=2).flatten(0, 1).any(dim=0)
    r, c = torch.arange(h, device=mask.device), torch.arange(w, device=mask.device)
    box = torch.stack([torch.where(cols, c, w).amin(), torch.where(rows, r, h).amin(),
                       torch.where(cols, c, -1).amax() + 1, torch.where(rows, r, -1).amax() + 1])
    return window_slices(box, h, w, pad)


def _windowed(op):
    """Run a per-pixel op only on the window around the batch's masks (weight > 0), write it back."""
    @functools.wraps(op)
    def run(x, mask, weight, ctx, **params):
        rows, cols = _window(mask * (weight > 0)[:, None, None, None], 0)
        if rows.stop <= rows.start:
            return x
        out = x.clone()
        out[:, :, rows, cols] = op(x[:, :, rows, cols], mask[:, :, rows, cols], weight, ctx, **params)
        return out
    return run


# --- colour ---------------------------------------------------------------------------------------------------
_RECOLOUR = {"red": (1, +1, 127.0), "green": (1, -1, 128.0), "yellow": (2, +1, 127.0), "blue": (2, -1, 128.0)}


@_windowed
def recolour(x, mask, weight, ctx, colour: str = "red", magnitude: float = 10.0, scale: str = "relative"):
    """Shift the region toward red/green (CIELAB a* ±) or yellow/blue (b* ±).

    ``magnitude`` is in per cent: ``absolute`` shifts by ``magnitude`` % of the channel's half range (127 or
    128 units) × weight; ``relative`` by ``magnitude`` % of the head-room between the region's mean a*/b* on
    the video's first landmarked frame and the end of the range, × weight (PyFAME 1.0.10
    ``layer_colour_recolour``). Result clipped to a*, b* ∈ [-128, 127] and to RGB [0, 1].
    """
    if colour not in _RECOLOUR or scale not in ("relative", "absolute") or magnitude < 0:
        raise InvalidOptionError("recolour: colour red|green|yellow|blue, scale relative|absolute, magnitude >= 0")
    channel, sign, half = _RECOLOUR[colour]
    lab = kornia.color.rgb_to_lab(x)
    if scale == "absolute":
        amount = half * magnitude / 100
    else:
        if "amount" not in ctx.state:
            mean = _region_mean(lab[:, channel:channel + 1], mask)
            if torch.isnan(mean):
                return x  # no face yet: sample on the first frame that has one
            room = (127.0 - mean) if sign > 0 else (128.0 + mean)
            ctx.state["amount"] = float(magnitude * room / 100)
        amount = ctx.state["amount"]
    shifted = lab.clone()
    shifted[:, channel] = (lab[:, channel] + sign * amount * weight[:, None, None]).clamp(-128, 127)
    return masked_blend(x, kornia.color.lab_to_rgb(shifted).clamp(0, 1), mask)


def _hsv_shift(x, mask, weight, ctx, channel: int, magnitude: float, scale: str, name: str):
    if scale not in ("relative", "absolute"):
        raise InvalidOptionError(f"{name}: scale must be relative or absolute")
    hsv = kornia.color.rgb_to_hsv(x)
    if scale == "absolute":
        amount = magnitude / 100
    else:
        if "amount" not in ctx.state:
            mean = _region_mean(hsv[:, channel:channel + 1], mask)
            if torch.isnan(mean):
                return x
            ctx.state["amount"] = float(magnitude * (1.0 - mean) / 100)
        amount = ctx.state["amount"]
    hsv[:, channel] = (hsv[:, channel] + amount * weight[:, None, None]).clamp(0, 1)
    return masked_blend(x, kornia.color.hsv_to_rgb(hsv).clamp(0, 1), mask)


@_windowed
def saturation(x, mask, weight, ctx, magnitude: float = -12.0, scale: str = "relative"):
    """Shift HSV saturation by ``magnitude`` % (of the full range, or of the head-room above the region's
    first-frame mean when ``relative``) × weight; PyFAME 1.0.10 ``layer_colour_saturation``."""
    return _hsv_shift(x, mask, weight, ctx, 1, magnitude, scale, "saturation")


@_windowed
def brightness(x, mask, weight, ctx, magnitude: float = 15.0, scale: str = "relative"):
    """Shift HSV value (brightness) by ``magnitude`` % × weight; PyFAME 1.0.10 ``layer_colour_brightness``."""
    return _hsv_shift(x, mask, weight, ctx, 2, magnitude, scale, "brightness")


# --- masking and occlusion --------------------------------------------------------------------------------------
def _rgb(colour, like: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(colour, dtype=like.dtype, device=like.device)
    if c.numel() != 3:
        raise InvalidOptionError(f"colour must be 3 values 0-255, got {colour}")
    return (c / 255.0).view(1, 3, 1, 1)


def mask_background(x, mask, weight, ctx, background=(0, 0, 0)):
    """Keep the region, paint everything else ``background`` (RGB 0–255) — PyFAME ``layer_mask``. Frames without
    a face are left unchanged; the weight fades the background in."""
    has = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    has[ctx.faces.frame] = 1.0
    return masked_blend(x, _rgb(background, x), 1 - mask, weight * has)


def fill(x, mask, weight, ctx, method: str = "black", colour=(0, 0, 0)):
    """Paint the region: ``black``, a ``colour``, or ``mean`` — each face's mean colour over its face oval minus
    eyes and lips (PyFAME ``OCCLUSION_FILL_MEAN``)."""
    if method not in ("black", "colour", "mean"):
        raise InvalidOptionError("fill: method black|colour|mean")
    if method == "mean":
        b, _, h, w = x.shape
        skin = region_masks(ctx.faces.landmarks, ctx.faces.frame, "face_oval - eyes - lips_outer", b, (h, w))
        total = (x * skin).sum(dim=(2, 3)) / skin.sum(dim=(2, 3)).clamp(min=1)
        target = total[:, :, None, None].expand_as(x)
    else:
        target = _rgb((0, 0, 0) if method == "black" else colour, x).expand_as(x)
    return masked_blend(x, target, mask, weight)


def bar(x, mask, weight, ctx, colour=(0, 0, 0), margin: float = 0.12, thickness: float = 1.0):
    """A bar over the region (PyFAME ``layer_occlusion_bar``, default over the eyes), scaled to the face and
    rotating with head roll: the region's landmarks are measured along the eye line (33 → 263) and across it;
    the bar spans them plus ``margin`` × the face width (234 ↔ 454) at each end, and ``thickness`` × their
    extent across (at least 0.15 face widths). ``mask`` is ignored beyond choosing the region."""
    faces = ctx.faces
    if len(faces) == 0:
        return x
    region: Region = ctx.state["region"]
    lm = faces.landmarks[..., :2]
    pts = lm[:, list(region.indices())]
    axis = lm[:, 263] - lm[:, 33]
    axis = axis / axis.norm(dim=1, keepdim=True).clamp(min=1e-6)
    normal_ = torch.stack([-axis[:, 1], axis[:, 0]], dim=1)
    face_w = (lm[:, 454] - lm[:, 234]).norm(dim=1)
    centre = pts.mean(dim=1)
    u = ((pts - centre[:, None]) * axis[:, None]).sum(-1)
    v = ((pts - centre[:, None]) * normal_[:, None]).sum(-1)
    u0, u1 = u.amin(1) - margin * face_w, u.amax(1) + margin * face_w
    half_v = torch.maximum((v.amax(1) - v.amin(1)) * thickness, 0.15 * face_w) / 2
    vc = (v.amax(1) + v.amin(1)) / 2
    corners = torch.stack([centre + axis * uu[:, None] + normal_ * (vc + vv)[:, None]
                           for uu, vv in ((u0, -half_v), (u1, -half_v), (u1, half_v), (u0, half_v))], dim=1)
    b, _, h, w = x.shape
    rect = region_masks(corners, faces.frame, Region("bar", (0, 1, 2, 3)), b, (h, w))
    return masked_blend(x, _rgb(colour, x), rect, weight)


def blur(x, mask, weight, ctx, method: str = "gaussian", max_kernel_size: int = 29):
    """Blur inside the region with a kernel that grows with the weight: ``k = 3 + weight·(max − 3)``, made odd
    (PyFAME ``layer_occlusion_blur``); gaussian (σ from k as OpenCV: 0.3·((k−1)/2 − 1) + 0.8), average or
    median (``kornia.filters``). Computed only in the window around the batch's masks."""
    if method not in ("gaussian", "average", "median") or max_kernel_size < 3:
        raise InvalidOptionError("blur: method gaussian|average|median, max_kernel_size >= 3")
    kernels = (3 + weight * (max_kernel_size - 3)).round().long()
    kernels = kernels + (kernels % 2 == 0).long()
    rows, cols = _window(mask * (weight > 0)[:, None, None, None], max_kernel_size)
    out = x.clone()
    for k in torch.unique(kernels[weight > 0]).tolist():
        sel = torch.nonzero((kernels == k) & (weight > 0)).flatten()
        win, m = x[:, :, rows, cols][sel], mask[:, :, rows, cols][sel]
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
        k = min(k, 2 * min(win.shape[-2:]) - 1)  # reflect borders need the radius inside the window
        if method == "gaussian":  # fused separable blur + blend (a Triton kernel on CUDA where faster)
            out[sel, :, rows, cols] = masked_gaussian_blur(win, m, k, sigma)
            continue
        if method == "average":
            blurred = kornia.filters.box_blur(win, (k, k), border_type="reflect")
        else:
            blurred = kornia.filters.median_blur(win, (k, k))
        out[sel, :, rows, cols] = masked_blend(win, blurred, m)
    return out


def noise(x, mask, weight, ctx, method: str = "gaussian", probability: float = 0.5, pixel_size: int = 32,
          mean: float = 0.0, std: float = 0.5):
    """Noise inside the region (PyFAME ``layer_occlusion_noise``): ``pixelate`` (blocks of ``pixel_size`` px,
    block means), ``gaussian`` (mean, std in [0, 1] pixel units, added), ``salt_and_pepper`` (each pixel black
    with probability p/2, white with p/2). Random draws come from the counter-based stream of
    (seed, video, layer, frame): fresh each frame, identical on any device and batch size. The weight is the
    opacity."""
    if method not in ("pixelate", "gaussian", "salt_and_pepper") or not 0 <= probability <= 1 or pixel_size < 1:
        raise InvalidOptionError("noise: method pixelate|gaussian|salt_and_pepper, 0 <= probability <= 1, "
                                 "pixel_size >= 1")
    b, c, h, w = x.shape
    ox, oy = ctx.origin
    if method == "pixelate":  # blocks aligned to the frame's grid (x may be a window of the frame)
        p, px, py = pixel_size, ox % pixel_size, oy % pixel_size
        sums = F.avg_pool2d(F.pad(x, (px, 0, py, 0)), p, p, ceil_mode=True)
        counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), (px, 0, py, 0)), p, p, ceil_mode=True)
        y = F.interpolate(sums / counts, scale_factor=p, mode="nearest")[..., py:py + h, px:px + w]
        return masked_blend(x, y, mask, weight)
    full_w = ctx.size[1] if ctx.size else w
    full_hw = (ctx.size[0] * ctx.size[1]) if ctx.size else h * w
    rows, cols = _window(mask * (weight > 0)[:, None, None, None], 0)
    if rows.stop <= rows.start:
        return x
    frames = ctx.frames.to(x.device)
    r = torch.arange(rows.start, rows.stop, device=x.device) + oy
    q = torch.arange(cols.start, cols.stop, device=x.device) + ox
    pixel = r[:, None] * full_w + q[None, :]                 # absolute pixel index: independent of the window
    win = x[:, :, rows, cols]
    if method == "gaussian":
        index = torch.arange(c, device=x.device)[:, None, None] * full_hw + pixel
        y = (win + mean + std * normal(ctx.key, frames, index)).clamp(0, 1)
    else:
        u = uniform(ctx.key, frames, pixel[None])
        y = torch.where(u < probability / 2, torch.zeros_like(win),
                        torch.where(u < probability, torch.ones_like(win), win))
    out = x.clone()
    out[:, :, rows, cols] = masked_blend(win, y, mask[:, :, rows, cols], weight)
    return out


def bubbles(x, mask, weight, ctx, count: int = 10, sigma: float = 0.05, background=(128, 128, 128),
            per_frame: bool = False):
    """Gosselin & Schyns (2001) "Bubbles" (Vision Research 41): the region is hidden behind ``background``
    except through ``count`` Gaussian apertures of standard deviation ``sigma`` × the face width, whose centres
    are uniform over the face's landmark bounding box, in face-relative coordinates (they move with the face).
    Centres are drawn once per video (``per_frame=False``) or afresh each frame, from the stream of
    (seed, video, layer[, frame])."""
    faces = ctx.faces
    if count < 1 or sigma <= 0:
        raise InvalidOptionError("bubbles: count >= 1 and sigma > 0")
    if len(faces) == 0:
        return x
    b, _, h, w = x.shape
    face_frames = ctx.frames.to(x.device)[faces.frame] if per_frame else torch.zeros_like(faces.frame)
    uv = uniform(ctx.key, face_frames, (count, 2))                                          # (N, count, 2)
    lm = faces.landmarks[..., :2]
    lo, hi = lm.amin(1), lm.amax(1)
    offset = uv * (hi - lo)[:, None]                                  # bubble centres from the box corner lo
    s = (sigma * (lm[:, 454] - lm[:, 234]).norm(dim=1)).clamp(min=0.5)                      # (N,)
    # distances from lo first: the same values whether x is the whole frame or a window of it
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5)[None] - lo[:, 1:2]          # (N, H)
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5)[None] - lo[:, 0:1]          # (N, W)
    aperture = torch.zeros(b, h, w, device=x.device, dtype=x.dtype)
    for j in range(count):  # a loop over bubbles (not frames or faces): each step is one batched op
        gy = torch.exp(-(ys - offset[:, j, 1:2]) ** 2 / (2 * s[:, None] ** 2))                # (N, H)
        gx = torch.exp(-(xs - offset[:, j, 0:1]) ** 2 / (2 * s[:, None] ** 2))                # (N, W)
        g = gy[:, :, None] * gx[:, None, :]
        with warnings.catch_warnings():  # index_reduce is flagged beta; its amax semantics are what we need
            warnings.simplefilter("ignore", UserWarning)
            aperture.index_reduce_(0, faces.frame, g, "amax")
    hidden = masked_blend(_rgb(background, x).expand_as(x), x, aperture[:, None])
    return masked_blend(x, hidden, mask, weight)


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
    fr = faces.frame[:, None, None, None, None]
    cover = pooled[fr, 0, ys, xs].mean(dim=(-1, -2))                                       # (N, gy, gx)
    active = inside & (cover >= overlap_threshold) & (weight[faces.frame] > 0.5)[:, None, None]
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
    frame = faces.frame[f_idx][:, None, None]
    out = x.clone()
    out.permute(0, 2, 3, 1)[frame, dy, dx] = x.permute(0, 2, 3, 1)[frame, sy, sx]
    return out


# --- stylise and overlay -----------------------------------------------------------------------------------------
def point_light(x, mask, weight, ctx, density: float = 1.0, colour=(255, 255, 255), radius: int = 3,
                history: str | None = None, history_window: float = 0.5, history_colour=(255, 0, 0),
                keep_background: bool = False, invert: bool = False):
    """Point-light display (PyFAME ``layer_stylise_point_light``; Johansson 1973): the landmarks lying inside the
    region on the video's first landmarked frame (a seeded ``density`` fraction of them) drawn as discs of
    ``radius`` px on black (or over the frame with ``keep_background``; ``invert``: black on white). History:
    ``origin`` draws each point's path from its first position, ``relative`` its trail over the last
    ``history_window`` seconds (as dots every frame). Random draws: the layer's stream."""
    if not 0 < density <= 1 or radius < 0 or history not in (None, "origin", "relative"):
        raise InvalidOptionError("point_light: 0 < density <= 1, radius >= 0, history None|origin|relative")
    faces = ctx.faces
    if len(faces) == 0:
        return x
    lm = faces.landmarks[..., :2]
    if "points" not in ctx.state:
        first = int(faces.frame.min())
        i = int(torch.nonzero(faces.frame == first)[0])
        pos = lm[i].floor().long()
        h, w = mask.shape[-2:]
        ok = (pos[:, 0] >= 0) & (pos[:, 0] < w) & (pos[:, 1] >= 0) & (pos[:, 1] < h)
        inside = torch.zeros(lm.shape[1], dtype=torch.bool, device=x.device)
        inside[ok] = mask[first, 0, pos[ok, 1], pos[ok, 0]] > 0.5
        keep = uniform(ctx.key, torch.zeros(1, dtype=torch.long, device=x.device), (lm.shape[1],))[0] < density
        ctx.state["points"] = torch.nonzero(inside & keep).flatten()
        ctx.state["trail"] = []
    idx = ctx.state["points"]
    bg = x.clone() if keep_background else torch.full_like(x, 1.0 if invert else 0.0)
    point_rgb = _rgb(colour if not invert else tuple(255 - c for c in colour), x).view(3)
    pts = lm[:, idx]                                                    # (N, P, 2)
    frame_of = faces.frame[:, None].expand(-1, idx.numel()).reshape(-1)
    if history is not None:
        trail = ctx.state["trail"]
        times = ctx.pts.to(x.device)[faces.frame]
        hist_rgb = _rgb(history_colour, x).view(3)
        for n in range(len(faces)):  # history is sequential by nature: per face, past positions up to now
            trail.append((float(times[n]), pts[n]))
            t = float(times[n])
            past = [p for (tt, p) in trail if history == "origin" or t - tt <= history_window]
            if history == "origin":
                past = [trail[0][1]]
            if past:
                start = torch.cat(past)
                segments(bg, faces.frame[n].expand(start.shape[0]), start, pts[n].repeat(len(past), 1),
                         max(radius // 2, 0), hist_rgb)
        cutoff = float(times.max()) - history_window
        ctx.state["trail"] = trail[:1] + [(tt, p) for (tt, p) in trail[1:] if tt >= cutoff]
    discs(bg, frame_of, pts.reshape(-1, 2), radius, point_rgb)
    has = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    has[faces.frame] = 1.0
    return masked_blend(x, bg, torch.ones_like(x[:1, :1, :1, :1]), weight * has)


@_windowed
def pencil_sketch(x, mask, weight, ctx, detail: float = 0.35, bias: float = 7.0):
    """Pencil sketch of the region (after PyFAME ``layer_stylise_pencil_sketch``): grey divided by its
    illumination (a Gaussian of σ = face width · 0.05 / detail), then a local mean threshold (window ≈ face
    width · 0.04 / detail, odd) with ``bias`` grey levels: dark strokes on white. Kornia filters, computed in
    the window around the batch's masks."""
    if detail <= 0:
        raise InvalidOptionError("pencil_sketch: detail must be > 0")
    faces = ctx.faces
    if len(faces) == 0:
        return x
    lm = faces.landmarks[..., :2]
    face_w = float((lm[..., 0].amax(1) - lm[..., 0].amin(1)).mean())
    grey = kornia.color.rgb_to_grayscale(x)
    sigma = max(face_w * 0.05 / detail, 1.0)
    k = 2 * int(3 * sigma) + 1
    illum = kornia.filters.gaussian_blur2d(grey, (k, k), (sigma, sigma), border_type="reflect")
    norm = (grey / illum.clamp(min=1e-3)).clamp(0, 1)
    t = max(int(face_w * 0.04 / detail) | 1, 3)
    local = kornia.filters.box_blur(norm, (t, t), border_type="reflect")
    sketch = (norm > local - bias / 255).to(x.dtype).expand_as(x)
    return masked_blend(x, sketch, mask, weight)


def overlay(x, mask, weight, ctx, image=None, anchors=(33, 263), centre: int = 168, scale: float = 1.6,
            y_offset: float = 0.0, clip: bool = False):
    """Alpha-blend an RGBA image (a float (4, h, w) tensor in [0, 1]; a file named in a spec is read when the spec
    loads, never by the op) on every face, scaled so its
    width is ``scale`` × the distance between landmarks ``anchors`` (default the outer eye corners), rotated with
    the line through them (head roll), centred on landmark ``centre`` (default 168, between the eyes) moved by
    ``y_offset`` × its height along the face's vertical (PyFAME ``layer_overlay``, any image, any anchors).
    ``clip``: show the image only inside the layer's region (PyFAME's pupils drawn only where the eye is open:
    e.g. region ``eyes``, anchors 468/473); otherwise ``mask`` is ignored. The weight is the opacity."""
    faces = ctx.faces
    if len(faces) == 0:
        return x
    if not isinstance(image, torch.Tensor):
        raise InvalidOptionError("overlay: give image= (an RGBA file in the spec, read when it loads, or a float "
                                 "(4, h, w) tensor)")
    if "rgba" not in ctx.state:        # per-video state: the image on the frames' device, moved once
        ctx.state["rgba"] = image.float().to(x.device)
    rgba = ctx.state["rgba"]
    lm = faces.landmarks[..., :2]
    a, b_ = lm[:, anchors[0]], lm[:, anchors[1]]
    axis = b_ - a
    width = scale * axis.norm(dim=1)
    angle = torch.atan2(axis[:, 1], axis[:, 0])
    height = width * rgba.shape[1] / rgba.shape[2]
    down = torch.stack([-torch.sin(angle), torch.cos(angle)], dim=1)
    c = lm[:, centre] + down * (y_offset * height)[:, None]
    bsz, _, h, w = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    # inverse map: frame pixel -> overlay coordinates in [-1, 1], per face, on the whole frame
    theta = torch.stack([torch.stack([cos * 2 / width * w / 2, sin * 2 / width * h / 2,
                                      (cos * (w / 2 - c[:, 0]) + sin * (h / 2 - c[:, 1])) * 2 / width], 1),
                         torch.stack([-sin * 2 / height * w / 2, cos * 2 / height * h / 2,
                                      (-sin * (w / 2 - c[:, 0]) + cos * (h / 2 - c[:, 1])) * 2 / height], 1)], 1)
    # affine_grid gives normalised frame coordinates; fold the frame-normalisation into theta
    grid = F.affine_grid(theta, [len(faces), 4, h, w], align_corners=False)
    layer = F.grid_sample(rgba[None].expand(len(faces), -1, -1, -1), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)          # (N, 4, H, W)
    alpha = layer[:, 3:4] * mask[faces.frame] if clip else layer[:, 3:4]
    return _per_face_blend(x.clone(), faces.frame, layer[:, :3], alpha, weight)


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
    masks = [region_masks(faces.landmarks, faces.frame, r, b, (h, w), feather) for r in regions]
    holes = torch.stack(masks).amax(0)
    skin = region_masks(faces.landmarks, faces.frame, "face_oval", b, (h, w))
    keep = skin * (1 - holes)
    fill_rgb = _smooth_fill(x, keep, max(float(face_w.mean()) * 0.08, 2.0), ctx.origin)
    out = masked_blend(x, fill_rgb, holes, on.view(-1))
    zero = torch.zeros(1, dtype=torch.long, device=x.device)
    draws = uniform(ctx.key, zero, (len(parts), 3))[0]                                  # (P, 3): dx, dy, angle
    angles = torch.tensor([float(a) for a in rotations], device=x.device)
    pad = 3 * feather + 2
    x_faces = x[faces.frame]
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
        out[:, :, y0:y1, x0:x1] = _per_face_blend(out[:, :, y0:y1, x0:x1], faces.frame, sample(x_faces),
                                                  sample(m[faces.frame]), on.view(-1))
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
    both = kornia.filters.gaussian_blur2d(both, (k, k), (sc, sc), border_type="constant")
    fill = both[:, :3] / both[:, 3:].clamp(min=1e-4)
    return F.interpolate(fill, scale_factor=s, mode="bilinear", align_corners=False)[..., py:py + h, px:px + w]


def _per_face_blend(out: torch.Tensor, frame: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor,
                    weight: torch.Tensor) -> torch.Tensor:
    """Blend per-face layers y (N, 3, H, W) with alpha (N, 1, H, W) into their frames, faces of a frame in order:
    one batched blend per rank within the frame (every frame's first face, then every second face, …)."""
    rank = rank_in_frame(frame)
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        sel = torch.nonzero(rank == r).flatten()
        f = frame[sel]
        out[f] = masked_blend(out[f], y[sel], alpha[sel], weight[f])
    return out


# How far beyond a face's landmark bounding box each op reads or writes, as (face widths, px) from its params;
# None: the whole frame. LayerStack computes a batch only in the window this allows around its faces, which
# gives the same pixels as computing whole frames (a test holds it to that).
REACH = {
    "recolour": lambda p: (0.0, 0), "saturation": lambda p: (0.0, 0), "brightness": lambda p: (0.0, 0),
    "fill": lambda p: (0.0, 0), "bubbles": lambda p: (0.0, 0), "pencil_sketch": lambda p: (0.0, 0),
    "bar": lambda p: (p.get("margin", 0.12) + 0.7 * max(p.get("thickness", 1.0) - 1, 0) + 0.2, 2),
    "blur": lambda p: (0.0, p.get("max_kernel_size", 29)),
    "noise": lambda p: (0.0, p.get("pixel_size", 32) if p.get("method") == "pixelate" else 0),
    "grid_shuffle": lambda p: (0.0, p.get("square_size", 40)) if p.get("grid_dimensions") is None else (0.5, 2),
    "relocate": lambda p: (p.get("max_offset", 0.15) + 0.1, 4 + 3 * p.get("feather", 2.0)),
    "mask": None, "point_light": None, "overlay": None,
}

OPS = {
    "recolour": recolour, "saturation": saturation, "brightness": brightness, "mask": mask_background,
    "fill": fill, "bar": bar, "blur": blur, "noise": noise, "bubbles": bubbles, "grid_shuffle": grid_shuffle,
    "point_light": point_light, "pencil_sketch": pencil_sketch, "overlay": overlay, "relocate": relocate,
}

__all__ = ["Context", "OPS", "REACH", "recolour", "saturation", "brightness", "mask_background", "fill", "bar", "blur", "noise", "bubbles",
    "grid_shuffle", "point_light", "pencil_sketch", "overlay", "relocate"]
