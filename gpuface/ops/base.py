"""What every op family shares: :class:`Context` (what an op sees besides pixels), the window helpers that
compute an op only around the faces, colour parsing and per-face blending. The op contract is in
:mod:`gpuface.ops.registry`."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from gpuface.core.errors import InvalidOptionError
from gpuface.ops.geometry import window_slices
from gpuface.kernels import gaussian_blur
from gpuface.core.types import Faces, rank_in_frame


@dataclass
class Context:
    """What an op may need besides pixels.

    Attributes:
        faces: the batch's faces with ``landmarks`` (N, 478, 3) px and ``frame`` (N,).
        frames: int64 (B,) frame numbers in the video (for random streams). pts: float64 (B,) seconds.
        key: the layer's random-stream key (seed, video, layer). state: per-video, per-layer memory
            (e.g. the colour sampled on the first frame, a grid permutation).
        origin: (x0, y0) px of ``x``'s top-left corner in the frame and size: (H, W) of the whole frame, when
            ``x`` is a window of the frame (:class:`~gpuface.stages.layers.LayerStack` computes local ops
            only around the faces); ops whose output depends on absolute position (noise) use them.
        weights: the ``weight`` argument's values as host floats (the layer's timing is computed on the host), for
            ops whose shapes depend on it (blur's kernel sizes) to decide without a host sync; None: read them.
        windows: ops may read sizes from their data (:func:`_may_sync`: the bounding box of their mask, a grid's
            size, a part's box; one host sync each): what :class:`~gpuface.stages.layers.LayerStack` chooses
            on the CPU, where it saves most of the work at no cost; on a GPU a sync would cost more, so ops use
            bounds known on the host there (their whole input, the frame's cells), with the same pixels.
    """

    faces: Faces
    frames: torch.Tensor
    pts: torch.Tensor
    key: int = 0
    state: dict = field(default_factory=dict)
    origin: tuple[int, int] = (0, 0)
    size: tuple[int, int] | None = None
    weights: tuple[float, ...] | None = None
    windows: bool = True


def _region_mean(values: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, 1, H, W) over mask > 0.5 in the first frame where the layer acts (weight (B,) > 0) and
    the mask is not empty (nan if none), so that what is sampled does not depend on how the video is cut into
    batches (a layer is skipped in batches where it does not act). Summed in float64: the window's size follows
    the batch, and float32 sums of different lengths round differently. A 0-dim float32 tensor, no host sync."""
    m = ((mask > 0.5) & (weight > 0)[:, None, None, None]).flatten(1)
    counts = m.sum(dim=1)
    sums = (values.flatten(1).double() * m).sum(dim=1)
    first = torch.argmax((counts > 0).to(torch.uint8)).view(1)    # the first such frame (0 when none)
    return (sums.index_select(0, first) / counts.index_select(0, first))[0].float()   # 0 / 0 = nan when none


def _sampled_once(ctx, key: str, value: torch.Tensor) -> torch.Tensor:
    """A per-video value sampled on the first batch where it is defined: ``ctx.state[key]`` keeps the first
    non-nan ``value`` (0-dim tensor); returns it, nan until then. Tensor ops only: no host sync."""
    old = ctx.state.get(key)
    kept = value if old is None else torch.where(torch.isnan(old), value, old)
    ctx.state[key] = kept
    return kept


def _first_active_faces(ctx) -> list[int]:
    """Indices in ``ctx.faces`` of the faces of the first frame of the batch where the layer acts (weight > 0;
    every frame when the weights are not given): where an op samples per-video state, so that it is sampled on the
    same frame at any batch size (a batch where the layer does not act never reaches the op). Empty when no
    active frame has a face. One host sync (ops call it once per video)."""
    rows = ctx.faces.row.tolist()
    active = [r for r in rows if ctx.weights is None or ctx.weights[r] > 0]
    if not active:
        return []
    first = min(active)
    return [i for i, r in enumerate(rows) if r == first]


def _first_face_width(ctx) -> float:
    """Mean face width (px: the landmarks' horizontal extent) over the faces of the first frame the layer acts on
    (:func:`_first_active_faces`), kept in ``ctx.state``: a filter size that depends on it is then the same at any
    batch size. 0 until such a frame has faces. One host sync per video (a size is a shape)."""
    if "face_width" not in ctx.state:
        first = _first_active_faces(ctx)
        if not first:
            return 0.0
        lm = ctx.faces.landmarks[first, :, 0]
        ctx.state["face_width"] = float((lm.amax(1) - lm.amin(1)).mean())
    return ctx.state["face_width"]


def _may_sync(ctx: Context, x: torch.Tensor) -> bool:
    """Whether an op may read a size from its data (a host sync): on the CPU with ``ctx.windows`` on, where it costs
    nothing and saves work; on a GPU ops use sizes known on the host instead (the frame's, bounds from the spec)."""
    return ctx.windows and x.device.type == "cpu"


def _window(mask: torch.Tensor, pad: int, ctx: Context) -> tuple[slice, slice]:
    """Rows and columns of the batch's mask bounding box, padded (the only part an op needs to compute), one host
    sync; the whole input when the op may not sync (:func:`_may_sync`: on a GPU the input is already
    :class:`~gpuface.stages.layers.LayerStack`'s window around the faces). The same pixels either way: ops
    read at most ``pad`` px beyond their mask."""
    h, w = mask.shape[-2:]
    if not _may_sync(ctx, mask):
        return slice(0, h), slice(0, w)
    on = mask > 0
    rows, cols = on.any(dim=3).flatten(0, 1).any(dim=0), on.any(dim=2).flatten(0, 1).any(dim=0)
    r, c = torch.arange(h, device=mask.device), torch.arange(w, device=mask.device)
    box = torch.stack([torch.where(cols, c, w).amin(), torch.where(rows, r, h).amin(),
                       torch.where(cols, c, -1).amax() + 1, torch.where(rows, r, -1).amax() + 1])
    return window_slices(box, h, w, pad)


def _windowed(op=None, *, reach=None):
    """Run a per-pixel op only on the window around the batch's masks (weight > 0), write it back. ``reach(ctx,
    params)``: how far (px) the op's filters read beyond its mask, added around the box so that the window gives
    the whole frame's pixels (default 0)."""
    if op is None:
        return functools.partial(_windowed, reach=reach)

    @functools.wraps(op)
    def run(x, mask, weight, ctx, **params):
        rows, cols = _window(mask * (weight > 0)[:, None, None, None], reach(ctx, params) if reach else 0, ctx)
        if rows.stop <= rows.start:
            return x
        if (rows.stop - rows.start, cols.stop - cols.start) == tuple(x.shape[-2:]):
            return op(x, mask, weight, ctx, **params)
        out = x.clone()
        moved = replace(ctx, origin=(ctx.origin[0] + cols.start, ctx.origin[1] + rows.start))
        out[:, :, rows, cols] = op(x[:, :, rows, cols], mask[:, :, rows, cols], weight, moved, **params)
        return out
    return run


_COARSE = 4  # wide smooth filters (skin fill, illumination) run on a 4x coarser grid


def _normalised_blur(x: torch.Tensor, keep: torch.Tensor, sigma: float, origin: tuple[int, int]) -> torch.Tensor:
    """Normalised convolution: Gaussian(x · keep) / Gaussian(keep), σ px, for x (B, C, H, W) and keep (B, 1, H, W)
    in [0, 1] (zero outside the input, so a frame's edges are averaged over the pixels that exist). Computed on a
    grid 4× coarser aligned to the frame (``origin``: x's top-left corner in the frame) and upsampled bilinearly,
    so that a window gives the frame's values up to :func:`_normalised_blur_reach` px from its edges."""
    s = _COARSE
    h, w = x.shape[-2:]
    px, py = origin[0] % s, origin[1] % s
    pad = (px, -(w + px) % s, py, -(h + py) % s)
    both = F.avg_pool2d(F.pad(torch.cat([x * keep, keep], dim=1), pad), s)
    sc = max(sigma / s, 0.5)
    both = gaussian_blur(both, 2 * int(3 * sc) + 1, sc, "constant")
    out = both[:, :-1] / both[:, -1:].clamp(min=1e-4)
    return F.interpolate(out, scale_factor=s, mode="bilinear", align_corners=False)[..., py:py + h, px:px + w]


def _normalised_blur_reach(sigma: float) -> int:
    """How far (px) :func:`_normalised_blur` reads: its coarse Gaussian's radius, a block and the interpolation."""
    return (int(3 * max(sigma / _COARSE, 0.5)) + 2) * _COARSE


def _rgb(colour, like: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(colour, dtype=like.dtype, device=like.device)
    if c.numel() != 3:
        raise InvalidOptionError(f"colour must be 3 values 0-255, got {colour}")
    return (c / 255.0).view(1, 3, 1, 1)


def _per_face_blend(x: torch.Tensor, row: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor,
                    weight: torch.Tensor, sync: bool) -> torch.Tensor:
    """Blend per-face layers into their frames, the faces of a frame in order (each over the ones before it).

    Args:
        x: float32 (B, 3, H, W) frames. row: int64 (N,) row in the batch of each face, sorted (``Faces.row``).
        y: float32 (N, 3, H, W) each face's layer; alpha: float32 (N, 1, H, W) in [0, 1]; weight: (B,) opacity.
        sync: whether the host may read how many faces the most crowded frame has (the number of scan steps; on
            a GPU the bound is N, known on the host, and the extra steps change nothing).

    Returns:
        float32 (B, 3, H, W): per face ``x ← x + (y − x)·α·weight[frame]``. Each blend is an affine map
        ``x ↦ T·x + C`` (``T = 1 − α·w``, ``C = y·α·w``); a frame's maps are composed by a segmented inclusive
        scan over the faces (Hillis & Steele 1986, ⌈log2 n⌉ steps) and applied once, written by one scatter (the
        other faces' results go to a spill frame): no host sync, the same pixels at any batch size and on any
        device; where α = 0 the values of ``x`` bit for bit.
    """
    n = len(row)
    if n == 0:
        return x
    a = alpha * weight[row][:, None, None, None]
    t, c = 1 - a, y * a
    rank = rank_in_frame(row)
    span, s = int(rank.max()) + 1 if sync else n, 1
    while s < span:     # face i absorbs the maps of faces i-2s+1 … i-s of its frame (Hillis–Steele step)
        on = (rank >= s)[:, None, None, None]
        t, c = (torch.where(on, torch.cat([t[:s], t[s:] * t[:-s]]), t),
                torch.where(on, torch.cat([c[:s], t[s:] * c[:-s] + c[s:]]), c))
        s *= 2
    last = torch.cat([row[1:] != row[:-1], torch.ones(1, dtype=torch.bool, device=row.device)])
    b = x.shape[0]
    out = torch.cat([x, x[:1]])
    out.index_copy_(0, torch.where(last, row, b), x[row] * t + c)
    return out[:b]
