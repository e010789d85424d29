"""The job skeleton: one runner streams any :class:`Job` (or several, composed) over one source.

A job is a small object: the faces it needs per batch (:attr:`Job.faces`: ``"landmarks"`` from a
:class:`~gpuface.stages.landmarks.FaceLandmarker`, tracked within a video, or ``"detections"`` from a
:class:`~gpuface.stages.detect.FaceDetector`), what it does to one batch (:meth:`Job.step`) and what it writes
(:meth:`Job.finish`). :func:`run_source` opens the source, decodes it once, finds the faces of each batch once
through the :class:`OomGuard`, hands batch and faces to every job in turn, counts frames and faces, shows progress,
and on any failure aborts every job and removes every output already written. Jobs therefore compose: landmarks +
manipulate + analyse + affect run in one decode pass (``run_source(path, [LandmarksJob(), ManipulateJob(...),
AnalyseJob()], landmarker)``; job specs take ``job: [landmarks, manipulate, analyse]``).

Adding a job is one class (any module) and one entry in :data:`gpuface.jobs.registry.JOBS` (with its options in
:data:`gpuface.jobs.schema.JOB_OPTIONS` and its construction in :meth:`gpuface.jobs.build.Pipeline.jobs`). The
``*_source`` functions are the Python API of single jobs: each builds its job and runs it.

Memory is bounded by the batch size, never by the video length. Outputs are written under temporary names
and renamed when complete. Many inputs: :func:`gpuface.jobs.drive` (a broken input becomes a failed item).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from gpuface.ops.analysis.shots import shot_cuts
from gpuface.stages.detect import FaceDetector
from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.io.decode import Selection
from gpuface.io.encode import PRESETS, VideoWriter, free_path, write_image
from gpuface.io.images import ImageReader
from gpuface.io.sources import open_source
from gpuface.stages.tables import faces_rows, landmarks_rows, write_text
from gpuface.core.types import Faces, FrameBatch, VideoInfo

@dataclass
class JobResult:
    """What the jobs did to one source: counts, seconds, outputs, tables, or the error that stopped them."""

    source: str
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    tables: dict = field(default_factory=dict)  # tables the jobs produced (name -> DataFrame), and job extras
    table_files: dict = field(default_factory=dict)  # tables written to files (name -> path), for corpus merges

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


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
                 encoder: str = "libx264"):
        if not 0 <= crf <= 51 or preset not in PRESETS:
            raise InvalidOptionError(f"crf must be in 0..51 and preset one of {', '.join(PRESETS)}")
        self.path, self.is_image, self.fps, self.metadata_from = Path(path), is_image, fps, metadata_from
        metadata = None
        if metadata_from is not None and not is_image:
            import av

            with av.open(str(metadata_from)) as src:
                metadata = dict(src.metadata)
        self.options = {"crf": crf, "preset": preset, "audio_from": audio_from, "x264_options": x264_options,
                        "metadata": metadata, "encoder": encoder}
        self.writer = None

    def write(self, frames: torch.Tensor) -> None:
        if self.is_image:
            write_image(self.path, frames[0], exif_from=self.metadata_from)
            return
        if self.writer is None:
            self.writer = VideoWriter(self.path, self.fps, frames.shape[-1], frames.shape[-2], overwrite=True,
                                      **self.options)
        self.writer.write(frames)

    def close(self) -> None:
        if self.writer is not None:
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


@dataclass
class Run:
    """What a job sees of the source being run: its path and :class:`~gpuface.core.types.VideoInfo`, whether it is a
    still image, the frame selection, the result being filled, and ``position``: frames of the stream before the
    current batch (the output timeline)."""

    path: str
    info: VideoInfo
    is_image: bool
    selection: Selection | None
    result: JobResult
    model: object = None       # the FaceLandmarker or FaceDetector feeding the jobs
    cut_frames: set = field(default_factory=set)   # source frame numbers where a shot cut ended the tracks

    @property
    def position(self) -> int:
        """Frames of the stream before the current batch (the output timeline)."""
        return self.result.frames

    @property
    def whole(self) -> bool:
        """Every frame of a video in order (its audio then fits frame for frame)."""
        s = self.selection
        return not self.is_image and (s is None or (s.frames is None and s.step == 1 and s.step_seconds is None
                                                    and s.start == 0 and s.end is None))


class Job:
    """One thing done to every batch of a source (see the module docstring). Subclasses override the hooks.

    Attributes:
        faces: ``"landmarks"`` or ``"detections"``: the model the runner feeds it from (jobs run together share
            one). ``track``: landmark a video as tracks (False: every frame as an unrelated still).
        detect_every: run the model on every k-th frame of the stream only (detections; the frames between get
            no faces, for the job to fill). ``shot_cuts``: end the tracks at shot cuts (:func:`~gpuface.ops.analysis.
            shots.shot_cuts`), recorded in ``run.cut_frames``.
    """

    faces = "landmarks"
    track = True
    detect_every = 1
    shot_cuts = False

    def plan(self, run: Run) -> Selection | None:
        """The frames to read (default: the caller's selection); a job that reorders frames returns its own."""
        return run.selection

    def stages(self) -> list[tuple[str, Callable]]:
        """The stages this job needs after the faces are found, as ``(name, stage)``: ``("embedding",
        Embedder)``, ``("affect", AffectAnalyzer)``; each takes ``(frames, faces)`` and returns new faces. The
        runner builds one chain per pass, so jobs that need the same stage share one run of it per batch."""
        return []

    def start(self, run: Run) -> None:
        """Before the first batch (open sinks, reset per-video state)."""

    def step(self, run: Run, batch: FrameBatch, faces: Faces) -> None:
        """Do the job on one batch: uint8 frames (B, 3, H, W) and their faces (``faces.row`` = row in the batch)."""
        raise NotImplementedError

    def finish(self, run: Run) -> None:
        """After the last batch: close sinks, write tables (atomically), add paths to ``run.result.outputs``."""

    def abort(self, run: Run) -> None:
        """After a failure: remove whatever was started (outputs already listed are removed by the runner)."""


class _FaceFinder:
    """The faces of each batch for every job: the model through the :class:`OomGuard`, tracked per video, on
    every k-th frame, split at shot cuts — whatever the jobs ask for."""

    def __init__(self, model, jobs: list[Job], is_image: bool):
        kinds = {j.faces for j in jobs}
        if len(kinds) > 1 or len({(j.track, j.detect_every) for j in jobs}) > 1:
            raise InvalidOptionError(f"jobs {', '.join(type(j).__name__ for j in jobs)} need different faces "
                                     f"and cannot run in one pass")
        self.model, self.guard = model, OomGuard()
        self.every, self.cuts = jobs[0].detect_every, any(j.shot_cuts for j in jobs)
        tracked = jobs[0].faces == "landmarks" and jobs[0].track and not is_image
        self.state = model.new_state() if tracked else None
        self.last = None

    def __call__(self, run: Run, batch: FrameBatch) -> Faces:
        frames = batch.frames
        if self.every > 1:
            pick = torch.arange((-run.position) % self.every, len(frames), self.every, device=frames.device)
            if len(pick) == 0:
                return Faces.empty(device=frames.device)
            faces = self.guard(self.model, frames[pick], self.state)
            return replace(faces, row=pick.to(faces.row.device)[faces.row])
        if not self.cuts:
            return self.guard(self.model, frames, self.state)
        cuts = torch.nonzero(shot_cuts(frames, self.last)).flatten().tolist()
        self.last = frames[-1]
        run.cut_frames.update(int(batch.index[c]) for c in cuts)
        bounds = [0] + [c for c in cuts if c > 0] + [len(batch)]
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a in cuts:
                self.state.end_tracks()
            parts.append(self.guard(self.model, frames[a:b], self.state))
        return Faces.cat(parts, bounds[:-1])


def run_source(path: str, jobs: Job | list[Job], model, batch_size: int = 32, selection: Selection | None = None,
               backend: str = "auto", quiet: bool = True) -> JobResult:
    """Stream one video (or image) through ``jobs`` in one decode pass.

    Args:
        jobs: one job or several sharing ``model`` (their faces are found once per batch).
        model: the :class:`~gpuface.stages.landmarks.FaceLandmarker` or :class:`~gpuface.stages.detect.FaceDetector` the jobs'
            :attr:`Job.faces` names; its ``device`` is where frames are decoded to.
        selection: frames to read (a job may choose its own: :meth:`Job.plan`).

    Returns:
        :class:`JobResult` (frames, faces found, seconds, every output written, the jobs' tables).

    Raises:
        GpufaceError subclasses for unreadable input or bad options; nothing is left behind.
    """
    jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
    t0 = time.perf_counter()
    reader = open_source(path, backend=backend, device=model.device)
    run = Run(path, reader.info, isinstance(reader, ImageReader), selection, JobResult(path), model)
    plans = [j.plan(run) for j in jobs]
    changed = [p for p in plans if p is not selection]
    if len(changed) > 1:
        raise InvalidOptionError("two jobs choose their own frames; run them separately")
    run.selection = changed[0] if changed else selection
    finder = _FaceFinder(model, jobs, run.is_image)
    chain: dict[str, Callable] = {}
    for j in jobs:
        for name, stage in j.stages():
            if chain.setdefault(name, stage) is not stage:
                raise InvalidOptionError(f"jobs {', '.join(type(j).__name__ for j in jobs)} bring two different "
                                         f"{name} stages; give them one (gpuface.jobs.build does)")
    started = []
    try:
        for j in jobs:
            started.append(j)
            j.start(run)
        total = len(run.selection.frames) if run.selection and run.selection.frames else run.info.num_frames
        with progress(total, os.path.basename(path), quiet) as bar:
            for batch in reader.batches(batch_size, run.selection, device=model.device):
                faces = finder(run, batch)
                for stage in chain.values():     # each stage once per batch, whichever jobs need it
                    faces = stage(batch.frames, faces)
                for j in jobs:
                    j.step(run, batch, faces)
                run.result.frames += len(batch)
                run.result.faces += len(faces)
                bar.update(len(batch))
        run.result.seconds = time.perf_counter() - t0
        for j in jobs:
            j.finish(run)
    except BaseException:
        for j in started:
            j.abort(run)
        for p in run.result.outputs:
            Path(p).unlink(missing_ok=True)
        raise
    run.result.seconds = time.perf_counter() - t0
    return run.result


class DetectJob(Job):
    """Face boxes, scores and keypoints of every frame: table ``faces`` (:func:`gpuface.stages.tables.faces_rows`)."""

    faces = "detections"

    def start(self, run: Run) -> None:
        self.parts = []

    def step(self, run: Run, batch: FrameBatch, faces: Faces) -> None:
        self.parts.append(faces_rows(faces, batch, run.path))

    def finish(self, run: Run) -> None:
        run.result.tables["faces"] = pd.concat(self.parts, ignore_index=True)


class LandmarksJob(Job):
    """478 landmarks, presence and blendshapes of every face: table ``landmarks``
    (:func:`gpuface.stages.tables.landmarks_rows`); with ``draw``, also that video (or image) with the mesh points and
    ``draw_regions`` tinted (audio kept when every frame is drawn)."""

    def __init__(self, draw: str | os.PathLike | None = None,
                 draw_regions: tuple[str, ...] = ("face_oval", "eyes", "brows", "lips"), overwrite: bool = False):
        self.draw, self.draw_regions, self.overwrite = draw, draw_regions, overwrite
        self.sink = None

    def start(self, run: Run) -> None:
        self.parts, self.sink = [], None
        if self.draw is not None:
            self.sink = Sink(free_path(self.draw, self.overwrite), run.is_image, run.info.fps, preset="veryfast",
                             audio_from=run.path if run.whole else None)

    def step(self, run: Run, batch: FrameBatch, faces: Faces) -> None:
        self.parts.append(landmarks_rows(faces, batch, run.path))
        if self.sink is not None:
            self.sink.write(draw_landmarks(batch.frames, faces, self.draw_regions))

    def finish(self, run: Run) -> None:
        if self.sink is not None:
            self.sink.close()
            run.result.outputs.append(str(self.sink.path))
        run.result.tables["landmarks"] = pd.concat(self.parts, ignore_index=True)

    def abort(self, run: Run) -> None:
        if self.sink is not None:
            self.sink.abort()


class ManipulateJob(Job):
    """A layer spec (:mod:`gpuface.stages.layers`) applied to every face; writes the video (or image) and,
    beside it, ``<output stem>.json``: the spec with every parameter, the seed, package versions, the input's
    sha256, frame counts (frames without a face are written unchanged) and the temporal order when the spec
    shuffles frames. Audio is copied; with a temporal shuffle each frame carries its own stretch of sound along
    (:func:`gpuface.ops.temporal.reorder_audio`), or the output is silent with ``temporal: {audio:
    silence}``."""

    def __init__(self, spec, output: str | os.PathLike, crf: int = 18, preset: str = "medium",
                 overwrite: bool = False, encoder: str = "libx264"):
        self.spec, self.output, self.crf, self.preset, self.overwrite = spec, output, crf, preset, overwrite
        self.encoder = encoder
        self.sink = self.audio = None

    def plan(self, run: Run) -> Selection | None:
        from gpuface.ops.temporal import frame_order, frames_left_out, shuffled_block_array

        self.log_order = None
        if not self.spec.temporal or run.is_image:
            return run.selection
        info, seed = run.info, self.spec.seed
        t = {"method": "random", "block_duration": 1.0, "drop_last": True, **self.spec.temporal}
        args = (info.num_frames, float(info.fps), t["method"], t["block_duration"])
        order = frame_order(*args, seed, run.path, t["drop_last"])
        dropped = frames_left_out(*args, t["drop_last"])
        self.log_order = {"blocks": shuffled_block_array(*args, seed, run.path, t["drop_last"]).tolist(),
                          "frames": order.tolist(), "frames_dropped": dropped}
        if dropped > 0:
            import logging
            logging.getLogger("gpuface").warning(
                "gpuface: %s: the temporal shuffle leaves out %d frame(s) (%s; a partial last block with "
                "drop_last); set temporal drop_last: false to keep them", run.path, dropped, t["method"])
        return Selection(frames=tuple(order.tolist()))

    def start(self, run: Run) -> None:
        from gpuface.stages.layers import LayerStack

        self.stack = LayerStack(self.spec)
        self.stack.reset(run.path)
        self.path = free_path(self.output, self.overwrite)
        self.no_face = 0
        audio = None if run.is_image else run.path
        if self.log_order is not None:   # shuffled: the audio follows the frames, or silence
            audio = None
            if self.spec.temporal.get("audio", "carry") == "carry" and run.info.has_audio:
                from gpuface.io.encode import temporary_path
                from gpuface.ops.temporal import reorder_audio
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)   # -o may name a folder not made yet
                self.audio = temporary_path(Path(self.path).with_suffix(".m4a"))
                audio = reorder_audio(run.path, self.log_order["frames"], float(run.info.fps), str(self.audio))
        self.sink = Sink(self.path, run.is_image, run.info.fps, self.crf, self.preset, audio_from=audio,
                         encoder=self.encoder)

    def step(self, run: Run, batch: FrameBatch, faces: Faces) -> None:
        # timing runs on the output timeline (the source's, unless frames are shuffled)
        pts = batch.pts if self.log_order is None else torch.arange(
            run.position, run.position + len(batch), dtype=torch.float64, device="cpu") / float(run.info.fps)
        out = self.stack.apply(batch.frames, faces, batch.index, pts, run.info.duration)
        self.no_face += len(batch) - int(torch.unique(faces.row).numel())
        self.sink.write(out)

    def finish(self, run: Run) -> None:
        import json

        import kornia

        from gpuface import __version__
        from gpuface.core.fetch import sha256_file

        self.sink.close()
        res, spec = run.result, self.spec
        res.outputs.append(str(self.path))
        log = {"input": os.path.abspath(run.path), "input_sha256": sha256_file(run.path),
               "output": os.path.abspath(self.path), "seed": spec.seed,
               "layers": [layer.describe() for layer in spec.layers], "temporal": spec.temporal,
               "temporal_order": self.log_order, "frames": res.frames, "frames_without_face": self.no_face,
               "faces": res.faces, "audio_copied": bool(not run.is_image and (self.log_order is None or
                                                                             self.audio is not None)),
               "detector": getattr(run.model, "detector", run.model).model, "device": str(run.model.device),
               "seconds": res.seconds,
               "versions": {"gpuface": __version__, "torch": torch.__version__, "kornia": kornia.__version__}}
        res.tables["manipulate_log"] = log
        res.outputs.append(str(write_text(json.dumps(log, indent=1), Path(self.path).with_suffix(".json"))))
        self._drop_audio()

    def abort(self, run: Run) -> None:
        if self.sink is not None:
            self.sink.abort()
        self._drop_audio()

    def _drop_audio(self) -> None:
        if self.audio is not None:
            self.audio.unlink(missing_ok=True)


class AnalyseJob(Job):
    """Per-frame measurements: region colour means of every face (table ``colour_means``), the Lucas–Kanade flow
    of the first face's landmarks between consecutive selected frames (``landmark_flow``; pairs across batch
    borders included) and, with ``dense``, the dense flow of every pixel summarised inside the face ovals
    (``dense_flow``). ``flow_video``: also write the flow visualisation there (:func:`gpuface.ops.analysis.draw_flow`:
    each frame shows the flow from the previous selected frame)."""

    def __init__(self, colour_regions: tuple[str, ...] = ("face_skin", "cheeks", "nose", "chin"), space: str = "rgb",
                 flow: bool = True, dense: bool = False, flow_video: str | os.PathLike | None = None, crf: int = 18,
                 preset: str = "medium"):
        self.colour_regions, self.space, self.flow, self.dense = colour_regions, space, flow, dense
        self.flow_video, self.crf, self.preset = flow_video, crf, preset
        self.sink = None

    def start(self, run: Run) -> None:
        if self.flow_video is not None and run.is_image:
            raise InvalidOptionError("a flow video needs a video input")
        self.sink = None if self.flow_video is None else \
            Sink(self.flow_video, False, run.info.fps, self.crf, self.preset)
        self.colours, self.flows, self.denses, self.carry, self.dense_carry = [], [], [], None, None

    def step(self, run: Run, batch: FrameBatch, faces: Faces) -> None:
        import kornia

        from gpuface.ops.analysis import dense_flow, dense_flow_summary, draw_flow, landmark_flow, region_colour_means
        from gpuface.ops.regions import region_masks

        self.colours.append(region_colour_means(batch, faces, self.colour_regions, self.space, video=run.path))
        vis_dense = vis_points = None
        if self.dense and not run.is_image:
            grey = kornia.color.rgb_to_grayscale(batch.frames.float() / 255)
            masks = region_masks(faces.landmarks, faces.row, "face_oval", len(batch), tuple(grey.shape[-2:]))
            seq = _after(self.dense_carry, [grey, masks, batch.index, batch.pts])
            if seq[0].shape[0] > 1:
                px = dense_flow(seq[0][:-1], seq[0][1:])
                self.denses.append(dense_flow_summary(px, seq[1][:-1], seq[2][:-1], seq[3][:-1]))
                if self.sink is not None:  # frame i shows the flow from the frame before it (none for frame 0)
                    vis_dense = torch.cat([px.new_zeros(len(batch) - px.shape[0], *px.shape[1:]), px])
            self.dense_carry = [t[-1:] for t in seq]
        if self.flow and not run.is_image:
            first = torch.ones(len(faces), dtype=torch.bool, device=faces.row.device)
            first[1:] = faces.row[1:] != faces.row[:-1]          # the first face of each frame
            f = faces.select(first)
            if len(f):  # pairs of consecutive rows: frames without a face are skipped
                seq = _after(self.carry, [batch.frames[f.row], f.landmarks, batch.index[f.row.cpu()],
                                          batch.pts[f.row.cpu()]])
                table, start, move, ok = landmark_flow(*seq, return_points=True)
                self.flows.append(table)
                if self.sink is not None:
                    later = f.row[len(f) - start.shape[0]:]         # the frame each pair ends on
                    keep = ok.reshape(-1)
                    vis_points = (start.reshape(-1, 2)[keep], move.reshape(-1, 2)[keep],
                                  later[:, None].expand(-1, start.shape[1]).reshape(-1)[keep])
                self.carry = [t[-1:] for t in seq]
            else:
                self.carry = None
        if self.sink is not None:
            self.sink.write(draw_flow(batch.frames, vis_dense, *(vis_points or (None, None, None))))

    def finish(self, run: Run) -> None:
        if self.sink is not None:
            self.sink.close()
            run.result.outputs.append(str(self.flow_video))
        tables = run.result.tables
        tables["colour_means"] = pd.concat(self.colours, ignore_index=True)
        for name, parts, on in (("landmark_flow", self.flows, self.flow), ("dense_flow", self.denses, self.dense)):
            if on:
                tables[name] = pd.concat(parts, ignore_index=True).assign(video=run.path) if parts else pd.DataFrame()

    def abort(self, run: Run) -> None:
        if self.sink is not None:
            self.sink.abort()


def detect_source(path: str, detector: FaceDetector, batch_size: int = 32, selection: Selection | None = None,
                  backend: str = "auto", quiet: bool = True) -> tuple[pd.DataFrame, JobResult]:
    """Detect faces in every selected frame of one video or image (:class:`DetectJob`).

    Returns:
        (table, result): one row per (frame, face) as :func:`gpuface.stages.tables.faces_rows`, and the job summary.

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    result = run_source(path, DetectJob(), detector, batch_size, selection, backend, quiet)
    return result.tables["faces"], result


def landmarks_source(path: str, landmarker, batch_size: int = 32, selection: Selection | None = None,
                     backend: str = "auto", draw: str | os.PathLike | None = None,
                     draw_regions: tuple[str, ...] = ("face_oval", "eyes", "brows", "lips"), overwrite: bool = False,
                     quiet: bool = True) -> tuple[pd.DataFrame, JobResult]:
    """Landmark (478 points, presence, blendshapes) every face in every selected frame of one video or image
    (:class:`LandmarksJob`).

    Args:
        landmarker: a :class:`gpuface.stages.landmarks.FaceLandmarker`; tracking state is per video, stills are
            landmarked independently.
        draw: also write this video (or image) with the mesh points and ``draw_regions`` tinted, for inspection.

    Returns:
        (table, result): rows as :func:`gpuface.stages.tables.landmarks_rows`, and the job summary.
    """
    result = run_source(path, LandmarksJob(draw, draw_regions, overwrite), landmarker, batch_size, selection,
                        backend, quiet)
    return result.tables["landmarks"], result


def manipulate_source(path: str, spec, landmarker, output: str | os.PathLike, batch_size: int = 32,
                      crf: int = 18, preset: str = "medium", overwrite: bool = False, backend: str = "auto",
                      quiet: bool = True, encoder: str = "libx264") -> JobResult:
    """Apply a layer spec to every face of one video or image (:class:`ManipulateJob`): the manipulated video
    (or image) and its JSON log. Nothing is left behind on failure.

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    return run_source(path, ManipulateJob(spec, output, crf, preset, overwrite, encoder), landmarker, batch_size,
                      backend=backend, quiet=quiet)


def analyse_source(path: str, landmarker, batch_size: int = 32, selection: Selection | None = None,
                   colour_regions: tuple[str, ...] = ("face_skin", "cheeks", "nose", "chin"), space: str = "rgb",
                   flow: bool = True, backend: str = "auto", quiet: bool = True, dense: bool = False,
                   flow_video: str | os.PathLike | None = None, crf: int = 18, preset: str = "medium"):
    """Per-frame measurements of one video (:class:`AnalyseJob`).

    Returns:
        ``(colour_table, flow_table, result)`` (pandas DataFrames; ``flow_table`` is None without ``flow``;
        the dense summary table is ``result.tables["dense_flow"]``).
    """
    job = AnalyseJob(colour_regions, space, flow, dense, flow_video, crf, preset)
    result = run_source(path, job, landmarker, batch_size, selection, backend, quiet)
    return result.tables["colour_means"], result.tables.get("landmark_flow"), result


def _after(carry: list[torch.Tensor] | None, seq: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor of ``seq`` preceded by its last row from the previous batch (``carry``), so that pairs of
    consecutive frames span batch borders."""
    return seq if carry is None else [torch.cat([c.to(t.device), t]) for c, t in zip(carry, seq)]


def draw_landmarks(frames: torch.Tensor, faces, regions: tuple[str, ...] = (), alpha: float = 0.35) -> torch.Tensor:
    """Frames (B, 3, H, W) uint8 with each region tinted (one colour per region) and the 478 points drawn as
    2×2 px dots, for all faces of the batch in tensor ops."""
    from gpuface.ops.regions import region_masks

    palette = torch.tensor([[255, 64, 64], [64, 160, 255], [255, 200, 0], [255, 0, 200], [0, 220, 120]],
                           dtype=torch.float32, device=frames.device)
    if len(faces) == 0:
        return frames
    b, _, h, w = frames.shape
    out = frames.float()
    for i, name in enumerate(regions):
        m = region_masks(faces.landmarks, faces.row, name, b, (h, w)).mul_(alpha)
        out.mul_(1 - m).add_(palette[i % len(palette)].view(1, 3, 1, 1) * m)
    pts = faces.landmarks[..., :2].floor().long()
    frame = faces.row[:, None].expand(-1, pts.shape[1]).reshape(-1)
    green = torch.tensor([0.0, 255.0, 0.0], device=frames.device)
    for dy in (0, 1):
        for dx in (0, 1):
            x = (pts[..., 0] + dx).clamp(0, w - 1).reshape(-1)
            y = (pts[..., 1] + dy).clamp(0, h - 1).reshape(-1)
            out[frame, :, y, x] = green
    return out.round_().clamp_(0, 255).to(torch.uint8)


def draw_boxes(frames: torch.Tensor, faces, colour: str = "lime") -> torch.Tensor:
    """Draw each face's box and score on its frame (torchvision ``draw_bounding_boxes``; CPU, per frame with
    faces: a visual check, not a hot path). uint8 (B, 3, H, W) in and out."""
    from torchvision.utils import draw_bounding_boxes

    out = frames.clone()
    f = faces.to("cpu")
    for i in torch.unique(f.row).tolist():
        sel = f.row == i
        labels = [f"{s:.2f}" for s in f.scores[sel].tolist()]
        out[i] = draw_bounding_boxes(frames[i].cpu(), f.boxes[sel], labels=labels, colors=colour, width=3,
                                     font_size=24).to(frames.device)
    return out


def run_many(items: Iterable[str], job: Callable[[str], object],
             on_error: Callable[[str, Exception], None] | None = None) -> list:
    """Run ``job(item)`` on each item; a :class:`GpufaceError` (or OSError) in one item becomes a failed
    :class:`JobResult` (``error`` set) and the others still run (Python API loops over inputs)."""
    results = []
    for item in items:
        try:
            results.append(job(item))
        except (GpufaceError, OSError) as e:
            if on_error:
                on_error(item, e)
            results.append(JobResult(item, error=f"{e.__class__.__name__}: {e}"))
    return results
