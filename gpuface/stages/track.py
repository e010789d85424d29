"""Track ids within a video: faces linked frame to frame by box overlap, landmark distance and embedding distance.

For each frame, the faces are matched to the tracks alive at the previous frame (Hungarian assignment,
``scipy.optimize.linear_sum_assignment``) on a cost that adds ``1 - IoU`` of the boxes, the mean landmark (or
keypoint) distance divided by the face size, and the embedding distance divided by the same-person threshold.
A pair is allowed only if its IoU is at least ``min_iou`` and its embedding distance at most ``max_distance``
(dlib's 0.6), so a different person stepping into the same place starts a new track. Tracks end at shot cuts
(:func:`gpuface.ops.analysis.shots.shot_cuts`) and after ``max_gap`` frames without a match.
"""
from __future__ import annotations

import numpy as np
import torch
from gpuface.ops.boxes import box_iou


def assign_tracks(frame: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor | None = None,
                  embeddings: torch.Tensor | None = None, cuts: set[int] | None = None, min_iou: float = 0.2,
                  max_distance: float = 0.6, max_gap: int = 10) -> torch.Tensor:
    """Track ids (N,) int64 for faces sorted by frame.

    Args:
        frame: int64 (N,) frame numbers (sorted). boxes: (N, 4) xyxy px. points: optional (N, P, 2) landmarks.
        embeddings: optional (N, D). cuts: frame numbers that start a new shot (every track ends before them).
        min_iou: smallest box overlap of a link. max_distance: largest embedding distance of a link.
        max_gap: a track unmatched for more than this many frames ends.

    Returns:
        int64 (N,) ids 0, 1, … in order of first appearance.
    """
    from scipy.optimize import linear_sum_assignment

    n = len(frame)
    ids = torch.full((n,), -1, dtype=torch.long, device="cpu")   # host-side linking (scipy)
    if n == 0:
        return ids
    frame_np = frame.cpu().numpy()
    boxes = boxes.float().cpu()
    pts = points.float().cpu() if points is not None else None
    emb = embeddings.float().cpu() if embeddings is not None else None
    cuts = cuts or set()
    alive: list[tuple[int, int, int]] = []   # (track id, index of its last face, last frame)
    next_id, prev_f = 0, None
    starts = np.flatnonzero(np.r_[True, frame_np[1:] != frame_np[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], n]):
        f = int(frame_np[s])
        if prev_f is not None and any(prev_f < c <= f for c in cuts):
            alive = []                                   # a shot cut ends every track
        alive = [a for a in alive if f - a[2] <= max_gap + 1]
        prev_f = f
        cur = list(range(s, e))
        matched = {}
        if alive:
            prev = [a[1] for a in alive]
            iou = box_iou(boxes[prev], boxes[cur])
            cost = 1 - iou
            size = (boxes[prev, 2:] - boxes[prev, :2]).amax(1).clamp(min=1)[:, None]
            if pts is not None:
                cost = cost + (pts[prev][:, None] - pts[cur][None]).norm(dim=-1).mean(-1) / size
            ok = iou >= min_iou
            if emb is not None:
                d = torch.cdist(emb[prev], emb[cur])
                cost = cost + d / max_distance
                ok &= d <= max_distance
            cost = torch.where(ok, cost, torch.full_like(cost, 1e6)).numpy()
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] < 1e6:
                    matched[c] = r
        new_alive = []
        for j, idx in enumerate(cur):
            if j in matched:
                tid = alive[matched[j]][0]
            else:
                tid, next_id = next_id, next_id + 1
            ids[idx] = tid
            new_alive.append((tid, idx, f))
        taken = {alive[r][0] for r in matched.values()}
        alive = new_alive + [a for a in alive if a[0] not in taken]
    return ids


__all__ = ["assign_tracks"]
