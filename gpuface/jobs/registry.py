"""The one job registry: every job's name, its class, the faces it needs and the tables it leaves.

The job-spec ``job`` values (``gpuface run``, ``gpuface corpus run``), the CLI commands and :func:`gpuface.jobs.build`
all read this table; a job's options are its :data:`gpuface.jobs.schema.JOB_OPTIONS` entry. Torch-free (classes are
imported on first use), so the CLI can build its parser from it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from gpuface.core.errors import InvalidOptionError


@dataclass(frozen=True)
class JobEntry:
    """One registered job.

    Attributes:
        name: the job-spec ``job`` value and CLI command.
        target: ``module:Class`` of its :class:`~gpuface.jobs.runner.Job`.
        faces: ``detections`` (a :class:`~gpuface.stages.detect.FaceDetector`; runs alone) or ``landmarks`` (a
            :class:`~gpuface.stages.landmarks.FaceLandmarker`; landmark jobs compose into one decode pass).
        tables: the tables it leaves in ``JobResult.tables`` → their file name in a per-input output folder.
        summary: one line for ``--help`` and the README.
    """

    name: str
    target: str
    faces: str
    summary: str
    tables: Mapping[str, str] = field(default_factory=dict)

    def job_class(self):
        """The job's class (imports its module)."""
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


def _entry(name, target, kind, summary, **tables) -> JobEntry:
    return JobEntry(name, target, kind, summary, MappingProxyType(tables))


JOBS: Mapping[str, JobEntry] = MappingProxyType({e.name: e for e in (
    _entry("detect", "gpuface.jobs.runner:DetectJob", "detections", "face boxes, scores and keypoints per frame",
           faces="faces.parquet"),
    _entry("landmarks", "gpuface.jobs.runner:LandmarksJob", "landmarks",
           "478 FaceMesh landmarks, presence and 52 blendshapes per face", landmarks="landmarks.parquet"),
    _entry("anonymize", "gpuface.jobs.anonymize:AnonymizeJob", "detections",
           "every face blurred, filled or covered; boxes table"),
    _entry("manipulate", "gpuface.jobs.runner:ManipulateJob", "landmarks", "stimulus manipulations (layer spec)"),
    _entry("analyse", "gpuface.jobs.runner:AnalyseJob", "landmarks", "region colour means and optical flow per frame",
           colour_means="colour_means.parquet", landmark_flow="landmark_flow.parquet",
           dense_flow="dense_flow.parquet"),
    _entry("annotate", "gpuface.jobs.annotate:AnnotateJob", "landmarks",
           "every face of every frame with an identity label", annotation="annotation.parquet"),
    _entry("affect", "gpuface.jobs.affect:AffectJob", "landmarks",
           "action units, emotions and valence/arousal per face"),
)})

#: Jobs that find faces with a detector alone; they run alone. Every other job uses the landmarker and may compose.
DETECTION_JOBS = tuple(n for n, e in JOBS.items() if e.faces == "detections")


def job_names(job: str | list) -> list[str]:
    """The job names of a spec's ``job`` (one name, or a list composed into one decode pass), checked.

    Raises:
        InvalidOptionError: an unknown or repeated name, or a detection job (detect, anonymize) composed with others.
    """
    names = [job] if isinstance(job, str) else list(job) if isinstance(job, (list, tuple)) else []
    bad = [n for n in names if n not in JOBS]
    if not names or bad or len(set(names)) < len(names):
        raise InvalidOptionError(f"job spec: job must be one of {', '.join(JOBS)} or a list of distinct ones, "
                                 f"got {job!r}")
    if len(names) > 1 and any(n in DETECTION_JOBS for n in names):
        raise InvalidOptionError(f"job spec: {', '.join(DETECTION_JOBS)} run alone; only landmark jobs "
                                 f"({', '.join(n for n in JOBS if n not in DETECTION_JOBS)}) compose")
    return names


__all__ = ["JobEntry", "JOBS", "DETECTION_JOBS", "job_names"]
