"""What exists, listed from the registries (PyFAME's ``display_*_options`` helpers, for every kind of name).

``gpuface list regions|ops|curves|shuffles|detectors|models`` prints it; :func:`describe` returns it. Each entry
is generated from the registry it describes (:data:`gpuface.ops.regions.REGIONS`, :data:`gpuface.ops.registry.OPS`
and the ops' signatures, :data:`gpuface.ops.timing.CURVES`, :data:`gpuface.ops.temporal.METHODS`,
:data:`gpuface.models.registry.DETECTORS`, :data:`gpuface.models.weights.REGISTRY` and
:data:`gpuface.models.online.ONLINE_MODELS`); the words come from :data:`OP_PARAMETERS`, :data:`REGION_NOTES`,
:data:`CURVE_NOTES` and :data:`SHUFFLE_NOTES`, which a test holds to the registries (a new name without its line
fails it).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

from gpuface.core.errors import InvalidOptionError

KINDS = ("regions", "ops", "curves", "shuffles", "detectors", "models")

#: op → parameter → its meaning, unit and range (defaults come from the op's signature).
OP_PARAMETERS: dict[str, dict[str, str]] = {
    "recolour": {"colour": "direction: red, green (CIELAB a* ±), yellow, blue (b* ±)",
                 "magnitude": "shift, % of the head-room (relative) or of the a*/b* half range (absolute), × weight",
                 "scale": "relative (head-room from the region's mean on the first frame acted on) | absolute"},
    "saturation": {"magnitude": "HSV saturation shift, % × weight",
                   "scale": "relative (of the head-room above/below the region's mean) | absolute"},
    "brightness": {"magnitude": "HSV value shift, % × weight",
                   "scale": "relative (of the head-room) | absolute"},
    "mask_background": {"background": "RGB 0–255 painted outside the region"},
    "fill": {"method": "black | colour | mean (each face's mean colour over its oval minus eyes and lips)",
             "colour": "RGB 0–255 for method colour"},
    "bar": {"colour": "RGB 0–255",
            "margin": "length beyond the region at each end, face widths",
            "thickness": "height as a multiple of the region's extent across the eye line (≥ 0.15 face widths)"},
    "blur": {"method": "gaussian | average | median",
             "max_kernel_size": "kernel side at weight 1, px (odd; 3 at weight 0)"},
    "noise": {"method": "gaussian | pixelate | salt_and_pepper",
              "probability": "salt_and_pepper: share of pixels changed, 0–1",
              "pixel_size": "pixelate: block side, px",
              "mean": "gaussian: mean added, pixel units 0–1",
              "std": "gaussian: standard deviation, pixel units 0–1"},
    "bubbles": {"count": "apertures per face",
                "sigma": "aperture standard deviation, face widths",
                "background": "RGB 0–255 shown outside the apertures",
                "per_frame": "new aperture positions every frame (else once per video)"},
    "grid_shuffle": {"method": "random | neighbour | cyclic | unchanged",
                     "square_size": "cell side, px (when grid_dimensions is not given)",
                     "grid_dimensions": "(columns, rows) over the first face's box, or none (square_size)",
                     "overlap_threshold": "share of a cell inside the region for it to move, 0–1",
                     "shift": "cyclic: places each cell moves in row-major order",
                     "neighbourhood": "neighbour: swap partner within ±N rows and columns"},
    "point_light": {"density": "share of the region's landmarks drawn (seeded), 0–1",
                    "colour": "dot RGB 0–255",
                    "radius": "dot radius, px",
                    "history": "none | origin (paths from the first position) | relative (trails)",
                    "history_window": "relative: trail length, s",
                    "history_colour": "trail RGB 0–255",
                    "keep_background": "draw on the frame (else on black)",
                    "invert": "black dots on white"},
    "pencil_sketch": {"detail": "> 0; larger: finer filters (σ = face width · 0.05 / detail)",
                      "bias": "threshold bias, grey levels 0–255"},
    "overlay": {"image": "RGBA file (PNG) or float (4, h, w) tensor",
                "anchors": "two landmark indices whose distance sets the width",
                "centre": "landmark index the image is centred on",
                "scale": "width as a multiple of the anchors' distance",
                "y_offset": "move along the face's vertical, image heights",
                "clip": "show only inside the region"},
    "relocate": {"parts": "regions moved (names)",
                 "max_offset": "largest random shift, face widths",
                 "rotations": "angles one is drawn from, degrees",
                 "feather": "edge softening, px"},
}

#: region → one line (the ring's source or the combination's purpose).
REGION_NOTES: dict[str, str] = {
    "face_oval": "the face's outline (MediaPipe FACEMESH_FACE_OVAL; PyFAME FACE_OVAL)",
    "face_oval_tight": "just inside the outline: no background at the edges (PyFAME 0.7 FACE_OVAL_TIGHT)",
    "face_skin": "oval minus eyes, brows and outer lips (PyFAME FACE_SKIN)",
    "eyes": "both eye openings", "left_eye": "subject's left eye opening (263 …)",
    "right_eye": "subject's right eye opening (33 …)", "eye_regions": "both eyes with lids and brows' lower edge",
    "left_eye_region": "left eye, lids and surround (PyFAME LEFT_EYE_REGION)",
    "right_eye_region": "right eye, lids and surround (PyFAME RIGHT_EYE_REGION)",
    "brows": "both eyebrows", "left_eyebrow": "subject's left eyebrow", "right_eyebrow": "subject's right eyebrow",
    "irises": "both irises (FaceMesh 469–477)", "left_iris": "landmarks 474–477",
    "right_iris": "landmarks 469–472",
    "nose": "the nose, tight (PyFAME 1.0 NOSE)", "nose_wide": "the nose with its wings (PyFAME NOSE_WIDE)",
    "lips": "outer lip ring minus the mouth opening", "lips_outer": "outer lip contour (MediaPipe's, 0 and 267 kept)",
    "lips_inner": "mouth opening", "mouth": "lips and their surround (PyFAME MOUTH)",
    "cheeks": "both cheeks", "left_cheek": "subject's left cheek", "right_cheek": "subject's right cheek",
    "cheeks_nose": "cheeks and the wide nose", "chin": "below the lower lip (PyFAME CHIN)",
    "left_hemiface": "subject's left half, split along the mesh midline",
    "right_hemiface": "subject's right half, split along the mesh midline",
    "top_hemiface": "above the line through the cheekbones", "bottom_hemiface": "below it",
    "forehead": "oval above the brows (not in PyFAME)",
    "frame": "the whole frame, with or without a face (noise and blur only)",
}

CURVE_NOTES: dict[str, str] = {
    "constant": "1: a step at the onset and the offset",
    "linear": "x: a straight ramp",
    "sigmoid": "logistic 1 / (1 + exp(−k (x − 0.5))), rescaled through 0 and 1; parameter k = 10",
    "gaussian": "exp(−(x − 1)² / (2σ²)), rescaled through 0 and 1; parameter sigma = 0.35",
}

SHUFFLE_NOTES: dict[str, str] = {
    "random": "blocks permuted (seeded per seed and video)",
    "random_with_replacement": "as many blocks drawn with replacement",
    "reverse": "block order reversed, frames inside a block forward",
    "left_cyclic_shift": "frames rotated left by one inside each block",
    "right_cyclic_shift": "frames rotated right by one inside each block",
    "palindrome": "each block followed by its reverse (twice as long)",
    "interleave": "frame i of every block in turn (the partial last block dropped)",
    "none": "frames in their order",
}


@dataclass
class Entry:
    """One listed name: what it is and its parameters as (name, default, meaning)."""

    name: str
    meaning: str
    parameters: list[tuple[str, object, str]] = field(default_factory=list)


def _regions() -> list[Entry]:
    from gpuface.ops.regions import REGIONS

    out = []
    for name, r in REGIONS.items():
        shape = (f"ring of {len(r.ring)} landmarks: {', '.join(map(str, r.ring))}" if not r.op and r.ring
                 else f"{r.parts[0].name} {r.op} {r.parts[1].name}" if r.parts else "every pixel")
        out.append(Entry(name, f"{REGION_NOTES[name]}; {shape}"))
    return out


def _ops() -> list[Entry]:
    from gpuface.ops.registry import OPS

    out = []
    for name, fn in OPS.items():
        params = [(p, v.default, OP_PARAMETERS[name][p]) for p, v in inspect.signature(fn).parameters.items()
                  if p not in ("x", "mask", "weight", "ctx")]
        out.append(Entry(name, inspect.getdoc(fn).split("\n\n")[0].replace("\n", " "), params))
    return out


def _curves() -> list[Entry]:
    from gpuface.ops.timing import CURVES

    return [Entry(name, CURVE_NOTES[name], [(p, v.default, "curve parameter")
                                             for p, v in inspect.signature(fn).parameters.items()
                                             if p != "x" and v.kind is v.POSITIONAL_OR_KEYWORD])
            for name, fn in CURVES.items()]


def _shuffles() -> list[Entry]:
    from gpuface.ops.temporal import METHODS

    return [Entry(name, SHUFFLE_NOTES[name], [("block_duration", 1.0, "block length, s"),
                                             ("drop_last", True, "drop the last, shorter block")])
            for name in METHODS]


def _detectors() -> list[Entry]:
    from gpuface.models.registry import DETECTORS

    return [Entry(name, d.summary, [(f"threshold ({use})", v, "score at which a face counts for this use")
                                    for use, v in d.thresholds.items()]
                  + [("keypoints", d.keypoints, "keypoints per face")])
            for name, d in DETECTORS.items()]


def _models() -> list[Entry]:
    from gpuface.models.online import ONLINE_MODELS
    from gpuface.models.weights import REGISTRY

    out = [Entry(name, f"{m.citation} [{m.license}]; offline", [(f.name, f.sha256[:16], "upstream file, sha256")
                                                                 for f in m.files])
           for name, m in REGISTRY.items()]
    out += [Entry(name, f"{m.citation} [{m.license}]; {m.outputs}; online only (--weights {name}=PATH)",
                  [(m.file, m.url, "official URL")]) for name, m in ONLINE_MODELS.items()]
    return out


def describe(kind: str) -> list[Entry]:
    """Every name of one kind, with its meaning and parameters (defaults, units), from the registries.

    Args:
        kind: one of :data:`KINDS` (regions, ops, curves, shuffles, detectors, models).

    Returns:
        list of :class:`Entry`, in registry order.

    Raises:
        InvalidOptionError: an unknown kind.
    """
    makers = {"regions": _regions, "ops": _ops, "curves": _curves, "shuffles": _shuffles,
              "detectors": _detectors, "models": _models}
    if kind not in makers:
        raise InvalidOptionError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    return makers[kind]()


def format_entries(entries: list[Entry]) -> str:
    """Plain text: one line per name, then one indented line per parameter (``name = default  meaning``)."""
    lines = []
    for e in entries:
        lines.append(f"{e.name:<24} {e.meaning}")
        lines += [f"    {p:<22} = {v!r:<14} {m}" for p, v, m in e.parameters]
    return "\n".join(lines)




def draw_regions(image: str | os.PathLike, output: str | os.PathLike, detector: str = "blazeface-short",
                 columns: int = 6, panel: int = 240, overwrite: bool = False) -> Path:
    """A contact sheet of every named region on the first face of a picture: one panel per region (the face
    cropped with a 20 % margin, the region tinted and outlined, its name above), PNG.

    Args:
        image: a still image with a face (any format :func:`gpuface.io.images.read_image` reads).
        output: the PNG to write (a numbered name if it exists, unless ``overwrite``).
        detector: the landmarker's detector. columns: panels per row. panel: panel width, px.

    Returns:
        The path written.

    Raises:
        InputNotFoundError, ImageDecodeError: the image cannot be read.
        NoFaceError: no face in it.
    """
    import kornia
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    from gpuface.core.errors import NoFaceError
    from gpuface.io.encode import free_path
    from gpuface.io.images import read_image
    from gpuface.ops.regions import REGIONS, region_masks
    from gpuface.stages.landmarks import FaceLandmarker

    frame = read_image(image)[None]
    lm = FaceLandmarker(detector, max_faces=1)
    faces = lm(frame, lm.new_state())
    if len(faces) == 0:
        raise NoFaceError(f"{image}: no face found to draw the regions on")
    _, _, h, w = frame.shape
    pts = faces.landmarks[:1, :, :2]
    lo, hi = pts[0].amin(0), pts[0].amax(0)
    pad = 0.2 * (hi - lo)
    x0, y0 = (lo - pad).floor().clamp(min=0).long().tolist()
    x1, y1 = (hi + pad).ceil().long().tolist()
    x1, y1 = min(x1, w), min(y1, h)
    ph = round(panel * (y1 - y0) / (x1 - x0))
    # the face cropped and resized to the panel; the regions rasterised at the panel's size (crisp outlines)
    face = F.interpolate(frame[..., y0:y1, x0:x1].float(), size=(ph, panel), mode="bilinear", antialias=True)
    scaled = faces.landmarks[:1].clone()
    scaled[..., :2] = (scaled[..., :2] - torch.tensor([x0, y0])) * (panel / (x1 - x0))
    tiles = []
    names = [n for n in REGIONS if n != "frame"]
    for i, name in enumerate(names):
        mask = region_masks(scaled, torch.zeros(1, dtype=torch.long), name, 1, (ph, panel))
        edge = mask - kornia.morphology.erosion(mask, torch.ones(3, 3))
        colour = torch.tensor(_PALETTE[i % len(_PALETTE)], dtype=torch.float32).view(1, 3, 1, 1)
        crop = face * (1 - 0.35 * mask) + colour * 0.35 * mask
        crop = crop * (1 - edge) + colour * edge
        tile = Image.new("RGB", (panel, ph + 18), "white")
        tile.paste(Image.fromarray(crop[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()), (0, 18))
        ImageDraw.Draw(tile).text((4, 3), name, fill=(0, 0, 0))
        tiles.append(tile)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * panel, rows * (ph + 18)), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * panel, (i // columns) * (ph + 18)))
    out = free_path(output, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60)]


__all__ = ["KINDS", "Entry", "describe", "format_entries", "draw_regions", "OP_PARAMETERS", "REGION_NOTES",
           "CURVE_NOTES", "SHUFFLE_NOTES"]
