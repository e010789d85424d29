"""Layers: a manipulation bound to a face region and a timing, applied in order to every face of every frame.

A spec (Python, YAML or JSON) is a list of layers, e.g.::

    - op: recolour          # any name in gpuface.ops.registry.OPS
      region: face_skin     # a region name or expression (gpuface.ops.regions.get_region), default face_oval;
                            # or landmark indices [10, 338, ...] (a custom ring); or frame (noise, blur)
      feather: 2            # soften the region edge (Gaussian sigma, px)
      timing: {onset: 0.5, offset: 3.0, rise: 1.0, fall: 1.0, rise_curve: linear, fall_curve: sigmoid}
      params: {colour: red, magnitude: 12, scale: relative}
    - op: blur
      region: eyes
      params: {method: gaussian, max_kernel_size: 31}

or ``{"layers": [...], "temporal": {"method": "random", "block_duration": 1.0}, "seed": 7}`` with an optional
temporal shuffle applied when the frames are read (see :mod:`gpuface.ops.temporal`).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from gpuface.core.errors import InvalidOptionError
from gpuface.ops.geometry import window_slices
from gpuface.ops.regions import FRAME_OPS, get_region, region_masks
from gpuface.core.syncs import upload
from gpuface.core.types import Faces
from gpuface.ops.registry import OP_ALIASES, OPS, REACH, Context
from gpuface.ops.rng import stream_key
from gpuface.ops.temporal import METHODS
from gpuface.ops.timing import Timing


@dataclass
class Layer:
    """One manipulation (``op`` in :data:`~gpuface.ops.registry.OPS`) with its parameters, region and timing."""

    op: str
    region: str | list = "face_oval"
    timing: Timing = field(default_factory=Timing)
    params: dict = field(default_factory=dict)
    feather: float = 0.0
    inputs: dict | None = field(default=None, repr=False, compare=False)   # params with files read (validate)

    def validate(self) -> None:
        self.op = OP_ALIASES.get(self.op, self.op)
        if self.op not in OPS:
            raise InvalidOptionError(f"unknown manipulation {self.op!r}; choose one of {', '.join(OPS)}")
        if get_region(self.region).op == "frame" and self.op not in FRAME_OPS:
            raise InvalidOptionError(f"{self.op}: region frame is for {', '.join(FRAME_OPS)} only")
        self.timing.validate()
        if "color" in self.params:   # the API spells colour; color is accepted
            self.params["colour"] = self.params.pop("color")
        allowed = set(inspect.signature(OPS[self.op]).parameters) - {"x", "mask", "weight", "ctx"}
        unknown = set(self.params) - allowed
        if unknown:
            raise InvalidOptionError(f"{self.op}: unknown parameters {sorted(unknown)}; allowed: {sorted(allowed)}")
        if self.feather < 0:
            raise InvalidOptionError("feather must be >= 0 px")
        self.inputs = dict(self.params)   # what the op gets: files named in the spec are read here, once
        if isinstance(self.params.get("image"), (str, os.PathLike)):
            from gpuface.io.images import read_rgba
            self.inputs["image"] = read_rgba(self.params["image"])
        self._dry_run()

    def _dry_run(self) -> None:
        """Run the op once on a blank 16×16 frame without faces, so that a bad parameter value fails when the spec
        loads, not in the middle of a video (each op checks its values first)."""
        import torch

        from gpuface.core.types import Faces
        from gpuface.ops.registry import Context

        with torch.device("cpu"):   # a blank 16x16 CPU frame, whatever the caller's default device
            faces = Faces.empty(6, device="cpu")
            faces.landmarks, faces.presence = torch.zeros(0, 478, 3), torch.zeros(0)
            faces.track_id = torch.zeros(0, dtype=torch.long)
            ctx = Context(faces=faces, frames=torch.zeros(1, dtype=torch.long),
                          pts=torch.zeros(1, dtype=torch.float64), size=(16, 16))
        try:
            with torch.device("cpu"):
                OPS[self.op](torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16), torch.zeros(1), ctx, **self.inputs)
        except InvalidOptionError as e:
            raise InvalidOptionError(str(e) if str(e).startswith(self.op) else f"{self.op}: {e}") from None
        except (TypeError, ValueError) as e:
            raise InvalidOptionError(f"{self.op}: a parameter has a value of the wrong kind ({e})") from None

    def describe(self) -> dict:
        d = asdict(replace(self, inputs=None))
        d.pop("inputs")
        for k in ("rise_curve", "fall_curve"):
            if callable(d["timing"][k]):
                d["timing"][k] = getattr(d["timing"][k], "__name__", "callable")
        return d


@dataclass
class Spec:
    """A manipulation job: layers in order, an optional temporal shuffle, and the seed of every random draw."""

    layers: list[Layer]
    temporal: dict | None = None
    seed: int = 0

    def validate(self) -> None:
        if not self.layers and not self.temporal:
            raise InvalidOptionError("the spec holds no layers and no temporal shuffle")
        for layer in self.layers:
            layer.validate()
        if self.temporal is not None:
            extra = set(self.temporal) - {"method", "block_duration", "drop_last", "audio"}
            if extra or self.temporal.get("method", "random") not in METHODS or \
                    self.temporal.get("audio", "carry") not in ("carry", "silence"):
                raise InvalidOptionError(f"temporal: method one of {', '.join(METHODS)}, audio carry or silence; keys "
                                         "method, block_duration, drop_last, audio")


def _layer(d: dict) -> Layer:
    if not isinstance(d, dict) or "op" not in d:
        raise InvalidOptionError(f"each layer needs an 'op': {d!r}")
    unknown = set(d) - {"op", "region", "timing", "params", "feather"}
    if unknown:
        raise InvalidOptionError(f"layer {d['op']}: unknown keys {sorted(unknown)}")
    try:
        timing = Timing(**(d.get("timing") or {}))
    except TypeError as e:
        raise InvalidOptionError(f"layer {d['op']}: bad timing ({e})") from e
    return Layer(op=d["op"], region=d.get("region", "face_oval"), timing=timing, params=dict(d.get("params") or {}),
                 feather=float(d.get("feather", 0.0)))


def load_spec(source: str | os.PathLike | list | dict, seed: int | None = None) -> Spec:
    """A :class:`Spec` from a YAML/JSON file, or from the same structure in Python (a list of layer dicts or a
    dict with ``layers``, ``temporal``, ``seed``). ``seed`` overrides the spec's.

    Raises:
        InvalidOptionError: unreadable file or invalid spec. InputNotFoundError: missing file.
    """
    from gpuface.io.sources import read_spec_file

    data: Any = read_spec_file(source, "layer spec") if isinstance(source, (str, os.PathLike)) else source
    if isinstance(data, list):
        data = {"layers": data}
    if not isinstance(data, dict):
        raise InvalidOptionError("a layer spec is a list of layers or a mapping with 'layers'")
    spec = Spec(layers=[_layer(d) for d in data.get("layers") or []], temporal=data.get("temporal"),
                seed=int(seed if seed is not None else data.get("seed", 0)))
    spec.validate()
    return spec


class LayerStack:
    """Applies a spec's layers to batches of one video at a time, keeping per-video state (sampled colours,
    grid permutations) and per-(seed, video, layer) random streams.

    ``apply(frames, faces, index, pts, duration)``: frames uint8 (B, 3, H, W); faces with landmarks for the
    batch; index int64 (B,) frame numbers; pts float64 (B,) seconds; duration of the video (s) or None.
    Returns uint8 (B, 3, H, W): frames without faces and layers with weight 0 leave pixels bit-identical.
    Only the :meth:`window` around the batch's faces is converted to float and computed (the whole frame
    when a layer paints outside the faces): the whole-frame pixels (a test holds every op to them; relocate's
    resampling and the mean fill may round one level apart) at a fraction of the memory traffic.
    """

    def __init__(self, spec: Spec):
        spec.validate()
        self.spec = spec
        self.reset("")

    def reset(self, video: str) -> None:
        """Start a new video: fresh state, random streams keyed by this video's name."""
        self.video = video
        self.keys = [stream_key(self.spec.seed, os.path.basename(video), i) for i in range(len(self.spec.layers))]
        self.states: list[dict] = [{"region": get_region(layer.region)} for layer in self.spec.layers]

    @property
    def whole_frame(self) -> bool:
        """Whether a layer acts on whole frames (``region: frame``), with or without faces."""
        return any(state["region"].op == "frame" for state in self.states)

    def window(self, faces: Faces, height: int, width: int) -> tuple[slice, slice]:
        """Rows and columns of the frame that this spec's layers can change for these faces: the union of their
        landmark bounding boxes grown by each layer's reach (:data:`~gpuface.ops.registry.REACH`) and
        feather, or the whole frame when a layer paints outside the faces (mask, point_light, overlay)."""
        full = slice(0, height), slice(0, width)
        reaches = [None if state["region"].op == "frame" else REACH[layer.op]
                   for layer, state in zip(self.spec.layers, self.states)]
        if any(r is None for r in reaches) or faces.landmarks is None or len(faces) == 0:
            return full
        lm = faces.landmarks[..., :2]
        lo, hi = lm.amin(1), lm.amax(1)                                          # (N, 2)
        face_w = (hi[:, 0] - lo[:, 0]).amax()
        # reaches in face widths: this batch's widest face, or the video's first faces where an op sized its
        # filters from them (pencil_sketch)
        pad = torch.stack([frac * face_w.clamp(min=state.get("face_width", 0.0)) + (px + 3 * layer.feather + 2)
                           for layer, r, state in zip(self.spec.layers, reaches, self.states)
                           for frac, px in [r(layer.params)]]).amax()
        return window_slices(torch.cat([lo.amin(0) - pad, hi.amax(0) + pad]), height, width)

    @torch.no_grad()
    def apply(self, frames: torch.Tensor, faces: Faces, index: torch.Tensor, pts: torch.Tensor,
              duration: float | None = None, window: bool = True, op_windows: bool | None = None) -> torch.Tensor:
        """``window=False`` computes whole frames (the reference the windowed computation must equal);
        ``op_windows``: let ops shrink further to their masks' boxes (:attr:`Context.windows`; default: on the CPU
        only, as a GPU would pay a host sync for each)."""
        if not self.spec.layers or (len(faces) == 0 and not self.whole_frame):
            return frames
        b, _, h, w = frames.shape
        if faces.landmarks is None:        # no faces (a whole-frame layer runs all the same)
            faces = replace(faces, landmarks=torch.zeros(0, 478, 3, device=frames.device))
        rows, cols = self.window(faces, h, w) if window else (slice(0, h), slice(0, w))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return frames
        shift = torch.tensor([cols.start, rows.start], dtype=torch.float32, device=frames.device)
        local = replace(faces, boxes=faces.boxes - shift.repeat(2), keypoints=faces.keypoints - shift,
                        landmarks=torch.cat([faces.landmarks[..., :2] - shift, faces.landmarks[..., 2:]], -1))
        x = frames[:, :, rows, cols].float() / 255.0
        size = (rows.stop - rows.start, cols.stop - cols.start)
        frame_numbers = upload(index, x.device)
        for layer, key, state in zip(self.spec.layers, self.keys, self.states):
            weight = layer.timing.weights(pts, duration)      # from the host-side times: checked without a sync
            if not bool((weight > 0).any()):
                continue
            host_weights = tuple(weight.tolist())               # a host tensor: no device sync
            weight = upload(weight, x.device)                   # pinned, non-blocking: no stream sync
            # ops and the libraries they call (Kornia builds filter kernels on the default device) run with the
            # data's device as the default
            with torch.device(x.device):
                mask = region_masks(local.landmarks, local.row, state["region"], b, size, layer.feather)
                ctx = Context(faces=local, frames=frame_numbers, pts=pts, key=key, state=state,
                              origin=(cols.start, rows.start), size=(h, w), weights=host_weights,
                              windows=x.device.type == "cpu" if op_windows is None else op_windows)
                x = OPS[layer.op](x, mask, weight, ctx, **(layer.inputs or layer.params))
        y = (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        if size == (h, w):
            return y
        out = frames.clone()
        out[:, :, rows, cols] = y
        return out


__all__ = ["Layer", "Spec", "LayerStack", "load_spec"]
