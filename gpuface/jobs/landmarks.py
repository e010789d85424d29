"""The ``landmarks`` job: 478 FaceMesh landmarks, presence and 52 blendshapes of every face (table ``landmarks``),
and with ``draw`` the video (or image) with the mesh and regions drawn."""
from __future__ import annotations

import os
from dataclasses import dataclass

from gpuface.jobs.base import Job, check_regions, output_path
from gpuface.jobs.registry import register
from gpuface.jobs.schema import LandmarkerOptions, SelectionOptions, boolean, option

DRAW_REGIONS = ("face_oval", "eyes", "brows", "lips")


@register("landmarks", "478 FaceMesh landmarks, presence and 52 blendshapes per face",
          tables={"landmarks": "landmarks.parquet"})
class LandmarksJob(Job):
    """478 landmarks, presence and blendshapes of every face: table ``landmarks``
    (:func:`gpuface.stages.tables.landmarks_rows`); with ``draw``, also that video (or image) with the mesh points and
    ``draw_regions`` tinted (:func:`gpuface.ops.draw.draw_landmarks`; audio kept when every frame is drawn)."""

    @dataclass(frozen=True)
    class Options(SelectionOptions, LandmarkerOptions):
        draw: bool = boolean("also write <stem>_landmarks.mp4 (or .png) with the mesh and draw_regions drawn")
        draw_regions: tuple = option("list", "regions tinted by draw (names or expressions like 'face_oval-eyes')",
                                     list(DRAW_REGIONS), flags=("--regions",))

    def __init__(self, draw: str | os.PathLike | None = None, draw_regions: tuple[str, ...] = DRAW_REGIONS,
                 overwrite: bool = False):
        self.draw, self.draw_regions, self.overwrite = draw, draw_regions, overwrite
        self.sink = None

    @classmethod
    def check(cls, pipeline, o) -> None:
        check_regions(o.draw_regions)

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        from gpuface.io.images import is_image

        draw = output_path(path, out_dir, "_landmarks", ".png" if is_image(path) else ".mp4") if o.draw else None
        return cls(draw, tuple(o.draw_regions), overwrite)

    def start(self, run) -> None:
        from gpuface.io.encode import free_path
        from gpuface.jobs.runner import Sink

        self.parts, self.sink = [], None
        if self.draw is not None:
            self.sink = Sink(free_path(self.draw, self.overwrite), run.is_image, run.info.fps, preset="ultrafast",
                             audio_from=run.path if run.audio_span else None, audio_span=run.audio_span)

    def step(self, run, batch, faces) -> None:
        from gpuface.ops.draw import draw_landmarks
        from gpuface.stages.tables import landmarks_rows

        self.parts.append(landmarks_rows(faces, batch, run.path))
        if self.sink is not None:
            # the decoded batch is ours alone unless other jobs share the pass
            self.sink.write(draw_landmarks(batch.frames, faces, self.draw_regions, inplace=not run.shared))

    def finish(self, run) -> None:
        import pandas as pd

        if self.sink is not None:
            self.sink.close()
            run.result.outputs.append(str(self.sink.path))
        run.result.tables["landmarks"] = pd.concat(self.parts, ignore_index=True)

    def abort(self, run) -> None:
        if self.sink is not None:
            self.sink.abort()


def landmarks_source(path: str, landmarker, batch_size: int = 32, selection=None, backend: str = "auto",
                     draw: str | os.PathLike | None = None, draw_regions: tuple[str, ...] = DRAW_REGIONS,
                     overwrite: bool = False, quiet: bool = True):
    """Landmark (478 points, presence, blendshapes) every face in every selected frame of one video or image
    (:class:`LandmarksJob`).

    Args:
        landmarker: a :class:`gpuface.stages.landmarks.FaceLandmarker`; tracking state is per video, stills are
            landmarked independently.
        draw: also write this video (or image) with the mesh points and ``draw_regions`` tinted, for inspection.

    Returns:
        (table, result): rows as :func:`gpuface.stages.tables.landmarks_rows`, and the job summary.
    """
    from gpuface.jobs.runner import run_source

    result = run_source(path, LandmarksJob(draw, draw_regions, overwrite), landmarker, batch_size, selection,
                        backend, quiet)
    return result.tables["landmarks"], result


__all__ = ["LandmarksJob", "landmarks_source"]
