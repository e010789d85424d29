"""Stimulus manipulations as batched tensor ops (PyFAME 1.0.10's layers, on whole batches, any device).

The ops live by family (``ops_colour``, ``ops_occlusion``, ``ops_spatial``, ``ops_stylise``; shared parts in
``opbase``); this module is their contract and registry (:data:`OPS`, :data:`REACH`).

Every op has the signature ``op(x, mask, weight, ctx, **params) -> x'``:

* ``x``: float32 (B, 3, H, W) RGB in [0, 1]; ``mask``: float32 (B, 1, H, W) in [0, 1], the layer's region for
  every face of the frame (zeros where a frame has no face); ``weight``: float32 (B,) timing weights in [0, 1];
  ``ctx``: :class:`Context` (landmarks of the batch, frame numbers, random-stream key, per-video state).
* It returns the manipulated batch. Frames whose weight is 0 are returned unchanged, and so are pixels where
  ``mask`` is 0 (bit-exact after the uint8 round trip) — except for the ops whose point is to paint outside a
  region: ``mask_background`` (the background), ``bar``, ``point_light``, ``overlay`` and ``relocate``, which place
  their result from the landmarks.

Semantics follow PyFAME 1.0.10 (``pyfame/layer/manipulations``, read from its PyPI wheel), fixed where it is
wrong: colour shifts are in CIELAB a*/b* (recolour) or HSV S/V (saturation, brightness) with magnitudes in per
cent, "relative" scales taking the head-room from the region's mean in the first frame the layer acts on; values
are clipped before uint8 (PyFAME 0.7 wrapped). Colour conversions: ``kornia.color``.
"""
from __future__ import annotations

from gpuface.ops.base import Context
from gpuface.ops.colour import brightness, recolour, saturation
from gpuface.ops.occlusion import bar, blur, bubbles, fill, mask_background, noise
from gpuface.ops.spatial import grid_shuffle, relocate
from gpuface.ops.stylise import overlay, pencil_sketch, point_light

# How far beyond a face's landmark bounding box each op reads or writes, as (face widths, px) from its params;
# None: the whole frame. LayerStack computes a batch only in the window this allows around its faces, which
# gives the same pixels as computing whole frames (a test holds it to that).
REACH = {
    "recolour": lambda p: (0.0, 0), "saturation": lambda p: (0.0, 0), "brightness": lambda p: (0.0, 0),
    "fill": lambda p: (0.0, 0), "bubbles": lambda p: (0.0, 0),
    "pencil_sketch": lambda p: (0.17 / max(p.get("detail", 0.35), 1e-3), 12),    # its filters' radius
    "bar": lambda p: (p.get("margin", 0.12) + 0.7 * max(p.get("thickness", 1.0) - 1, 0) + 0.2, 2),
    "blur": lambda p: (0.0, p.get("max_kernel_size", 29)),
    "noise": lambda p: (0.0, p.get("pixel_size", 32) if p.get("method") == "pixelate" else 0),
    "grid_shuffle": lambda p: (0.0, p.get("square_size", 40)) if p.get("grid_dimensions") is None else (0.5, 2),
    "relocate": lambda p: (p.get("max_offset", 0.15) + 0.1, 4 + 3 * p.get("feather", 2.0)),
    "mask_background": None, "point_light": None, "overlay": None,
}

OPS = {
    "recolour": recolour, "saturation": saturation, "brightness": brightness, "mask_background": mask_background,
    "fill": fill, "bar": bar, "blur": blur, "noise": noise, "bubbles": bubbles, "grid_shuffle": grid_shuffle,
    "point_light": point_light, "pencil_sketch": pencil_sketch, "overlay": overlay, "relocate": relocate,
}

#: Earlier op names, still accepted in layer specs: ``mask`` (every op's region argument is also called ``mask``).
OP_ALIASES = {"mask": "mask_background"}

__all__ = ["Context", "OPS", "REACH", "OP_ALIASES", "recolour", "saturation", "brightness", "mask_background", "fill",
           "bar",
           "blur", "noise", "bubbles", "grid_shuffle", "point_light", "pencil_sketch", "overlay", "relocate"]
