"""The ``analyse`` job: per-frame measurements of the faces (PyFAME's analyses): region colour means, the optical
flow of the landmarks and, on request, dense optical flow."""
from __future__ import annotations

import os
from dataclasses import dataclass

from gpuface.core.errors import InvalidOptionError
from gpuface.jobs.base import Job, check_regions, output_path
from gpuface.jobs.registry import register
from gpuface.jobs.schema import LandmarkerOptions, SelectionOptions, boolean, choice, option

COLOUR_REGIONS = ("face_skin", "cheeks", "nose", "chin")


@register("analyse", "region colour means and optical flow per frame",
          tables={"colour_means": "colour_means.parquet", "landmark_flow": "landmark_flow.parquet",
                  "dense_flow": "dense_flow.parquet"})
class AnalyseJob(Job):
    """Per-frame measurements: region colour means of every face (table ``colour_means``), the Lucas–Kanade flow
    of the first face's landmarks between consecutive selected frames (``landmark_flow``; pairs across batch
    borders included) and, with ``dense``, the dense flow of every pixel summarised inside the face ovals
    (``dense_flow``). ``flow_video``: also write the flow visualisation there (:func:`gpuface.ops.analysis.draw_flow`:
    each frame shows the flow from the previous selected frame)."""

    @dataclass(frozen=True)
    class Options(SelectionOptions, LandmarkerOptions):
        regions: tuple = option("list", "regions (or expressions) whose mean colour is measured",
                                list(COLOUR_REGIONS))
        space: str = choice("colour space", ("rgb", "hsv", "lab", "grey"), "rgb")
        flow: bool = boolean("the Lucas-Kanade flow of the landmarks", True)
        dense: bool = boolean("also dense optical flow of every pixel, summarised in the face oval")
        flow_points: str = choice("points the sparse flow follows: landmarks (the first face's FaceMesh points, each "
                                  "frame) or corners (PyFAME's: Shi-Tomasi corners in the first face's oval, followed "
                                  "until lost)", ("landmarks", "corners"), "landmarks")
        dense_method: str = choice("dense flow: lk (batched Lucas-Kanade, any device) or farneback (OpenCV's, "
                                   "PyFAME's parameters: tables comparable with PyFAME's)", ("lk", "farneback"), "lk")
        flow_video: bool = boolean("also write <stem>_flow.mp4: landmark vectors (and the dense colour code with "
                                   "dense) over the frame")

    @classmethod
    def check(cls, pipeline, o) -> None:
        check_regions(o.regions)

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        from gpuface.io.encode import free_path
        from gpuface.io.images import is_image

        video = None
        if o.flow_video and not is_image(path):
            video = free_path(output_path(path, out_dir, "_flow", ".mp4"), overwrite)
            video.parent.mkdir(parents=True, exist_ok=True)
        return cls(tuple(o.regions), o.space, o.flow, o.dense, video, dense_method=o.dense_method,
                   flow_points=o.flow_points)

    def __init__(self, colour_regions: tuple[str, ...] = COLOUR_REGIONS, space: str = "rgb",
                 flow: bool = True, dense: bool = False, flow_video: str | os.PathLike | None = None, crf: int = 18,
                 preset: str = "medium", dense_method: str = "lk", flow_points: str = "landmarks"):
        self.colour_regions, self.space, self.flow, self.dense = colour_regions, space, flow, dense
        self.flow_points = flow_points
        from gpuface.ops.analysis import dense_flow, farneback_flow

        self.dense_fn = {"lk": dense_flow, "farneback": farneback_flow}[dense_method]
        self.flow_video, self.crf, self.preset = flow_video, crf, preset
        self.sink = None

    def start(self, run) -> None:
        from gpuface.jobs.runner import Sink

        if self.flow_video is not None and run.is_image:
            raise InvalidOptionError("a flow video needs a video input")
        self.sink = None if self.flow_video is None else \
            Sink(self.flow_video, False, run.info.fps, self.crf, self.preset)
        self.colours, self.flows, self.denses, self.carry, self.dense_carry = [], [], [], None, None
        self.corners = None       # corners mode: the points still followed (None: not found yet)

    def step(self, run, batch, faces) -> None:
        import kornia
        import torch

        from gpuface.ops.analysis import dense_flow_summary, draw_flow, landmark_flow, region_colour_means
        from gpuface.ops.regions import region_masks

        self.colours.append(region_colour_means(batch, faces, self.colour_regions, self.space, video=run.path))
        vis_dense = vis_points = None
        if self.dense and not run.is_image:
            grey = kornia.color.rgb_to_grayscale(batch.frames.float() / 255)
            masks = region_masks(faces.landmarks, faces.row, "face_oval", len(batch), tuple(grey.shape[-2:]))
            seq = _after(self.dense_carry, [grey, masks, batch.index, batch.pts])
            if seq[0].shape[0] > 1:
                px = self.dense_fn(seq[0][:-1], seq[0][1:])
                self.denses.append(dense_flow_summary(px, seq[1][:-1], seq[2][:-1], seq[3][:-1]))
                if self.sink is not None:  # frame i shows the flow from the frame before it (none for frame 0)
                    vis_dense = torch.cat([px.new_zeros(len(batch) - px.shape[0], *px.shape[1:]), px])
            self.dense_carry = [t[-1:] for t in seq]
        if self.flow and not run.is_image and self.flow_points == "corners":
            self._follow_corners(batch, faces)
        elif self.flow and not run.is_image:
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

    def _follow_corners(self, batch, faces) -> None:
        """PyFAME's sparse flow: corners found once, in the first face's oval, then followed frame after frame."""
        import kornia

        from gpuface.ops.analysis import CORNERS, shi_tomasi_corners, track_points
        from gpuface.ops.regions import region_masks

        grey = kornia.color.rgb_to_grayscale(batch.frames.float() / 255)
        seq = [grey, batch.index, batch.pts]
        if self.corners is None:
            if len(faces) == 0:
                return
            r = int(faces.row[0])                      # the first frame with a face: once per video
            mask = region_masks(faces.landmarks[:1], faces.row[:1] * 0, "face_oval", 1, tuple(grey.shape[-2:]))
            self.corners = shi_tomasi_corners(grey[r], mask[0], **CORNERS)
            seq = [t[r:] for t in seq]
        else:
            seq = _after(self.carry, seq)
        table, self.corners = track_points(seq[0], self.corners, seq[1], seq[2], window=CORNERS["window"],
                                           levels=CORNERS["levels"], iterations=CORNERS["iterations"])
        self.flows.append(table)
        self.carry = [t[-1:] for t in seq]

    def finish(self, run) -> None:
        import pandas as pd

        if self.sink is not None:
            self.sink.close()
            run.result.outputs.append(str(self.flow_video))
        tables = run.result.tables
        tables["colour_means"] = pd.concat(self.colours, ignore_index=True)
        for name, parts, on in (("landmark_flow", self.flows, self.flow), ("dense_flow", self.denses, self.dense)):
            if on:
                tables[name] = pd.concat(parts, ignore_index=True).assign(video=run.path) if parts else pd.DataFrame()

    def abort(self, run) -> None:
        if self.sink is not None:
            self.sink.abort()


def analyse_source(path: str, landmarker, batch_size: int = 32, selection=None,
                   colour_regions: tuple[str, ...] = COLOUR_REGIONS, space: str = "rgb", flow: bool = True,
                   backend: str = "auto", quiet: bool = True, dense: bool = False,
                   flow_video: str | os.PathLike | None = None, crf: int = 18, preset: str = "medium"):
    """Per-frame measurements of one video (:class:`AnalyseJob`).

    Returns:
        ``(colour_table, flow_table, result)`` (pandas DataFrames; ``flow_table`` is None without ``flow``;
        the dense summary table is ``result.tables["dense_flow"]``).
    """
    from gpuface.jobs.runner import run_source

    job = AnalyseJob(colour_regions, space, flow, dense, flow_video, crf, preset)
    result = run_source(path, job, landmarker, batch_size, selection, backend, quiet)
    return result.tables["colour_means"], result.tables.get("landmark_flow"), result


def _after(carry: list | None, seq: list) -> list:
    """Each tensor of ``seq`` preceded by its last row from the previous batch (``carry``), so that pairs of
    consecutive frames span batch borders."""
    import torch

    return seq if carry is None else [torch.cat([c.to(t.device), t]) for c, t in zip(carry, seq)]


__all__ = ["AnalyseJob", "analyse_source"]
