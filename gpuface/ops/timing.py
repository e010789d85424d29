"""Timing: a weight in [0, 1] per frame from its presentation time, as in PyFAME 1.x's ``TimingConfiguration``.

The weight is 0 before ``onset`` and after ``offset``; it rises over ``rise`` seconds after the onset along the
rise curve, stays at 1, and falls over the ``fall`` seconds before the offset along the fall curve. Curves map
the normalised position ``x`` in [0, 1] within the rise (or, mirrored, the fall) window to [0, 1]:

* ``constant``: 1 (a step at the onset/offset);
* ``linear``: ``x``;
* ``sigmoid``: the logistic ``1 / (1 + exp(-k (x - 0.5)))`` (``k = 10``) rescaled to pass through 0 and 1;
* ``gaussian``: ``exp(-(x - 1)^2 / (2 sigma^2))`` (``sigma = 0.35``) rescaled to pass through 0 and 1;
* any callable ``f(x: Tensor) -> Tensor``; results are clipped to [0, 1].

PyFAME 0.7 evaluated its curves on raw seconds without normalising or clipping (weights above 1 wrapped
uint8 pixels); 1.x normalises and clips, which is what this implements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Union

import torch

from gpuface.core.errors import InvalidOptionError

Curve = Union[str, Callable[[torch.Tensor], torch.Tensor]]


def _sigmoid(x: torch.Tensor, k: float = 10.0) -> torch.Tensor:
    s = lambda v: 1 / (1 + torch.exp(-k * (v - 0.5)))  # noqa: E731
    lo, hi = s(torch.zeros(())), s(torch.ones(()))
    return (s(x) - lo) / (hi - lo)


def _gaussian(x: torch.Tensor, sigma: float = 0.35) -> torch.Tensor:
    g0 = math.exp(-1 / (2 * sigma ** 2))
    return (torch.exp(-(x - 1) ** 2 / (2 * sigma ** 2)) - g0) / (1 - g0)


CURVES: dict[str, Callable[..., torch.Tensor]] = {
    "constant": lambda x, **_: torch.ones_like(x),
    "linear": lambda x, **_: x,
    "sigmoid": _sigmoid,
    "gaussian": _gaussian,
}


@dataclass
class Timing:
    """When a manipulation applies and how strongly, per frame.

    Attributes:
        onset: seconds; weight 0 before (default 0). offset: seconds; weight 0 after (default: the video's end).
        rise, fall: seconds of the ramps after the onset and before the offset (PyFAME 1.x default 0.5 s each).
        rise_curve, fall_curve: a name in :data:`CURVES` or a callable on x in [0, 1].
        rise_kwargs, fall_kwargs: parameters of named curves (``k`` for sigmoid, ``sigma`` for gaussian).
    """

    onset: float = 0.0
    offset: float | None = None
    rise: float = 0.5
    fall: float = 0.5
    rise_curve: Curve = "constant"
    fall_curve: Curve = "constant"
    rise_kwargs: dict = field(default_factory=dict)
    fall_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.onset < 0 or self.rise < 0 or self.fall < 0 or (self.offset is not None and self.offset < self.onset):
            raise InvalidOptionError("timing: need 0 <= onset <= offset and rise, fall >= 0 (seconds)")
        for c in (self.rise_curve, self.fall_curve):
            if isinstance(c, str) and c not in CURVES:
                raise InvalidOptionError(f"timing curve {c!r}: choose one of {', '.join(CURVES)} or a callable")

    def _curve(self, curve: Curve, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
        return (CURVES[curve](x, **kwargs) if isinstance(curve, str) else curve(x)).clamp(0, 1)

    def weights(self, pts: torch.Tensor, duration: float | None = None) -> torch.Tensor:
        """float32 (B,) weights in [0, 1] for presentation times ``pts`` (B,) in seconds.

        Args:
            duration: the video's duration in seconds (the offset when ``offset`` is None; stills: None → 1).
        """
        self.validate()
        t = pts.double()
        offset = self.offset if self.offset is not None else (duration if duration is not None else math.inf)
        w = torch.ones_like(t)
        if self.rise > 0:
            x = ((t - self.onset) / self.rise).clamp(0, 1)
            w = torch.where(t < self.onset + self.rise, self._curve(self.rise_curve, x, self.rise_kwargs), w)
        if self.fall > 0 and math.isfinite(offset):
            x = ((offset - t) / self.fall).clamp(0, 1)
            w = torch.minimum(w, torch.where(t > offset - self.fall, self._curve(self.fall_curve, x, self.fall_kwargs),
                                             torch.ones_like(t)))
        w = torch.where((t < self.onset) | (t > offset), torch.zeros_like(w), w)
        return w.float()


__all__ = ["Timing", "CURVES"]
