"""Stylising ops: point-light displays, pencil sketch, RGBA overlays anchored to landmarks."""
from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from gpuface.ops.draw import discs, segments
from gpuface.core.errors import InvalidOptionError
from gpuface.kernels import masked_blend
from gpuface.core.syncs import upload
from gpuface.ops.base import (_first_active_faces, _first_face_width, _may_sync, _normalised_blur,
                              _normalised_blur_reach, _per_face_blend, _rgb, _windowed)
from gpuface.ops.geometry import angle_of, cos_sin
from gpuface.ops.rng import uniform


def point_light(x, mask, weight, ctx, density: float = 1.0, colour=(255, 255, 255), radius: int = 3,
                history: str | None = None, history_window: float = 0.5, history_colour=(255, 0, 0),
                keep_background: bool = False, invert: bool = False):
    """Point-light display (PyFAME ``layer_stylise_point_light``; Johansson 1973): the landmarks lying inside the
    region on the first frame the layer acts on (its first face; a seeded ``density`` fraction of them) drawn as
    discs of ``radius`` px on black (or over the frame with ``keep_background``; ``invert``: black on white). History:
    ``origin`` draws each point's path from its first position, ``relative`` its trail over the last
    ``history_window`` seconds (as dots every frame). Random draws: the layer's stream.

    Host syncs: choosing the points, once per video; none per batch without history; with history, a few per
    face (the trails are kept on the host, face after face)."""
    if not 0 < density <= 1 or radius < 0 or history not in (None, "origin", "relative"):
        raise InvalidOptionError("point_light: 0 < density <= 1, radius >= 0, history None|origin|relative")
    faces = ctx.faces
    if len(faces) == 0:
        return x
    lm = faces.landmarks[..., :2]
    if "points" not in ctx.state:
        chosen = _first_active_faces(ctx)
        if not chosen:       # no face yet where the layer acts: frames without a face stay as they are
            return x
        i = chosen[0]
        first = int(faces.row[i])
        pos = lm[i].floor().long()
        h, w = mask.shape[-2:]
        ok = (pos[:, 0] >= 0) & (pos[:, 0] < w) & (pos[:, 1] >= 0) & (pos[:, 1] < h)
        inside = torch.zeros(lm.shape[1], dtype=torch.bool, device=x.device)
        inside[ok] = mask[first, 0, pos[ok, 1], pos[ok, 0]] > 0.5
        keep = uniform(ctx.key, torch.zeros(1, dtype=torch.long, device=x.device), (lm.shape[1],))[0] < density
        ctx.state["points"] = torch.nonzero(inside & keep).flatten()
        ctx.state["trail"] = []
    idx = ctx.state["points"]
    bg = x.clone() if keep_background else torch.full_like(x, 1.0 if invert else 0.0)
    point_rgb = _rgb(colour if not invert else tuple(255 - c for c in colour), x).view(3)
    pts = lm[:, idx]                                                    # (N, P, 2)
    frame_of = faces.row[:, None].expand(-1, idx.numel()).reshape(-1)
    if history is not None:
        trail = ctx.state["trail"]
        times = ctx.pts.to(x.device)[faces.row]
        hist_rgb = _rgb(history_colour, x).view(3)
        for n in range(len(faces)):  # history is sequential by nature: per face, past positions up to now
            trail.append((float(times[n]), pts[n]))
            t = float(times[n])
            past = [p for (tt, p) in trail if history == "origin" or t - tt <= history_window]
            if history == "origin":
                past = [trail[0][1]]
            if past:
                start = torch.cat(past)
                segments(bg, faces.row[n].expand(start.shape[0]), start, pts[n].repeat(len(past), 1),
                         max(radius // 2, 0), hist_rgb)
        cutoff = float(times.max()) - history_window
        ctx.state["trail"] = trail[:1] + [(tt, p) for (tt, p) in trail[1:] if tt >= cutoff]
    discs(bg, frame_of, pts.reshape(-1, 2), radius, point_rgb)
    has = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    has[faces.row] = 1.0
    return masked_blend(x, bg, torch.ones_like(x[:1, :1, :1, :1]), weight * has)


def _sketch_filters(ctx, detail: float) -> tuple[float, int]:
    """The pencil sketch's illumination σ and threshold window (px), from the first faces the layer acts on
    (:func:`_first_face_width`): the same filters at any batch size."""
    face_w = _first_face_width(ctx)
    return max(face_w * 0.05 / detail, 1.0), max(int(face_w * 0.04 / detail) | 1, 3)


def _sketch_reach(ctx, params) -> int:
    detail = params.get("detail", 0.35)
    if detail <= 0 or len(ctx.faces) == 0:
        return 0
    sigma, t = _sketch_filters(ctx, detail)
    return _normalised_blur_reach(sigma) + t // 2


def _box_mean(x: torch.Tensor, t: int) -> torch.Tensor:
    """Mean of x (B, 1, H, W) in [0, 1] over t × t boxes (t odd), reflected at the edges: summed-area tables
    (Crow 1984) of x in 16-bit fixed point, int64, so that every box sum is exact: the same in any window and on
    any device, at O(1) per pixel whatever t (a 1/65536 quantisation of the values)."""
    r = t // 2
    q = (F.pad(x, (r, r, r, r), mode="reflect") * 65536).round_().to(torch.int64)
    rows = F.pad(q.cumsum(-1), (1, 0))
    rows = rows[..., t:] - rows[..., :-t]                                 # sums along each row, (B, 1, H + 2r, W)
    cols = F.pad(rows.cumsum(-2), (0, 0, 1, 0))
    return ((cols[..., t:, :] - cols[..., :-t, :]).to(torch.float64) / (t * t * 65536)).to(x.dtype)


@_windowed(reach=_sketch_reach)
def pencil_sketch(x, mask, weight, ctx, detail: float = 0.35, bias: float = 7.0):
    """Pencil sketch of the region (after PyFAME ``layer_stylise_pencil_sketch``): grey divided by its
    illumination (a Gaussian of σ = face width · 0.05 / detail, normalised at the frame's edges, on a 4× coarser
    grid), then a local mean threshold (a box mean, window ≈ face width · 0.04 / detail, odd, reflected at the
    frame's edges) with ``bias`` grey levels: dark strokes on white. Defined on the whole frame, computed in the
    window around the batch's masks grown by the filters' reach."""
    if detail <= 0:
        raise InvalidOptionError("pencil_sketch: detail must be > 0")
    if len(ctx.faces) == 0:
        return x
    sigma, t = _sketch_filters(ctx, detail)
    grey = kornia.color.rgb_to_grayscale(x)
    illum = _normalised_blur(grey, torch.ones_like(grey), sigma, ctx.origin)
    norm = (grey / illum.clamp(min=1e-3)).clamp(0, 1)
    local = _box_mean(norm, t)
    sketch = (norm > local - bias / 255).to(x.dtype).expand_as(x)
    return masked_blend(x, sketch, mask, weight)


def overlay(x, mask, weight, ctx, image=None, anchors=(33, 263), centre: int = 168, scale: float = 1.6,
            y_offset: float = 0.0, clip: bool = False):
    """Alpha-blend an RGBA image (a float (4, h, w) tensor in [0, 1]; a file named in a spec is read when the spec
    loads, never by the op) on every face, scaled so its
    width is ``scale`` × the distance between landmarks ``anchors`` (default the outer eye corners), rotated with
    the line through them (head roll), centred on landmark ``centre`` (default 168, between the eyes) moved by
    ``y_offset`` × its height along the face's vertical (PyFAME ``layer_overlay``, any image, any anchors).
    ``clip``: show the image only inside the layer's region (PyFAME's pupils drawn only where the eye is open:
    e.g. region ``eyes``, anchors 468/473); otherwise ``mask`` is ignored. The weight is the opacity."""
    faces = ctx.faces
    if len(faces) == 0:
        return x
    if not isinstance(image, torch.Tensor):
        raise InvalidOptionError("overlay: give image= (an RGBA file in the spec, read when it loads, or a float "
                                 "(4, h, w) tensor)")
    if "rgba" not in ctx.state:        # per-video state: the image on the frames' device, moved once
        ctx.state["rgba"] = upload(image.float(), x.device)
    rgba = ctx.state["rgba"]
    lm = faces.landmarks[..., :2]
    a, b_ = lm[:, anchors[0]], lm[:, anchors[1]]
    axis = b_ - a
    width = scale * axis.norm(dim=1)
    cos, sin = cos_sin(angle_of(axis))        # float64 inside: the same bits for any number of faces
    height = width * rgba.shape[1] / rgba.shape[2]
    down = torch.stack([-sin, cos], dim=1)
    c = lm[:, centre] + down * (y_offset * height)[:, None]
    bsz, _, h, w = x.shape
    # inverse map: frame pixel -> overlay coordinates in [-1, 1], per face, on the whole frame
    theta = torch.stack([torch.stack([cos * 2 / width * w / 2, sin * 2 / width * h / 2,
                                      (cos * (w / 2 - c[:, 0]) + sin * (h / 2 - c[:, 1])) * 2 / width], 1),
                         torch.stack([-sin * 2 / height * w / 2, cos * 2 / height * h / 2,
                                      (-sin * (w / 2 - c[:, 0]) + cos * (h / 2 - c[:, 1])) * 2 / height], 1)], 1)
    # affine_grid gives normalised frame coordinates; fold the frame-normalisation into theta
    grid = F.affine_grid(theta, [len(faces), 4, h, w], align_corners=False)
    layer = F.grid_sample(rgba[None].expand(len(faces), -1, -1, -1), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)          # (N, 4, H, W)
    alpha = layer[:, 3:4] * mask[faces.row] if clip else layer[:, 3:4]
    return _per_face_blend(x, faces.row, layer[:, :3], alpha, weight, _may_sync(ctx, x))
