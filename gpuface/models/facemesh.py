"""FaceMesh v2 (478 landmarks) and the blendshapes MLP-Mixer (52 coefficients) as batched torch modules.

Models (MediaPipe FaceLandmarker bundle, Apache-2.0): ``face_landmarks_detector.tflite`` — Kartynnik et al.
(2019), "Real-time Facial Surface Geometry from Monocular Video on Mobile GPUs", arXiv:1907.06724, with the
iris points of Grishchenko et al. (2020), model card "MediaPipe Face Mesh V2"; ``face_blendshapes.tflite`` —
model card "Blendshape V2", an MLP-Mixer (Tolstikhin et al. 2021, arXiv:2105.01601) over 146 landmarks.
"""
from __future__ import annotations

import torch
from torch import nn

from gpuface.models.tflite_graph import TFLiteGraph

#: FaceMesh input side in pixels.
MESH_INPUT = 256

#: The 146 FaceMesh indices the blendshapes model reads (MediaPipe ``face_blendshapes_graph.cc``
#: ``kLandmarksSubsetIdxs``; the same list is py-feat 2.1.5's ``MP_BLENDSHAPE_MODEL_LANDMARKS_SUBSET``).
BLENDSHAPE_LANDMARKS = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78,
    80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150,
    152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234,
    246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311,
    312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380,
    381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471,
    472, 473, 474, 475, 476, 477,
)

#: The 52 blendshape names in output order (ARKit naming; "Left"/"Right" are the subject's).
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)


class FaceMesh(nn.Module):
    """FaceMesh v2: ``forward(x)`` with x float (N, 3, 256, 256) RGB in [0, 1] (a face crop).

    Returns ``(landmarks, presence)``: landmarks float (N, 478, 3) — x, y in crop pixels (0–256), z in the same
    units relative to the face centre (smaller = nearer the camera); presence (N,) in [0, 1], the sigmoid of
    the face-presence logit (MediaPipe drops a face below 0.5).
    """

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.graph(x)
        landmarks = out[0].reshape(x.shape[0], 478, 3)
        presence = torch.sigmoid(out[1].reshape(x.shape[0]))
        return landmarks, presence


class Blendshapes(nn.Module):
    """Blendshapes MLP-Mixer: ``forward(points)`` with points float (N, 146, 2), the x, y of
    :data:`BLENDSHAPE_LANDMARKS` in image pixels (the model removes translation and scale itself).

    Returns float (N, 52) coefficients in [0, 1], ordered as :data:`BLENDSHAPE_NAMES`.
    """

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph = graph
        self.register_buffer("subset", torch.tensor(BLENDSHAPE_LANDMARKS), persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.graph(points)[0].reshape(points.shape[0], 52)

    def from_landmarks(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Coefficients (N, 52) from full landmarks (N, 478, ≥2) in image pixels."""
        return self(landmarks[:, self.subset, :2])


__all__ = ["FaceMesh", "Blendshapes", "BLENDSHAPE_LANDMARKS", "BLENDSHAPE_NAMES", "MESH_INPUT"]
