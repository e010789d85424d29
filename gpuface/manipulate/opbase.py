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
