"""BlazeFace (MediaPipe face detection) as a batched torch module: SSD anchors, box and keypoint decoding.

Model: Bazarevsky et al. (2019), "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs",
arXiv:1907.05047; weights and graph from MediaPipe (Apache-2.0): the short-range model of the FaceLandmarker
bundle (128×128 input, 896 anchors, faces within ~2 m) and ``face_detection_full_range_sparse.tflite``
(192×192, 2304 anchors, faces up to ~5 m). Anchors and decoding follow MediaPipe's
``SsdAnchorsCalculator`` and ``TensorsToDetectionsCalculator`` options of
``mediapipe/modules/face_detection/face_detection.pbtxt``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpuface.models.tflite_graph import TFLiteGraph

#: The 6 keypoints, subject-centric: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


@dataclass(frozen=True)
class BlazeFaceConfig:
    """Input size, anchor layout and decoding constants of one BlazeFace variant."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: int       # per SSD layer (2 = one aspect ratio + the interpolated scale)
    score_threshold: float


CONFIGS = {
    "short": BlazeFaceConfig(128, (8, 16, 16, 16), 2, 0.5),
    "full": BlazeFaceConfig(192, (4,), 1, 0.6),
}


def ssd_anchors(config: BlazeFaceConfig) -> torch.Tensor:
    """Anchor centres (A, 2) as fractions of the input, in MediaPipe's order (layer, row, column, anchor).

    Consecutive layers with the same stride share one grid (their anchors are concatenated per cell), as in
    ``SsdAnchorsCalculator``; anchor width and height are fixed to 1 (``fixed_anchor_size``), offsets 0.5.
    """
    out, i = [], 0
    strides = config.strides
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        grid = -(-config.input_size // strides[i])
        per_cell = config.anchors_per_cell * (j - i)
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        centres = torch.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], dim=-1).reshape(-1, 1, 2)
        out.append(centres.expand(-1, per_cell, 2).reshape(-1, 2))
        i = j
    return torch.cat(out).float()


class BlazeFace(nn.Module):
    """BlazeFace network plus anchor decoding.

    Args:
        graph: the converted TFLite graph (:class:`TFLiteGraph`).
        variant: ``"short"`` or ``"full"``.

    ``forward(x)``: x float (B, 3, S, S) RGB scaled to [-1, 1] (S = 128 short, 192 full). Returns
    ``(scores, boxes, keypoints)``: scores (B, A) in [0, 1] (sigmoid of the logit clipped to ±100), boxes
    (B, A, 4) xyxy and keypoints (B, A, 6, 2) xy, both as fractions of the input square.
    """

    def __init__(self, graph: TFLiteGraph, variant: str = "short"):
        super().__init__()
        self.config = CONFIGS[variant]
        self.graph = graph
        self.register_buffer("anchors", ssd_anchors(self.config), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.graph(x)
        reg, logits = sorted(outputs, key=lambda t: t.shape[-1], reverse=True)  # (B, A, 16), (B, A, 1)
        size = float(self.config.input_size)
        anchors = self.anchors.to(reg.dtype)
        centre = reg[..., 0:2] / size + anchors
        half = reg[..., 2:4] / size / 2
        boxes = torch.cat([centre - half, centre + half], dim=-1)
        keypoints = reg[..., 4:16].reshape(*reg.shape[:2], 6, 2) / size + anchors[:, None, :]
        scores = torch.sigmoid(logits[..., 0].clamp(-100, 100))
        return scores, boxes, keypoints


__all__ = ["BlazeFace", "BlazeFaceConfig", "CONFIGS", "KEYPOINT_NAMES", "ssd_anchors"]
