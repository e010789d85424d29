"""The job contract, torch-free: :class:`Job` (what a job declares and its hooks), :class:`Run` (what a job sees of
the source being run) and :class:`JobResult` (what it leaves). The batch loop that drives jobs is
:func:`gpuface.jobs.runner.run_source`; a job file registers its class with :func:`gpuface.jobs.registry.register`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:   # annotations only: this module stays importable without torch
    from gpuface.core.types import Faces, FrameBatch, VideoInfo
    from gpuface.io.decode import Selection


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
    stages: dict = field(default_factory=dict)  # seconds per stage (gpuface.core.timing): decode, landmarks, …

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Run:
    """What a job sees of the source being run: its path and :class:`~gpuface.core.types.VideoInfo`, whether it is a
    still image, the frame selection, the result being filled, and ``position``: frames of the stream before the
    current batch (the output timeline)."""

    path: str
    info: "VideoInfo"
    is_image: bool
    selection: "Selection | None"
    result: JobResult
    model: object = None       # the FaceLandmarker or FaceDetector feeding the jobs
    cut_frames: set = field(default_factory=set)   # source frame numbers where a shot cut ended the tracks
    shared: bool = False   # other jobs of the pass get the same frame tensors: a job must not write into them

    @property
    def position(self) -> int:
        """Frames of the stream before the current batch (the output timeline)."""
        return self.result.frames

    @property
    def audio_span(self) -> tuple[float, float | None] | None:
        """``(start, end)`` seconds of the source whose sound goes with the output: every frame of a contiguous
        fragment (or of the whole video) in order; None for stills and for steps or frame lists (no sound fits)."""
        s = self.selection
        if self.is_image:
            return None
        if s is None:
            return 0.0, None
        if s.frames is None and s.step == 1 and s.step_seconds is None:
            return float(s.start), s.end
        return None


class Job:
    """One thing done to every batch of a source. A job file subclasses it, gives it a frozen ``Options``
    dataclass and registers it (:func:`gpuface.jobs.registry.register`).

    What it declares (class attributes) — the faces it needs:
        faces: ``"landmarks"`` (a :class:`~gpuface.stages.landmarks.FaceLandmarker`; landmark jobs compose into one
            decode pass) or ``"detections"`` (a :class:`~gpuface.stages.detect.FaceDetector`, chosen by
            :meth:`detector`; runs alone).
        track: landmark a video as tracks (False: every frame as an unrelated still).
        face_stride: find faces on every k-th frame of the stream only (the frames between get none, for the job to
            fill).
        shot_cuts: end the tracks at shot cuts (:func:`~gpuface.ops.analysis.shots.shot_cuts`), recorded in
            ``run.cut_frames``.
        :meth:`stages`: the stages it needs after the faces are found (embeddings, affect).

    How it is made (class methods, called by :class:`gpuface.jobs.build.Pipeline`): :meth:`check` (options checked
    together, before any model), :meth:`load` (models built before the first input), :meth:`create` (the job for
    one input). What it does (hooks, called by :func:`gpuface.jobs.runner.run_source`): :meth:`plan`,
    :meth:`start`, :meth:`step`, :meth:`finish`, :meth:`abort`.
    """

    name = ""
    faces = "landmarks"
    track = True
    face_stride = 1
    shot_cuts = False

    @dataclass(frozen=True)
    class Options:
        """No options."""

    # -- how it is made ------------------------------------------------------------------------------------------
    @classmethod
    def check(cls, pipeline, o) -> None:
        """Options that contradict each other raise :class:`~gpuface.core.errors.InvalidOptionError` (no model yet)."""

    @classmethod
    def load(cls, pipeline, o) -> None:
        """Build (through the pipeline's cache) the models the job will need, so missing weights fail first."""

    @classmethod
    def detector(cls, pipeline, o):
        """A detection job's :class:`~gpuface.stages.detect.FaceDetector` (landmark jobs share the landmarker)."""
        raise NotImplementedError

    @classmethod
    def create(cls, pipeline, o, path: str, out_dir, output, overwrite: bool) -> "Job":
        """The job for one input: ``o`` its options (an ``Options``), ``out_dir`` where its files go (None: beside
        the input), ``output`` its main output's path (from :func:`output_path` unless given)."""
        return cls()

    # -- what it does ------------------------------------------------------------------------------------------
    def plan(self, run: Run) -> "Selection | None":
        """The frames to read (default: the caller's selection); a job that reorders frames returns its own."""
        return run.selection

    def stages(self) -> list[tuple[str, Callable]]:
        """The stages this job needs after the faces are found, as ``(name, stage)``: ``("embedding",
        Embedder)``, ``("affect", AffectAnalyzer)``; each takes ``(frames, faces)`` and returns new faces. The
        runner builds one chain per pass, so jobs that need the same stage share one run of it per batch."""
        return []

    def start(self, run: Run) -> None:
        """Before the first batch (open sinks, reset per-video state)."""

    def step(self, run: Run, batch: "FrameBatch", faces: "Faces") -> None:
        """Do the job on one batch: uint8 frames (B, 3, H, W) and their faces (``faces.row`` = row in the batch)."""
        raise NotImplementedError

    def finish(self, run: Run) -> None:
        """After the last batch: close sinks, write tables (atomically), add paths to ``run.result.outputs``."""

    def abort(self, run: Run) -> None:
        """After a failure: remove whatever was started (outputs already listed are removed by the runner)."""


def output_path(path: str, out_dir: str | os.PathLike | None, suffix: str, ext: str | None = None) -> Path:
    """The one naming rule of per-input outputs: ``<stem><suffix><ext>`` (``ext``: the input's own by default) in
    ``out_dir``, or beside the input when ``out_dir`` is None."""
    src = Path(path)
    name = f"{src.stem}{suffix}{src.suffix if ext is None else ext}"
    return src.with_name(name) if out_dir is None else Path(out_dir) / name



def check_regions(names) -> None:
    """Region names or expressions (:func:`gpuface.ops.regions.get_region`), checked before any work.

    Raises:
        InvalidOptionError: an unknown region, naming it and the known ones.
    """
    from gpuface.ops.regions import get_region

    for name in names:
        get_region(name)


__all__ = ["Job", "Run", "JobResult", "output_path", "check_regions"]
