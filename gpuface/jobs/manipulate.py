"""The ``manipulate`` job: a layer spec (PyFAME's manipulations) applied to every face, the video (or image) written
with its JSON log."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpuface.jobs.base import Job
from gpuface.jobs.registry import register
from gpuface.jobs.schema import ENCODER_HELP, ENCODERS, PRESETS, LandmarkerOptions, choice, integer


@register("manipulate", "stimulus manipulations (layer spec)", suffix="_manipulated")
class ManipulateJob(Job):
    """A layer spec (:mod:`gpuface.stages.layers`) applied to every face; writes the video (or image) and,
    beside it, ``<output stem>.json``: the spec with every parameter, the seed, package versions, the input's
    sha256, frame counts (frames without a face are written unchanged) and the temporal order when the spec
    shuffles frames. Audio is copied; with a temporal shuffle each frame carries its own stretch of sound along
    (:func:`gpuface.ops.temporal.reorder_audio`), or the output is silent with ``temporal: {audio:
    silence}``."""

    @dataclass(frozen=True)
    class Options(LandmarkerOptions):
        preset: str = choice("x264 preset", PRESETS, "medium")
        crf: int = integer("x264 CRF", 18, 0)
        encoder: str = choice(ENCODER_HELP, ENCODERS, "libx264")

    @classmethod
    def check(cls, pipeline, o) -> None:
        pipeline.layer_spec()   # layer names and parameters, checked before any model

    @classmethod
    def create(cls, pipeline, o, path, out_dir, output, overwrite):
        return cls(pipeline.layer_spec(), output, o.crf, o.preset, overwrite, o.encoder)

    def __init__(self, spec, output: str | os.PathLike, crf: int = 18, preset: str = "medium",
                 overwrite: bool = False, encoder: str = "libx264"):
        self.spec, self.output, self.crf, self.preset, self.overwrite = spec, output, crf, preset, overwrite
        self.encoder = encoder
        self.sink = self.audio = None

    def plan(self, run):
        from gpuface.io.decode import Selection
        from gpuface.ops.temporal import frame_order, frames_left_out, shuffled_block_array

        self.log_order = None
        if not self.spec.temporal or run.is_image:
            return run.selection
        info, seed = run.info, self.spec.seed
        t = {"method": "random", "block_duration": 1.0, "drop_last": True, **self.spec.temporal}
        args = (info.num_frames, float(info.fps), t["method"], t["block_duration"])
        order = frame_order(*args, seed, run.path, t["drop_last"])
        dropped = frames_left_out(*args, t["drop_last"])
        blocks = shuffled_block_array(*args, seed, run.path, t["drop_last"])
        self.log_order = {"blocks": blocks.order.tolist(), "block_size": blocks.block_size,
                          "block_duration": blocks.block_duration, "frames": order.tolist(),
                          "frames_dropped": dropped}
        if dropped > 0:
            import logging
            logging.getLogger("gpuface").warning(
                "gpuface: %s: the temporal shuffle leaves out %d frame(s) (%s; a partial last block with "
                "drop_last); set temporal drop_last: false to keep them", run.path, dropped, t["method"])
        return Selection(frames=tuple(order.tolist()))

    def start(self, run) -> None:
        from gpuface.io.encode import free_path
        from gpuface.jobs.runner import Sink
        from gpuface.stages.layers import LayerStack

        self.stack = LayerStack(self.spec)
        self.stack.reset(run.path)
        self.path = free_path(self.output, self.overwrite)
        self.no_face = 0
        audio = None if run.is_image else run.path
        if self.log_order is not None:   # shuffled: the audio follows the frames, or silence
            audio = None
            if self.spec.temporal.get("audio", "carry") == "carry" and run.info.has_audio:
                from gpuface.io.encode import temporary_path
                from gpuface.ops.temporal import reorder_audio
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)   # -o may name a folder not made yet
                self.audio = temporary_path(Path(self.path).with_suffix(".m4a"))
                audio = reorder_audio(run.path, self.log_order["frames"], float(run.info.fps), str(self.audio))
        self.sink = Sink(self.path, run.is_image, run.info.fps, self.crf, self.preset, audio_from=audio,
                         encoder=self.encoder)

    def step(self, run, batch, faces) -> None:
        import torch

        # timing runs on the output timeline (the source's, unless frames are shuffled)
        pts = batch.pts if self.log_order is None else torch.arange(
            run.position, run.position + len(batch), dtype=torch.float64, device="cpu") / float(run.info.fps)
        out = self.stack.apply(batch.frames, faces, batch.index, pts, run.info.duration)
        self.no_face += len(batch) - int(torch.unique(faces.row).numel())
        self.sink.write(out)

    def finish(self, run) -> None:
        import json

        import kornia
        import torch

        from gpuface import __version__
        from gpuface.core.fetch import sha256_file
        from gpuface.stages.tables import write_text

        self.sink.close()
        res, spec = run.result, self.spec
        res.outputs.append(str(self.path))
        log = {"input": os.path.abspath(run.path), "input_sha256": sha256_file(run.path),
               "output": os.path.abspath(self.path), "seed": spec.seed,
               "layers": [layer.describe() for layer in spec.layers], "temporal": spec.temporal,
               "temporal_order": self.log_order, "frames": res.frames, "frames_without_face": self.no_face,
               "faces": res.faces, "audio_copied": bool(not run.is_image and (self.log_order is None or
                                                                             self.audio is not None)),
               "detector": getattr(run.model, "detector", run.model).model, "device": str(run.model.device),
               "seconds": res.seconds,
               "versions": {"gpuface": __version__, "torch": torch.__version__, "kornia": kornia.__version__}}
        res.tables["manipulate_log"] = log
        res.outputs.append(str(write_text(json.dumps(log, indent=1), Path(self.path).with_suffix(".json"))))
        self._drop_audio()

    def abort(self, run) -> None:
        if self.sink is not None:
            self.sink.abort()
        self._drop_audio()

    def _drop_audio(self) -> None:
        if self.audio is not None:
            self.audio.unlink(missing_ok=True)



def manipulate_source(path: str, spec, landmarker, output: str | os.PathLike, batch_size: int = 32,
                      crf: int = 18, preset: str = "medium", overwrite: bool = False, backend: str = "auto",
                      quiet: bool = True, encoder: str = "libx264"):
    """Apply a layer spec (:func:`gpuface.stages.layers.load_spec`) to every face of one video or image
    (:class:`ManipulateJob`): the manipulated video (or image) and its JSON log. Nothing is left behind on failure.

    Returns:
        The :class:`~gpuface.jobs.base.JobResult` (``tables["manipulate_log"]``: the log).

    Raises:
        GpufaceError subclasses for unreadable input or bad options.
    """
    from gpuface.jobs.runner import run_source

    return run_source(path, ManipulateJob(spec, output, crf, preset, overwrite, encoder), landmarker, batch_size,
                      backend=backend, quiet=quiet)


__all__ = ["ManipulateJob", "manipulate_source"]
