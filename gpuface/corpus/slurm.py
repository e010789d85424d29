"""SLURM launcher: a plain, readable sbatch job array over a corpus's shards plus a merge job after it.

``submit`` writes ``corpus/slurm/array.sbatch`` and ``corpus/slurm/merge.sbatch`` (kept for the user to read,
edit and resubmit by hand), then submits the array over the shards that still have videos without a final
status — all of them the first time, only the incomplete ones after a cancellation, a time-out or a node
failure — and the merge job with ``--dependency=afterok:<array>``. Each array task runs
``gpuface corpus run --shard $SLURM_ARRAY_TASK_ID``; ``--signal=B:USR1@<s>`` makes Slurm warn the batch shell
before the time limit, which forwards the signal so the runner stops after its current video, then requeues
the task (``--requeue``); already done videos are skipped when it starts again. Completeness comes from the
corpus folder (per-video status files), never from ``sacct``, so no accounting database is needed.

submitit (``pip install gpuface[slurm]``) can run the same shards: ``submitit_submit``.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.jobs.build import load_job_spec
from gpuface.corpus.runner import status

ARRAY_TEMPLATE = """#!/bin/bash
# gpuface corpus shards as a SLURM job array (written by `gpuface slurm submit`; safe to edit and resubmit).
#SBATCH --job-name=gpuface-{name}
#SBATCH --array={array}
#SBATCH --chdir={corpus}
#SBATCH --output={logs}/%A_%a.log
#SBATCH --time={time}
#SBATCH --requeue
#SBATCH --signal=B:USR1@{signal_s}
{extra}
set -u
# stop cleanly before the time limit: the runner finishes its current video, then the task is requeued
{python} -m gpuface.cli corpus run {corpus} --spec {spec} --shard "$SLURM_ARRAY_TASK_ID" \\
    --num-shards {num_shards} --retries {retries} --quiet &
PID=$!
trap 'kill -USR1 $PID; wait $PID; scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"; exit 0' USR1
wait $PID
"""

MERGE_TEMPLATE = """#!/bin/bash
# gpuface: merge the per-video tables once every shard of the array succeeded (afterok dependency).
#SBATCH --job-name=gpuface-merge-{name}
#SBATCH --chdir={corpus}
#SBATCH --output={logs}/merge_%j.log
#SBATCH --time=01:00:00
{extra}
set -eu
{python} -m gpuface.cli corpus merge {corpus}
"""


def _ranges(shards: list[int]) -> str:
    """Array index list in Slurm syntax: 0-3,5,7-8."""
    out, start, prev = [], None, None
    for s in sorted(shards):
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = s
    if start is not None:
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ",".join(out)


def _sbatch(args: list[str]) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise GpufaceError(f"sbatch failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit(corpus: str | os.PathLike, spec: str | os.PathLike, num_shards: int, partition: str | None = None,
           gpus_per_task: int | None = None, cpus_per_task: int | None = None, mem: str | None = None,
           time_limit: str = "04:00:00", parallel: int | None = None, retries: int = 1, signal_s: int = 120,
           dry_run: bool = False) -> dict:
    """Write the array and merge scripts and submit them for the incomplete shards.

    Returns:
        ``{"shards": [...], "array_script", "merge_script", "array_job", "merge_job"}`` (job ids absent with
        ``dry_run`` or when every shard is complete; then only the merge job is submitted).

    Raises:
        InvalidOptionError: bad options or spec. GpufaceError: sbatch is missing or refused a script.
    """
    corpus = Path(corpus).resolve()
    spec_path = Path(spec).resolve()
    load_job_spec(spec_path)  # validate before writing anything
    if num_shards < 1 or signal_s < 10:
        raise InvalidOptionError("num_shards >= 1 and signal_s >= 10")
    shards = status(corpus, num_shards, retries)["incomplete_shards"]
    folder = corpus / "slurm"
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    extra = []
    if partition:
        extra.append(f"#SBATCH --partition={partition}")
    if gpus_per_task:
        extra.append(f"#SBATCH --gpus-per-task={gpus_per_task}")
    if cpus_per_task:
        extra.append(f"#SBATCH --cpus-per-task={cpus_per_task}")
    if mem:
        extra.append(f"#SBATCH --mem={mem}")
    common = {"name": corpus.name, "corpus": shlex.quote(str(corpus)), "logs": shlex.quote(str(logs)),
              "python": shlex.quote(sys.executable)}
    array = _ranges(shards) + (f"%{parallel}" if parallel and shards else "")
    array_script = folder / "array.sbatch"
    array_script.write_text(ARRAY_TEMPLATE.format(
        array=array or "0", time=time_limit, signal_s=signal_s, extra="\n".join(extra),
        spec=shlex.quote(str(spec_path)), num_shards=num_shards, retries=retries, **common))
    merge_script = folder / "merge.sbatch"
    merge_script.write_text(MERGE_TEMPLATE.format(extra=f"#SBATCH --partition={partition}" if partition else "",
                                                  **common))
    out = {"shards": shards, "array_script": str(array_script), "merge_script": str(merge_script)}
    if dry_run:
        return out
    if shutil.which("sbatch") is None:
        raise GpufaceError("sbatch not found: is this a SLURM login node? (use --dry-run to only write the scripts)")
    if shards:
        out["array_job"] = _sbatch([str(array_script)])
        out["merge_job"] = _sbatch([f"--dependency=afterok:{out['array_job']}", str(merge_script)])
    else:
        out["merge_job"] = _sbatch([str(merge_script)])
    with open(folder / "submissions.jsonl", "a") as fh:
        fh.write(json.dumps({"time": time.time(), "num_shards": num_shards, **out}) + "\n")
    return out


def _minutes(time_limit: str) -> int:
    """A SLURM time limit as whole minutes (rounded up). Formats as sbatch's ``--time``: ``M``, ``M:S``,
    ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    days, dash, rest = time_limit.rpartition("-")
    try:
        parts, d = [int(p) for p in rest.split(":")], int(days) if dash else 0
    except ValueError:
        parts, d = [], 0
    if not 1 <= len(parts) <= 3 or min(parts + [d]) < 0:
        raise InvalidOptionError(f"time limit must be M, M:S, H:M:S, D-H, D-H:M or D-H:M:S, got {time_limit!r}")
    if dash:
        h, m, sec = (parts + [0, 0])[:3]
    else:
        h, m, sec = parts if len(parts) == 3 else [0] + (parts + [0])[:2]
    return (d * 24 + h) * 60 + m + (1 if sec else 0)


def _gigabytes(mem: str) -> float:
    units = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}
    try:
        return float(mem[:-1]) * units[mem[-1].upper()] if mem[-1].isalpha() else float(mem) / 1024
    except (KeyError, ValueError) as e:
        raise InvalidOptionError(f"memory must look like 16G or 512M, got {mem!r}") from e


def submitit_submit(corpus: str | os.PathLike, spec: str | os.PathLike, num_shards: int, partition: str | None = None,
                    gpus_per_task: int | None = None, cpus_per_task: int | None = None, mem: str | None = None,
                    time_limit: str = "04:00:00", parallel: int | None = None, retries: int = 1) -> dict:
    """The same job as :func:`submit` through submitit (optional backend, ``[slurm]`` extra): one
    ``map_array`` over the incomplete shards (each task runs :func:`~gpuface.corpus.runner.run_shard`) and a
    :func:`~gpuface.corpus.runner.merge` job with an ``afterok`` dependency on the array. submitit writes its
    scripts and logs under ``corpus/slurm/submitit/``. Note that submitit needs ``sacct`` (SLURM accounting) to
    notice tasks that were cancelled or killed; completeness itself is read from the corpus folder, as always.

    Returns:
        ``{"shards", "jobs" (submitit jobs; ``job.result()`` is a shard's stats), "merge" (its submitit job),
        "array_job", "merge_job"}`` (job ids; the array keys are absent when every shard is complete).

    Raises:
        GpufaceError: submitit is not installed. InvalidOptionError: bad options or spec.
    """
    try:
        import submitit
    except ImportError as e:
        raise GpufaceError("submitit is not installed (pip install 'gpuface[slurm]')") from e
    from gpuface.corpus.runner import merge, run_shard

    corpus = Path(corpus).resolve()
    spec_path = Path(spec).resolve()
    load_job_spec(spec_path)
    if num_shards < 1:
        raise InvalidOptionError("num_shards >= 1")
    shards = status(corpus, num_shards, retries)["incomplete_shards"]
    executor = submitit.AutoExecutor(folder=str(corpus / "slurm" / "submitit" / "%j"))
    params = {"timeout_min": _minutes(time_limit), "slurm_partition": partition, "gpus_per_node": gpus_per_task,
              "cpus_per_task": cpus_per_task, "mem_gb": _gigabytes(mem) if mem else None,
              "slurm_array_parallelism": parallel, "name": f"gpuface-{corpus.name}"}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    out: dict = {"shards": shards}
    if shards:
        out["jobs"] = executor.map_array(run_shard, [str(corpus)] * len(shards), [str(spec_path)] * len(shards),
                                         shards, [num_shards] * len(shards), [retries] * len(shards))
        out["array_job"] = str(out["jobs"][0].job_id).split("_")[0]
        executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{out['array_job']}"})
    if gpus_per_task:
        executor.update_parameters(gpus_per_node=0)  # the merge needs no GPU
    out["merge"] = executor.submit(merge, str(corpus))
    out["merge_job"] = str(out["merge"].job_id)
    with open(corpus / "slurm" / "submissions.jsonl", "a") as fh:
        fh.write(json.dumps({"time": time.time(), "num_shards": num_shards, "backend": "submitit",
                             **{k: v for k, v in out.items() if k not in ("jobs", "merge")}}) + "\n")
    return out


__all__ = ["submit", "submitit_submit"]
