"""The ``detect`` job: face boxes, scores and keypoints of every frame (table ``faces``)."""
from __future__ import annotations

from dataclasses import dataclass

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register
from gpuface.jobs.schema import DETECTORS, SelectionOptions, choice, integer, number, option, parse_scale


@register("detect", "face boxes, scores and keypoints per frame", tables={"faces": "faces.parquet"})
class DetectJob(Job):
    """Face boxes, scores and keypoints of every frame: table ``faces`` (:func:`gpuface.stages.tables.faces_rows`)."""

    faces = "detections"

    @dataclass(frozen=True)
    class Options(SelectionOptions):
        detector: str = choice("face detector", DETECTORS, "mtcnn")
        min_face_size: int = integer("MTCNN smallest face, px", 20)
        threshold: float = number("keep faces with score >= this", 0.0, hi=1.0)
        scale: str | float | None = option("scale", "centerface input: WxH or a factor of the frame size (default 1)",
                                           flags=("--scale", "-s"))

    @classmethod
    def check(cls, pipeline, o) -> None:
        if o.scale is not None and o.detector != "centerface":
            raise InvalidOptionError("scale applies to the centerface detector")

    @classmethod
    def detector(cls, pipeline, o):
        from gpuface.stages.detect import FaceDetector

        kwargs = {"min_face_size": o.min_face_size} if o.detector == "mtcnn" else {}
        if o.scale is not None:
            kwargs.update(parse_scale(o.scale))
        return FaceDetector(o.detector, device=pipeline.device, min_score=o.threshold, **kwargs)

    def start(self, run) -> None:
        self.parts = []

    def step(self, run, batch, faces) -> None:
        from gpuface.stages.tables import faces_rows

        self.parts.append(faces_rows(faces, batch, run.path))

    def finish(self, run) -> None:
        import pandas as pd

        run.result.tables["faces"] = pd.concat(self.parts, ignore_index=True)


def detect_source(path: str, detector, batch_size: int = 32, selection=None, backend: str = "auto",
                  quiet: bool = True):
    """Detect faces in every selected frame of one video or image (:class:`DetectJob`).

    Args:
        detector: a :class:`~gpuface.stages.detect.FaceDetector`. selection: a :class:`~gpuface.io.decode.Selection`.

    Returns:
        (table, result): one row per (frame, face) as :func:`gpuface.stages.tables.faces_rows` (a pandas DataFrame),
        and the :class:`~gpuface.jobs.base.JobResult`.

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    from gpuface.jobs.runner import run_source

    result = run_source(path, DetectJob(), detector, batch_size, selection, backend, quiet)
    return result.tables["faces"], result


__all__ = ["DetectJob", "detect_source"]
