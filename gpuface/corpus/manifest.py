"""The corpus manifest: one row per input video with a stable id, its metadata, or why it cannot be read."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.io.sources import expand_inputs

MANIFEST = "manifest.parquet"
COLUMNS = ["id", "path", "size", "duration", "fps", "frames", "width", "height", "error"]


def video_id(path: str | os.PathLike, size: int) -> str:
    """Stable 16-hex id of a video from its absolute path and size in bytes (same file, same id, any machine
    that mounts it at the same path)."""
    return hashlib.sha1(f"{os.path.abspath(path)}\\0{size}".encode()).hexdigest()[:16]


def plan(inputs: list[str], corpus: str | os.PathLike, extensions: list[str] | None = None) -> pd.DataFrame:
    """Probe every input (files, folders with ``extensions``, .txt lists) and write ``corpus/manifest.parquet``.

    Unreadable or missing files get a row with ``error`` set (and no metadata); they become failed items when
    the corpus runs. An existing manifest is replaced only by one with the same ids for the same paths
    (never silently re-sharding a running corpus): InvalidOptionError otherwise.

    Returns:
        The manifest (pandas DataFrame, columns :data:`COLUMNS`).
    """
    from gpuface.io.decode import probe
    from gpuface.io.images import is_image
    from gpuface.stages.tables import write_table

    rows = []
    for path in expand_inputs(inputs, extensions):
        size = os.path.getsize(path) if os.path.exists(path) else -1
        row = {"id": video_id(path, size), "path": os.path.abspath(path), "size": size, "duration": None,
               "fps": None, "frames": None, "width": None, "height": None, "error": None}
        try:
            if is_image(path):
                raise InvalidOptionError("a still image, not a video")
            info = probe(path)
            row.update(duration=info.duration, fps=float(info.fps), frames=info.num_frames, width=info.width,
                       height=info.height)
        except (GpufaceError, OSError) as e:
            row["error"] = f"{e.__class__.__name__}: {e}"
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS).drop_duplicates("id")
    out = Path(corpus) / MANIFEST
    if out.exists():
        old = pd.read_parquet(out)
        if set(old["id"]) != set(table["id"]):
            raise InvalidOptionError(f"{out} exists with other videos; plan into a new folder (changing the item "
                                     "list would change the sharding of a corpus that may be running)")
    write_table(table, out)
    return table


def load_manifest(corpus: str | os.PathLike) -> pd.DataFrame:
    """The manifest of a corpus folder. InputNotFoundError when it has none."""
    from gpuface.core.errors import InputNotFoundError

    path = Path(corpus) / MANIFEST
    if not path.exists():
        raise InputNotFoundError(f"{path}: no manifest (run: gpuface corpus plan INPUTS -o {corpus})")
    return pd.read_parquet(path)


__all__ = ["plan", "load_manifest", "video_id", "MANIFEST", "COLUMNS"]
