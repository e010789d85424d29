"""Sparse optical flow: pyramidal Lucas–Kanade, batched over frame pairs and points, in torch.

For every consecutive pair of frames (t, t+1) and every point given at frame t (e.g. FaceMesh landmarks), the
displacement that best matches a ``window`` × ``window`` patch of frame t in frame t+1, coarse to fine over
``levels`` pyramid levels, ``iterations`` Gauss–Newton steps per level — Bouguet (2000), "Pyramidal
Implementation of the Lucas Kanade Feature Tracker" (what OpenCV's ``calcOpticalFlowPyrLK`` implements).
Patches are read with ``grid_sample`` (bilinear) for all points of all pairs at once; there is no loop over
frames or points.

PyFAME's ``analyse_optical_flow_sparse`` runs OpenCV per frame on Shi–Tomasi corners; here the points are
the face's own landmarks (or any points you pass), and a summary table per frame comes with the raw flow.
:func:`dense_flow` gives every pixel's displacement with the same Lucas–Kanade model, for whole batches of frame
pairs; :func:`farneback_flow` is PyFAME's dense option (OpenCV's Farnebäck with its parameters, one pair at a time on
the CPU), for tables comparable with PyFAME's.
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


#: PyFAME 1.0.10's Farnebäck parameters (``DenseFlowAnalysisParameters``: pyramid_scale, max_pyramid_level,
#: search_window_size, max_iterations, pixel_neighborhood_size, gaussian_deviation; flags 0).
FARNEBACK = {"pyr_scale": 0.5, "levels": 2, "winsize": 15, "iterations": 10, "poly_n": 5, "poly_sigma": 1.2}


def farneback_flow(prev: torch.Tensor, nxt: torch.Tensor, **params) -> torch.Tensor:
    """Dense optical flow by Farnebäck (2003), "Two-Frame Motion Estimation Based on Polynomial Expansion", through
    OpenCV's ``calcOpticalFlowFarneback`` with PyFAME's parameters (:data:`FARNEBACK`, overridable by ``params``):
    the flow PyFAME's ``analyse_optical_flow_dense`` measures, one frame pair at a time on the CPU.

    Args:
        prev, nxt: grey frames float (B, 1, H, W) in [0, 1] (rounded to 8 bits, as OpenCV's grey frames are).

    Returns:
        float32 (B, 2, H, W) on the frames' device: displacement (dx, dy) in pixels of each pixel of ``prev``.
    """
    import cv2

    opts = {**FARNEBACK, **params}
    a = (prev[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    b = (nxt[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    out = [torch.from_numpy(cv2.calcOpticalFlowFarneback(x, y, None, opts["pyr_scale"], opts["levels"],
                                                         opts["winsize"], opts["iterations"], opts["poly_n"],
                                                         opts["poly_sigma"], 0)) for x, y in zip(a, b)]
    return torch.stack(out).permute(0, 3, 1, 2).to(prev.device)


def dense_flow_summary(flow: torch.Tensor, mask: torch.Tensor, frame_index: torch.Tensor,
                       times: torch.Tensor) -> pd.DataFrame:
    """Per frame pair: ``frame, time_s, face_dx, face_dy, face_magnitude`` (means over ``mask`` > 0.5, e.g. the
    face oval), ``frame_magnitude`` (mean over the whole frame) and, with it, PyFAME's whole-frame statistics
    ``frame_magnitude, std_magnitude, mean_angle, std_angle`` (its "mean magnitude", "deviation magnitude", "mean
    angle", "deviation angle": population standard deviations; angles in radians in [0, 2π), image axes, as
    OpenCV's ``cartToPolar``). flow (B, 2, H, W), mask (B, 1, H, W)."""
    m = (mask > 0.5).to(flow.dtype)
    area = m.sum(dim=(1, 2, 3)).clamp(min=1)
    mag = flow.norm(dim=1, keepdim=True)
    angle = torch.atan2(flow[:, 1], flow[:, 0]).remainder(2 * math.pi)
    return pd.DataFrame({
        "frame": frame_index.cpu().numpy(), "time_s": times.cpu().numpy(),
        "face_dx": ((flow[:, :1] * m).sum(dim=(1, 2, 3)) / area).cpu().numpy(),
        "face_dy": ((flow[:, 1:] * m).sum(dim=(1, 2, 3)) / area).cpu().numpy(),
        "face_magnitude": ((mag * m).sum(dim=(1, 2, 3)) / area).cpu().numpy(),
        "frame_magnitude": mag.mean(dim=(1, 2, 3)).cpu().numpy(),
        "std_magnitude": mag.double().std(dim=(1, 2, 3), correction=0).cpu().numpy(),
        "mean_angle": angle.double().mean(dim=(1, 2)).cpu().numpy(),
        "std_angle": angle.double().std(dim=(1, 2), correction=0).cpu().numpy(),
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
    table = _flow_table(flow, ok, frame_index, times)
    return (table, pts + 0.5, flow, ok) if return_points else table


def _flow_table(flow: torch.Tensor, ok: torch.Tensor, frame_index: torch.Tensor, times: torch.Tensor) -> pd.DataFrame:
    """The per-pair summary of point flows (B−1, P, 2) with tracked flags (B−1, P) between frames ``frame_index``."""
    okf = ok.float()
    n = okf.sum(1).clamp(min=1)
    mag = flow.norm(dim=-1)
    ang = torch.atan2((torch.sin(torch.atan2(flow[..., 1], flow[..., 0])) * okf).sum(1),
                      (torch.cos(torch.atan2(flow[..., 1], flow[..., 0])) * okf).sum(1))
    return pd.DataFrame({
        "frame": frame_index[:-1].cpu().numpy(), "next_frame": frame_index[1:].cpu().numpy(),
        "time_s": times[:-1].cpu().numpy(),
        "points": ok.shape[1], "tracked": ok.sum(1).cpu().numpy(),
        "mean_dx": ((flow[..., 0] * okf).sum(1) / n).cpu().numpy(),
        "mean_dy": ((flow[..., 1] * okf).sum(1) / n).cpu().numpy(),
        "mean_magnitude": ((mag * okf).sum(1) / n).cpu().numpy(),
        "max_magnitude": (mag * okf).amax(1).cpu().numpy(),
        "mean_angle_deg": (ang * 180 / math.pi).cpu().numpy(),
    })


#: PyFAME 1.0.10's sparse flow (``SparseFlowAnalysisParameters``, ``analyse_optical_flow_sparse``): Shi–Tomasi
#: corners (``max_points``, ``point_quality_threshold``, ``min_point_distance``; OpenCV's blockSize 3) in the face
#: oval of the first frame, then LK with ``search_window_size`` 15, ``max_pyramid_level`` 2, ``max_iterations`` 10.
CORNERS = {"max_corners": 20, "quality": 0.3, "min_distance": 7, "window": 15, "levels": 3, "iterations": 10}


def shi_tomasi_corners(grey: torch.Tensor, mask: torch.Tensor, max_corners: int = 20, quality: float = 0.3,
                       min_distance: float = 7, **_) -> torch.Tensor:
    """Shi & Tomasi (1994) "Good Features to Track" corners of one grey frame inside a mask, through OpenCV's
    ``goodFeaturesToTrack`` (PyFAME's sparse flow points; defaults :data:`CORNERS`).

    Args:
        grey: float (1, H, W) in [0, 1] (rounded to 8 bits, as OpenCV's grey frames). mask: (1, H, W), > 0.5 inside.

    Returns:
        float32 (P, 2) corner positions, pixel-index coordinates (x, y), strongest first; P ≤ ``max_corners``.
    """
    import cv2

    g = (grey[0] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    m = ((mask[0] > 0.5).to(torch.uint8) * 255).cpu().numpy()
    found = cv2.goodFeaturesToTrack(g, max_corners, quality, min_distance, mask=m)
    return torch.zeros(0, 2) if found is None else torch.from_numpy(found.reshape(-1, 2))


def track_points(grey: torch.Tensor, points: torch.Tensor, frame_index: torch.Tensor, times: torch.Tensor,
                 **lk) -> tuple[pd.DataFrame, torch.Tensor]:
    """Follow points through consecutive grey frames (B, 1, H, W), pair after pair, as PyFAME's sparse flow does:
    a point that is lost (not tracked) is dropped for good; none is added.

    Args:
        points: float (P, 2) in pixel-index coordinates on ``grey[0]``. **lk: :func:`lucas_kanade` options.

    Returns:
        ``(table, points)``: one row per pair as :func:`landmark_flow`'s table (``points``: those followed into the
        pair), and the points still tracked on the last frame.
    """
    rows = []
    pts = points.to(grey.device, torch.float32)
    for i in range(grey.shape[0] - 1):
        if len(pts) == 0:
            flow, ok = pts.new_zeros(1, 0, 2), pts.new_zeros(1, 0, dtype=torch.bool)
        else:
            flow, ok, _ = lucas_kanade(grey[i:i + 1], grey[i + 1:i + 2], pts[None], **lk)
        rows.append(_flow_table(flow, ok, frame_index[i:i + 2], times[i:i + 2]))
        pts = (pts + flow[0])[ok[0]]
    table = pd.concat(rows, ignore_index=True) if rows else _flow_table(
        points.new_zeros(0, 0, 2), points.new_zeros(0, 0, dtype=torch.bool), frame_index[:1], times[:1])
    return table, pts


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
