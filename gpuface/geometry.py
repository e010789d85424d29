"""Rotated square regions of interest (ROIs): batched affine crops and the inverse mapping of points.

An ROI is a centre ``(cx, cy)`` and a side in frame pixels plus a rotation ``angle`` (radians, clockwise in
image coordinates, i.e. the ROI's x axis points along ``(cos a, sin a)`` with y down). Frame coordinates are
continuous: pixel ``i`` covers ``[i, i + 1)``, as MediaPipe's normalised coordinates × image size. This is
MediaPipe's ``NormalizedRect`` + ``ImageToTensorCalculator`` (bilinear, zero border) +
``LandmarkProjectionCalculator``, done for all ROIs of all frames in one ``grid_sample``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def roi_theta(centres: torch.Tensor, sides: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``affine_grid`` matrices (N, 2, 3) mapping an output crop to its ROI in a (height, width) frame."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    sx, sy = sides / width, sides / height
    row0 = torch.stack([sx * cos, -sx * sin, 2 * centres[:, 0] / width - 1], dim=1)
    row1 = torch.stack([sy * sin, sy * cos, 2 * centres[:, 1] / height - 1], dim=1)
    return torch.stack([row0, row1], dim=1)


def crop_rois(frames: torch.Tensor, frame_index: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor,
              angles: torch.Tensor, size: int, antialias: bool = False) -> torch.Tensor:
    """Crop N rotated square ROIs from a batch of frames in one bilinear ``grid_sample`` (zeros outside).

    Args:
        frames: uint8 (B, 3, H, W) RGB, or float in [0, 1].
        frame_index: int64 (N,) frame of each ROI. centres: float (N, 2) px. sides: float (N,) px.
        angles: float (N,) radians. size: output side S in pixels.
        antialias: when the smallest ROI is over twice the output size, first shrink the frames' window with one
            anti-aliased bilinear resize (uint8, PIL-style) to about S pixels per ROI side, so that downscaled
            crops do not alias (and the float conversion touches fewer pixels). MediaPipe's crops do not do this.

    Returns:
        float32 (N, 3, S, S) crops in [0, 1] (MediaPipe's FaceMesh input range; float16 when ``frames`` is
        float16); 0 outside the frame.
    """
    n = frame_index.numel()
    if n == 0:
        return frames.new_zeros((0, 3, size, size), dtype=torch.float32)
    # Convert to float only the window of the frames that the ROIs can touch (their joint bounding box).
    reach = sides * (angles.cos().abs() + angles.sin().abs()) / 2 + 2
    h, w = frames.shape[-2:]
    x0 = int((centres[:, 0] - reach).min().floor().clamp(0, w - 1))
    y0 = int((centres[:, 1] - reach).min().floor().clamp(0, h - 1))
    x1 = int((centres[:, 0] + reach).max().ceil().clamp(x0 + 1, w))
    y1 = int((centres[:, 1] + reach).max().ceil().clamp(y0 + 1, h))
    used, inverse = torch.unique(frame_index, return_inverse=True)
    window = frames[:, :, y0:y1, x0:x1]
    if used.numel() < frames.shape[0]:
        window = window[used]
    if antialias:
        factor = float(size / sides.min())
        if factor < 0.5:   # normalised coordinates (theta below) are unchanged by resizing the window
            window = F.interpolate(window, size=(max(round((y1 - y0) * factor), 1), max(round((x1 - x0) * factor), 1)),
                                   mode="bilinear", antialias=True, align_corners=False)
    window = window.float().div_(255.0) if window.dtype == torch.uint8 else window
    offset = torch.tensor([x0, y0], dtype=window.dtype, device=window.device)
    theta = roi_theta(centres.to(window.dtype) - offset, sides.to(window.dtype), angles.to(window.dtype),
                      y1 - y0, x1 - x0)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    if not torch.equal(inverse, torch.arange(n, device=inverse.device)):  # several ROIs per frame, or unsorted
        window = window[inverse]
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
