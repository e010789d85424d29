"""Corpus scale: a manifest of videos with stable ids, a resumable sharded runner with per-video status, a merge
step, and a SLURM job-array launcher (the pattern of datatrove / NeMo Curator: plain sbatch arrays over a
manifest, per-item done records on the filesystem, relaunch only what is missing, merge after an afterok
dependency). Progress and completeness always come from the corpus folder, never from the scheduler.

Folder layout (``corpus/``)::

    manifest.parquet        id, path, size, duration, fps, frames, width, height, error
    status/<id>.json        per video: state done|failed, attempts, error, frames, faces, seconds, outputs, tables
    outputs/<id>/...        per-video outputs, renamed into place only when complete
    merged/<table>.parquet  per-video tables combined; merged/summary.json
    slurm/                  the generated sbatch scripts, their logs and the submissions made
"""
from gpuface.corpus.manifest import load_manifest, plan, video_id
from gpuface.corpus.runner import merge, retry, run_shard, shard_of, status

__all__ = ["plan", "load_manifest", "video_id", "run_shard", "status", "retry", "merge", "shard_of"]
