"""Batched face detection: a whole batch of frames in, flat :class:`~gpuface.types.Faces` out.

MTCNN (Zhang et al. 2016, IEEE SPL 23(10)) re-implemented for batches on any device, with the parameters,
defaults, thresholds and box arithmetic of facenet-pytorch 2.5.3's ``detect_face`` (MIT), whose weights it
loads: an image pyramid for all frames, P-Net on every scale, batched NMS (``torchvision.ops.batched_nms``),
then R-Net and O-Net on all candidates of all frames in one pass each, and the final "Min" NMS.
Where facenet-pytorch loops over candidate boxes in Python (crop + resize of each, NumPy NMS), this runs
one ``roi_align`` per pyramid level and a vectorised NMS. Two resampling choices differ, for speed, and are
checked against facenet-pytorch on real video in the tests (matched boxes IoU >= 0.95, no face missed):
pyramid levels are anti-aliased bilinear resizes of the uint8 frames (facenet: area resize of float
frames), and candidate crops are bilinear samples of the matching pyramid level (facenet: area resize).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from .errors import InvalidOptionError
from .models.mtcnn import MTCNN
from .types import Faces

DETECTORS = ("mtcnn",)


def pyramid_crops(levels: list[torch.Tensor], scales: list[float], image: torch.Tensor, x0: torch.Tensor,
                  y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor, size: int) -> torch.Tensor:
    """Crop pixel rectangles ``[x0, x1) × [y0, y1)`` of many frames, each resampled to ``size × size``.

    Each crop is sampled (``torchvision.ops.roi_align``, 2×2 bilinear samples per output pixel) from the
    coarsest pyramid level on which it is still at least ``size`` pixels across, so every output pixel
    averages its footprint of an already anti-aliased image: close to facenet-pytorch's area resampling of
    each crop, at the cost of one ``roi_align`` call per level instead of one resize per box.

    Args:
        levels: float (B, 3, h_k, w_k) images; ``levels[k]`` is the frame scaled by ``scales[k]``
            (``scales`` decreasing, the first one 1.0 for the full frame).
        image: int64 (N,) frame of each crop. x0, y0, x1, y1: (N,) crop bounds in full-frame pixels.

    Returns:
        float (N, 3, size, size) in the value range of ``levels``.
    """
    from torchvision.ops import roi_align

    n = len(image)
    out = levels[0].new_empty(n, levels[0].shape[1], size, size)
    side = torch.minimum(x1 - x0, y1 - y0).to(levels[0].dtype)
    scale_t = torch.tensor(scales, dtype=side.dtype, device=side.device)
    # index of the coarsest level with side * scale >= size (level 0 when even the full frame is smaller)
    level = ((side[:, None] * scale_t[None, :]) >= size).sum(1).sub(1).clamp(min=0)
    rois = torch.stack([image.to(side.dtype), x0.to(side.dtype), y0.to(side.dtype), x1.to(side.dtype),
                        y1.to(side.dtype)], 1)
    for k in torch.unique(level).tolist():
        sel = (level == k).nonzero()[:, 0]
        out[sel] = roi_align(levels[k], rois[sel], size, spatial_scale=scales[k], sampling_ratio=2, aligned=True)
    return out


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch ``rerec``: grow each box to a square around its centre (side = max(w, h))."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch ``bbreg``: apply box offsets (N, 4) relative to (w + 1, h + 1)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + reg * torch.stack([w, h, w, h], 1)


def _crop_bounds(boxes: torch.Tensor, w: int, h: int):
    """facenet-pytorch ``pad``: truncate, clip to the frame; returns 0-based [x0, x1) × [y0, y1) and validity."""
    b = boxes.trunc().to(torch.int64)
    x0 = b[:, 0].clamp(min=1) - 1
    y0 = b[:, 1].clamp(min=1) - 1
    x1 = b[:, 2].clamp(max=w)
    y1 = b[:, 3].clamp(max=h)
    return x0, y0, x1, y1, (x1 > x0) & (y1 > y0)


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with overlap = intersection / min(area) (MTCNN's final "Min" NMS), per group.

    Areas use the +1 pixel convention of the original MTCNN code. Vectorised as a fixed point: a box is kept
    iff no kept box of the same group with a higher score overlaps it more than ``threshold``; iterating that
    rule from "all kept" reaches the greedy result.

    Args:
        boxes: (N, 4) xyxy. scores: (N,). groups: int64 (N,) (frame index). threshold: overlap in [0, 1].

    Returns:
        int64 indices of kept boxes, in decreasing score order.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    iw = (torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1]) + 1).clamp(min=0)
    overlap = iw * ih / torch.minimum(area[:, None], area[None, :])
    n = len(b)
    earlier = torch.ones(n, n, dtype=torch.bool, device=b.device).tril(-1)  # j < i: j has the higher score
    suppresses = (overlap > threshold) & earlier & (g[:, None] == g[None, :])
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    for _ in range(n):
        new = ~(suppresses & keep[None, :]).any(1)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


class MTCNNDetector(torch.nn.Module):
    """Batched MTCNN with facenet-pytorch's parameters and defaults.

    Args:
        min_face_size: smallest face side to look for, in pixels (sets the first pyramid scale 12 / size).
        thresholds: face-probability thresholds of P-Net, R-Net, O-Net.
        factor: pyramid scale step.
        max_candidates: R-/O-Net forward chunk (bounds memory; results do not depend on it).
    """

    def __init__(self, min_face_size: int = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, max_candidates: int = 4096):
        super().__init__()
        if min_face_size < 1 or not 0 < factor < 1 or len(thresholds) != 3:
            raise InvalidOptionError("MTCNN needs min_face_size >= 1, 0 < factor < 1 and three thresholds")
        self.min_face_size, self.thresholds, self.factor = min_face_size, tuple(thresholds), factor
        self.max_candidates = max_candidates
        self.net = MTCNN().to(memory_format=torch.channels_last)

    def _chunked(self, net, x: torch.Tensor):
        outs = [net(x[i:i + self.max_candidates]) for i in range(0, len(x), self.max_candidates)]
        return tuple(torch.cat(parts) for parts in zip(*outs))

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor) -> Faces:
        """Detect faces in uint8 RGB frames (B, 3, H, W); returns :class:`Faces` with 5 keypoints, sorted by
        frame then decreasing score. Boxes and keypoints are in frame pixels (float32)."""
        dev = frames.device
        dtype = next(self.net.parameters()).dtype
        b, _, h, w = frames.shape
        imgs = frames.to(dtype)
        p_thr, r_thr, o_thr = self.thresholds

        # Stage 1: P-Net over the pyramid, NMS per (scale, frame), then per frame.
        m = 12.0 / self.min_face_size
        scales, minl = [], min(h, w) * m
        while minl >= 12:
            scales.append(m * self.factor ** len(scales))
            minl *= self.factor
        cand, cand_img = [], []
        # Pyramid levels straight from the uint8 frames, anti-aliased bilinear (uint8 channels-last has a
        # vectorised kernel); facenet-pytorch area-resamples float frames (same footprint, several x slower).
        src = frames.contiguous(memory_format=torch.channels_last)
        levels, level_scales = [imgs], [1.0]
        for scale in scales:
            x = F.interpolate(src, size=(int(h * scale + 1), int(w * scale + 1)), mode="bilinear",
                              antialias=True, align_corners=False).to(dtype)
            levels.append(x)
            level_scales.append(x.shape[-1] / w)
            reg, prob = self.net.pnet((x - 127.5) * 0.0078125)
            prob = prob[:, 1]
            mask = prob >= p_thr
            idx = mask.nonzero()
            if len(idx) == 0:
                continue
            cell = idx[:, 1:].to(dtype).flip(1)  # (x, y) of the output cell
            q1 = ((2 * cell + 1) / scale).floor()
            q2 = ((2 * cell + 12) / scale).floor()
            boxes = torch.cat([q1, q2, prob[mask][:, None], reg.permute(0, 2, 3, 1)[mask]], 1)
            pick = batched_nms(boxes[:, :4], boxes[:, 4], idx[:, 0], 0.5)
            cand.append(boxes[pick])
            cand_img.append(idx[pick, 0])
        if not cand:
            return Faces.empty(device=dev)
        boxes, image = torch.cat(cand), torch.cat(cand_img)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.7)
        boxes, image = boxes[pick], image[pick]
        bw = (boxes[:, 2] - boxes[:, 0])[:, None]
        bh = (boxes[:, 3] - boxes[:, 1])[:, None]
        boxes = _square(boxes[:, :4] + boxes[:, 5:9] * torch.cat([bw, bh, bw, bh], 1))

        # Stage 2: R-Net on every candidate of every frame.
        x0, y0, x1, y1, ok = _crop_bounds(boxes, w, h)
        boxes, image = boxes[ok], image[ok]
        if len(boxes) == 0:
            return Faces.empty(device=dev)
        crops = pyramid_crops(levels, level_scales, image, x0[ok], y0[ok], x1[ok], y1[ok], 24)
        reg, prob = self._chunked(self.net.rnet, (crops - 127.5) * 0.0078125)
        keep = prob[:, 1] > r_thr
        boxes, image, reg, score = boxes[keep], image[keep], reg[keep], prob[keep, 1]
        pick = batched_nms(boxes, score, image, 0.7)
        boxes = _square(_regress(boxes[pick], reg[pick]))
        image = image[pick]

        # Stage 3: O-Net, keypoints, final "Min" NMS per frame.
        x0, y0, x1, y1, ok = _crop_bounds(boxes, w, h)
        boxes, image = boxes[ok], image[ok]
        if len(boxes) == 0:
            return Faces.empty(device=dev)
        crops = pyramid_crops(levels, level_scales, image, x0[ok], y0[ok], x1[ok], y1[ok], 48)
        reg, points, prob = self._chunked(self.net.onet, (crops - 127.5) * 0.0078125)
        keep = prob[:, 1] > o_thr
        boxes, image, reg, points, score = boxes[keep], image[keep], reg[keep], points[keep], prob[keep, 1]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        kp = torch.stack([bw * points[:, :5] + boxes[:, :1] - 1, bh * points[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = _regress(boxes, reg)
        pick = nms_min(boxes, score, image, 0.7)
        boxes, image, kp, score = boxes[pick], image[pick], kp[pick], score[pick]
        order = torch.argsort(image * 2 - score.double(), stable=True)  # by frame, then decreasing score
        return Faces(frame=image[order], boxes=boxes[order].float(), scores=score[order].float(),
                     keypoints=kp[order].float())


def filter_faces(faces: Faces, frame_size: tuple[int, int], min_score: float = 0.0, min_size: float = 0.0,
                 min_border: float = 0.0) -> Faces:
    """Keep faces with score >= ``min_score``, both box sides >= ``min_size`` px and every box edge at least
    ``min_border`` px inside the frame (video-to-faces' ``det_min_score/size/border``).

    Args:
        frame_size: (H, W) in pixels.
    """
    h, w = frame_size
    b = faces.boxes
    keep = faces.scores >= min_score
    if min_size > 0:
        keep &= ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    if min_border > 0:
        keep &= (b[:, 0] >= min_border) & (b[:, 1] >= min_border)
        keep &= (b[:, 2] <= w - min_border) & (b[:, 3] <= h - min_border)
    return faces.select(keep)


def expand_boxes(boxes: torch.Tensor, scale: Sequence[float] = (1.0, 1.0, 1.0, 1.0), square: bool = False,
                 frame_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Grow boxes from their centre by one factor per side, optionally to a square, optionally clipped.

    As video-to-faces' ``det_scale``/``det_square``: with half sizes (hw, hh) and centre (cx, cy) the new box
    is ``cx - hw·L, cy - hh·U, cx + hw·R, cy + hh·D``; ``square`` then grows the shorter side to the longer
    one around the centre and shifts the box back inside the frame where it fits.

    Args:
        boxes: (N, 4) xyxy pixels. scale: (L, R, U, D) factors (> 0). frame_size: (H, W) to clip to.

    Returns:
        (N, 4) float xyxy pixels.

    Raises:
        InvalidOptionError: a factor <= 0.
    """
    if len(scale) != 4 or min(scale) <= 0:
        raise InvalidOptionError(f"box scale needs four factors > 0 (left, right, up, down), got {scale}")
    sl, sr, su, sd = scale
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    hw, hh = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    out = torch.stack([cx - hw * sl, cy - hh * su, cx + hw * sr, cy + hh * sd], 1)
    if square:
        w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
        side = torch.maximum(w, h)
        mx, my = (out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2
        out = torch.stack([mx - side / 2, my - side / 2, mx + side / 2, my + side / 2], 1)
        if frame_size is not None:
            fh, fw = frame_size
            dx = (-out[:, 0]).clamp(min=0) - (out[:, 2] - fw).clamp(min=0)
            dy = (-out[:, 1]).clamp(min=0) - (out[:, 3] - fh).clamp(min=0)
            out = out + torch.stack([dx, dy, dx, dy], 1)
    if frame_size is not None:
        fh, fw = frame_size
        out = torch.stack([out[:, 0].clamp(0, fw), out[:, 1].clamp(0, fh), out[:, 2].clamp(0, fw),
                           out[:, 3].clamp(0, fh)], 1)
    return out


class FaceDetector:
    """Batched face detector behind one API (``mtcnn`` now; BlazeFace variants join it later).

    Args:
        model: detector name, one of :data:`DETECTORS`.
        device: torch device for the weights and compute.
        min_score: drop faces below this score (0–1). min_size: drop faces with a side below this (px).
        min_border: drop faces closer than this to the frame border (px).
        **kwargs: detector parameters (MTCNN: ``min_face_size=20``, ``thresholds=(0.6, 0.7, 0.7)``,
            ``factor=0.709``).

    Raises:
        InvalidOptionError: unknown model or bad parameters. WeightsError: weights unavailable.

    Example:
        >>> det = FaceDetector("mtcnn", device="cuda")
        >>> faces = det(batch.frames)   # Faces: boxes (N, 4) xyxy px, scores (N,), keypoints (N, 5, 2)
    """

    def __init__(self, model: str = "mtcnn", device: torch.device | str = "cpu", min_score: float = 0.0,
                 min_size: float = 0.0, min_border: float = 0.0, **kwargs):
        from .weights import load_state_dict

        if model not in DETECTORS:
            raise InvalidOptionError(f"unknown detector {model!r}; choose one of {', '.join(DETECTORS)}")
        if not 0 <= min_score <= 1 or min_size < 0 or min_border < 0:
            raise InvalidOptionError("min_score must be in [0, 1]; min_size and min_border >= 0")
        self.model, self.device = model, torch.device(device)
        self.min_score, self.min_size, self.min_border = min_score, min_size, min_border
        self.net = MTCNNDetector(**kwargs)
        self.net.net.load_state_dict(load_state_dict("mtcnn"))
        self.net.to(self.device).eval()

    def __call__(self, frames: torch.Tensor) -> Faces:
        """Detect faces in uint8 RGB frames (B, 3, H, W) (moved to the detector's device if needed)."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise InvalidOptionError(f"frames must be uint8 (B, 3, H, W), got {tuple(frames.shape)} {frames.dtype}")
        faces = self.net(frames.to(self.device))
        return filter_faces(faces, tuple(frames.shape[-2:]), self.min_score, self.min_size, self.min_border)


__all__ = ["FaceDetector", "MTCNNDetector", "filter_faces", "expand_boxes", "nms_min", "pyramid_crops", "DETECTORS"]
