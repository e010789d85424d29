"""mexca-style annotation of a video: every face of every frame with its identity label and confidence.

Per video: FaceMesh landmarks (the landmarker's own ROI tracking ends at shot cuts, found as large
frame-to-frame changes of a 32×32 grey thumbnail), dlib embeddings of every face (one pass per batch), track ids
over the whole video from box IoU, keypoint distance and embedding distance (:func:`gpuface.track.assign_tracks`:
a different person in the same place starts a new track; tracks end at cuts and gaps), one mean embedding per
track, spectral clustering of the tracks (or of single faces) into identities
(:func:`gpuface.identity.cluster.cluster_embeddings`), labels broadcast back to faces, mexca's confidence per face.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..outputs import faces_rows


def shot_cuts(frames: torch.Tensor, previous: torch.Tensor | None = None, threshold: float = 0.1) -> torch.Tensor:
    """bool (B,): frame i starts a new shot — the mean absolute difference of 32×32 grey thumbnails (0–1) from
    the frame before (``previous``: the last frame of the previous batch) exceeds ``threshold`` (0.1: the
    sample videos move by at most 0.03 between frames, hard cuts between faces by 0.17–0.30)."""
    thumbs = F.adaptive_avg_pool2d(frames.float().mean(1, keepdim=True) / 255, 32)
    if previous is not None:
        thumbs = torch.cat([F.adaptive_avg_pool2d(previous[None].float().mean(1, keepdim=True) / 255, 32), thumbs])
    diff = (thumbs[1:] - thumbs[:-1]).abs().mean(dim=(1, 2, 3))
    cuts = diff > threshold
    return cuts if previous is not None else torch.cat([torch.zeros(1, dtype=torch.bool, device=cuts.device), cuts])


def annotate_source(path: str, landmarker, embedder, batch_size: int = 32, selection=None, num_faces=(1, 9),
                    per_face: bool = False, too_few: str = "error", embeddings: bool = False,
                    backend: str = "auto", quiet: bool = True, affect=None):
    """Annotate one video: returns ``(table, result)``.

    The table has one row per (frame, face): ``video, frame, time_s, face, x1, y1, x2, y2, score, presence,
    track, kp0_x … kp5_y`` (FaceMesh keypoints: eye centres, nose tip, mouth, tragions), ``label`` (identity),
    ``confidence`` and, with ``embeddings``, ``emb_0 …``; frames without a face get one row with nulls
    (mexca's convention).

    Args:
        num_faces: identities: an int, a (min, max) range, as :func:`cluster_embeddings`.
        per_face: cluster single faces instead of tracks.
        too_few: ``error`` or ``each`` when there are fewer tracks/faces than identities.
        affect: a :class:`gpuface.affect.AffectAnalyzer` to add the affect columns
            (:func:`gpuface.affect.source.affect_columns`: AUs, emotions, valence/arousal) to every face.

    Raises:
        GpufaceError subclasses (NotEnoughFacesError included) for unreadable input or bad options.
    """
    from ..io.decode import VideoReader
    from ..pipeline import JobResult, OomGuard, _progress
    from ..track import assign_tracks
    from .cluster import cluster_embeddings, estimate_count, label_confidence

    t0 = time.perf_counter()
    guard = OomGuard()
    reader = VideoReader(path, backend=backend, device=landmarker.device)
    state = landmarker.new_state()
    rows, embs, frames_seen, cut_frames = [], [], [], set()
    last, result = None, JobResult(path)
    with _progress(reader.info.num_frames, os.path.basename(path), quiet) as bar:
        for batch in reader.batches(batch_size, selection, device=landmarker.device):
            cuts = torch.nonzero(shot_cuts(batch.frames, last)).flatten().tolist()
            cut_frames.update(int(batch.index[c]) for c in cuts)
            bounds = [0] + [c for c in cuts if c > 0] + [len(batch)]
            parts = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                if a in cuts:
                    state.end_tracks()
                parts.append(guard(landmarker, batch.frames[a:b], state))
            from ..types import Faces
            faces = Faces.cat(parts, bounds[:-1])
            embedder(batch.frames, faces)
            table = faces_rows(faces, batch, path)
            f = faces.to("cpu")
            table.insert(9, "presence", f.presence.numpy())
            table.insert(10, "track", f.track_id.numpy())
            if affect is not None:
                from ..affect.source import affect_columns
                affect(batch.frames, faces)
                table = pd.concat([table, affect_columns(faces, affect.au_threshold, affect.au_names)], axis=1)
            rows.append(table)
            embs.append(f.embedding)
            frames_seen.append(pd.DataFrame({"frame": batch.index.numpy(), "time_s": batch.pts.numpy()}))
            last = batch.frames[-1]
            result.frames += len(batch)
            result.faces += len(faces)
            bar.update(len(batch))
    table = pd.concat(rows, ignore_index=True)
    emb = torch.cat(embs).numpy() if embs else np.zeros((0, embedder.dim))
    if len(table):  # track ids over the whole video: box IoU + keypoint distance + embedding distance, cuts
        kp = torch.tensor(table[[c for c in table.columns if c.startswith("kp")]].to_numpy(np.float32))
        table["track"] = assign_tracks(torch.tensor(table["frame"].to_numpy()),
                                       torch.tensor(table[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)),
                                       kp.view(len(table), -1, 2), torch.from_numpy(emb), cut_frames).numpy()
    track = table["track"].to_numpy() if len(table) else np.zeros(0, dtype=np.int64)
    if len(table):
        if per_face:
            labels = cluster_embeddings(emb, num_faces, too_few=too_few)
        else:
            ids, inverse = np.unique(track, return_inverse=True)
            means = np.stack([emb[inverse == i].mean(0) for i in range(len(ids))])
            k = num_faces
            if not isinstance(k, int):  # the count is estimated on the faces, then the tracks are clustered
                k = max(min(estimate_count(emb, *k), len(ids)), k[0])
            labels = cluster_embeddings(means, k, too_few=too_few)[inverse]
        table["label"] = labels
        table["confidence"] = label_confidence(emb, labels)
    else:
        table["label"], table["confidence"] = pd.Series(dtype="Int64"), pd.Series(dtype=float)
    if embeddings and len(table):
        table = pd.concat([table, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])])], axis=1)
    seen = pd.concat(frames_seen, ignore_index=True)
    empty = seen[~seen["frame"].isin(table["frame"])].assign(video=path)
    table = pd.concat([table, empty], ignore_index=True).sort_values(["frame", "face"], na_position="first",
                                                                     kind="stable").reset_index(drop=True)
    table["label"] = table["label"].astype("Int64")
    result.seconds = time.perf_counter() - t0
    return table, result


__all__ = ["annotate_source", "shot_cuts"]
