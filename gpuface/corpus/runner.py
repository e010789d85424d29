"""The shard runner: any gpuface job over the videos of one shard, resumable, one status record per video.

The job spec (YAML/JSON: job, options, batch_size, device, backend; see :mod:`gpuface.jobs.build`) is the same one
``gpuface run`` takes, built by the same :func:`gpuface.jobs.build`, so a corpus run is the command it names. Each
video is processed into a temporary folder (:meth:`~gpuface.jobs.build.Pipeline.run_into`: every file and table of
the video) that is renamed to ``outputs/<id>/`` only when complete, then ``status/<id>.json`` is written
(atomically); a rerun skips done videos and retries failed ones up to ``retries`` times. A broken video is a failed
record, never a failed shard. SIGTERM/SIGUSR1 stop the shard after the current video (for SLURM's pre-timeout
signal and requeue).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd

from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.stages.tables import read_table, write_table
from gpuface.jobs.build import JobSpec, build, load_job_spec
from gpuface.corpus.manifest import load_manifest


def shard_of(item_id: str, num_shards: int) -> int:
    """The shard (0 … num_shards-1) of a video id: its hex id modulo the shard count."""
    return int(item_id, 16) % num_shards


def _status_path(corpus: Path, item_id: str) -> Path:
    return corpus / "status" / f"{item_id}.json"


def _read_status(corpus: Path, item_id: str) -> dict | None:
    p = _status_path(corpus, item_id)
    return json.loads(p.read_text()) if p.exists() else None


def _write_status(corpus: Path, item_id: str, record: dict) -> None:
    p = _status_path(corpus, item_id)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, p)


def _final(record: dict | None, retries: int) -> bool:
    return record is not None and (record["state"] == "done" or record.get("attempts", 0) > retries)


class _Stop:
    """Set by SIGTERM/SIGUSR1: finish the current video, then stop."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_shard(corpus: str | os.PathLike, spec: JobSpec | str | os.PathLike | dict, shard: int = 0,
              num_shards: int = 1, retries: int = 1, quiet: bool = True, part: tuple[int, int] = (0, 1)) -> dict:
    """Process every video of one shard that has no final status yet.

    Args:
        corpus: the corpus folder (with ``manifest.parquet``). spec: a :class:`JobSpec` or its file/dict.
        shard, num_shards: this shard's index and the shard count (keep the count fixed across reruns).
        retries: how many times a failed video is tried again (in this run and later runs).
        part: (p, P): only the p-th of P interleaved parts of the shard (one process per device, see
            :func:`run_devices`).

    Returns:
        ``{"shard", "done", "failed", "skipped", "frames", "seconds", "stopped"}`` for this run.

    Raises:
        InvalidOptionError: bad shard numbers or spec. InputNotFoundError: no manifest.
    """
    from tqdm.auto import tqdm

    if not 0 <= shard < num_shards:
        raise InvalidOptionError(f"shard must be in 0..{num_shards - 1}, got {shard}")
    corpus = Path(corpus)
    spec = spec if isinstance(spec, JobSpec) else load_job_spec(spec)
    manifest = load_manifest(corpus)
    p, n_parts = part
    if not 0 <= p < n_parts:
        raise InvalidOptionError(f"part must be p/P with 0 <= p < P, got {p}/{n_parts}")
    items = manifest[[shard_of(i, num_shards) == shard and (int(i, 16) // num_shards) % n_parts == p
                      for i in manifest["id"]]]
    for item_id in items["id"]:  # one runner per shard: temporary folders of this shard's videos are stale
        for stale in (corpus / "outputs").glob(f".{item_id}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    job = None
    stats = {"shard": shard, "done": 0, "failed": 0, "skipped": 0, "frames": 0, "seconds": 0.0, "stopped": False}
    t0 = time.perf_counter()
    with _Stop() as stop, tqdm(total=len(items), desc=f"shard {shard}/{num_shards}", unit="video",
                               disable=quiet) as bar:
        for row in items.itertuples():
            record = _read_status(corpus, row.id)
            if _final(record, retries):
                stats["skipped"] += 1
                bar.update(1)
                continue
            attempts = record.get("attempts", 0) if record else 0
            while True:
                if stop.requested:
                    stats["stopped"] = True
                    break
                attempts += 1
                if isinstance(row.error, str):  # unreadable when planned
                    record = {"state": "failed", "attempts": retries + 1, "error": row.error, "path": row.path}
                    _write_status(corpus, row.id, record)
                    break
                job = job or build(spec)
                tmp = corpus / "outputs" / f".{row.id}.{os.getpid()}.tmp"
                final = corpus / "outputs" / row.id
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                try:
                    result = job.run_into(row.path, tmp)
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(tmp, final)
                    outputs = [str(final / Path(p).name) for p in result.outputs]
                    tables = {k: str(final / Path(p).name) for k, p in result.table_files.items()}
                    record = {"state": "done", "attempts": attempts, "path": row.path, "frames": result.frames,
                              "faces": result.faces, "seconds": result.seconds, "stages": result.stages,
                              "outputs": outputs, "tables": tables}
                except (GpufaceError, OSError, RuntimeError, ValueError) as e:
                    shutil.rmtree(tmp, ignore_errors=True)
                    record = {"state": "failed", "attempts": attempts, "path": row.path,
                              "error": f"{e.__class__.__name__}: {e}"}
                _write_status(corpus, row.id, record)
                if record["state"] == "done" or attempts > retries:
                    break
            if stats["stopped"]:
                break
            stats["done" if record["state"] == "done" else "failed"] += 1
            stats["frames"] += record.get("frames", 0) or 0
            bar.update(1)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(videos_s=f"{(stats['done'] + stats['failed']) / elapsed:.2f}",
                            frames_s=f"{stats['frames'] / elapsed:.1f}")
    stats["seconds"] = time.perf_counter() - t0
    return stats


def run_devices(corpus: str | os.PathLike, spec: str | os.PathLike, devices: list[str], shard: int = 0,
                num_shards: int = 1, retries: int = 1) -> list[dict]:
    """Run one shard with one process per device (a workstation with several GPUs): process ``d`` sees only
    ``CUDA_VISIBLE_DEVICES=devices[d]`` (``cpu`` entries hide every GPU) and takes part ``d`` of the shard. All
    workers share this process's thread budget (``cpu,cpu`` on 2 CPUs runs two single-threaded workers); a GPU
    may take several (``0,0,0,0``: four workers on GPU 0, each encoding its own videos on the host's cores, as
    GPUs without NVENC need to keep up).
    Returns each process's stats; a process that dies is reported with its exit code (its videos stay pending
    or failed and a rerun picks them up)."""
    import subprocess
    import sys

    from gpuface.core.threads import budget

    procs = []
    for d, dev in enumerate(devices):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="" if dev == "cpu" else str(dev),
                   GPUFACE_THREADS=str(max(1, budget() // len(devices))))
        cmd = [sys.executable, "-m", "gpuface.cli", "corpus", "run", str(corpus), "--spec", str(spec), "--shard",
               str(shard), "--num-shards", str(num_shards), "--retries", str(retries), "--part", f"{d}/{len(devices)}",
               "--quiet"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        lines = stdout.strip().splitlines()
        out.append(json.loads(lines[-1]) if proc.returncode == 0 and lines else
                   {"returncode": proc.returncode, "error": stderr.strip().splitlines()[-1:]})
    return out


def status(corpus: str | os.PathLike, num_shards: int | None = None, retries: int = 1) -> dict:
    """Counts from the corpus folder: ``videos, done, failed, pending, frames, faces`` and, with ``num_shards``,
    ``incomplete_shards`` (shards with a video that has no final status)."""
    corpus = Path(corpus)
    manifest = load_manifest(corpus)
    out = {"videos": len(manifest), "done": 0, "failed": 0, "pending": 0, "frames": 0, "faces": 0}
    incomplete = set()
    for item_id in manifest["id"]:
        record = _read_status(corpus, item_id)
        if record is None or not _final(record, retries):
            out["pending"] += 1
            if num_shards:
                incomplete.add(shard_of(item_id, num_shards))
        else:
            out[record["state"]] += 1
            out["frames"] += record.get("frames", 0) or 0
            out["faces"] += record.get("faces", 0) or 0
    if num_shards:
        out["incomplete_shards"] = sorted(incomplete)
    return out


def retry(corpus: str | os.PathLike) -> int:
    """Forget the failed records (not the done ones) so the next run tries those videos again. Returns how many."""
    corpus = Path(corpus)
    n = 0
    for p in (corpus / "status").glob("*.json"):
        if json.loads(p.read_text())["state"] == "failed":
            p.unlink()
            n += 1
    return n


def merge(corpus: str | os.PathLike) -> dict:
    """Combine the per-video tables of done videos into ``merged/<table>.parquet`` (with ``video_id`` and
    ``video`` columns) and write ``merged/summary.json`` (videos, done, failed, pending, frames, faces, seconds,
    frames per second of processing, failures with their errors). Returns the summary."""
    corpus = Path(corpus)
    manifest = load_manifest(corpus)
    tables: dict[str, list[pd.DataFrame]] = {}
    summary = {"videos": len(manifest), "done": 0, "failed": 0, "pending": 0, "frames": 0, "faces": 0,
               "seconds": 0.0, "failures": []}
    for row in manifest.itertuples():
        record = _read_status(corpus, row.id)
        if record is None:
            summary["pending"] += 1
            continue
        if record["state"] == "failed":
            summary["failed"] += 1
            summary["failures"].append({"id": row.id, "path": row.path, "error": record.get("error")})
            continue
        summary["done"] += 1
        summary["frames"] += record.get("frames", 0)
        summary["faces"] += record.get("faces", 0)
        summary["seconds"] += record.get("seconds", 0.0)
        for kind, out in record.get("tables", {}).items():   # the tables the jobs declared they wrote
            p = Path(out)
            t = read_table(p)
            tables.setdefault(kind, []).append(t.assign(video_id=row.id, video=row.path))
    summary["frames_per_second"] = summary["frames"] / summary["seconds"] if summary["seconds"] else 0.0
    merged = corpus / "merged"
    summary["tables"] = {k: str(write_table(pd.concat(v, ignore_index=True), merged / f"{k}.parquet"))
                         for k, v in tables.items()}
    tmp = merged / ".summary.json.part"
    merged.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, merged / "summary.json")
    return summary


__all__ = ["run_shard", "run_devices", "status", "retry", "merge", "shard_of"]
