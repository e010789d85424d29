"""Drawing into batches of frames with tensor ops (no per-frame loops): discs and line segments at points of any
frames of a batch (the point-light display, the optical-flow visualisation), the landmark mesh with tinted regions
(``landmarks --draw``), and boxes with scores (torchvision; the anonymiser's ``--draw-scores``, the audit's sheet)."""
from __future__ import annotations

import torch

from gpuface.core.syncs import upload
from gpuface.ops.regions import region_masks


def discs(out: torch.Tensor, row: torch.Tensor, xy: torch.Tensor, radius: int, colour: torch.Tensor,
          raster: bool | None = None) -> None:
    """Draw filled discs in place.

    Args:
        out: (B, 3, H, W) frames, any dtype (written in place). row: int64 (M,) row in the batch of each disc.
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
    f = row[:, None].expand(-1, dx.numel()).reshape(-1)
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    if not (out.device.type != "cpu" if raster is None else raster):   # write the disc pixels only
        out[f[ok], :, py[ok], px[ok]] = colour.to(out.dtype).view(1, 3).expand(int(ok.sum()), 3)
        return
    # a raster of the disc pixels (those outside the frame go to a spill slot): no host sync for their count
    hit = torch.zeros(b * h * w + 1, dtype=torch.bool, device=out.device)
    hit[torch.where(ok, (f * h + py) * w + px, b * h * w)] = True
    out.copy_(torch.where(hit[:-1].view(b, 1, h, w), colour.to(out.dtype).view(1, 3, 1, 1), out))


def segments(out: torch.Tensor, row: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: int,
             colour: torch.Tensor) -> None:
    """Draw line segments from ``a`` to ``b`` (float (M, 2) px) in the batch rows ``row`` (M,), ``radius`` px thick
    (discs every pixel of length), in place; see :func:`discs`."""
    if a.numel() == 0:
        return
    steps = int((b - a).norm(dim=1).max().ceil().clamp(min=1))
    t = torch.linspace(0, 1, steps + 1, device=a.device, dtype=a.dtype)
    pts = torch.lerp(a[:, None], b[:, None], t[None, :, None]).reshape(-1, 2)     # (M * (steps + 1), 2)
    discs(out, row[:, None].expand(-1, steps + 1).reshape(-1), pts, radius, colour)


def draw_landmarks(frames: torch.Tensor, faces, regions: tuple[str, ...] = (), alpha: float = 0.35,
                   window: bool = True, inplace: bool = False) -> torch.Tensor:
    """Frames (B, 3, H, W) uint8 with each region tinted (one colour per region, ``alpha`` of it) and the 478 points
    drawn as 2×2 px green dots, for all faces of the batch in tensor ops.

    With ``window`` (default) only the part of the frames that holds the faces' landmarks (one rectangle for the
    batch) is converted to float and gets the dots, and each region is rasterised and blended only over the
    rectangle that holds its own landmarks (one host sync for all the rectangles); the rest is copied. The pixels are
    the same as with ``window=False`` (the whole frames), bit for bit: masks and dots lie inside those rectangles.
    ``inplace``: draw into ``frames`` and return them (no copy of the batch), for a caller that owns them.
    """
    from gpuface.core.syncs import to_host
    from gpuface.ops.regions import get_region

    palette = torch.tensor([[255, 64, 64], [64, 160, 255], [255, 200, 0], [255, 0, 200], [0, 220, 120]],
                           dtype=torch.float32, device=frames.device)
    if len(faces) == 0:
        return frames
    b, _, h, w = frames.shape
    pts = faces.landmarks[..., :2]
    parts = [get_region(name) for name in regions]
    x0, y0, x1, y1 = 0, 0, w, h
    extents = [(x0, y0, x1, y1)] * len(parts)

    def rectangle(lo, hi, inside):   # the pixels of points in [lo, hi] (+1 px for the dots), within ``inside``
        return (max(int(lo[0].floor()) - 1, inside[0]), max(int(lo[1].floor()) - 1, inside[1]),
                min(int(hi[0].ceil()) + 2, inside[2]), min(int(hi[1].ceil()) + 2, inside[3]))

    if window:
        bounds = [pts.amin(dim=(0, 1)), pts.amax(dim=(0, 1))]
        for r in parts:   # a region's pixels lie within its own landmarks' extent ("frame": the whole window)
            used = pts[:, list(r.indices())] if r.op != "frame" else pts
            bounds += [used.amin(dim=(0, 1)), used.amax(dim=(0, 1))]
        bounds = to_host(*bounds)
        x0, y0, x1, y1 = rectangle(bounds[0], bounds[1], (0, 0, w, h))
        if x1 <= x0 or y1 <= y0:
            return frames
        extents = [rectangle(bounds[2 + 2 * i], bounds[3 + 2 * i], (x0, y0, x1, y1)) for i in range(len(parts))]
    out = frames if inplace else frames.clone()
    win = out[:, :, y0:y1, x0:x1].float()
    for i, (r, (rx0, ry0, rx1, ry1)) in enumerate(zip(parts, extents)):
        if rx1 <= rx0 or ry1 <= ry0:
            continue
        lm = pts - torch.tensor([rx0, ry0], dtype=pts.dtype, device=frames.device)
        m = region_masks(lm, faces.row, r, b, (ry1 - ry0, rx1 - rx0)).mul_(alpha)
        part = win[:, :, ry0 - y0:ry1 - y0, rx0 - x0:rx1 - x0]
        part.mul_(1 - m).add_(palette[i % len(palette)].view(1, 3, 1, 1) * m)
    # dots: the 2×2 pixels from each point's pixel, clamped to the frame (then shifted into the window)
    px = pts.floor().long()
    frame = faces.row[:, None].expand(-1, px.shape[1]).reshape(-1)
    green = torch.tensor([0.0, 255.0, 0.0], device=frames.device)
    for dy in (0, 1):
        for dx in (0, 1):
            x = (px[..., 0] + dx).clamp(0, w - 1).reshape(-1) - x0
            y = (px[..., 1] + dy).clamp(0, h - 1).reshape(-1) - y0
            win[frame, :, y, x] = green
    out[:, :, y0:y1, x0:x1] = win.round_().clamp_(0, 255).to(torch.uint8)
    return out


def draw_boxes(frames: torch.Tensor, faces, colour: str = "lime") -> torch.Tensor:
    """Draw each face's box and score on its frame (torchvision ``draw_bounding_boxes``; CPU, per frame with
    faces: a visual check, not a hot path). uint8 (B, 3, H, W) in and out."""
    from torchvision.utils import draw_bounding_boxes

    out = frames.clone()
    f = faces.to("cpu")
    for i in torch.unique(f.row).tolist():
        sel = f.row == i
        labels = [f"{s:.2f}" for s in f.scores[sel].tolist()]
        out[i] = draw_bounding_boxes(frames[i].cpu(), f.boxes[sel], labels=labels, colors=colour, width=3,
                                     font_size=24).to(frames.device)
    return out


__all__ = ["discs", "segments", "draw_landmarks", "draw_boxes"]
