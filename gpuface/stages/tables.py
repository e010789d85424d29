"""Annotation tables: one row per (video, frame, face), written atomically as Parquet, CSV, TSV or JSON."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from gpuface.core.errors import InvalidOptionError
from gpuface.io.encode import temporary_path
from gpuface.core.types import Faces, FrameBatch, rank_in_frame

TABLE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".txt": "txt", ".json": "json"}


def faces_rows(faces: Faces, batch: FrameBatch, video: str, keypoints: bool = True) -> pd.DataFrame:
    """One row per face of a batch: ``video, frame, time_s, face, x1, y1, x2, y2, score[, kp0_x … kpK_y]``.

    ``frame`` is the source frame number, ``time_s`` its presentation time in seconds, ``face`` the face's rank
    within its frame (0 = highest score).
    """
    f = faces.to("cpu")
    n = len(f)
    frame_idx = batch.index[f.row]
    rank = rank_in_frame(f.row).numpy()
    cols = {
        "video": [video] * n,
        "frame": frame_idx.numpy(),
        "time_s": batch.pts[f.row].numpy().round(6),   # µs: container timestamps, not float noise
        "face": rank,
        "x1": f.boxes[:, 0].numpy(), "y1": f.boxes[:, 1].numpy(),
        "x2": f.boxes[:, 2].numpy(), "y2": f.boxes[:, 3].numpy(),
        "score": f.scores.numpy(),
    }
    if keypoints:
        for k in range(f.keypoints.shape[1]):
            cols[f"kp{k}_x"] = f.keypoints[:, k, 0].numpy()
            cols[f"kp{k}_y"] = f.keypoints[:, k, 1].numpy()
    return pd.DataFrame(cols)


def landmarks_rows(faces: Faces, batch: FrameBatch, video: str) -> pd.DataFrame:
    """One row per landmarked face: the :func:`faces_rows` columns (without keypoints), then ``presence, track,
    lm_0_x, lm_0_y, lm_0_z … lm_477_z`` (frame pixels; z relative, same units) and ``bs_<name>`` for the 52
    MediaPipe blendshapes (absent when they were not computed)."""
    from gpuface.models.facemesh import BLENDSHAPE_NAMES

    base = faces_rows(faces, batch, video, keypoints=False)
    f = faces.to("cpu")
    n = len(f)
    base["presence"] = f.presence.numpy()
    base["track"] = f.track_id.numpy()
    lm_cols = [f"lm_{i}_{c}" for i in range(f.landmarks.shape[1]) for c in "xyz"]
    parts = [base, pd.DataFrame(f.landmarks.reshape(n, len(lm_cols)).numpy(), columns=lm_cols)]
    if f.blendshapes is not None and f.blendshapes.shape[1] == len(BLENDSHAPE_NAMES):
        parts.append(pd.DataFrame(f.blendshapes.numpy(), columns=[f"bs_{b}" for b in BLENDSHAPE_NAMES]))
    return pd.concat(parts, axis=1)


def table_format(path: str | os.PathLike) -> str:
    """'parquet' | 'csv' | 'tsv' | 'json' from a file extension; InvalidOptionError otherwise."""
    ext = Path(path).suffix.lower()
    if ext not in TABLE_FORMATS:
        raise InvalidOptionError(f"{path}: table format must be one of {', '.join(TABLE_FORMATS)}")
    return TABLE_FORMATS[ext]


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file (JSON logs, reports) atomically: a temporary sibling, then a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(p)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table atomically; the format follows the extension (.parquet, .csv, .tsv, .txt space-separated as MGT's
    ``blur_faces`` data, .json records)."""
    fmt = table_format(path)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(p)
    try:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        elif fmt in ("csv", "tsv", "txt"):
            df.to_csv(tmp, index=False, sep={"csv": ",", "tsv": "\t", "txt": " "}[fmt])
        else:
            df.to_json(tmp, orient="records", indent=1)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table :func:`write_table` wrote (the format follows the extension)."""
    fmt = table_format(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "json":
        return pd.read_json(path, orient="records")
    return pd.read_csv(path, sep={"csv": ",", "tsv": "\t", "txt": " "}[fmt])
