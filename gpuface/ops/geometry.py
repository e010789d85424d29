"""Rotated square regions of interest (ROIs): batched affine crops and the inverse mapping of points.

An ROI is a centre ``(cx, cy)`` and a side in frame pixels plus a rotation ``angle`` (radians, clockwise in
image coordinates, i.e. the ROI's x axis points along ``(cos a, sin a)`` with y down). Frame coordinates are
continuous: pixel ``i`` covers ``[i, i + 1)``, as MediaPipe's normalised coordinates × image size. This is
MediaPipe's ``NormalizedRect`` + ``ImageToTensorCalculator`` (bilinear, zero border) +
``LandmarkProjectionCalculator``, done for all ROIs of all frames in one ``grid_sample``.
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

def roi_theta(centres: torch.Tensor, sides: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``affine_grid`` matrices (N, 2, 3) mapping an output crop to its ROI in a (height, width) frame."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    sx, sy = sides / width, sides / height
    row0 = torch.stack([sx * cos, -sx * sin, 2 * centres[:, 0] / width - 1], dim=1)
    row1 = torch.stack([sy * sin, sy * cos, 2 * centres[:, 1] / height - 1], dim=1)
    return torch.stack([row0, row1], dim=1)


def crop_rois(frames: torch.Tensor, row: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor,
              angles: torch.Tensor, size: int, antialias: bool = False) -> torch.Tensor:
    """Crop N rotated square ROIs from a batch of frames in one bilinear ``grid_sample`` (zeros outside).

    Args:
        frames: uint8 (B, 3, H, W) RGB, or float in [0, 1].
        row: int64 (N,) row in the batch of each ROI. centres: float (N, 2) px. sides: float (N,) px.
        angles: float (N,) radians. size: output side S in pixels.
        antialias: (uint8 frames) an ROI with a side of 2^k·S px or more (k ≥ 1) is sampled from the frames shrunk
            by 2^k with an anti-aliased (PIL-style) bilinear resize, so that downscaled crops do not alias and the
            float conversion touches 4^k times fewer pixels. The shrink is aligned to the frame's 2^k-pixel grid,
            so each crop depends only on its own ROI, never on the other ROIs of the batch (batch-size invariant).
            MediaPipe's crops do not do this (off by default).

    Returns:
        float32 (N, 3, S, S) crops in [0, 1] (MediaPipe's FaceMesh input range; float16 when ``frames`` is
        float16); 0 outside the frame.
    """
    n = row.numel()
    if n == 0:
        return frames.new_zeros((0, 3, size, size), dtype=torch.float32)
    if not (antialias and frames.dtype == torch.uint8):
        return _crop(frames, row, centres, sides, angles, size, 1)
    levels = torch.log2(sides / size).floor().clamp(min=0).long()
    out = frames.new_empty((n, 3, size, size), dtype=torch.float32)
    for k in torch.unique(levels).tolist():     # usually one level per batch
        sel = levels == k
        out[sel] = _crop(frames, row[sel], centres[sel], sides[sel], angles[sel], size, 2 ** k)
    return out


def _crop(frames, row, centres, sides, angles, size: int, shrink: int) -> torch.Tensor:
    """:func:`crop_rois` from the window of the frames the ROIs can touch (their joint bounding box), converted
    to float; with ``shrink`` > 1 the window (aligned to multiples of ``shrink``, with a margin for the filter)
    is first resized by 1/shrink."""
    n = row.numel()
    reach = sides * (angles.cos().abs() + angles.sin().abs()) / 2 + 2 + 2 * (shrink > 1) * shrink
    h, w = frames.shape[-2:]
    lo, hi = (centres - reach[:, None]).amin(0).floor(), (centres + reach[:, None]).amax(0).ceil()
    bounds, rows = to_host(torch.cat([lo, hi]), row)    # one sync: the window and the frames it needs
    with host_side():
        x0, y0, x1, y1 = bounds.tolist()
        used, inverse = torch.unique(rows, return_inverse=True)
        one_each = torch.equal(inverse, torch.arange(n, device="cpu"))       # one ROI per frame, in frame order
    x0 = int(min(max(x0, 0), w - 1)) // shrink * shrink
    y0 = int(min(max(y0, 0), h - 1)) // shrink * shrink
    x1, y1 = int(min(max(x1, x0 + 1), w)), int(min(max(y1, y0 + 1), h))
    if shrink > 1:   # whole 2^k blocks (the last partial block at the frame's edge is dropped)
        x1 = x0 + max((min(-(-(x1 - x0) // shrink) * shrink, w - x0)) // shrink, 1) * shrink
        y1 = y0 + max((min(-(-(y1 - y0) // shrink) * shrink, h - y0)) // shrink, 1) * shrink
    window = frames[:, :, y0:y1, x0:x1]
    if used.numel() < frames.shape[0]:
        window = window[upload(used, frames.device)]
    if shrink > 1:   # normalised coordinates (theta below) are unchanged by resizing the window
        window = F.interpolate(window, size=((y1 - y0) // shrink, (x1 - x0) // shrink), mode="bilinear",
                               antialias=True, align_corners=False)
    window = window.float().div_(255.0) if window.dtype == torch.uint8 else window
    offset = upload(torch.tensor([x0, y0], dtype=window.dtype, device="cpu"), window.device)
    theta = roi_theta(centres.to(window.dtype) - offset, sides.to(window.dtype), angles.to(window.dtype),
                      y1 - y0, x1 - x0)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    if not one_each:  # several ROIs per frame, or unsorted
        window = window[upload(inverse, window.device)]
    return F.grid_sample(window, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rois_to_frame(points: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, angles: torch.Tensor,
                  size: int) -> torch.Tensor:
    """Map points (N, P, 2 or 3) from crop pixels (0–size) back to frame pixels; a z column scales with x."""
    p = points[..., 0] / size - 0.5
    q = points[..., 1] / size - 0.5
    cos, sin, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None], sides[:, None]
    x = centres[:, None, 0] + s * (p * cos - q * sin)
    y = centres[:, None, 1] + s * (p * sin + q * cos)
    cols = [x, y] + ([points[..., 2] / size * s] if points.shape[-1] > 2 else [])
    return torch.stack(cols, dim=-1)


__all__ = ["roi_theta", "crop_rois", "rois_to_frame"]
