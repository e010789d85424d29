"""Data contracts shared by every stage: :class:`VideoInfo`, :class:`FrameBatch` and :class:`Faces`.

Conventions (ARCHITECTURE.md, "Contracts"): frames are uint8 RGB (B, 3, H, W) on the working device; compute happens in
float32 in [0, 1] and converts back once, at the writer. Faces of a batch are ragged and stored flat, like
torchvision / Kornia detections: face ``i`` belongs to row ``row[i]`` of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from fractions import Fraction

import torch


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a frame source.

    Attributes:
        path: source path (a video file, an image file or an image folder).
        width, height: frame size in pixels (after an ``area`` crop, if one was requested).
        fps: frames per second as an exact rational (e.g. ``Fraction(30000, 1001)``); 0 for stills.
        num_frames: frame count of the whole source (best estimate the container gives; exact for stills).
        duration: seconds.
        has_audio: whether the container has an audio stream.
        codec: name of the video codec ('image' for stills).
    """

    path: str
    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float
    has_audio: bool = False
    codec: str = ""


@dataclass
class FrameBatch:
    """A batch of decoded frames.

    Attributes:
        frames: uint8 tensor (B, 3, H, W), RGB, on the working device.
        index: int64 (B,) frame numbers in the source (0-based).
        pts: float64 (B,) presentation times in seconds.
        source: the source id (its path).
        fps: frames per second of the source (exact rational, 0 for stills).
    """

    frames: torch.Tensor
    index: torch.Tensor
    pts: torch.Tensor
    source: str = ""
    fps: Fraction = Fraction(0)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "FrameBatch":
        """The same batch with ``frames`` on ``device`` (index and pts stay on the CPU)."""
        return replace(self, frames=self.frames.to(device, non_blocking=non_blocking))


def rank_in_frame(row: torch.Tensor) -> torch.Tensor:
    """int64 (N,) rank of each face within its frame, for faces sorted by frame (``Faces.row``): 0, 1, …
    restarting at each frame; on ``row``'s device, no host sync."""
    pos = torch.arange(len(row), device=row.device)
    if len(row) == 0:
        return pos
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=row.device), row[1:] != row[:-1]])
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
    return pos - first


@dataclass
class Faces:
    """Faces found in a batch of frames, ragged and stored flat (N faces in all).

    Attributes:
        row: int64 (N,) row of the batch (the frame within the batch, not its number in the video: that is
            ``FrameBatch.index[row]``) each face belongs to.
        boxes: float32 (N, 4) bounding boxes ``x1, y1, x2, y2`` in frame pixels.
        scores: float32 (N,) detection confidence in [0, 1].
        keypoints: float32 (N, K, 2) keypoints ``x, y`` in frame pixels (MTCNN: K = 5, in the order left eye,
            right eye, nose, left mouth corner, right mouth corner, as seen in the image).
        landmarks: optional float32 (N, 478, 3) FaceMesh landmarks (x, y in pixels, z relative).
        presence: optional float32 (N,) landmark presence in [0, 1].
        track_id: optional int64 (N,) track ids within the video.
        embedding: optional float32 (N, D) identity embeddings.
        blendshapes: optional float32 (N, 52) blendshape coefficients in [0, 1].
        aus: optional float32 (N, K) action-unit intensities in [0, 1] (:data:`gpuface.stages.affect.AU_NAMES`).
        emotions: optional float32 (N, 7) emotion probabilities (:data:`gpuface.stages.affect.EMOTIONS`).
        valence, arousal: optional float32 (N,) in [-1, 1].

    An empty batch is N = 0, never an exception; frames without faces are simply absent from ``row``.
    """

    row: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints: torch.Tensor
    landmarks: torch.Tensor | None = None
    presence: torch.Tensor | None = None
    track_id: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    blendshapes: torch.Tensor | None = None
    aus: torch.Tensor | None = None
    emotions: torch.Tensor | None = None
    valence: torch.Tensor | None = None
    arousal: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, num_keypoints: int = 5, device: torch.device | str = "cpu") -> "Faces":
        """Faces with N = 0 and the right shapes and dtypes."""
        return cls(
            row=torch.zeros(0, dtype=torch.int64, device=device),
            boxes=torch.zeros(0, 4, device=device),
            scores=torch.zeros(0, device=device),
            keypoints=torch.zeros(0, num_keypoints, 2, device=device),
        )

    def _tensors(self):
        for f in fields(self):
            yield f.name, getattr(self, f.name)

    def select(self, keep: torch.Tensor) -> "Faces":
        """The faces at ``keep`` (a bool mask (N,) or int64 indices), every per-face field alike (a mask costs one
        host sync, for its count, not one per field)."""
        if keep.dtype == torch.bool:
            keep = keep.nonzero()[:, 0]
        return replace(self, **{k: (v[keep] if v is not None else None) for k, v in self._tensors()})

    def to(self, device: torch.device | str) -> "Faces":
        """The same faces with every tensor on ``device`` (to the host: one sync for all fields,
        :func:`gpuface.core.syncs.to_host`)."""
        if torch.device(device).type == "cpu":
            from gpuface.core.syncs import to_host

            names, values = zip(*self._tensors())
            return replace(self, **dict(zip(names, to_host(*values))))
        return replace(self, **{k: (v.to(device) if v is not None else None) for k, v in self._tensors()})

    def counts(self, batch_size: int) -> torch.Tensor:
        """int64 (B,) number of faces in each frame of a batch of ``batch_size`` frames."""
        return torch.bincount(self.row, minlength=batch_size)

    @staticmethod
    def cat(parts: list["Faces"], frame_offsets: list[int] | None = None) -> "Faces":
        """Concatenate faces of several batches; ``frame_offsets[i]`` is added to ``parts[i].row``."""
        if not parts:
            return Faces.empty()
        offsets = frame_offsets or [0] * len(parts)
        out = {}
        for name, _ in parts[0]._tensors():
            values = [getattr(p, name) for p in parts]
            if any(v is None for v in values):
                out[name] = None
            elif name == "row":
                out[name] = torch.cat([v + o for v, o in zip(values, offsets)])
            else:
                out[name] = torch.cat(values)
        return Faces(**out)
