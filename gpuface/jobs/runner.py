"""The one batch loop: :func:`run_source` streams any :class:`~gpuface.jobs.base.Job` (or several, composed) over
one source, and :func:`run_many` runs a per-input function over many inputs, each isolated.

:func:`run_source` opens the source, decodes it once, finds the faces of each batch once through the
:class:`OomGuard` (tracked, on every k-th frame, split at shot cuts: whatever the jobs declare), runs each stage the
jobs ask for once per batch, hands batch and faces to every job in turn, counts frames and faces, shows progress,
and on any failure aborts every job and removes every output already written. Jobs therefore compose: landmarks +
manipulate + analyse + affect run in one decode pass (job specs take ``job: [landmarks, manipulate, analyse]``).

Memory is bounded by the batch size, never by the video length. Outputs are written under temporary names
and renamed when complete (:class:`Sink` for frames). Many inputs: :func:`gpuface.jobs.drive`.
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import torch

from gpuface.core import threads
from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.core.timing import StageTimer, format_stages, profiling, stage
from gpuface.core.types import Faces, FrameBatch
from gpuface.io.decode import Selection
from gpuface.io.encode import PRESETS, VideoWriter, write_image
from gpuface.io.images import ImageReader
from gpuface.io.sources import open_source
from gpuface.jobs.base import Job, JobResult, Run
from gpuface.ops.analysis.shots import shot_cuts


class OomGuard:
    """Runs a model on a batch of frames, halving the chunk size on CUDA out-of-memory until it fits.

    ``guard(model, frames, state)`` calls ``model(chunk, state)`` (``model(chunk)`` when ``state`` is None) on
    consecutive chunks of at most ``limit`` frames (all frames at first) and concatenates the
    :class:`~gpuface.core.types.Faces`. Before a batch it snapshots the tracking ``state`` and the model's counters
    (``detector_frames``, ``mesh_crops``); after an out-of-memory error it restores them, empties the cache, halves
    the limit and replays the batch from the snapshot, so tracks and counts come out as if nothing had failed. The
    limit stays for later batches. A single frame that does not fit re-raises the error.
    """

    COUNTERS = ("detector_frames", "mesh_crops")

    def __init__(self):
        self.limit: int | None = None

    def __call__(self, model, frames: torch.Tensor, state=None) -> Faces:
        args = () if state is None else (state,)
        snapshot = self._snapshot(model, state)   # a failure part-way through has already advanced the state
        while True:
            size = frames.shape[0] if self.limit is None else min(self.limit, frames.shape[0])
            try:
                parts = [model(frames[i:i + size], *args) for i in range(0, frames.shape[0], size)]
                return parts[0] if len(parts) == 1 else Faces.cat(parts, list(range(0, frames.shape[0], size)))
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                self._restore(model, state, snapshot)
                torch.cuda.empty_cache()
                self.limit = max(size // 2, 1)

    def _snapshot(self, model, state):
        return copy.deepcopy(state), {k: getattr(model, k) for k in self.COUNTERS if hasattr(model, k)}

    @staticmethod
    def _restore(model, state, snapshot) -> None:
        saved, counters = snapshot
        if state is not None:
            state.__dict__.update(copy.deepcopy(saved).__dict__)
        for k, v in counters.items():
            setattr(model, k, v)


class Sink:
    """Where a job's output frames go: an image (a still source) or a video opened at the first batch with that
    batch's frame size, both written atomically; :meth:`abort` removes whatever was started."""

    def __init__(self, path: str | os.PathLike, is_image: bool, fps, crf: int = 18, preset: str = "medium",
                 audio_from: str | None = None, x264_options: dict | None = None, metadata_from: str | None = None,
                 encoder: str = "libx264", audio_span: tuple[float, float | None] | None = None):
        if not 0 <= crf <= 51 or preset not in PRESETS:
            raise InvalidOptionError(f"crf must be in 0..51 and preset one of {', '.join(PRESETS)}")
        self.path, self.is_image, self.fps, self.metadata_from = Path(path), is_image, fps, metadata_from
        metadata = None
        if metadata_from is not None and not is_image:
            import av

            with av.open(str(metadata_from)) as src:
                metadata = dict(src.metadata)
        self.options = {"crf": crf, "preset": preset, "audio_from": audio_from, "x264_options": x264_options,
                        "metadata": metadata, "encoder": encoder, "audio_span": audio_span}
        self.writer = None

    def write(self, frames: torch.Tensor) -> None:
        with stage("encode"):
            if self.is_image:
                write_image(self.path, frames[0], exif_from=self.metadata_from)
                return
            if self.writer is None:
                self.writer = VideoWriter(self.path, self.fps, frames.shape[-1], frames.shape[-2], overwrite=True,
                                          **self.options)
            self.writer.write(frames)

    def close(self) -> None:
        if self.writer is not None:
            with stage("encode"):
                self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.is_image:
            self.path.unlink(missing_ok=True)


def progress(total: int | None, desc: str, quiet: bool):
    """A tqdm progress bar in frames (frames/s shown), off with ``quiet``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=quiet, leave=False, dynamic_ncols=True)


def on_stride(position: int, length: int, every: int, device="cpu") -> torch.Tensor:
    """Rows of a batch of ``length`` frames that starts at stream frame ``position`` whose frame number is a multiple
    of ``every`` (int64, possibly empty: a batch shorter than the stride may hold none)."""
    first = (-position) % every
    return torch.arange(first, max(length, first), every, device=device)


class _FaceFinder:
    """The faces of each batch for every job: the model through the :class:`OomGuard`, tracked per video, on
    every k-th frame, split at shot cuts — whatever the jobs ask for."""

    def __init__(self, model, jobs: list[Job], is_image: bool):
        kinds = {j.faces for j in jobs}
        if len(kinds) > 1 or len({(j.track, j.face_stride) for j in jobs}) > 1:
            raise InvalidOptionError(f"jobs {', '.join(type(j).__name__ for j in jobs)} need different faces "
                                     f"and cannot run in one pass")
        self.model, self.guard = model, OomGuard()
        self.every, self.cuts = jobs[0].face_stride, any(j.shot_cuts for j in jobs)
        tracked = jobs[0].faces == "landmarks" and jobs[0].track and not is_image
        self.state = model.new_state() if tracked else None
        self.last = None
        self.position = 0   # frames seen so far: the finder may run ahead of the jobs (run.position is theirs)
        # a landmarker's batch may be left half done (FaceLandmarker.start: the key frames) for the jobs' thread to
        # finish while this one starts the next batch (run_source sets it where faces are found ahead, see _found)
        self.split = False

    def __call__(self, run: Run, batch: FrameBatch) -> Faces:
        position, self.position = self.position, self.position + len(batch)
        frames = batch.frames
        if self.every > 1:
            pick = on_stride(position, len(frames), self.every, frames.device)
            if len(pick) == 0:
                return Faces.empty(device=frames.device)
            faces = self.guard(self.model, frames[pick], self.state)
            return replace(faces, row=pick.to(faces.row.device)[faces.row])
        if not self.cuts:
            if self.split and self.state is not None:     # CPU only: no OOM to guard against
                return self.model.start(frames, self.state)
            return self.guard(self.model, frames, self.state)
        cuts = torch.nonzero(shot_cuts(frames, self.last)).flatten().tolist()
        self.last = frames[-1].clone()   # a job may write into the batch while the next one is searched
        run.cut_frames.update(int(batch.index[c]) for c in cuts)
        bounds = [0] + [c for c in cuts if c > 0] + [len(batch)]
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a in cuts:
                self.state.end_tracks()
            parts.append(self.guard(self.model, frames[a:b], self.state))
        return Faces.cat(parts, bounds[:-1])


def _find_ahead(model, timer: StageTimer) -> bool:
    """Whether faces are found on a thread of their own, one batch ahead of the jobs: on a CPU with at least two
    threads to use, and not under ``--profile`` (which times each stage alone). On a GPU the device already
    overlaps the host."""
    return torch.device(model.device).type == "cpu" and threads.budget() >= 2 and not timer.sync


def _found(batches, finder: _FaceFinder, run: Run, faces_stage: str, ahead: bool):
    """``(batch, faces)`` of each batch in order. With ``ahead``, decoding and face finding run on a background
    thread (:func:`gpuface.core.threads.ahead`, one batch ahead) while the caller works on the previous batch, and
    are not timed as stages there (the caller times its wait); else each is timed as its stage. With the finder's
    ``split`` (a landmarker, ahead), ``faces`` is a :class:`~gpuface.stages.landmarks.Landmarking` with only its
    key frames done: the caller finishes it (the frames between, the blendshapes) while this thread starts the next
    batch's key frames, so that the two halves of the landmarker overlap (four 720p samples, 2-core x86 VM,
    alternating runs: 79.9 → 86.9 frames/s, tables equal)."""
    timed = contextlib.nullcontext if ahead else stage

    def pairs():
        while True:
            with timed("decode"):
                batch = next(batches, None)
            if batch is None:
                return
            with timed(faces_stage):
                faces = finder(run, batch)
            yield batch, faces

    return threads.ahead(pairs(), 1, "gpuface-faces") if ahead else pairs()


def run_source(path: str, jobs: Job | list[Job], model, batch_size: int = 32, selection: Selection | None = None,
               backend: str = "auto", quiet: bool = True, profile: bool = False) -> JobResult:
    """Stream one video (or image) through ``jobs`` in one decode pass.

    Args:
        jobs: one job or several sharing ``model`` (their faces are found once per batch).
        model: the :class:`~gpuface.stages.landmarks.FaceLandmarker` or
            :class:`~gpuface.stages.detect.FaceDetector` the jobs'
            :attr:`~gpuface.jobs.base.Job.faces` names; its ``device`` is where frames are decoded to.
        selection: frames to read (a job may choose its own: :meth:`Job.plan`).
        profile: run the stages one after another and synchronise CUDA at every stage boundary, so that each
            stage is charged its own time (:mod:`gpuface.core.timing`). Otherwise, on a CPU with two or more
            threads, decoding and face finding run on a thread of their own one batch ahead of the jobs.

    Returns:
        :class:`JobResult` (frames, faces found, seconds, every output written, the jobs' tables, and ``stages``:
        seconds per stage — ``open``, ``decode``, ``detector`` or ``landmarker``, ``embedding``/``affect`` when asked
        for, each job's own work by its name, ``encode``, ``write`` — which add up to ``seconds``).

    Raises:
        GpufaceError subclasses for unreadable input or bad options; nothing is left behind.
    """
    jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
    timer = StageTimer(sync=profile or profiling())
    with timer.current():
        return _run_source(path, jobs, model, batch_size, selection, backend, quiet, timer)


def _run_source(path, jobs, model, batch_size, selection, backend, quiet, timer) -> JobResult:
    t0 = time.perf_counter()
    with stage("open"):
        reader = open_source(path, backend=backend, device=model.device)
    run = Run(path, reader.info, isinstance(reader, ImageReader), selection, JobResult(path, stages=timer.seconds),
              model, shared=len(jobs) > 1)
    plans = [j.plan(run) for j in jobs]
    changed = [p for p in plans if p is not selection]
    if len(changed) > 1:
        raise InvalidOptionError("two jobs choose their own frames; run them separately")
    run.selection = changed[0] if changed else selection
    finder = _FaceFinder(model, jobs, run.is_image)
    chain: dict[str, Callable] = {}
    for j in jobs:
        for name, fn in j.stages():
            if chain.setdefault(name, fn) is not fn:
                raise InvalidOptionError(f"jobs {', '.join(type(j).__name__ for j in jobs)} bring two different "
                                         f"{name} stages; give them one (gpuface.jobs.build does)")
    started = []
    faces_stage = "landmarker" if hasattr(model, "mesh") else "detector"
    names = [getattr(j, "name", type(j).__name__) for j in jobs]
    try:
        for j in jobs:
            started.append(j)
            j.start(run)
        total = len(run.selection.frames) if run.selection and run.selection.frames else run.info.num_frames
        batches = iter(reader.batches(batch_size, run.selection, device=model.device))
        ahead = _find_ahead(model, timer)
        finder.split = ahead and hasattr(model, "start")
        found = _found(batches, finder, run, faces_stage, ahead=ahead)
        with progress(total, os.path.basename(path), quiet) as bar, contextlib.closing(found):
            while True:
                with stage(faces_stage):   # ahead: the time the jobs waited for decoding and faces
                    batch, faces = next(found, (None, None))
                    if batch is not None and not isinstance(faces, Faces):
                        faces = faces.finish()      # the frames between the key frames, on this thread
                if batch is None:
                    break
                for name, step in chain.items():     # each stage once per batch, whichever jobs need it
                    with stage(name):
                        faces = step(batch.frames, faces)
                for j, name in zip(jobs, names):
                    with stage(name):
                        j.step(run, batch, faces)
                run.result.frames += len(batch)
                run.result.faces += len(faces)
                bar.update(len(batch))
        run.result.seconds = time.perf_counter() - t0
        with stage("write"):
            for j in jobs:
                j.finish(run)
    except BaseException:
        for j in started:
            j.abort(run)
        for p in run.result.outputs:
            Path(p).unlink(missing_ok=True)
        raise
    run.result.seconds = time.perf_counter() - t0
    run.result.stages = dict(timer.seconds)
    return run.result


def run_many(items: Iterable[str], job: Callable[[str], object],
             on_error: Callable[[str, Exception], None] | None = None) -> list:
    """Run ``job(item)`` on each item; a :class:`GpufaceError` (or OSError) in one item becomes a failed
    :class:`~gpuface.jobs.base.JobResult` (``error`` set) and the others still run."""
    import logging

    log = logging.getLogger("gpuface")
    results = []
    for item in items:
        log.info("%s: started", item)
        try:
            r = job(item)
            results.append(r)
            if isinstance(r, JobResult):
                log.info("%s: %d frames, %d faces, %.1f frames/s; %s; stages: %s", item, r.frames, r.faces, r.fps,
                         ", ".join(r.outputs) or "no outputs", format_stages(r.stages))
        except (GpufaceError, OSError) as e:
            log.info("%s: failed: %s: %s", item, e.__class__.__name__, e)
            if on_error:
                on_error(item, e)
            results.append(JobResult(item, error=f"{e.__class__.__name__}: {e}"))
    return results


__all__ = ["run_source", "run_many", "OomGuard", "Sink", "progress", "on_stride"]
