"""The one per-input driver: a :class:`~gpuface.jobs.build.Pipeline` over many inputs, each isolated.

Every command, ``gpuface run`` and ``gpuface demo`` run their inputs through :func:`drive`: a broken input becomes a
failed :class:`~gpuface.jobs.base.JobResult` (and one ``on_error`` call), the others still run; tables collected
over the inputs are written once, at the end, atomically. Corpus shards call :meth:`Pipeline.run_into` per video
inside their own resumable loop (status records, retries, signals).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable


def drive(pipeline, inputs: Iterable[str], out_dir: str | os.PathLike | None = None,
          output: str | os.PathLike | None = None, overwrite: bool = False, quiet: bool = True,
          on_error: Callable[[str, Exception], None] | None = None, tables: dict[str, Path] | None = None,
          folders: bool = False) -> list:
    """Run ``pipeline`` on each input.

    Args:
        out_dir: where each input's files go (None: beside the input); with ``folders``, one sub-folder per input
            (``out_dir/<stem>/``) holding its files and every table (:meth:`Pipeline.run_into`).
        output: the main output's file name (one input only).
        tables: table name → file: that table of every input, concatenated in input order and written once (its
            path added to every result's outputs); an input without it adds nothing.
        on_error: called with (input, exception) for an input that failed.

    Returns:
        One :class:`~gpuface.jobs.base.JobResult` per input, in order (``error`` set for a failed one).
    """
    import pandas as pd

    from gpuface.stages.tables import write_table
    from gpuface.jobs.runner import run_many

    parts: dict[str, list] = {name: [] for name in tables or {}}

    def one(path: str):
        if folders:
            folder = Path(out_dir) / Path(path).stem
            folder.mkdir(parents=True, exist_ok=True)
            result = pipeline.run_into(path, folder, quiet=quiet)
        else:
            result = pipeline.run(path, out_dir, output, overwrite, quiet)
        for name in parts:
            if result.tables.get(name) is not None and len(result.tables[name].columns):
                parts[name].append(result.tables[name])
        return result

    results = run_many(inputs, one, on_error)
    for name, file in (tables or {}).items():
        if parts[name]:
            table = pd.concat(parts[name], ignore_index=True)
            written = str(write_table(table, file))
            logging.getLogger("gpuface").info("%s: %d rows of %d inputs written", written, len(table), len(parts[name]))
            for r in results:
                if not r.error:
                    r.outputs.insert(0, written)
    return results


__all__ = ["drive"]
