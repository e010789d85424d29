"""Drawing into batches of frames with tensor ops (no per-frame loops): discs and line segments at points of any
frames of a batch. Used by the point-light display and the optical-flow visualisation."""
from __future__ import annotations

import torch


def discs(out: torch.Tensor, frame: torch.Tensor, xy: torch.Tensor, radius: int, colour: torch.Tensor) -> None:
    """Draw filled discs in place.

    Args:
        out: (B, 3, H, W) frames, any dtype (written in place). frame: int64 (M,) frame of each disc.
        xy: float (M, 2) centres (x, y) in pixels (continuous coordinates: pixel ``i`` covers ``[i, i+1)``).
        radius: px (0: one pixel). colour: (3,) in ``out``'s dtype and range.
    """
    if xy.numel() == 0:
        return
    _, _, h, w = out.shape
    r = max(int(radius), 0)
    d = torch.arange(-r, r + 1, device=out.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    disc = (dx ** 2 + dy ** 2) <= r * r + r       # a round disc for small radii too
    dx, dy = dx[disc], dy[disc]
    px = (xy[:, 0].floor().long()[:, None] + dx[None]).reshape(-1)
    py = (xy[:, 1].floor().long()[:, None] + dy[None]).reshape(-1)
    f = frame[:, None].expand(-1, dx.numel()).reshape(-1)
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    out[f[ok], :, py[ok], px[ok]] = colour.to(out.dtype).view(1, 3).expand(int(ok.sum()), 3)


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
