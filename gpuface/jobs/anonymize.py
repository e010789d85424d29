"""Anonymisation of whole videos and its leak audit.

:func:`anonymize_source` streams one video (or image): decode → detect (:class:`~gpuface.stages.detect.FaceDetector`) →
temporal hole-filling (:class:`~gpuface.stages.gapfill.TemporalFill`) → mask (:func:`~gpuface.ops.anonymize.
anonymize`) → encode, with audio and optionally the container metadata kept, a boxes table (MGT ``blur_faces``'s
data: ``time_ms, x1, y1, x2, y2``, plus frame, face, score and source) and MGT's face-position heat map.

:func:`audit_source` runs a second detector — never the one that drove the masks — on the original and on the
anonymised video and reports the faces it still finds in the output: per frame and box, the leak rate (faces found
in the output at a face of the original / faces found in the original) and a contact sheet of the worst frames.
No tool we replace measures its own leaks.

Thresholds: every detector masks at its own recall-calibrated score (:data:`ANONYMIZE_THRESHOLDS`), never at one
tuned for another; the audit counts a face at the detector's identity-pipeline score (:data:`AUDIT_THRESHOLDS`).
"""
from __future__ import annotations

import heapq
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torchvision.ops import box_iou

from gpuface.stages.detect import FaceDetector
from gpuface.core.errors import InvalidOptionError
from gpuface.io.decode import Selection
from gpuface.io.encode import free_path, temporary_path, write_image
from gpuface.io.sources import open_source
from gpuface.ops.anonymize import AnonymizeOptions, anonymize
from gpuface.stages.gapfill import FILLED, PADDED, FillOptions, TemporalFill
from gpuface.models.registry import ANONYMIZE_AUTO, DETECTORS, detector_config
from gpuface.stages.tables import faces_rows, write_table, write_text
from gpuface.jobs.runner import Job, JobResult, Run, Sink, draw_boxes, run_source
from gpuface.core.types import Faces

#: Score at or above which each detector's face is masked / the audit counts a face (the model registry's).
ANONYMIZE_THRESHOLDS = {k: c.threshold("anonymize") for k, c in DETECTORS.items()}
AUDIT_THRESHOLDS = {k: c.threshold("audit") for k, c in DETECTORS.items()}
SOURCE_NAMES = {0: "detected", FILLED: "filled", PADDED: "padded"}
BOXES_COLUMNS = ["frame", "time_ms", "face", "x1", "y1", "x2", "y2", "score", "source"]
AUDIT_COLUMNS = ["frame", "time_s", "x1", "y1", "x2", "y2", "score", "leak"]
DATA_FORMATS = ("csv", "tsv", "txt", "json")


def anonymization_detector(model: str = "centerface", device: torch.device | str = "cpu",
                           threshold: float | None = None, **kwargs) -> FaceDetector:
    """A :class:`FaceDetector` whose own score floor is at or below the score a face is masked at: ``threshold``,
    or its :data:`ANONYMIZE_THRESHOLDS` entry when lower or None (BlazeFace's MediaPipe floors of 0.5/0.6 would
    otherwise hide faces scored 0.3–0.5; MTCNN has no floor of its own). ``kwargs`` go to the detector
    (e.g. CenterFace ``input_size=(W, H)``, MTCNN ``min_face_size``)."""
    detector_config(model)
    if model != "mtcnn":
        floor = ANONYMIZE_THRESHOLDS[model]
        kwargs.setdefault("score_threshold", floor if threshold is None else min(threshold, floor))
    return FaceDetector(model, device=device, **kwargs)


def default_anonymizer(device: torch.device | str = "cpu") -> tuple[FaceDetector, FillOptions, int]:
    """The measured default (:data:`gpuface.models.registry.ANONYMIZE_AUTO`): its detector, its temporal filling and
    its detection stride (pass the last as ``detect_every`` to :func:`anonymize_source`)."""
    a = ANONYMIZE_AUTO
    detector = anonymization_detector(a.detector, device=device, input_scale=a.input_scale)
    return detector, FillOptions(max_gap=a.max_gap, pad=a.temporal_pad), a.detect_every


class AnonymizeJob(Job):
    """Every face masked (detector → temporal hole-filling → mask → encode), with the boxes table ``boxes``, MGT's
    heat map and the container metadata on request; see :func:`anonymize_source` for the options. Counts faces
    masked (detected, or filled across a gap) as the result's ``faces``."""

    faces = "detections"

    def __init__(self, output: str | os.PathLike, options: AnonymizeOptions, threshold: float | None = None,
                 boxes_format: str | None = "csv", crf: int = 18, preset: str = "medium", overwrite: bool = False,
                 draw_scores: bool = False, fill: FillOptions | None = None, x264_options: dict | None = None,
                 keep_metadata: bool = False, heatmap: bool = False, detect_every: int = 1,
                 encoder: str = "libx264"):
        options.validate()
        if threshold is not None and not 0 <= threshold <= 1:
            raise InvalidOptionError(f"threshold must be in [0, 1], got {threshold}")
        if boxes_format not in (None, *DATA_FORMATS):
            raise InvalidOptionError(f"boxes format must be one of {', '.join(DATA_FORMATS)}, got {boxes_format!r}")
        if detect_every < 1:
            raise InvalidOptionError(f"detect_every must be >= 1, got {detect_every}")
        fill = fill or FillOptions()
        if fill.max_gap < detect_every - 1:
            fill = replace(fill, max_gap=detect_every - 1)
        self.output, self.options, self.threshold, self.boxes_format = output, options, threshold, boxes_format
        self.crf, self.preset, self.overwrite, self.draw_scores = crf, preset, overwrite, draw_scores
        self.fill, self.x264_options, self.keep_metadata = fill, x264_options, keep_metadata
        self.heatmap, self.detect_every, self.sink, self.encoder = heatmap, detect_every, None, encoder

    def start(self, run: Run) -> None:
        model = run.model.model
        self.min_score = ANONYMIZE_THRESHOLDS.get(model, 0.5) if self.threshold is None else self.threshold
        self.filler, self.rows, self.masked = TemporalFill(self.fill), [], 0
        self.path = free_path(self.output, self.overwrite)
        self.sink = Sink(self.path, run.is_image, run.info.fps, self.crf, self.preset,
                         audio_from=run.path if run.whole else None, x264_options=self.x264_options,
                         metadata_from=run.path if self.keep_metadata else None, encoder=self.encoder)

    def _emit(self, run: Run, ready) -> None:
        if ready is None:
            return
        batch, faces, source, distinct = ready
        out = anonymize(batch.frames, faces, self.options)
        if self.draw_scores and len(faces):
            out = draw_boxes(out, faces.select(source.to(faces.row.device) == 0))
        self.sink.write(out)
        if len(faces):   # the table: one row per face and frame (the mask was the union of every box)
            t = faces_rows(faces, batch, run.path, keypoints=False)
            t["time_ms"] = (t["time_s"] * 1000).round(3)
            t["source"] = [SOURCE_NAMES[s] for s in source.tolist()]
            t = t[distinct.numpy()]
            t["face"] = t.groupby("frame").cumcount()
            self.rows.append(t[BOXES_COLUMNS])
        self.masked += int(distinct.sum())  # faces masked: one per face and frame

    def step(self, run: Run, batch, faces: Faces) -> None:
        self._emit(run, self.filler.push(batch, faces.select(faces.scores >= self.min_score)))

    def finish(self, run: Run) -> None:
        self._emit(run, self.filler.flush())
        self.sink.close()
        res = run.result
        res.outputs.append(str(self.path))
        res.faces = self.masked
        table = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=BOXES_COLUMNS)
        res.tables["boxes"] = table
        stem = Path(self.path).stem
        if self.boxes_format:
            written = write_table(table, Path(self.path).with_name(f"{stem}_boxes.{self.boxes_format}"))
            res.outputs.append(str(written))
            res.table_files["boxes"] = str(written)
        if self.heatmap:
            heat = Path(self.path).with_name(f"{stem}_heatmap.png")
            res.outputs.append(str(write_face_heatmap(table, (run.info.height, run.info.width), heat)))

    def abort(self, run: Run) -> None:
        if self.sink is not None:
            self.sink.abort()


def anonymize_source(path: str, detector: FaceDetector, output: str | os.PathLike, options: AnonymizeOptions,
                     threshold: float | None = None, batch_size: int = 32, boxes_format: str | None = "csv",
                     selection: Selection | None = None, crf: int = 18, preset: str = "medium",
                     overwrite: bool = False, backend: str = "auto", draw_scores: bool = False,
                     fill: FillOptions | None = None, x264_options: dict | None = None, keep_metadata: bool = False,
                     heatmap: bool = False, detect_every: int = 1, quiet: bool = True,
                     encoder: str = "libx264") -> JobResult:
    """Anonymise every face of one video (or image) and write it with its boxes table.

    Args:
        output: the video (or image) file to write; an existing file gets a numbered name unless ``overwrite``.
        options: mode, mask shape and scale (:class:`AnonymizeOptions`).
        threshold: detection score (0–1) at which a face is masked; None: the detector's
            :data:`ANONYMIZE_THRESHOLDS` entry.
        boxes_format: 'csv' | 'tsv' | 'txt' (space-separated, MGT) | 'json' for ``<output stem>_boxes.<fmt>`` with
            columns ``frame, time_ms, face, x1, y1, x2, y2, score, source`` (every box masked; ``source`` is
            ``detected``, ``filled`` (gap filling) or ``padded`` (temporal padding)), or None for no table.
        selection: frames to process (a fragment or area crop; anonymised videos normally keep every frame).
        crf, preset: x264 settings; ``x264_options``: further libx264 options (deface ``--ffmpeg-config``).
        draw_scores: write each face's score above its box.
        fill: temporal gap filling / padding / isolated-detection suppression (:class:`FillOptions`; off: None).
        keep_metadata: copy the container metadata (video) or EXIF (image) of the source (deface
            ``--keep-metadata``).
        heatmap: also write ``<output stem>_heatmap.png``, the density of face centres over the video (MGT
            ``draw_heatmap``).
        encoder: ``libx264`` | ``h264_nvenc`` | ``hevc_nvenc`` | ``auto`` (:data:`gpuface.io.encode.ENCODERS`).
        detect_every: run the detector on every k-th frame of the stream only (frames 0, k, 2k, … counted from the
            first selected frame, whatever the batch size); the frames between are masked by gap filling, whose
            ``max_gap`` is raised to at least k - 1. 1: every frame.

    Returns:
        :class:`JobResult` with the paths written (``faces``: faces masked, detected or filled across a gap; the
        boxes table in ``tables["boxes"]``). Nothing is left behind on failure.

    Raises:
        InvalidOptionError: bad options. VideoDecodeError / VideoEncodeError: unreadable input, failed output.
    """
    job = AnonymizeJob(output, options, threshold, boxes_format, crf, preset, overwrite, draw_scores, fill,
                       x264_options, keep_metadata, heatmap, detect_every, encoder)
    return run_source(path, job, detector, batch_size, selection, backend, quiet)


def write_face_heatmap(boxes: pd.DataFrame, frame_size: tuple[int, int], path: str | os.PathLike,
                       resolution: int = 250, sigma: float = 0.02) -> Path:
    """MGT ``blur_faces``' face-position heat map: the density of face-box centres over a video, as a PNG.

    MGT estimates it with a k-nearest-neighbour density on a ``resolution``² grid; this bins the centres on a grid
    of ``resolution`` cells along the frame's long side (aspect kept) and smooths with a Gaussian of ``sigma`` ×
    the long side (Kornia), normalised to [0, 1], drawn with matplotlib's ``jet`` colour map.

    Args:
        boxes: table with ``x1, y1, x2, y2`` in frame pixels. frame_size: (H, W) px.

    Returns:
        The path written (atomically).
    """
    import kornia
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = frame_size
    long = max(h, w)
    gh, gw = max(round(resolution * h / long), 1), max(round(resolution * w / long), 1)
    grid = torch.zeros(gh * gw, device="cpu")
    if len(boxes):
        cx = torch.tensor(((boxes["x1"] + boxes["x2"]) / 2).to_numpy(), dtype=torch.float32, device="cpu")
        cy = torch.tensor(((boxes["y1"] + boxes["y2"]) / 2).to_numpy(), dtype=torch.float32, device="cpu")
        ix = (cx / w * gw).long().clamp(0, gw - 1)
        iy = (cy / h * gh).long().clamp(0, gh - 1)
        grid.index_add_(0, iy * gw + ix, torch.ones(len(ix), device="cpu"))
    s = max(sigma * resolution, 0.5)
    k = int(s * 3) * 2 + 1
    density = kornia.filters.gaussian_blur2d(grid.view(1, 1, gh, gw), (k, k), (s, s), border_type="constant")[0, 0]
    density = density / density.max().clamp(min=1e-12)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(p)
    try:
        plt.imsave(tmp, density.numpy(), cmap="jet", vmin=0, vmax=1, format="png")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


@dataclass
class AuditResult:
    """What :func:`audit_source` found.

    Attributes:
        frames: frames compared. reference_faces: faces the audit detector found in the original.
        leaked: of those, faces it still found in the anonymised output (IoU >= ``iou`` with an original face).
        leak_rate: ``leaked / reference_faces`` (0 when the original has no face).
        unmatched: faces found in the output at no face of the original (detector noise or a face it missed in the
            original; listed, not counted as leaks).
        table: one row per face found in the output: ``frame, time_s, x1, y1, x2, y2, score, leak``.
        outputs: files written (table, contact sheet).
    """

    original: str
    anonymised: str
    detector: str
    frames: int = 0
    reference_faces: int = 0
    leaked: int = 0
    unmatched: int = 0
    table: pd.DataFrame | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def leak_rate(self) -> float:
        return self.leaked / self.reference_faces if self.reference_faces else 0.0


def audit_detector_for(masking_detector: str) -> str:
    """The default audit detector: MTCNN (facenet-pytorch's arithmetic), or CenterFace when MTCNN drove the masks."""
    return "centerface" if masking_detector == "mtcnn" else "mtcnn"


class AuditJob(Job):
    """The leak audit as a job over the anonymised video (see :func:`audit_source`): the runner detects faces in its
    frames with the audit detector (every ``step``-th frame); the job reads the original in step from a second
    reader, detects its faces at the same frames and counts the output's faces that overlap one of the original's.
    ``result`` (an :class:`AuditResult`) is filled in :meth:`finish`, with the table, summary and contact sheet."""

    faces = "detections"

    def __init__(self, original: str, threshold: float, iou: float, batch_size: int, step: int,
                 table_path=None, sheet_path=None, worst: int = 12, backend: str = "auto",
                 reference_cache: dict | None = None):
        self.original, self.threshold, self.iou, self.batch_size = original, threshold, iou, batch_size
        self.detect_every, self.table_path, self.sheet_path, self.worst = step, table_path, sheet_path, worst
        self.backend, self.cache = backend, reference_cache

    def start(self, run: Run) -> None:
        detector = run.model
        self.result = AuditResult(self.original, run.path, detector.model)
        self.rows, self.heap = [], []   # heap of (leaks, best score, frame, thumbnail) for the contact sheet
        reader = open_source(self.original, backend=self.backend, device=detector.device)
        self.originals = iter(reader.batches(self.batch_size, device=detector.device))

    def step(self, run: Run, b, found: Faces) -> None:
        a = next(self.originals, None)      # the original's frames at the same positions (extra frames: ignored)
        if a is None:
            return
        detector, res, n = run.model, self.result, min(len(a), len(b))
        pick = torch.arange((-run.position) % self.detect_every, n, self.detect_every, device="cpu")
        if len(pick) == 0:
            return
        key = (self.original, detector.model, self.threshold, self.detect_every, self.batch_size, run.position + n)
        if self.cache is not None and key in self.cache:
            ref = self.cache[key]
        else:
            ref = detector(a.frames[pick.to(a.frames.device)]).to("cpu")
            ref = replace(ref, row=pick[ref.row])
            if self.cache is not None:
                self.cache[key] = ref
        ref = ref.select(ref.scores >= self.threshold)
        found = found.to("cpu")
        found = found.select((found.scores >= self.threshold) & (found.row < n))
        leak = torch.zeros(len(found), dtype=torch.bool, device="cpu")
        if len(ref) and len(found):
            same = (box_iou(found.boxes, ref.boxes) >= self.iou) & (found.row[:, None] == ref.row[None, :])
            leak = same.any(1)
        res.frames += len(pick)
        res.reference_faces += len(ref)
        res.leaked += min(int(leak.sum()), len(ref))
        res.unmatched += int((~leak).sum())
        if len(found):
            t = faces_rows(found, b, run.path, keypoints=False)
            t["leak"] = leak.numpy()
            self.rows.append(t[AUDIT_COLUMNS])
            if self.sheet_path is not None:
                for i in torch.unique(found.row[leak]).tolist():
                    sel = (found.row == i) & leak
                    item_key = (int(sel.sum()), float(found.scores[sel].max()), int(b.index[i]))
                    if len(self.heap) < self.worst or item_key > self.heap[0][:3]:
                        sub = found.select(sel)
                        sub = replace(sub, row=torch.zeros_like(sub.row))
                        thumb = draw_boxes(b.frames[i:i + 1].cpu(), sub, colour="red")[0]
                        item = (*item_key, thumb)
                        push = heapq.heappush if len(self.heap) < self.worst else heapq.heapreplace
                        push(self.heap, item)

    def finish(self, run: Run) -> None:
        res = self.result
        res.table = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=AUDIT_COLUMNS)
        if self.table_path is not None:
            res.outputs.append(str(write_table(res.table, self.table_path)))
            summary = {"original": str(self.original), "anonymised": str(run.path), "detector": res.detector,
                       "threshold": self.threshold, "iou": self.iou, "step": self.detect_every, "frames": res.frames,
                       "reference_faces": res.reference_faces, "leaked": res.leaked, "leak_rate": res.leak_rate,
                       "unmatched": res.unmatched}
            summary_path = Path(self.table_path).with_name(f"{Path(self.table_path).stem}_summary.json")
            res.outputs.append(str(write_text(json.dumps(summary, indent=1), summary_path)))
        if self.sheet_path is not None:
            res.outputs.append(str(_contact_sheet(sorted(self.heap, reverse=True), self.sheet_path)))
        run.result.outputs += res.outputs     # removed by the runner if a later job fails
        run.result.tables["audit"] = res.table


def audit_source(original: str, anonymised: str, detector: FaceDetector, masking_detector: str | None = None,
                 threshold: float | None = None, iou: float = 0.3, batch_size: int = 16,
                 table_path: str | os.PathLike | None = None, sheet_path: str | os.PathLike | None = None,
                 worst: int = 12, step: int = 1, backend: str = "auto", reference_cache: dict | None = None,
                 quiet: bool = True) -> AuditResult:
    """Leak audit: run ``detector`` on an original and its anonymised version, frame by frame (:class:`AuditJob`
    through :func:`~gpuface.jobs.runner.run_source`: the OOM guard, progress and cleanup of every job).

    Args:
        original, anonymised: the two videos (or images); frames are paired in order (an anonymised video has the
            source's frame count; extra frames on either side are ignored and reported by ``frames``).
        detector: the audit detector; must differ from ``masking_detector`` (the one that drove the masks).
        threshold: score at which a face counts; None: :data:`AUDIT_THRESHOLDS`.
        iou: overlap at which a face in the output is the same as a face of the original.
        table_path: write the found faces there (csv/tsv/json/parquet), and the counts and leak rate beside it as
            ``<table stem>_summary.json``. sheet_path: a PNG contact sheet of the ``worst`` frames (most leaked faces,
            highest scores), boxes drawn in red.
        step: audit every step-th frame pair only (a sampled audit; 1: every frame).
        reference_cache: a dict that keeps the original's detections between calls (keyed by original, detector,
            threshold, step and batch), for audits of several outputs of one original.

    Returns:
        :class:`AuditResult`.

    Raises:
        InvalidOptionError: the audit detector is the masking detector, or a bad threshold.
    """
    if masking_detector is not None and detector.model == masking_detector:
        raise InvalidOptionError(f"the audit detector must differ from the one that drove the masks "
                                 f"({masking_detector})")
    threshold = AUDIT_THRESHOLDS.get(detector.model, 0.5) if threshold is None else threshold
    if not 0 <= threshold <= 1:
        raise InvalidOptionError(f"audit threshold must be in [0, 1], got {threshold}")
    if step < 1:
        raise InvalidOptionError(f"audit step must be >= 1, got {step}")
    job = AuditJob(original, threshold, iou, batch_size, step, table_path, sheet_path, worst, backend,
                   reference_cache)
    run_source(anonymised, job, detector, batch_size, backend=backend, quiet=quiet)
    return job.result


def _contact_sheet(items, path: str | os.PathLike, width: int = 320) -> Path:
    """Tile frames (with their boxes drawn) into one image, each scaled to ``width`` px wide, labelled by frame."""
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    if not items:
        tiles = torch.zeros(1, 3, 90, 160, dtype=torch.uint8, device="cpu")  # an empty sheet: nothing leaked
    else:
        thumbs = []
        for *_, frame in items:
            h, w = frame.shape[-2:]
            thumbs.append(F.interpolate(frame[None].float(), size=(max(round(h * width / w), 1), width),
                                        mode="bilinear", antialias=True, align_corners=False)[0])
        tiles = torch.stack(thumbs).round().clamp(0, 255).to(torch.uint8)
    grid = make_grid(tiles, nrow=4, padding=4, pad_value=255)
    return write_image(path, grid)


__all__ = ["ANONYMIZE_THRESHOLDS", "AUDIT_THRESHOLDS", "default_anonymizer", "anonymization_detector", "AuditJob",
           "anonymize_source", "audit_source",
           "audit_detector_for", "AuditResult", "write_face_heatmap", "DATA_FORMATS"]
