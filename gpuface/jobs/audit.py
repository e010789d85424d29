"""The leak audit: a second detector — never the one that drove the masks — run on the original and on its
anonymised version, frame by frame, reporting the faces it still finds in the output: per frame and box, the leak
rate (faces found in the output at a face of the original / faces found in the original) and a contact sheet of the
worst frames. No tool we replace measures its own leaks.

It is a job over the anonymised video with the original read in step by a second reader, so
:func:`~gpuface.jobs.runner.run_source` is the only batch loop (its OOM guard, progress and cleanup cover the audit).
It needs two inputs, so a spec cannot run it: ``gpuface audit`` and ``gpuface anonymize --audit`` do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import Job
from gpuface.jobs.registry import register
from gpuface.jobs.schema import DETECTORS, choice, integer, number
from gpuface.models.registry import detector_config

#: Score at or above which the audit counts a face, per detector (the model registry's ``audit`` use).
AUDIT_THRESHOLDS = {k: detector_config(k).threshold("audit") for k in DETECTORS}
AUDIT_COLUMNS = ["frame", "time_s", "x1", "y1", "x2", "y2", "score", "leak"]


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
    table: Any = None   # a pandas DataFrame
    outputs: list[str] = field(default_factory=list)

    @property
    def leak_rate(self) -> float:
        return self.leaked / self.reference_faces if self.reference_faces else 0.0


def audit_detector_for(masking_detector: str) -> str:
    """The default audit detector: MTCNN (facenet-pytorch's arithmetic), or CenterFace when MTCNN drove the masks."""
    return "centerface" if masking_detector == "mtcnn" else "mtcnn"


@register("audit", "leak audit: faces a second detector still finds in an anonymised video", spec=False)
class AuditJob(Job):
    """The leak audit as a job over the anonymised video (see :func:`audit_source`): the runner detects faces in its
    frames with the audit detector (every ``step``-th frame); the job reads the original in step from a second
    reader, detects its faces at the same frames and counts the output's faces that overlap one of the original's.
    ``result`` (an :class:`AuditResult`) is filled in :meth:`finish`, with the table, summary and contact sheet."""

    faces = "detections"

    @dataclass(frozen=True)
    class Options:
        detector: str | None = choice("audit detector (default mtcnn, or centerface when mtcnn drove the masks); "
                                      "never the one that drove the masks", DETECTORS)
        masked_with: str | None = choice("the detector that drove the masks (refused as the audit detector)",
                                         DETECTORS)
        threshold: float | None = number("score at which a face counts (default: the detector's audit score: "
                                         "mtcnn 0.9, others 0.5)", hi=1.0)
        iou: float = number("overlap at which a face in the output is a face of the original", 0.3, hi=1.0,
                            open_lo=True)
        step: int = integer("audit every n-th frame pair only", 1)

    def __init__(self, original: str, threshold: float, iou: float, batch_size: int, step: int,
                 table_path=None, sheet_path=None, worst: int = 12, backend: str = "auto",
                 reference_cache: dict | None = None):
        self.original, self.threshold, self.iou, self.batch_size = original, threshold, iou, batch_size
        self.face_stride, self.table_path, self.sheet_path, self.worst = step, table_path, sheet_path, worst
        self.backend, self.cache = backend, reference_cache

    def start(self, run) -> None:
        from gpuface.io.sources import open_source

        detector = run.model
        self.result = AuditResult(self.original, run.path, detector.model)
        self.rows, self.heap = [], []   # heap of (leaks, best score, frame, thumbnail) for the contact sheet
        reader = open_source(self.original, backend=self.backend, device=detector.device)
        self.originals = iter(reader.batches(self.batch_size, device=detector.device))

    def step(self, run, b, found) -> None:
        import heapq

        import torch
        from gpuface.ops.boxes import box_iou

        from gpuface.jobs.runner import on_stride
        from gpuface.ops.draw import draw_boxes
        from gpuface.stages.tables import faces_rows

        a = next(self.originals, None)      # the original's frames at the same positions (extra frames: ignored)
        if a is None:
            return
        detector, res, n = run.model, self.result, min(len(a), len(b))
        pick = on_stride(run.position, n, self.face_stride)
        if len(pick) == 0:
            return
        key = (self.original, detector.model, self.threshold, self.face_stride, self.batch_size, run.position + n)
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

    def finish(self, run) -> None:
        import json

        import pandas as pd

        from gpuface.stages.tables import write_table, write_text

        res = self.result
        res.table = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=AUDIT_COLUMNS)
        if self.table_path is not None:
            res.outputs.append(str(write_table(res.table, self.table_path)))
            summary = {"original": str(self.original), "anonymised": str(run.path), "detector": res.detector,
                       "threshold": self.threshold, "iou": self.iou, "step": self.face_stride, "frames": res.frames,
                       "reference_faces": res.reference_faces, "leaked": res.leaked, "leak_rate": res.leak_rate,
                       "unmatched": res.unmatched}
            summary_path = Path(self.table_path).with_name(f"{Path(self.table_path).stem}_summary.json")
            res.outputs.append(str(write_text(json.dumps(summary, indent=1), summary_path)))
        if self.sheet_path is not None:
            res.outputs.append(str(_contact_sheet(sorted(self.heap, reverse=True), self.sheet_path)))
        run.result.outputs += res.outputs     # removed by the runner if a later job fails
        run.result.tables["audit"] = res.table


def audit_source(original: str, anonymised: str, detector, masking_detector: str | None = None,
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
    from gpuface.jobs.runner import run_source

    job = AuditJob(original, threshold, iou, batch_size, step, table_path, sheet_path, worst, backend,
                   reference_cache)
    run_source(anonymised, job, detector, batch_size, backend=backend, quiet=quiet)
    return job.result


def _contact_sheet(items, path: str | os.PathLike, width: int = 320) -> Path:
    """Tile frames (with their boxes drawn) into one image, each scaled to ``width`` px wide, labelled by frame."""
    import torch
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
    from gpuface.io.encode import write_image

    return write_image(path, grid)


__all__ = ["AUDIT_THRESHOLDS", "AuditJob", "AuditResult", "audit_source", "audit_detector_for"]
