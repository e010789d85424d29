"""Affect tables: the affect columns of every face, one row per face and frame, and person-specific AU baselines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gpuface.stages.tables import faces_rows
from gpuface.core.types import Faces, FrameBatch
from gpuface.stages.affect.aus import AU_NAMES, au_columns
from gpuface.stages.affect.emotions import EMOTIONS, QUADRANTS, quadrant_index


def affect_columns(faces: Faces, au_threshold: float, au_names: tuple[str, ...] = AU_NAMES) -> pd.DataFrame:
    """The affect columns of every face (row order of ``faces``): AU intensities ``AU01 …`` (``au_names``, the
    analyser's), flags ``AU01_active …``, the 7 emotion probabilities (py-feat's names ``anger … neutral``),
    ``emotion`` (the top one), ``valence``, ``arousal`` and ``quadrant``."""
    f = faces.to("cpu")
    aus = f.aus.numpy()
    cols = {**{a: aus[:, i] for i, a in enumerate(au_names)},
            **{f"{a}_active": aus[:, i] >= au_threshold for i, a in enumerate(au_names)},
            **{e: f.emotions[:, i].numpy() for i, e in enumerate(EMOTIONS)},
            "emotion": [EMOTIONS[i] for i in f.emotions.argmax(1).tolist()] if len(f) else [],
            "valence": f.valence.numpy(), "arousal": f.arousal.numpy(),
            "quadrant": [QUADRANTS[i] for i in quadrant_index(f.valence, f.arousal).tolist()]}
    return pd.DataFrame(cols)


def affect_rows(faces: Faces, batch: FrameBatch, video: str, au_threshold: float,
                au_names: tuple[str, ...] = AU_NAMES) -> pd.DataFrame:
    """One row per face: ``video, frame, time_s, face, x1, y1, x2, y2, score, presence, track`` and the
    :func:`affect_columns`; plus one row with nulls (``face`` missing) for every frame of the batch without a
    face."""
    f = faces.to("cpu")
    table = faces_rows(f, batch, video, keypoints=False)
    table["presence"] = f.presence.numpy() if f.presence is not None else np.nan
    table["track"] = f.track_id.numpy() if f.track_id is not None else -1
    table = pd.concat([table, affect_columns(f, au_threshold, au_names)], axis=1)
    seen = torch.zeros(len(batch), dtype=torch.bool, device="cpu")
    seen[f.row] = True
    missing = (~seen).nonzero().flatten()
    if len(missing):
        empty = pd.DataFrame({"video": video, "frame": batch.index[missing].numpy(),
                              "time_s": batch.pts[missing].numpy().round(6)})
        table = pd.concat([table, empty], ignore_index=True) if len(table) else empty.reindex(columns=table.columns)
    table["face"] = table["face"].astype("Int64")
    table["track"] = table["track"].astype("Int64")
    return table


def subtract_person_baseline(table: pd.DataFrame, au_threshold: float, by: str = "track") -> pd.DataFrame:
    """Person-specific AU normalisation: each AU intensity minus that person's median over the video, clamped to
    [0, 1], and the ``_active`` flags recomputed (OpenFace's median subtraction: Baltrušaitis, Mahmoud & Robinson
    (2015), "Cross-dataset learning and person-specific normalisation for automatic Action Unit detection",
    IEEE FG). It removes a face's resting appearance (a brow that always looks lowered reads as AU04 on every
    frame otherwise); it assumes the person is mostly neutral over the video.

    Args:
        table: an affect table (:func:`affect_rows`). by: the person column (``track``, or ``label`` when
            identities are known).

    Returns:
        A new table; rows without a face are unchanged.
    """
    out = table.copy()
    names = au_columns(out.columns)
    faces = out["face"].notna() & out[by].notna()
    aus = out.loc[faces, names].astype(float)
    base = aus.groupby(out.loc[faces, by]).transform("median")
    out.loc[faces, names] = (aus - base).clip(0, 1).to_numpy(np.float32)
    for a in names:
        out.loc[faces, f"{a}_active"] = out.loc[faces, a] >= au_threshold
    return out


__all__ = ["affect_columns", "affect_rows", "subtract_person_baseline"]
