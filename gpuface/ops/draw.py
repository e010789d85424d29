"""Drawing into batches of frames with tensor ops (no per-frame loops): discs and line segments at points of any
frames of a batch. Used by the point-light display and the optical-flow visualisation."""
from __future__ import annotations

import torch

from gpuface.core.syncs import upload


def discs(out: torch.Tensor, frame: torch.Tensor, xy: torch.Tensor, radius: int, colour: torch.Tensor,
          raster: bool | None = None) -> None:
    """Draw filled discs in place.

    Args:
        out: (B, 3, H, W) frames, any dtype (written in place). frame: int64 (M,) frame of each disc.
        xy: float (M, 2) centres (x, y) in pixels (continuous coordinates: pixel ``i`` covers ``[i, i+1)``).
        radius: px (0: one pixel). colour: (3,) in ``out``'s dtype and range.
        raster: paint through a frame-sized raster of the disc pixels (no host sync: how GPUs draw) instead of
            writing the pixels inside the frame (one sync for their count; the CPU's way). None: by device.
    """
    if xy.numel() == 0:
        return
    b, _, h, w = out.shape
    r = max(int(radius), 0)
    offsets = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dx * dx + dy * dy <= r * r + r]
    # a round disc for small radii too, its offsets listed on the host
    dx, dy = upload(torch.tensor(offsets, dtype=torch.long, device="cpu"), out.device).unbind(1)
    px = (xy[:, 0].floor().long()[:, None] + dx[None]).reshape(-1)
    py = (xy[:, 1].floor().long()[:, None] + dy[None]).reshape(-1)
    f = frame[:, None].expand(-1, dx.numel()).reshape(-1)
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    if not (out.device.type != "cpu" if raster is None else raster):   # write the disc pixels only
        out[f[ok], :, py[ok], px[ok]] = colour.to(out.dtype).view(1, 3).expand(int(ok.sum()), 3)
        return
    # a raster of the disc pixels (those outside the frame go to a spill slot): no host sync for their count
    hit = torch.zeros(b * h * w + 1, dtype=torch.bool, device=out.device)
    hit[torch.where(ok, (f * h + py) * w + px, b * h * w)] = True
    out.copy_(torch.where(hit[:-1].view(b, 1, h, w), colour.to(out.dtype).view(1, 3, 1, 1), out))


def segments(out: torch.Tensor, frame: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: int,
             colour: torch.Tensor) -> None:
    """Draw line segments from ``a`` to ``b`` (float (M, 2) px) in frames ``frame`` (M,), ``radius`` px thick
    (discs every pixel of length), in place; see :func:`discs`."""
    if a.numel() == 0:
        return
    steps = int((b - a).norm(dim=1).max().ceil().clamp(min=1))
    t = torch.linspace(0, 1, steps + 1, device=a.device, dtype=a.dtype)
    pts = torch.lerp(a[:, None], b[:, None], t[None, :, None]).reshape(-1, 2)     # (M * (steps + 1), 2)
    discs(out, frame[:, None].expand(-1, steps + 1).reshape(-1), pts, radius, colour)


__all__ = ["discs", "segments"]
