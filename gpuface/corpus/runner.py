"""The shard runner: any gpuface job over the videos of one shard, resumable, one status record per video.

A *job spec* (YAML/JSON) names a job and its options, e.g.::

    job: landmarks            # detect | landmarks | anonymize | manipulate | analyse | annotate | affect
    batch_size: 16
    device: auto              # auto | cpu | cuda | cuda:1
    options: {detector: blazeface-full, max_faces: 2, end: 10.0}
    # manipulate also takes: layers: [...], temporal: {...}, seed: 7

Landmark jobs compose into one decode pass (the faces of each batch found once), e.g.
``job: [landmarks, manipulate, analyse]``; the options then apply to every job that takes them.

The same spec runs one file (``gpuface run``) or a corpus (``gpuface corpus run``) through the same code, so the
outputs are identical either way. Each video is processed into a temporary folder that is renamed to
``outputs/<id>/`` only when complete, then ``status/<id>.json`` is written (atomically); a rerun skips done
videos and retries failed ones up to ``retries`` times. A broken video is a failed record, never a failed
shard. SIGTERM/SIGUSR1 stop the shard after the current video (for SLURM's pre-timeout signal and requeue).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import GpufaceError, InvalidOptionError
from ..outputs import write_table
from .manifest import load_manifest

from ..jobspec import JOB_OPTIONS, JOBS, SELECTION, defaults, spec_reference, validate_options  # noqa: F401 (API)


#: Jobs that find faces with a detector alone; every other job uses the landmarker and may be composed.
_DETECTION_JOBS = ("detect", "anonymize")


@dataclass
class JobSpec:
    """A job (or several composed into one decode pass) and its options (see the module docstring)."""

    job: str | list[str]
    options: dict = field(default_factory=dict)
    batch_size: int = 16
    device: str = "auto"
    extra: dict = field(default_factory=dict)   # manipulate: layers, temporal, seed


def load_job_spec(source: str | os.PathLike | dict) -> JobSpec:
    """A :class:`JobSpec` from a YAML/JSON file or a dict. InvalidOptionError for an invalid spec."""
    from ..io.sources import read_spec_file

    data: Any = source if isinstance(source, dict) else read_spec_file(source, "job spec")
    if not isinstance(data, dict) or not (data.get("job") in JOBS or isinstance(data.get("job"), list)):
        raise InvalidOptionError(f"a job spec needs job: one of {', '.join(JOBS)}, or a list of them")
    names = job_names(data["job"])
    keys = {"job", "options", "batch_size", "device", "layers", "temporal", "seed"}
    unknown = set(data) - keys
    if unknown:
        raise InvalidOptionError(f"job spec: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(keys))}")
    if not isinstance(data.get("options") or {}, dict):
        raise InvalidOptionError("job spec: options must be a mapping of option: value")
    options = dict(data.get("options") or {})
    if "color" in options:   # the API spells colour; color is accepted
        options["colour"] = options.pop("color")
    validate_options(names, options)
    if "manipulate" in names and ("layers" in data or "temporal" in data):
        from ..manipulate.layers import load_spec
        load_spec({k: data[k] for k in ("layers", "temporal", "seed") if k in data})   # layer names and params
    extra = {k: data[k] for k in ("layers", "temporal", "seed") if k in data}
    if "manipulate" in names and not extra.get("layers") and not extra.get("temporal"):
        raise InvalidOptionError("a manipulate job needs layers (and/or temporal)")
    batch = data.get("batch_size", 16)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidOptionError(f"job spec: batch_size must be an integer >= 1, got {batch!r}")
    spec = JobSpec(job=data["job"] if isinstance(data["job"], str) else names, options=options, batch_size=batch,
                   device=str(data.get("device", "auto")), extra=extra)
    return spec


def job_names(job: str | list) -> list[str]:
    """The job names of a spec's ``job`` (one name, or a list composed into one decode pass), checked.

    Raises:
        InvalidOptionError: an unknown or repeated name, or a detection job (detect, anonymize) composed with others.
    """
    names = [job] if isinstance(job, str) else list(job)
    bad = [n for n in names if n not in JOBS]
    if not names or bad or len(set(names)) < len(names):
        raise InvalidOptionError(f"job spec: job must be one of {', '.join(JOBS)} or a list of distinct ones, "
                                 f"got {job!r}")
    if len(names) > 1 and any(n in _DETECTION_JOBS for n in names):
        raise InvalidOptionError(f"job spec: {', '.join(_DETECTION_JOBS)} run alone; only landmark jobs "
                                 f"({', '.join(n for n in JOBS if n not in _DETECTION_JOBS)}) compose")
    return names


#: Tables a job leaves in ``JobResult.tables`` and the file each is written to in the output folder.
TABLE_FILES = {"faces": "faces.parquet", "landmarks": "landmarks.parquet", "colour_means": "colour_means.parquet",
               "landmark_flow": "landmark_flow.parquet", "dense_flow": "dense_flow.parquet",
               "annotation": "annotation.parquet"}


def build_landmarker(opts: dict, device):
    """The :class:`~gpuface.landmarks.FaceLandmarker` of a landmark job's options (schema defaults applied)."""
    from ..landmarks import FaceLandmarker

    return FaceLandmarker(opts.get("detector", "blazeface-short"), device=device, max_faces=opts.get("max_faces"),
                          min_score=opts.get("threshold"), min_presence=opts.get("min_presence", 0.5),
                          redetect_every=opts.get("redetect_every"), blendshapes=opts.get("blendshapes", True))


def build_detector(opts: dict, device, **kwargs):
    """The :class:`~gpuface.detect.FaceDetector` of a detect job's options (``kwargs``: the detector's own)."""
    from ..detect import FaceDetector

    name = opts.get("detector", "mtcnn")
    if name == "mtcnn":
        kwargs["min_face_size"] = opts.get("min_face_size", 20)
    return FaceDetector(name, device=device, min_score=opts.get("threshold", 0.0), **kwargs)


def build_affect(opts: dict, device):
    """The :class:`~gpuface.affect.AffectAnalyzer` of an affect job's options."""
    from ..affect import AffectAnalyzer
    from ..affect.models import parse_weights_option

    return AffectAnalyzer(device=device, au_threshold=opts.get("au_threshold"),
                          emotion_model=opts.get("emotion_model", "mini-xception"),
                          weights=parse_weights_option(opts.get("weights")),
                          au_model=opts.get("au_model", "blendshapes"))


def build_job(spec: JobSpec) -> Callable[[str, Path], Any]:
    """``job(path, out_dir) -> JobResult``: runs the spec on one video (composed jobs in one decode pass), writing
    every output into ``out_dir``. Models are loaded once, on first use."""
    import torch

    from ..io.decode import Selection
    from ..pipeline import make_job, run_source

    device = spec.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    names = job_names(spec.job)
    opts = dict(spec.options)
    sel_args = {k: opts.pop(k) for k in list(opts) if k in SELECTION}
    selection = Selection(**sel_args) if sel_args else None
    opts = {**defaults(names), **opts}
    cache: dict[str, Any] = {}

    def cached(key: str, build: Callable[[], Any]):
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def anonymizer():
        from ..privacy import DEFAULT, anonymization_detector
        name = opts.get("detector", DEFAULT["detector"])
        kwargs = {"min_face_size": opts.get("min_face_size", 20)} if name == "mtcnn" else {}
        if name == "centerface":
            kwargs = {"input_scale": opts["scale"]} if "scale" in opts else DEFAULT["scale"]
        return anonymization_detector(name, device=device, **kwargs)

    def make(name: str, out: Path, stem: str):
        if name in ("detect", "landmarks"):
            return make_job(name)
        if name == "analyse":
            return make_job(name, colour_regions=tuple(opts["regions"]), space=opts["space"], flow=opts["flow"],
                            dense=opts["dense"])
        if name == "annotate":
            from ..identity import Embedder
            k = opts["num_faces"]
            return make_job(name, embedder=cached("emb", lambda: Embedder("dlib", device=device)),
                            num_faces=k if isinstance(k, int) else tuple(k), per_face=opts["per_face"],
                            too_few=opts["too_few"], embeddings=opts["embeddings"],
                            affect=cached("affect", lambda: build_affect(opts, device)) if opts["affect"] else None)
        if name == "affect":
            return make_job(name, analyzer=cached("affect", lambda: build_affect(opts, device)), out_dir=out,
                            report=opts["report"], thumbnails=opts["report"], overwrite=True,
                            baseline=opts["baseline"])
        if name == "anonymize":
            from ..manipulate.anonymize import AnonymizeOptions
            from ..manipulate.fill import FillOptions
            from ..privacy import DEFAULT
            keys = {"mode", "ellipse", "mask_scale", "colour", "mosaic_size"}
            options = AnonymizeOptions(**{k: (tuple(v) if k == "colour" else v) for k, v in opts.items() if k in keys})
            fill = FillOptions(max_gap=opts.get("max_gap", DEFAULT["max_gap"]),
                               pad=opts.get("temporal_pad", DEFAULT["temporal_pad"]),
                               drop_isolated=opts["drop_isolated"])
            return make_job(name, output=out / f"{stem}_anonymized.mp4", options=options,
                            threshold=opts.get("threshold"), boxes_format="csv", overwrite=True, fill=fill,
                            preset=opts["preset"], crf=opts["crf"],
                            detect_every=opts.get("detect_every", DEFAULT["detect_every"]))
        from ..manipulate.layers import load_spec
        return make_job(name, spec=cached("layer_spec", lambda: load_spec(dict(spec.extra))),
                        output=out / f"{stem}_manipulated.mp4", overwrite=True, preset=opts["preset"],
                        crf=opts["crf"])

    def run(path: str, out: Path):
        stem = Path(path).stem
        jobs = [make(name, out, stem) for name in names]
        model = (cached("anon", anonymizer) if names == ["anonymize"] else
                 cached("det", lambda: build_detector(opts, device)) if names == ["detect"] else
                 cached("lm", lambda: build_landmarker(opts, device)))
        result = run_source(path, jobs, model, spec.batch_size, selection)
        for name, file in TABLE_FILES.items():
            table = result.tables.get(name)
            if table is not None:
                result.outputs.append(str(write_table(table, out / file)))
        return result

    return run


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
                job = job or build_job(spec)
                tmp = corpus / "outputs" / f".{row.id}.{os.getpid()}.tmp"
                final = corpus / "outputs" / row.id
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                try:
                    result = job(row.path, tmp)
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(tmp, final)
                    outputs = [str(final / Path(p).name) for p in result.outputs]
                    record = {"state": "done", "attempts": attempts, "path": row.path, "frames": result.frames,
                              "faces": result.faces, "seconds": result.seconds, "outputs": outputs}
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

    from ..threads import budget

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
        stem = Path(row.path).stem
        for out in record.get("outputs", []):
            p = Path(out)
            if p.suffix not in (".parquet", ".csv"):
                continue
            kind = p.stem[len(stem) + 1:] if p.stem.startswith(stem + "_") else p.stem
            t = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
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


__all__ = ["JOBS", "JOB_OPTIONS", "validate_options", "spec_reference", "JobSpec", "build_landmarker", "build_detector",
           "build_affect", "load_job_spec", "build_job", "run_shard", "run_devices", "status", "retry", "merge", "shard_of"]
