"""Sparse optical flow: pyramidal Lucas–Kanade, batched over frame pairs and points, in torch.

For every consecutive pair of frames (t, t+1) and every point given at frame t (e.g. FaceMesh landmarks), the
displacement that best matches a ``window`` × ``window`` patch of frame t in frame t+1, coarse to fine over
``levels`` pyramid levels, ``iterations`` Gauss–Newton steps per level — Bouguet (2000), "Pyramidal
Implementation of the Lucas Kanade Feature Tracker" (what OpenCV's ``calcOpticalFlowPyrLK`` implements).
Patches are read with ``grid_sample`` (bilinear) for all points of all pairs at once; there is no loop over
frames or points.

PyFAME's ``analyse_optical_flow_sparse`` runs OpenCV per frame on Shi–Tomasi corners; here the points are
the face's own landmarks (or any points you pass), and a summary table per frame comes with the raw flow.
:func:`dense_flow` gives every pixel's displacement (PyFAME's dense option uses OpenCV's Farnebäck, one frame
pair at a time) with the same Lucas–Kanade model, for whole batches of frame pairs.
"""
from __future__ import annotations

import math

import kornia
import pandas as pd
import torch
import torch.nn.functional as F

from gpuface.core.errors import InvalidOptionError


def _sample(img: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear values of img (B, C, H, W) at pixel-centre coordinates xy (B, M, K, 2) → (B, C, M, K)."""
    h, w = img.shape[-2:]
    grid = torch.stack([(xy[..., 0] + 0.5) / w * 2 - 1, (xy[..., 1] + 0.5) / h * 2 - 1], dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def lucas_kanade(prev: torch.Tensor, nxt: torch.Tensor, points: torch.Tensor, window: int = 15, levels: int = 3,
                 iterations: int = 10, min_eigen: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Track points from ``prev`` to ``nxt``.

    Args:
        prev, nxt: grey frames float (B, 1, H, W) in [0, 1] (pairs: prev[i] → nxt[i]).
        points: float (B, M, 2) x, y in pixel-index coordinates (pixel centres at integers) in ``prev``.
        window: patch side in pixels (odd). levels: pyramid levels (1 = no pyramid). iterations: per level.
        min_eigen: a point whose patch structure tensor has a smaller eigenvalue (per pixel, in [0, 1]
            intensity units) is flagged as not tracked (flat or edge-only patch).

    Returns:
        ``(flow, status, error)``: flow (B, M, 2) displacement in pixels; status bool (B, M); error (B, M) mean
        absolute intensity difference of the matched patches (0–1).

    Raises:
        InvalidOptionError: bad window, levels or iterations.
    """
    if window < 3 or window % 2 == 0 or levels < 1 or iterations < 1:
        raise InvalidOptionError("lucas_kanade: odd window >= 3, levels >= 1, iterations >= 1")
    r = window // 2
    off = torch.arange(-r, r + 1, device=prev.device, dtype=prev.dtype)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    offsets = torch.stack([ox, oy], dim=-1).reshape(1, 1, -1, 2)                    # (1, 1, K, 2)
    pyr0, pyr1 = [prev], [nxt]
    with torch.device(prev.device):   # kornia builds its pyramid kernel on the default device
        for _ in range(levels - 1):
            pyr0.append(kornia.geometry.transform.pyrdown(pyr0[-1]))
            pyr1.append(kornia.geometry.transform.pyrdown(pyr1[-1]))
    guess = torch.zeros_like(points)
    for level in range(levels - 1, -1, -1):
        scale = 0.5 ** level
        i0, i1 = pyr0[level], pyr1[level]
        grad = kornia.filters.spatial_gradient(i0, mode="sobel", order=1, normalized=True)[:, 0]   # (B, 2, H, W)
        p = points * scale
        patch = p[:, :, None, :] + offsets
        t0 = _sample(i0, patch)[:, 0]                                              # (B, M, K)
        g = _sample(grad, patch)                                                   # (B, 2, M, K)
        ix, iy = g[:, 0], g[:, 1]
        gxx, gxy, gyy = (ix * ix).sum(-1), (ix * iy).sum(-1), (iy * iy).sum(-1)
        det = gxx * gyy - gxy * gxy
        d = torch.zeros_like(points)
        for _ in range(iterations):
            t1 = _sample(i1, patch + (guess + d)[:, :, None, :])[:, 0]
            diff = t0 - t1
            bx, by = (diff * ix).sum(-1), (diff * iy).sum(-1)
            step = torch.stack([gyy * bx - gxy * by, gxx * by - gxy * bx], dim=-1) / det.clamp(min=1e-12)[..., None]
            d = d + torch.where(det[..., None] > 1e-12, step, torch.zeros_like(step))
        guess = guess + d
        if level:
            guess = guess * 2
    flow = guess
    t0 = _sample(prev, points[:, :, None, :] + offsets)[:, 0]
    t1 = _sample(nxt, (points + flow)[:, :, None, :] + offsets)[:, 0]
    error = (t0 - t1).abs().mean(-1)
    lam = ((gxx + gyy) - torch.sqrt((gxx - gyy) ** 2 + 4 * gxy ** 2)) / 2 / offsets.shape[2]
    h, w = prev.shape[-2:]
    end = points + flow
    inside = (end[..., 0] >= 0) & (end[..., 0] <= w - 1) & (end[..., 1] >= 0) & (end[..., 1] <= h - 1)
    return flow, (lam > min_eigen) & inside & torch.isfinite(flow).all(-1), error


def dense_flow(prev: torch.Tensor, nxt: torch.Tensor, window: int = 15, levels: int = 4,
               iterations: int = 3, min_eigenvalue: float = 1e-4) -> torch.Tensor:
    """Dense optical flow for every pixel: pyramidal Lucas–Kanade with box-filtered structure tensors (the
    classic dense LK), coarse to fine, ``iterations`` warps per level, all frame pairs of a batch at once.

    Args:
        prev, nxt: grey frames float (B, 1, H, W) in [0, 1]. window: averaging window (odd, px at each level).
        levels: pyramid levels. iterations: Gauss–Newton warps per level.
        min_eigenvalue: a pixel is updated at a level only where the smaller eigenvalue of its window-averaged
            structure tensor (gradients of [0, 1] intensities) exceeds this — the test of Shi & Tomasi (1994)
            and of OpenCV's ``minEigThreshold`` (same default, 1e-4); elsewhere it keeps the coarser level's
            flow. Untextured areas (a plain wall under compression noise) so get 0 instead of noise.

    Returns:
        float (B, 2, H, W): displacement (dx, dy) in pixels of each pixel of ``prev``.

    Raises:
        InvalidOptionError: bad window, levels or iterations.
    """
    if window < 3 or window % 2 == 0 or levels < 1 or iterations < 1 or min_eigenvalue < 0:
        raise InvalidOptionError("dense_flow: odd window >= 3, levels >= 1, iterations >= 1, min_eigenvalue >= 0")
    pyr0, pyr1 = [prev], [nxt]
    with torch.device(prev.device):   # kornia builds its pyramid kernel on the default device
        for _ in range(levels - 1):
            pyr0.append(kornia.geometry.transform.pyrdown(pyr0[-1]))
            pyr1.append(kornia.geometry.transform.pyrdown(pyr1[-1]))
    flow = torch.zeros(prev.shape[0], 2, *pyr0[-1].shape[-2:], device=prev.device, dtype=prev.dtype)
    box = lambda t: kornia.filters.box_blur(t, (window, window), border_type="replicate")  # noqa: E731
    for level in range(levels - 1, -1, -1):
        i0, i1 = pyr0[level], pyr1[level]
        h, w = i0.shape[-2:]
        if flow.shape[-2:] != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) * 2
        g = kornia.filters.spatial_gradient(i0, mode="sobel", order=1, normalized=True)[:, 0]     # (B, 2, H, W)
        ix, iy = g[:, :1], g[:, 1:]
        gxx, gxy, gyy = box(ix * ix), box(ix * iy), box(iy * iy)
        det = gxx * gyy - gxy * gxy
        half_trace = (gxx + gyy) / 2
        min_eig = half_trace - (half_trace ** 2 - det).clamp(min=0).sqrt()
        ok = (min_eig > min_eigenvalue) & (det > 1e-12)
        safe = torch.where(ok, det, torch.ones_like(det))
        ys, xs = torch.meshgrid(torch.arange(h, device=prev.device, dtype=prev.dtype),
                                torch.arange(w, device=prev.device, dtype=prev.dtype), indexing="ij")
        for _ in range(iterations):
            gx = (xs + flow[:, 0] + 0.5) / w * 2 - 1
            gy = (ys + flow[:, 1] + 0.5) / h * 2 - 1
            warped = F.grid_sample(i1, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border",
                                   align_corners=False)
            diff = i0 - warped
            bx, by = box(diff * ix), box(diff * iy)
            step = torch.cat([(gyy * bx - gxy * by) / safe, (gxx * by - gxy * bx) / safe], dim=1)
            flow = flow + torch.where(ok, step, torch.zeros_like(step))
    return flow


def dense_flow_summary(flow: torch.Tensor, mask: torch.Tensor, frame_index: torch.Tensor,
                       times: torch.Tensor) -> pd.DataFrame:
    """Per frame pair: ``frame, time_s, face_dx, face_dy, face_magnitude`` (means over ``mask`` > 0.5, e.g. the
    face oval) and ``frame_magnitude`` (mean over the whole frame). flow (B, 2, H, W), mask (B, 1, H, W)."""
    m = (mask > 0.5).to(flow.dtype)
    area = m.sum(dim=(1, 2, 3)).clamp(min=1)
    mag = flow.norm(dim=1, keepdim=True)
    return pd.DataFrame({
        "frame": frame_index.cpu().numpy(), "time_s": times.cpu().numpy(),
        "face_dx": ((flow[:, :1] * m).sum(dim=(1, 2, 3)) / area).cpu().numpy(),
        "face_dy": ((flow[:, 1:] * m).sum(dim=(1, 2, 3)) / area).cpu().numpy(),
        "face_magnitude": ((mag * m).sum(dim=(1, 2, 3)) / area).cpu().numpy(),
        "frame_magnitude": mag.mean(dim=(1, 2, 3)).cpu().numpy(),
    })


def landmark_flow(frames: torch.Tensor, landmarks: torch.Tensor, frame_index: torch.Tensor, times: torch.Tensor,
                  indices=None, return_points: bool = False, **lk):
    """Lucas–Kanade flow of landmarks between consecutive frames of a batch (one face per frame), with a summary.

    Args:
        frames: uint8 (B, 3, H, W). landmarks: float (B, 478, ≥2) in frame pixels (continuous coordinates) for
            each frame. frame_index: int64 (B,) frame numbers. times: float64 (B,) seconds.
        indices: landmark indices to track (default all 478). **lk: :func:`lucas_kanade` options.

    Returns:
        One row per pair of consecutive rows: ``frame, next_frame, time_s, points, tracked, mean_dx, mean_dy, mean_magnitude,
        max_magnitude, mean_angle_deg`` (circular mean of the tracked points' directions, image axes).
        With ``return_points``: ``(table, points, flow, tracked)``, the per-point start positions (B−1, P, 2) in
        continuous pixel coordinates, displacements (B−1, P, 2) px and tracked flags (B−1, P) bool.
    """
    if frames.shape[0] < 2:
        table = pd.DataFrame(columns=["frame", "next_frame", "time_s", "points", "tracked", "mean_dx", "mean_dy",
                                      "mean_magnitude", "max_magnitude", "mean_angle_deg"])
        empty = landmarks.new_zeros(0, landmarks.shape[1] if indices is None else len(indices), 2)
        return (table, empty, empty, empty[..., 0].bool()) if return_points else table
    grey = kornia.color.rgb_to_grayscale(frames.float() / 255)
    idx = list(range(landmarks.shape[1])) if indices is None else list(indices)
    pts = landmarks[:-1, idx, :2] - 0.5                      # continuous → pixel-index coordinates
    flow, ok, _ = lucas_kanade(grey[:-1], grey[1:], pts, **lk)
    okf = ok.float()
    n = okf.sum(1).clamp(min=1)
    mag = flow.norm(dim=-1)
    ang = torch.atan2((torch.sin(torch.atan2(flow[..., 1], flow[..., 0])) * okf).sum(1),
                      (torch.cos(torch.atan2(flow[..., 1], flow[..., 0])) * okf).sum(1))
    table = pd.DataFrame({
        "frame": frame_index[:-1].cpu().numpy(), "next_frame": frame_index[1:].cpu().numpy(),
        "time_s": times[:-1].cpu().numpy(),
        "points": len(idx), "tracked": ok.sum(1).cpu().numpy(),
        "mean_dx": ((flow[..., 0] * okf).sum(1) / n).cpu().numpy(),
        "mean_dy": ((flow[..., 1] * okf).sum(1) / n).cpu().numpy(),
        "mean_magnitude": ((mag * okf).sum(1) / n).cpu().numpy(),
        "max_magnitude": (mag * okf).amax(1).cpu().numpy(),
        "mean_angle_deg": (ang * 180 / math.pi).cpu().numpy(),
    })
    return (table, pts + 0.5, flow, ok) if return_points else table


def flow_to_rgb(flow: torch.Tensor, max_magnitude: float = 8.0) -> torch.Tensor:
    """Colour-code a dense flow field the usual way (OpenCV's Farnebäck sample, PyFAME's dense visualisation):
    hue = direction (0° = +x, image axes), saturation 1, value = magnitude / ``max_magnitude`` clipped to 1 —
    a fixed scale, so colours compare across frames and videos (PyFAME rescales each frame).

    Args:
        flow: float (B, 2, H, W) displacements (dx, dy) px. max_magnitude: px shown at full brightness (> 0).

    Returns:
        uint8 (B, 3, H, W) RGB.
    """
    if max_magnitude <= 0:
        raise InvalidOptionError("max_magnitude must be > 0 px")
    hue = torch.atan2(flow[:, 1:2], flow[:, 0:1]) % (2 * math.pi)
    value = (flow.norm(dim=1, keepdim=True) / max_magnitude).clamp(0, 1)
    hsv = torch.cat([hue, torch.ones_like(hue), value], dim=1)
    return (kornia.color.hsv_to_rgb(hsv) * 255).round().clamp(0, 255).to(torch.uint8)


def draw_flow(frames: torch.Tensor, dense: torch.Tensor | None = None, points: torch.Tensor | None = None,
              vectors: torch.Tensor | None = None, row: torch.Tensor | None = None, scale: float = 4.0,
              max_magnitude: float = 8.0) -> torch.Tensor:
    """Flow visualisation frames (PyFAME's ``output_visualization``): the frame at half brightness, the dense
    flow's colour code (:func:`flow_to_rgb`) blended over it by its brightness, and each point drawn as a white
    dot with its displacement × ``scale`` as a red segment.

    Args:
        frames: uint8 (B, 3, H, W). dense: float (B, 2, H, W) or None. points, vectors: float (M, 2) px (start
            positions and displacements) with row: int64 (M,) their frames in the batch, or None.

    Returns:
        uint8 (B, 3, H, W).
    """
    from gpuface.ops.draw import discs, segments

    out = frames.float() * 0.5
    if dense is not None:
        code = flow_to_rgb(dense, max_magnitude).float()
        alpha = (dense.norm(dim=1, keepdim=True) / max_magnitude).clamp(0, 1)
        out = out + (code - out) * alpha
    if points is not None and points.numel():
        red, white = (torch.tensor(c, dtype=out.dtype, device=out.device) for c in ((255, 40, 40), (255, 255, 255)))
        segments(out, row, points, points + vectors * scale, 0, red)
        discs(out, row, points, 1, white)
    return out.round().clamp(0, 255).to(torch.uint8)


__all__ = ["lucas_kanade", "dense_flow", "dense_flow_summary", "landmark_flow", "flow_to_rgb", "draw_flow"]
