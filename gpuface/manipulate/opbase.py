"""What every op family shares: :class:`Context` (what an op sees besides pixels), the window helpers that
compute an op only around the faces, colour parsing and per-face blending. The op contract is in
:mod:`gpuface.manipulate.ops`."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..errors import InvalidOptionError
from ..geometry import window_slices
from ..kernels import masked_blend
from ..types import Faces, rank_in_frame


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
        weights: the ``weight`` argument's values as host floats (the layer's timing is computed on the host), for
            ops whose shapes depend on it (blur's kernel sizes) to decide without a host sync; None: read them.
        windows: ops may compute only in the bounding box of their mask (:func:`_window`, one host sync each):
            what :class:`~gpuface.manipulate.layers.LayerStack` chooses on the CPU, where it saves most of the work
            at no cost; on a GPU the sync would cost more, so ops compute over their whole input there.
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


def _region_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, 1, H, W) over mask > 0.5 in the first frame where the mask is not empty (nan if none),
    so that what is sampled does not depend on how the video is cut into batches. A 0-dim tensor, no host sync."""
    m = (mask > 0.5).flatten(1)
    counts = m.sum(dim=1)
    sums = (values.flatten(1) * m).sum(dim=1)
    first = torch.argmax((counts > 0).to(torch.uint8)).view(1)    # the first frame with the region (0 when none)
    return (sums.index_select(0, first) / counts.index_select(0, first))[0]   # 0 / 0 = nan when no frame has it


def _sampled_once(ctx, key: str, value: torch.Tensor) -> torch.Tensor:
    """A per-video value sampled on the first batch where it is defined: ``ctx.state[key]`` keeps the first
    non-nan ``value`` (0-dim tensor); returns it, nan until then. Tensor ops only: no host sync."""
    old = ctx.state.get(key)
    kept = value if old is None else torch.where(torch.isnan(old), value, old)
    ctx.state[key] = kept
    return kept


def _first_face_width(ctx) -> float:
    """Mean face width (px: the landmarks' horizontal extent) over the faces of the video's first landmarked
    frame, kept in ``ctx.state``: a filter size that depends on it is then the same at any batch size. One host
    sync per video (a size is a shape)."""
    if "face_width" not in ctx.state:
        faces = ctx.faces
        lm = faces.landmarks[..., 0]
        width = lm.amax(1) - lm.amin(1)
        first = (faces.row == faces.row.amin()).to(width.dtype)
        ctx.state["face_width"] = float((width * first).sum() / first.sum())
    return ctx.state["face_width"]


def _window(mask: torch.Tensor, pad: int, ctx: Context, always: bool = False) -> tuple[slice, slice]:
    """Rows and columns of the batch's mask bounding box, padded (the only part an op needs to compute), one host
    sync; the whole input when ``ctx.windows`` is off or the data is not on the CPU (on a GPU the input is already
    :class:`~gpuface.manipulate.layers.LayerStack`'s window around the faces). The same pixels either way: ops
    read at most ``pad`` px beyond their mask. ``always``: cut on any device (the op's result depends on it)."""
    h, w = mask.shape[-2:]
    if not always and (not ctx.windows or mask.device.type != "cpu"):
        return slice(0, h), slice(0, w)
    on = mask > 0
    rows, cols = on.any(dim=3).flatten(0, 1).any(dim=0), on.any(dim=2).flatten(0, 1).any(dim=0)
    r, c = torch.arange(h, device=mask.device), torch.arange(w, device=mask.device)
    box = torch.stack([torch.where(cols, c, w).amin(), torch.where(rows, r, h).amin(),
                       torch.where(cols, c, -1).amax() + 1, torch.where(rows, r, -1).amax() + 1])
    return window_slices(box, h, w, pad)


def _windowed(op=None, *, always: bool = False):
    """Run a per-pixel op only on the window around the batch's masks (weight > 0), write it back. ``always``: the
    op's result is defined on that window (its filters reflect at the box's edges), so it is cut on every device
    (one host sync per batch on a GPU)."""
    if op is None:
        return functools.partial(_windowed, always=always)

    @functools.wraps(op)
    def run(x, mask, weight, ctx, **params):
        rows, cols = _window(mask * (weight > 0)[:, None, None, None], 0, ctx, always)
        if rows.stop <= rows.start:
            return x
        if (rows.stop - rows.start, cols.stop - cols.start) == tuple(x.shape[-2:]):
            return op(x, mask, weight, ctx, **params)
        out = x.clone()
        out[:, :, rows, cols] = op(x[:, :, rows, cols], mask[:, :, rows, cols], weight, ctx, **params)
        return out
    return run


def _rgb(colour, like: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(colour, dtype=like.dtype, device=like.device)
    if c.numel() != 3:
        raise InvalidOptionError(f"colour must be 3 values 0-255, got {colour}")
    return (c / 255.0).view(1, 3, 1, 1)


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
