"""Rotated square regions of interest (ROIs): batched affine crops and the inverse mapping of points.

An ROI is a centre ``(cx, cy)`` and a side in frame pixels plus a rotation ``angle`` (radians, clockwise in
image coordinates, i.e. the ROI's x axis points along ``(cos a, sin a)`` with y down). Frame coordinates are
continuous: pixel ``i`` covers ``[i, i + 1)``, as MediaPipe's normalised coordinates × image size. This is
MediaPipe's ``NormalizedRect`` + ``ImageToTensorCalculator`` (bilinear, zero border) +
``LandmarkProjectionCalculator``, for all ROIs of all frames at once, each ROI's numbers independent of the others'
(so that the landmarks do not depend on the batch size).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gpuface.core.syncs import host_side, to_host, upload


def window_slices(box: torch.Tensor, height: int, width: int, pad: float = 0.0,
                  align: int = 1) -> tuple[slice, slice]:
    """The frame's rows and columns inside ``box`` = (4,) ``x0, y0, x1, y1`` px (any device) grown by ``pad`` px:
    start rounded down and end up to multiples of ``align``, clipped to the frame (``height`` × ``width``); empty
    slices when the box is empty (x1 < x0 or y1 < y0, before padding). The one helper behind every "compute
    only around the faces" window (layer stacks, windowed ops, anonymisation levels), at one host sync."""
    x0, y0, x1, y1 = box.tolist()
    if x1 < x0 or y1 < y0:
        return slice(0, 0), slice(0, 0)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    x0, y0 = max(int(math.floor(x0)), 0) // align * align, max(int(math.floor(y0)), 0) // align * align
    x1 = min(-(-int(math.ceil(x1)) // align) * align, width)
    y1 = min(-(-int(math.ceil(y1)) // align) * align, height)
    return slice(y0, max(y1, y0)), slice(x0, max(x1, x0))

def cos_sin(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of angles (any shape, radians), evaluated in float64 and rounded to the angles' dtype.

    ATen's vectorised (SLEEF) and scalar float32 loops differ in the last bit, and which one a value takes depends
    on the array's length; evaluated in float64 and rounded, a value no longer depends on how many came with it
    (the batch size)."""
    a = angles.double()
    return torch.cos(a).to(angles.dtype), torch.sin(a).to(angles.dtype)


def angle_of(d: torch.Tensor) -> torch.Tensor:
    """``atan2(dy, dx)`` of vectors (N, 2) in radians, in float64 then rounded to d's dtype (see :func:`cos_sin`)."""
    return torch.atan2(d[:, 1].double(), d[:, 0].double()).to(d.dtype)


def crop_rois(frames: torch.Tensor, row: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor,
              angles: torch.Tensor, size: int, antialias: bool = False) -> torch.Tensor:
    """Crop N rotated square ROIs from a batch of frames by bilinear sampling (zeros outside the frame).

    Each output pixel ``(i, j)`` samples the frame at ``c + side / 2 · R(angle) · (x_j, y_i)`` (continuous
    coordinates), ``x_j = (2j + 1) / S − 1``: MediaPipe's ``ImageToTensorCalculator``, as ``grid_sample(
    align_corners=False, padding_mode="zeros")``. Each ROI is sampled from its own window of the frame — a square
    whose place and side (a multiple of 64 px) follow from that ROI alone — converted to float, with a sampling
    grid computed element by element (float64 trigonometry). So a crop's values never depend on the other ROIs of
    the call, on how many there are, or on the batch size (bit for bit), and only the pixels near faces are
    converted to float. On the CPU, uint8 frames (without antialias shrinking) are sampled by a C kernel
    (:func:`gpuface.kernels.cpu.crop_rois_u8`) at the same positions with the same float32 arithmetic from the
    frame's bytes, with no float window (2–3x faster; equal to the ``grid_sample`` path within ~1e-4 of 1, and
    as independent of the other ROIs); where it cannot be built, and with ``GPUFACE_KERNELS=torch``, the window
    and ``grid_sample`` path runs.

    Args:
        frames: uint8 (B, 3, H, W) RGB, or float in [0, 1].
        row: int64 (N,) row in the batch of each ROI. centres: float (N, 2) px. sides: float (N,) px.
        angles: float (N,) radians. size: output side S in pixels.
        antialias: (uint8 frames) an ROI with a side of 2^k·S px or more (k ≥ 1) is sampled from its window
            shrunk by 2^k with an anti-aliased (PIL-style) bilinear resize (the window aligned to the frame's
            2^k-pixel grid, with a margin for the filter), so that downscaled crops do not alias. MediaPipe's
            crops do not do this (off by default).

    Returns:
        float32 (N, 3, S, S) crops in [0, 1] (MediaPipe's FaceMesh input range; float16 when ``frames`` is
        float16); 0 outside the frame.
    """
    n = row.numel()
    out_dtype = torch.float16 if frames.dtype == torch.float16 else torch.float32
    if n == 0:
        return frames.new_zeros((0, 3, size, size), dtype=out_dtype)
    shrink = (2 ** torch.log2(sides / size).floor().clamp(min=0) if antialias and frames.dtype == torch.uint8
              else torch.ones_like(sides))
    cos, sin = cos_sin(angles)
    reach = sides * (cos.abs() + sin.abs()) / 2 + 2 + 2 * shrink * (shrink > 1)
    side = torch.ceil(2 * reach / (64 * shrink)) * 64 * shrink                    # window side, px
    x0, y0 = (centres[:, 0] - side / 2), (centres[:, 1] - side / 2)
    x0, y0 = torch.floor(x0 / shrink) * shrink, torch.floor(y0 / shrink) * shrink   # on the 2^k grid
    plan = to_host(torch.stack([x0, y0, side, shrink], dim=1), row)                  # one host sync
    with host_side():
        windows, rows = plan[0].long().tolist(), plan[1].tolist()
    if frames.dtype == torch.uint8 and frames.device.type == "cpu" and all(k == 1 for *_, k in windows):
        from gpuface.kernels.cpu import crop_rois_u8   # the C kernel: no float windows (None: unavailable)

        grid = _grid(centres - torch.stack([x0, y0], dim=1), sides, angles, side, size)
        placed = torch.tensor([[r, *win[:3]] for r, win in zip(rows, windows)], dtype=torch.int64,
                              device=frames.device)
        crops = crop_rois_u8(frames, grid, placed)
        if crops is not None:
            return crops
    groups: dict[tuple, list[int]] = {}     # ROIs with windows of one side and shrink are cut and sampled together
    for i, (_, _, w, k) in enumerate(windows):
        groups.setdefault((w, k), []).append(i)
    out = frames.new_empty((n, 3, size, size), dtype=out_dtype)     # every row written below
    h, w = frames.shape[-2:]
    for (win, k), members in groups.items():
        step = max(1, _WINDOW_BYTES // (3 * win * win * 4))
        for at in range(0, len(members), step):
            idx = members[at:at + step]
            cut = torch.empty((len(idx), 3, win, win), dtype=torch.float32, device=frames.device,
                              memory_format=_memory_format(frames))
            for j, i in enumerate(idx):    # copied and converted in one pass; zeros outside the frame
                wx, wy = windows[i][:2]
                xa, ya, xb, yb = max(wx, 0), max(wy, 0), min(wx + win, w), min(wy + win, h)
                if xb <= xa or yb <= ya:
                    cut[j].zero_()
                    continue
                cut[j, :, ya - wy:yb - wy, xa - wx:xb - wx] = frames[rows[i], :, ya:yb, xa:xb]
                for band in (cut[j, :, :ya - wy], cut[j, :, yb - wy:], cut[j, :, :, :xa - wx], cut[j, :, :, xb - wx:]):
                    band.zero_()     # the parts of the window outside the frame (usually none)
            if k > 1:   # normalised window coordinates are unchanged by resizing the window
                cut = F.interpolate(cut, size=(win // k, win // k), mode="bilinear", antialias=True,
                                    align_corners=False)
            sel = upload(torch.tensor(idx, device="cpu"), frames.device)
            grid = _grid(centres[sel] - torch.stack([x0[sel], y0[sel]], dim=1), sides[sel], angles[sel], win, size)
            crops = F.grid_sample(cut, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            crops = (crops.div_(255.0) if frames.dtype == torch.uint8 else crops).to(out_dtype)
            if len(idx) == n:       # every ROI in one call, in order: the crops are the output
                return crops
            out[sel] = crops
    return out


def _memory_format(frames: torch.Tensor) -> torch.memory_format:
    """The frames' own layout (decoded frames are channels-last), so that cutting a window copies runs of memory."""
    cl = frames.dim() == 4 and not frames.is_contiguous() and frames.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


#: The float32 windows cut and sampled together take at most this many bytes (unless one window is larger). Below
#: glibc's mmap threshold (32 MiB as gpuface sets it, :mod:`gpuface.core.memory`) they reuse heap memory; above it,
#: each call mapped fresh pages and faulted them in (2 MiB huge pages, zeroed): 12 windows of a 720p face took
#: 2.2x longer to cut. The values do not depend on it.
_WINDOW_BYTES = 16 << 20


def _grid(centres: torch.Tensor, sides: torch.Tensor, angles: torch.Tensor, window: int | torch.Tensor,
          size: int) -> torch.Tensor:
    """``grid_sample`` grids (N, S, S, 2) of ROIs (centres relative to their window's corner, px) in windows of
    ``window`` px (one side for all, or float (N,), one each; the same values either way): ``affine_grid``'s
    formula, element by element (float64 trigonometry; no batched matmul, whose algorithm depends on N)."""
    scale = sides.double() / window
    cos, sin = cos_sin(angles.double())
    u, v = (scale * cos).float()[:, None, None], (scale * sin).float()[:, None, None]
    t = (torch.arange(size, dtype=torch.float32, device=centres.device) * 2 + 1) / size - 1
    xs, ys = t[None, None, :], t[None, :, None]
    cx = (2 * centres[:, 0].float() / window - 1)[:, None, None]
    cy = (2 * centres[:, 1].float() / window - 1)[:, None, None]
    grid = torch.empty((centres.shape[0], size, size, 2), dtype=torch.float32, device=centres.device)
    torch.add(cx + u * xs, v * ys, alpha=-1, out=grid[..., 0])
    torch.add(cy + v * xs, u * ys, out=grid[..., 1])
    return grid


def sample_at(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of images at pixel positions, zeros outside: ``grid_sample(align_corners=False,
    padding_mode="zeros")`` given pixel-centre coordinates instead of coordinates normalised by the image's size.

    Normalising by the size rounds each position differently for images of different sizes, so an op computed in a
    window whose size follows the batch would not give the same pixels at every batch size; this evaluates each
    sample from its own position only (four gathers and the bilinear weights, element by element).

    Args:
        x: float (N, C, H, W). px, py: float (N, h, w) positions in x's pixel-index coordinates (pixel ``i``'s
            centre at ``i``).

    Returns:
        (N, C, h, w) in x's dtype.
    """
    n, c, height, width = x.shape
    x0, y0 = px.floor(), py.floor()
    fx, fy = (px - x0).to(x.dtype), (py - y0).to(x.dtype)
    x0, y0 = x0.long(), y0.long()
    flat = x.reshape(n, c, height * width)
    out = None
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).view(n, 1, -1).expand(-1, c, -1)
            term = flat.gather(2, index).view(n, c, *px.shape[1:]) * (wx * wy * inside)[:, None]
            out = term if out is None else out.add_(term)
    return out


def rois_to_frame(points: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, angles: torch.Tensor,
                  size: int) -> torch.Tensor:
    """Map points (N, P, 2 or 3) from crop pixels (0–size) back to frame pixels; a z column scales with x."""
    p = points[..., 0] / size - 0.5
    q = points[..., 1] / size - 0.5
    cos, sin = (t.to(p.dtype)[:, None] for t in cos_sin(angles))
    s = sides[:, None]
    x = centres[:, None, 0] + s * (p * cos - q * sin)
    y = centres[:, None, 1] + s * (p * sin + q * cos)
    cols = [x, y] + ([points[..., 2] / size * s] if points.shape[-1] > 2 else [])
    return torch.stack(cols, dim=-1)


__all__ = ["cos_sin", "angle_of", "crop_rois", "sample_at", "rois_to_frame"]
