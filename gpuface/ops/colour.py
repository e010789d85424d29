"""Colour ops: recolour (CIELAB a*/b*), saturation and brightness (HSV), PyFAME 1.0.10 semantics."""
from __future__ import annotations

import kornia
import torch

from gpuface.core.errors import InvalidOptionError
from gpuface.kernels import masked_blend
from gpuface.ops.base import _region_mean, _sampled_once, _windowed


_RECOLOUR = {"red": (1, +1, 127.0), "green": (1, -1, 128.0), "yellow": (2, +1, 127.0), "blue": (2, -1, 128.0)}


@_windowed
def recolour(x, mask, weight, ctx, colour: str = "red", magnitude: float = 10.0, scale: str = "relative"):
    """Shift the region toward red/green (CIELAB a* ±) or yellow/blue (b* ±).

    ``magnitude`` is in per cent: ``absolute`` shifts by ``magnitude`` % of the channel's half range (127 or
    128 units) × weight; ``relative`` by ``magnitude`` % of the head-room between the region's mean a*/b* on
    the first frame the layer acts on (weight > 0) and the end of the range, × weight (PyFAME 1.0.10
    ``layer_colour_recolour``). Result clipped to a*, b* ∈ [-128, 127] and to RGB [0, 1].
    """
    if colour not in _RECOLOUR or scale not in ("relative", "absolute") or magnitude < 0:
        raise InvalidOptionError("recolour: colour red|green|yellow|blue, scale relative|absolute, magnitude >= 0")
    channel, sign, half = _RECOLOUR[colour]
    # CIELAB in float64: its powers and cube roots in float32 differ in the last bit between ATen's vectorised and
    # scalar loops, so a pixel would round differently in windows of different sizes (batch sizes)
    x64 = x.double()
    lab = kornia.color.rgb_to_lab(x64)
    if scale == "absolute":
        amount = half * magnitude / 100
    else:  # sampled on the first frame the layer acts on with the region (nan, no shift, until then): no host sync
        mean = _region_mean(lab[:, channel:channel + 1], mask, weight)
        room = (127.0 - mean) if sign > 0 else (128.0 + mean)
        amount = torch.nan_to_num(_sampled_once(ctx, "amount", magnitude * room / 100))
    shifted = lab.clone()
    shifted[:, channel] = (lab[:, channel] + sign * amount * weight[:, None, None]).clamp(-128, 127)
    return masked_blend(x, kornia.color.lab_to_rgb(shifted).clamp(0, 1).to(x.dtype), mask)


def _hsv_shift(x, mask, weight, ctx, channel: int, magnitude: float, scale: str, name: str):
    if scale not in ("relative", "absolute"):
        raise InvalidOptionError(f"{name}: scale must be relative or absolute")
    hsv = kornia.color.rgb_to_hsv(x)
    if scale == "absolute":
        amount = magnitude / 100
    else:
        mean = _region_mean(hsv[:, channel:channel + 1], mask, weight)
        amount = torch.nan_to_num(_sampled_once(ctx, "amount", magnitude * (1.0 - mean) / 100))
    hsv[:, channel] = (hsv[:, channel] + amount * weight[:, None, None]).clamp(0, 1)
    return masked_blend(x, kornia.color.hsv_to_rgb(hsv).clamp(0, 1), mask)


@_windowed
def saturation(x, mask, weight, ctx, magnitude: float = -12.0, scale: str = "relative"):
    """Shift HSV saturation by ``magnitude`` % (of the full range, or of the head-room above the region's mean on
    the first frame the layer acts on when ``relative``) × weight; PyFAME 1.0.10 ``layer_colour_saturation``."""
    return _hsv_shift(x, mask, weight, ctx, 1, magnitude, scale, "saturation")


@_windowed
def brightness(x, mask, weight, ctx, magnitude: float = 15.0, scale: str = "relative"):
    """Shift HSV value (brightness) by ``magnitude`` % × weight; PyFAME 1.0.10 ``layer_colour_brightness``."""
    return _hsv_shift(x, mask, weight, ctx, 2, magnitude, scale, "brightness")
