"""Emotion probabilities from aligned grey face chips, and valence/arousal derived from them on the circumplex.

Chips: every face of every frame is cut in one bilinear ``grid_sample`` (:func:`gpuface.stages.embed.face_chips`:
dlib's 5-point similarity alignment from FaceMesh points, eyes level) after one anti-aliased shrink of the
frames' window around the faces (faces larger than twice the chip; like OpenCV's ``INTER_AREA``), then turned
grey with ITU-R BT.601 weights (0.299 R + 0.587 G + 0.114 B, OpenCV's and fer's
``COLOR_BGR2GRAY``) and scaled to [-1, 1] as fer does (``(x / 255 − 0.5) · 2``). The padding (0.45 of dlib's
template) frames the face from the forehead to below the chin, like the Haar-cascade box + 10 px fer crops.

Valence/arousal offline are **derived, not measured**: the emotion probabilities weight unit vectors on
Russell's (1980) circumplex (J. A. Russell, "A circumplex model of affect", J. Pers. Soc. Psychol. 39(6),
Fig. 2, direct circular scaling of 28 affect words; angles approximate, counter-clockwise from pleasure):
happiness at "happy" 7.8°, surprise at "astonished" 69.8°, anger at "angry" 99.0°, fear at "afraid" 116.8°,
disgust (not among Russell's 28 words) at "annoyed" 123.0°, sadness at "sad" 207.5°, neutral at the origin.
``valence = Σ p_k cos θ_k``, ``arousal = Σ p_k sin θ_k``, both in [-1, 1].
"""
from __future__ import annotations

import math

import torch

from gpuface.stages.embed import face_chips

#: Emotion names in the model's output order (fer's angry … neutral), spelled as py-feat's columns.
EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: Emotion names as the facetorch analyser writes them (its README: ``"predicted_emotion": "happy"``; fer's own
#: adjectives), for ``--emotion-names facetorch``; names not listed (HSEmotion's contempt) stay as they are.
FACETORCH_EMOTIONS = {"anger": "angry", "happiness": "happy", "sadness": "sad"}
#: Circumplex angle (degrees) per emotion, None for the origin (see the module docstring).
CIRCUMPLEX_DEGREES = {"anger": 99.0, "disgust": 123.0, "fear": 116.8, "happiness": 7.8, "sadness": 207.5,
                      "surprise": 69.8, "neutral": None}
#: Quadrant names (as the facetorch analyser's ``emotional_quadrant``), indexed by (valence ≥ 0) + 2 (arousal ≥ 0).
QUADRANTS = ("Sad/Depressed", "Peaceful/Relaxed", "Angry/Stressed", "Happy/Excited")
CHIP_SIZE = 64
CHIP_PADDING = 0.45


def emotion_chips(frames: torch.Tensor, landmarks: torch.Tensor, row: torch.Tensor,
                  size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """Aligned grey face chips, the mini-Xception's input.

    Args:
        frames: uint8 (B, 3, H, W) RGB. landmarks: float (N, 478, ≥2) FaceMesh landmarks in frame pixels.
        row: int64 (N,) row of each face in ``frames``. size: chip side in px. padding: dlib template
            padding.

    Returns:
        float32 (N, 1, size, size) in [-1, 1] on the frames' device (N = 0 gives an empty tensor).
    """
    rgb = face_chips(frames, landmarks, row, size, padding, antialias=True)     # (N, 3, S, S) 0-255
    weights = torch.tensor([0.299, 0.587, 0.114], device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    grey = (rgb * weights).sum(1, keepdim=True)
    return (grey / 255.0 - 0.5) * 2.0


def imagenet_chips(frames: torch.Tensor, landmarks: torch.Tensor, row: torch.Tensor, size: int = 224,
                   padding: float = 0.35) -> torch.Tensor:
    """Aligned RGB face chips normalised with ImageNet's mean and std (HSEmotion's input, 224² for B0).

    Returns:
        float32 (N, 3, size, size) on the frames' device.
    """
    rgb = face_chips(frames, landmarks, row, size, padding, antialias=True) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406], device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=rgb.device).view(1, 3, 1, 1)
    return (rgb - mean) / std


def _unit_vectors(device) -> torch.Tensor:
    rows = [(0.0, 0.0) if CIRCUMPLEX_DEGREES[e] is None else
            (math.cos(math.radians(CIRCUMPLEX_DEGREES[e])), math.sin(math.radians(CIRCUMPLEX_DEGREES[e])))
            for e in EMOTIONS]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def circumplex_valence_arousal(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Valence and arousal derived from emotion probabilities (Russell 1980 circumplex, module docstring).

    Args:
        probabilities: float (N, 7) in the order of :data:`EMOTIONS`, rows summing to 1.

    Returns:
        (valence, arousal): float32 (N,) each in [-1, 1].
    """
    va = probabilities.float() @ _unit_vectors(probabilities.device)
    return va[:, 0], va[:, 1]


def quadrant_index(valence: torch.Tensor, arousal: torch.Tensor) -> torch.Tensor:
    """int64 (N,) index into :data:`QUADRANTS`: ``(valence ≥ 0) + 2 · (arousal ≥ 0)``."""
    return (valence >= 0).long() + 2 * (arousal >= 0).long()


__all__ = ["EMOTIONS", "FACETORCH_EMOTIONS", "CIRCUMPLEX_DEGREES", "QUADRANTS", "emotion_chips", "imagenet_chips",
           "circumplex_valence_arousal",
           "quadrant_index"]
