"""The vocabulary of job options: :class:`Option` (a kind, bounds or choices, a default, help and the command-line
spellings), the field helpers a job's frozen options dataclass is written with (:func:`integer`, :func:`number`,
:func:`choice`, :func:`boolean`, :func:`option`) and the option groups several jobs share (:class:`SelectionOptions`,
:class:`LandmarkerOptions`).

A job's options are its ``Options`` dataclass (see :mod:`gpuface.jobs.registry`): each field carries its
:class:`Option` in ``metadata["option"]``; :func:`schema_of` reads them back. Importing it is cheap (no torch, no
pandas): the CLI builds its parser from it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

from gpuface.io.codecs import ENCODERS, PRESETS
from gpuface.models.registry import DETECTORS as _REGISTRY

DETECTORS = tuple(_REGISTRY)


@dataclass(frozen=True)
class Option:
    """One option: ``kind`` int | float | choice | bool | list | count | counts | rgb | box | factors | fraction_box |
    thresholds | size | scale | mapping | path | text, bounds or choices, default (None: the model's own), help
    text, and ``flags``: its command-line spellings (default ``--<name>``, or ``--no-<name>`` for a boolean that
    defaults to true; deface's, MGT's and video-to-faces' names are given here)."""

    kind: str
    help: str
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    choices: tuple = ()
    flags: tuple = ()

    def describe(self) -> str:
        """What a value must be, in words (error messages and the reference table)."""
        if self.kind == "int":
            return f"an integer >= {self.lo:g}"
        if self.kind == "float":
            return f"a number {'>' if self.open_lo else '>='} {self.lo:g}" + (
                f" and <= {self.hi:g}" if self.hi is not None else "")
        if self.kind == "choice":
            return f"one of {', '.join(map(str, self.choices))}"
        if self.kind == "list" and self.choices:
            return f"one or a list of {', '.join(map(str, self.choices))}"
        return {"bool": "true or false", "list": "a list", "count": "an integer >= 1 or [MIN, MAX]",
                "counts": "an integer >= 1, [MIN, MAX] or \"K1,K2,...\"",
                "rgb": "[R, G, B]", "box": "[X1, Y1, X2, Y2] px with X1 < X2, Y1 < Y2",
                "factors": "[L, R, U, D] factors > 0",
                "fraction_box": "[X1, Y1, X2, Y2] fractions of the width and height, 0 <= X1 < X2 <= 1, 0 <= Y1 < Y2 <= 1",
                "thresholds": "[P, R, O] three numbers in [0, 1]", "size": "[W, H] px, numbers >= 0",
                "scale": "a factor in (0, 4] or WxH (e.g. 640x360)",
                "mapping": "a mapping of name: value", "path": "a file path", "text": "a string"}[self.kind]

    def problem(self, v: Any) -> str | None:
        """None when ``v`` is allowed, else :meth:`describe`."""
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if self.kind == "int":
            ok = number and isinstance(v, int) and v >= self.lo
        elif self.kind == "float":
            ok = number and (v > self.lo if self.open_lo else v >= self.lo) and (self.hi is None or v <= self.hi)
        elif self.kind == "choice":
            ok = v in self.choices
        elif self.kind == "bool":
            ok = isinstance(v, bool)
        elif self.kind == "list" and self.choices:     # a list of choices; one alone may be given as itself
            items = [v] if isinstance(v, str) else v
            ok = isinstance(items, (list, tuple)) and len(items) > 0 and all(x in self.choices for x in items)
        elif self.kind == "list":
            ok = isinstance(v, list) and len(v) > 0
        elif self.kind in ("count", "counts"):   # counts: a list "K1,K2,..." too
            ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (
                isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x >= 1 for x in v)
                and v[0] <= v[1]) or (self.kind == "counts" and isinstance(v, str) and count_values(v) is not None)
        elif self.kind == "rgb":
            ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in v)
        elif self.kind == "box":
            ok = (isinstance(v, (list, tuple)) and len(v) == 4 and all(isinstance(x, int) and x >= 0 for x in v)
                  and v[0] < v[2] and v[1] < v[3])
        elif self.kind == "factors":
            ok = isinstance(v, (list, tuple)) and len(v) == 4 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)
        elif self.kind == "fraction_box":
            ok = (isinstance(v, (list, tuple)) and len(v) == 4 and all(number_(x) and 0 <= x <= 1 for x in v)
                  and v[0] < v[2] and v[1] < v[3])
        elif self.kind == "thresholds":
            ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(number_(x) and 0 <= x <= 1 for x in v)
        elif self.kind == "size":
            ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(number_(x) and x >= 0 for x in v)
        elif self.kind == "text":
            ok = isinstance(v, str)
        elif self.kind == "scale":
            ok = parse_scale(v) is not None
        elif self.kind == "mapping":
            ok = isinstance(v, dict)
        else:  # path
            ok = isinstance(v, str) and len(v) > 0
        return None if ok else self.describe()


def number_(x: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_scale(v: Any) -> dict | None:
    """A detector input scale as detector arguments: a factor (0, 4] → ``{"input_scale": x}``, ``"WxH"`` →
    ``{"input_size": (W, H)}``; None when ``v`` is neither."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return {"input_scale": float(v)} if 0 < v <= 4 else None
    if isinstance(v, str):
        w, sep, h = v.lower().partition("x")
        if sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
            return {"input_size": (int(w), int(h))}
        try:
            return parse_scale(float(v))
        except ValueError:
            return None
    return None


def count_values(v) -> list[int] | None:
    """The counts a ``count`` option allows, in order: K → [K]; [MIN, MAX] → MIN … MAX; ``"K1,K2,…"``
    (video-to-faces' list, e.g. ``"2,4,6"``) → those; None when ``v`` is none of them."""
    if isinstance(v, str):
        try:
            ks = [int(x) for x in v.split(",")]
        except ValueError:
            return None
        return ks if ks and all(k >= 1 for k in ks) else None
    if isinstance(v, int) and not isinstance(v, bool):
        return [v] if v >= 1 else None
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v) and 1 <= v[0] <= v[1]:
        return list(range(v[0], v[1] + 1))
    return None


def parse_count(text: str) -> int | list[int] | str:
    """CLI form of a ``count`` (identities, clusters): ``K`` → K, ``MIN-MAX`` → [MIN, MAX], ``K1,K2,…`` → the
    string itself (a list of counts, :func:`count_values`) (argparse type)."""
    try:
        if "," in text:
            if count_values(text) is None:
                raise ValueError
            return text
        lo, _, hi = text.partition("-")
        return [int(lo), int(hi)] if hi else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be K, MIN-MAX or K1,K2,..., got {text!r}") from None


def option(kind: str, help: str, default: Any = None, **kw) -> Any:
    """A dataclass field carrying its :class:`Option` (a list default is stored as a tuple: options are frozen)."""
    o = Option(kind, help, default, **kw)
    return field(default=tuple(default) if isinstance(default, list) else default, metadata={"option": o})


def integer(help: str, default: int | None = None, lo: int = 1, **kw) -> Any:
    return option("int", help, default, lo=lo, **kw)


def number(help: str, default: float | None = None, lo: float = 0.0, hi: float | None = None,
           open_lo: bool = False, **kw) -> Any:
    return option("float", help, default, lo=lo, hi=hi, open_lo=open_lo, **kw)


def choice(help: str, choices, default: Any = None, **kw) -> Any:
    return option("choice", help, default, choices=tuple(choices), **kw)


def boolean(help: str, default: bool = False, **kw) -> Any:
    return option("bool", help, default, **kw)


def schema_of(options_class) -> dict[str, Option]:
    """A job's options dataclass as ``name -> Option``, in field order."""
    return {f.name: f.metadata["option"] for f in fields(options_class)}


@dataclass(frozen=True)
class SelectionOptions:
    """The frames a job reads (:class:`gpuface.io.decode.Selection`)."""

    step: int = integer("every n-th frame", 1, flags=("--step", "--every"))
    step_seconds: float | None = number("one frame every x seconds (overrides step)", open_lo=True)
    start: float = number("fragment start, s", 0.0)
    end: float | None = number("fragment end, s", open_lo=True)
    area: tuple | None = option("box", "crop every frame to this rectangle before processing, px")


@dataclass(frozen=True)
class LandmarkerOptions:
    """The :class:`~gpuface.stages.landmarks.FaceLandmarker` feeding a landmark job."""

    detector: str = choice("face detector of the landmarker (blazeface-short: MediaPipe's, faces within ~2 m; "
                           "blazeface-full: small faces)", DETECTORS, "blazeface-short")
    max_faces: int | None = integer("most faces per frame (default: all)")
    threshold: float | None = number("detection score threshold (default: the detector's)", hi=1.0)
    min_presence: float = number("drop faces below this FaceMesh presence", 0.5, hi=1.0)
    redetect_every: int | None = integer("also run the detector every N frames while every track is alive")
    blendshapes: bool = boolean("the 52 blendshape coefficients", True)


#: Identity embedders (:data:`gpuface.stages.embed.EMBEDDERS`): of real faces, and of anime characters.
EMBEDDERS = ("dlib", "facenet-casia", "facenet-vggface2")
ANIME_EMBEDDERS = ("animesion-vit-b16", "animesion-vit-l16")


@dataclass(frozen=True)
class IdentityOptions:
    """The :class:`~gpuface.stages.embed.Embedder` of an identity job (annotate, faces)."""

    embedder: str = choice("identity embeddings: dlib (128-d ResNet, aligned chips), facenet-casia (FaceNet "
                           "InceptionResnetV1 512-d, CASIA-WebFace, offline) or facenet-vggface2 (the same network "
                           "trained on VGGFace2, mexca's and video-to-faces' default; online only)", EMBEDDERS, "dlib")


ENCODER_HELP = ("video encoder: x264 on the CPU (default), NVIDIA NVENC (GPUs that have one; not the A100/H100/H200), "
                "or auto (NVENC when it opens, else x264)")


#: The selection options by name (their CLI flags, the frames they choose).
SELECTION = schema_of(SelectionOptions)


__all__ = ["DETECTORS", "ENCODERS", "PRESETS", "ENCODER_HELP", "parse_scale", "parse_count", "count_values", "Option",
           "option", "integer", "number", "choice", "boolean", "schema_of", "SelectionOptions", "LandmarkerOptions",
           "EMBEDDERS", "IdentityOptions",
           "SELECTION"]
