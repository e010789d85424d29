"""Jobs over one source at a time, streaming batches: detect → table; detect → anonymise → video + table.

Memory is bounded by the batch size, never by the video length. Outputs are written under temporary names
and renamed when complete; a failure removes them. Corpus runs (many inputs) call these per item and turn
an exception into a failed item (see :func:`run_many`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from .detect import FaceDetector
from .errors import GpufaceError, InvalidOptionError
from .io.decode import Selection
from .io.encode import PRESETS, VideoWriter, free_path, write_image
from .io.images import ImageReader
from .io.sources import open_source
from .outputs import faces_rows, landmarks_rows, write_text


@dataclass
class JobResult:
    """What one job did to one source: counts, seconds, outputs, or the error that stopped it."""

    source: str
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    tables: dict = field(default_factory=dict)  # extra tables a job produced (name -> DataFrame)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class OomGuard:
    """Runs a model on a batch of frames, halving the chunk size on CUDA out-of-memory until it fits.

    ``guard(model, frames, *args)`` calls ``model(chunk, *args)`` on consecutive chunks of at most ``limit``
    frames (all frames at first) and concatenates the :class:`~gpuface.types.Faces`; after an out-of-memory
    error the cache is emptied, the limit halves and the batch is retried; the limit stays for later batches.
    Chunks are consecutive, so a tracking state passed in ``args`` stays valid. A single frame that does not
    fit re-raises the error.
    """

    def __init__(self):
        self.limit: int | None = None

    def __call__(self, model, frames: torch.Tensor, *args):
        from .types import Faces

        while True:
            size = frames.shape[0] if self.limit is None else min(self.limit, frames.shape[0])
            try:
                parts = [model(frames[i:i + size], *args) for i in range(0, frames.shape[0], size)]
                return parts[0] if len(parts) == 1 else Faces.cat(parts, list(range(0, frames.shape[0], size)))
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                torch.cuda.empty_cache()
                self.limit = max(size // 2, 1)


class _Sink:
    """Where a job's output frames go: an image (a still source) or a video opened at the first batch with that
    batch's frame size, both written atomically; :meth:`abort` removes whatever was started."""

    def __init__(self, path: str | os.PathLike, is_image: bool, fps, crf: int = 18, preset: str = "medium",
                 audio_from: str | None = None, x264_options: dict | None = None, metadata_from: str | None = None):
        if not 0 <= crf <= 51 or preset not in PRESETS:
            raise InvalidOptionError(f"crf must be in 0..51 and preset one of {', '.join(PRESETS)}")
        self.path, self.is_image, self.fps, self.metadata_from = Path(path), is_image, fps, metadata_from
        metadata = None
        if metadata_from is not None and not is_image:
            import av

            with av.open(str(metadata_from)) as src:
                metadata = dict(src.metadata)
        self.options = {"crf": crf, "preset": preset, "audio_from": audio_from, "x264_options": x264_options,
                        "metadata": metadata}
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


def _progress(total: int | None, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=quiet, leave=False, dynamic_ncols=True)


def detect_source(path: str, detector: FaceDetector, batch_size: int = 32, selection: Selection | None = None,
                  backend: str = "auto", quiet: bool = True) -> tuple[pd.DataFrame, JobResult]:
    """Detect faces in every selected frame of one video or image.

    Returns:
        (table, result): one row per (frame, face) as :func:`gpuface.outputs.faces_rows`, and the job summary.

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    t0 = time.perf_counter()
    guard = OomGuard()
    reader = open_source(path, backend=backend, device=detector.device)
    parts, result = [], JobResult(path)
    with _progress(reader.info.num_frames, os.path.basename(path), quiet) as bar:
        for batch in reader.batches(batch_size, selection, device=detector.device):
            faces = guard(detector, batch.frames)
            parts.append(faces_rows(faces, batch, path))
            result.frames += len(batch)
            result.faces += len(faces)
            bar.update(len(batch))
    result.seconds = time.perf_counter() - t0
    return pd.concat(parts, ignore_index=True), result


def landmarks_source(path: str, landmarker, batch_size: int = 32, selection: Selection | None = None,
                     backend: str = "auto", draw: str | os.PathLike | None = None,
                     draw_regions: tuple[str, ...] = ("face_oval", "eyes", "brows", "lips"), overwrite: bool = False,
                     quiet: bool = True) -> tuple[pd.DataFrame, JobResult]:
    """Landmark (478 points, presence, blendshapes) every face in every selected frame of one video or image.

    Args:
        landmarker: a :class:`gpuface.landmarks.FaceLandmarker`; tracking state is per video, stills are
            landmarked independently.
        draw: also write this video (or image) with the mesh points and ``draw_regions`` tinted, for inspection.

    Returns:
        (table, result): rows as :func:`gpuface.outputs.landmarks_rows`, and the job summary.
    """
    t0 = time.perf_counter()
    guard = OomGuard()
    reader = open_source(path, backend=backend, device=landmarker.device)
    is_image = isinstance(reader, ImageReader)
    state = None if is_image else landmarker.new_state()
    parts, result = [], JobResult(path)
    whole = selection is None or selection == Selection()   # audio only fits the whole video, frame for frame
    sink = None if draw is None else _Sink(free_path(draw, overwrite), is_image, reader.info.fps, preset="veryfast",
                                           audio_from=path if whole and not is_image else None)
    try:
        with _progress(reader.info.num_frames, os.path.basename(path), quiet) as bar:
            for batch in reader.batches(batch_size, selection, device=landmarker.device):
                faces = guard(landmarker, batch.frames, state)
                parts.append(landmarks_rows(faces, batch, path))
                if sink is not None:
                    sink.write(draw_landmarks(batch.frames, faces, draw_regions))
                result.frames += len(batch)
                result.faces += len(faces)
                bar.update(len(batch))
        if sink is not None:
            sink.close()
            result.outputs.append(str(sink.path))
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    result.seconds = time.perf_counter() - t0
    return pd.concat(parts, ignore_index=True), result


def manipulate_source(path: str, spec, landmarker, output: str | os.PathLike, batch_size: int = 32,
                      crf: int = 18, preset: str = "medium", overwrite: bool = False, backend: str = "auto",
                      quiet: bool = True) -> JobResult:
    """Apply a layer spec (:mod:`gpuface.manipulate.layers`) to every face of one video or image.

    Writes the manipulated video (or image) and, beside it, ``<output stem>.json``: the spec with every
    parameter, the seed, package versions, the input's sha256, frame counts (including frames written
    unchanged because no face was found) and the temporal order when the spec shuffles frames. Audio is copied
    unless frames are shuffled. Nothing is left behind on failure.

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    import json

    import kornia

    from . import __version__
    from .fetch import sha256_file
    from .manipulate.layers import LayerStack
    from .manipulate.temporal import frame_order, frames_left_out, shuffled_block_array

    t0 = time.perf_counter()
    guard = OomGuard()
    reader = open_source(path, backend=backend, device=landmarker.device)
    is_image = isinstance(reader, ImageReader)
    info = reader.info
    stack = LayerStack(spec)
    stack.reset(path)
    selection, log_order = None, None
    if spec.temporal and not is_image:
        t = {"method": "random", "block_duration": 1.0, "drop_last": True, **spec.temporal}
        order = frame_order(info.num_frames, float(info.fps), t["method"], t["block_duration"], spec.seed, path,
                            t["drop_last"])
        selection = Selection(frames=tuple(order.tolist()))
        dropped = frames_left_out(info.num_frames, float(info.fps), t["method"], t["block_duration"], t["drop_last"])
        log_order = {"blocks": shuffled_block_array(info.num_frames, float(info.fps), t["method"],
                                                    t["block_duration"], spec.seed, path, t["drop_last"]).tolist(),
                     "frames": order.tolist(), "frames_dropped": dropped}
        if dropped > 0:
            import logging
            logging.getLogger("gpuface").warning(
                "gpuface: %s: the temporal shuffle leaves out %d frame(s) (%s; a partial last block with "
                "drop_last); set temporal drop_last: false to keep them", path, dropped, t["method"])
    output = free_path(output, overwrite)
    log_path = Path(output).with_suffix(".json")
    state = None if is_image else landmarker.new_state()
    sink = _Sink(output, is_image, info.fps, crf, preset, audio_from=None if selection else path)
    result, no_face, position = JobResult(path), 0, 0
    try:
        with _progress(len(selection.frames) if selection else info.num_frames, os.path.basename(path),
                       quiet) as bar:
            for batch in reader.batches(batch_size, selection, device=landmarker.device):
                faces = guard(landmarker, batch.frames, state)
                # timing runs on the output timeline (the source's, unless frames are shuffled)
                pts = (batch.pts if selection is None else
                       torch.arange(position, position + len(batch), dtype=torch.float64) / float(info.fps))
                out = stack.apply(batch.frames, faces, batch.index, pts, info.duration)
                no_face += len(batch) - int(torch.unique(faces.frame).numel())
                sink.write(out)
                position += len(batch)
                result.frames += len(batch)
                result.faces += len(faces)
                bar.update(len(batch))
        sink.close()
        result.outputs.append(str(output))
        result.seconds = time.perf_counter() - t0
        log = {"input": os.path.abspath(path), "input_sha256": sha256_file(path), "output": os.path.abspath(output),
               "seed": spec.seed, "layers": [layer.describe() for layer in spec.layers], "temporal": spec.temporal,
               "temporal_order": log_order, "frames": result.frames, "frames_without_face": no_face,
               "faces": result.faces, "audio_copied": bool(not is_image and selection is None),
               "detector": landmarker.detector.model, "device": str(landmarker.device), "seconds": result.seconds,
               "versions": {"gpuface": __version__, "torch": torch.__version__, "kornia": kornia.__version__}}
        result.outputs.append(str(write_text(json.dumps(log, indent=1), log_path)))
    except BaseException:
        sink.abort()
        for p in result.outputs:
            Path(p).unlink(missing_ok=True)
        raise
    return result


def analyse_source(path: str, landmarker, batch_size: int = 32, selection: Selection | None = None,
                   colour_regions: tuple[str, ...] = ("face_skin", "cheeks", "nose", "chin"), space: str = "rgb",
                   flow: bool = True, backend: str = "auto", quiet: bool = True, dense: bool = False,
                   flow_video: str | os.PathLike | None = None, crf: int = 18, preset: str = "medium"):
    """Per-frame measurements of one video: region colour means (every face) and the Lucas–Kanade flow of the
    first face's landmarks between consecutive selected frames (pairs across batch borders included); with
    ``dense``, also the dense flow of every pixel summarised inside the face ovals.

    ``flow_video``: also write the flow visualisation there (:func:`gpuface.analysis.draw_flow`: each frame
    shows the flow from the previous selected frame — the dense colour code with ``dense``, the landmarks'
    vectors with ``flow``), written atomically.

    Returns:
        ``(colour_table, flow_table, result)`` (pandas DataFrames; ``flow_table`` is None without ``flow``;
        the dense summary table is ``result.tables["dense_flow"]``).
    """
    import kornia

    from .analysis import dense_flow, dense_flow_summary, draw_flow, landmark_flow, region_colour_means
    from .regions import region_masks

    t0 = time.perf_counter()
    guard = OomGuard()
    reader = open_source(path, backend=backend, device=landmarker.device)
    state = None if isinstance(reader, ImageReader) else landmarker.new_state()
    if flow_video is not None and state is None:
        raise InvalidOptionError("a flow video needs a video input")
    sink = _Sink(flow_video, False, reader.info.fps, crf, preset) if flow_video is not None else None
    colours, flows, denses, result, carry, dense_carry = [], [], [], JobResult(path), None, None
    try:
        with _progress(reader.info.num_frames, os.path.basename(path), quiet) as bar:
            for batch in reader.batches(batch_size, selection, device=landmarker.device):
                faces = guard(landmarker, batch.frames, state)
                colours.append(region_colour_means(batch, faces, colour_regions, space, video=path))
                vis_dense = vis_points = None
                if dense and state is not None:
                    grey = kornia.color.rgb_to_grayscale(batch.frames.float() / 255)
                    masks = region_masks(faces.landmarks, faces.frame, "face_oval", len(batch),
                                         tuple(grey.shape[-2:]))
                    seq = _after(dense_carry, [grey, masks, batch.index, batch.pts])
                    if seq[0].shape[0] > 1:
                        px = dense_flow(seq[0][:-1], seq[0][1:])
                        denses.append(dense_flow_summary(px, seq[1][:-1], seq[2][:-1], seq[3][:-1]))
                        if sink is not None:  # frame i shows the flow from the frame before it (none for frame 0)
                            vis_dense = torch.cat([px.new_zeros(len(batch) - px.shape[0], *px.shape[1:]), px])
                    dense_carry = [t[-1:] for t in seq]
                if flow and state is not None:
                    first = torch.ones(len(faces), dtype=torch.bool, device=faces.frame.device)
                    first[1:] = faces.frame[1:] != faces.frame[:-1]          # the first face of each frame
                    f = faces.select(first)
                    if len(f):  # pairs of consecutive rows: frames without a face are skipped
                        seq = _after(carry, [batch.frames[f.frame], f.landmarks, batch.index[f.frame.cpu()],
                                             batch.pts[f.frame.cpu()]])
                        table, start, move, ok = landmark_flow(*seq, return_points=True)
                        flows.append(table)
                        if sink is not None:
                            later = f.frame[len(f) - start.shape[0]:]         # the frame each pair ends on
                            keep = ok.reshape(-1)
                            vis_points = (start.reshape(-1, 2)[keep], move.reshape(-1, 2)[keep],
                                          later[:, None].expand(-1, start.shape[1]).reshape(-1)[keep])
                        carry = [t[-1:] for t in seq]
                    else:
                        carry = None
                if sink is not None:
                    sink.write(draw_flow(batch.frames, vis_dense, *(vis_points or (None, None, None))))
                result.frames += len(batch)
                result.faces += len(faces)
                bar.update(len(batch))
        if sink is not None:
            sink.close()
            result.outputs.append(str(flow_video))
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    result.seconds = time.perf_counter() - t0
    flow_table = pd.concat(flows, ignore_index=True) if flows else (pd.DataFrame() if flow else None)
    if dense:
        result.tables["dense_flow"] = pd.concat(denses, ignore_index=True) if denses else pd.DataFrame()
    return pd.concat(colours, ignore_index=True), flow_table, result


def _after(carry: list[torch.Tensor] | None, seq: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor of ``seq`` preceded by its last row from the previous batch (``carry``), so that pairs of
    consecutive frames span batch borders."""
    return seq if carry is None else [torch.cat([c.to(t.device), t]) for c, t in zip(carry, seq)]


def draw_landmarks(frames: torch.Tensor, faces, regions: tuple[str, ...] = (), alpha: float = 0.35) -> torch.Tensor:
    """Frames (B, 3, H, W) uint8 with each region tinted (one colour per region) and the 478 points drawn as
    2×2 px dots, for all faces of the batch in tensor ops."""
    from .regions import region_masks

    palette = torch.tensor([[255, 64, 64], [64, 160, 255], [255, 200, 0], [255, 0, 200], [0, 220, 120]],
                           dtype=torch.float32, device=frames.device)
    if len(faces) == 0:
        return frames
    b, _, h, w = frames.shape
    out = frames.float()
    for i, name in enumerate(regions):
        m = region_masks(faces.landmarks, faces.frame, name, b, (h, w)).mul_(alpha)
        out.mul_(1 - m).add_(palette[i % len(palette)].view(1, 3, 1, 1) * m)
    pts = faces.landmarks[..., :2].floor().long()
    frame = faces.frame[:, None].expand(-1, pts.shape[1]).reshape(-1)
    green = torch.tensor([0.0, 255.0, 0.0], device=frames.device)
    for dy in (0, 1):
        for dx in (0, 1):
            x = (pts[..., 0] + dx).clamp(0, w - 1).reshape(-1)
            y = (pts[..., 1] + dy).clamp(0, h - 1).reshape(-1)
            out[frame, :, y, x] = green
    return out.round_().clamp_(0, 255).to(torch.uint8)


def default_output(path: str, out: str | None, suffix: str, ext: str | None = None) -> Path:
    """``<stem><suffix><ext>`` beside ``path``, or in the folder ``out``, or ``out`` itself if it has an extension."""
    src = Path(path)
    name = f"{src.stem}{suffix}{ext or src.suffix}"
    if out is None:
        return src.with_name(name)
    o = Path(out)
    if o.suffix and not o.is_dir():
        return o
    return o / name


def draw_boxes(frames: torch.Tensor, faces, color: str = "lime") -> torch.Tensor:
    """Draw each face's box and score on its frame (torchvision ``draw_bounding_boxes``; CPU, per frame with
    faces: a visual check, not a hot path). uint8 (B, 3, H, W) in and out."""
    from torchvision.utils import draw_bounding_boxes

    out = frames.clone()
    f = faces.to("cpu")
    for i in torch.unique(f.frame).tolist():
        sel = f.frame == i
        labels = [f"{s:.2f}" for s in f.scores[sel].tolist()]
        out[i] = draw_bounding_boxes(frames[i].cpu(), f.boxes[sel], labels=labels, colors=color, width=3,
                                     font_size=24).to(frames.device)
    return out


def run_many(items: Iterable[str], job: Callable[[str], JobResult],
             on_error: Callable[[str, Exception], None] | None = None) -> list[JobResult]:
    """Run ``job`` on each item; a :class:`GpufaceError` (or OSError) in one item becomes a failed
    :class:`JobResult` (``error`` set) and the others still run."""
    results = []
    for item in items:
        try:
            results.append(job(item))
        except (GpufaceError, OSError) as e:
            if on_error:
                on_error(item, e)
            results.append(JobResult(item, error=f"{e.__class__.__name__}: {e}"))
    return results
