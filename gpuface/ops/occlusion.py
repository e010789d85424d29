"""Masking and occlusion ops: background mask, fill, bar over the eyes, blur, noise, Bubbles."""
from __future__ import annotations

import warnings

import kornia
import torch
import torch.nn.functional as F

from gpuface.core.errors import InvalidOptionError
from gpuface.kernels import masked_blend, masked_gaussian_blur
from gpuface.ops.regions import Region, region_masks
from gpuface.core.syncs import upload
from gpuface.ops.rng import normal, uniform
from gpuface.ops.base import _rgb, _window


def mask_background(x, mask, weight, ctx, background=(0, 0, 0)):
    """Keep the region, paint everything else ``background`` (RGB 0–255) — PyFAME ``layer_mask``. Frames without
    a face are left unchanged; the weight fades the background in."""
    has = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    has[ctx.faces.row] = 1.0
    return masked_blend(x, _rgb(background, x), 1 - mask, weight * has)


def fill(x, mask, weight, ctx, method: str = "black", colour=(0, 0, 0)):
    """Paint the region: ``black``, a ``colour``, or ``mean`` — each face's mean colour over its face oval minus
    eyes and lips (PyFAME ``OCCLUSION_FILL_MEAN``)."""
    if method not in ("black", "colour", "mean"):
        raise InvalidOptionError("fill: method black|colour|mean")
    if method == "mean":
        b, _, h, w = x.shape
        skin = region_masks(ctx.faces.landmarks, ctx.faces.row, "face_oval - eyes - lips_outer", b, (h, w))
        total = (x * skin).sum(dim=(2, 3)) / skin.sum(dim=(2, 3)).clamp(min=1)
        target = total[:, :, None, None].expand_as(x)
    else:
        target = _rgb((0, 0, 0) if method == "black" else colour, x).expand_as(x)
    return masked_blend(x, target, mask, weight)


def bar(x, mask, weight, ctx, colour=(0, 0, 0), margin: float = 0.12, thickness: float = 1.0):
    """A bar over the region (PyFAME ``layer_occlusion_bar``, default over the eyes), scaled to the face and
    rotating with head roll: the region's landmarks are measured along the eye line (33 → 263) and across it;
    the bar spans them plus ``margin`` × the face width (234 ↔ 454) at each end, and ``thickness`` × their
    extent across (at least 0.15 face widths). ``mask`` is ignored beyond choosing the region."""
    faces = ctx.faces
    if len(faces) == 0:
        return x
    region: Region = ctx.state["region"]
    lm = faces.landmarks[..., :2]
    pts = lm[:, list(region.indices())]
    axis = lm[:, 263] - lm[:, 33]
    axis = axis / axis.norm(dim=1, keepdim=True).clamp(min=1e-6)
    normal_ = torch.stack([-axis[:, 1], axis[:, 0]], dim=1)
    face_w = (lm[:, 454] - lm[:, 234]).norm(dim=1)
    centre = pts.mean(dim=1)
    u = ((pts - centre[:, None]) * axis[:, None]).sum(-1)
    v = ((pts - centre[:, None]) * normal_[:, None]).sum(-1)
    u0, u1 = u.amin(1) - margin * face_w, u.amax(1) + margin * face_w
    half_v = torch.maximum((v.amax(1) - v.amin(1)) * thickness, 0.15 * face_w) / 2
    vc = (v.amax(1) + v.amin(1)) / 2
    corners = torch.stack([centre + axis * uu[:, None] + normal_ * (vc + vv)[:, None]
                           for uu, vv in ((u0, -half_v), (u1, -half_v), (u1, half_v), (u0, half_v))], dim=1)
    b, _, h, w = x.shape
    rect = region_masks(corners, faces.row, Region("bar", (0, 1, 2, 3)), b, (h, w))
    return masked_blend(x, _rgb(colour, x), rect, weight)


def blur(x, mask, weight, ctx, method: str = "gaussian", max_kernel_size: int = 29):
    """Blur inside the region with a kernel that grows with the weight: ``k = 3 + weight·(max − 3)``, made odd
    (PyFAME ``layer_occlusion_blur``); gaussian (σ from k as OpenCV: 0.3·((k−1)/2 − 1) + 0.8), average or
    median (``kornia.filters``). Computed only in the window around the batch's masks."""
    if method not in ("gaussian", "average", "median") or max_kernel_size < 3:
        raise InvalidOptionError("blur: method gaussian|average|median, max_kernel_size >= 3")
    # kernel sizes are shapes: decided from the host copy of the weights (ctx.weights) where the layer stack gave it
    host = ctx.weights if ctx.weights is not None else weight.tolist()
    groups: dict[int, list[int]] = {}
    for i, wt in enumerate(host):
        if wt > 0:
            k = round(3 + wt * (max_kernel_size - 3))
            groups.setdefault(k + (k % 2 == 0), []).append(i)
    rows, cols = _window(mask * (weight > 0)[:, None, None, None], max_kernel_size, ctx)
    out = x.clone()
    for k, frames in groups.items():
        sel = upload(torch.tensor(frames), x.device)
        win, m = x[:, :, rows, cols][sel], mask[:, :, rows, cols][sel]
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
        k = min(k, 2 * min(win.shape[-2:]) - 1)  # reflect borders need the radius inside the window
        if method == "gaussian":  # fused separable blur + blend (a Triton kernel on CUDA where faster)
            out[sel, :, rows, cols] = masked_gaussian_blur(win, m, k, sigma)
            continue
        if method == "average":
            blurred = kornia.filters.box_blur(win, (k, k), border_type="reflect")
        else:
            blurred = kornia.filters.median_blur(win, (k, k))
        out[sel, :, rows, cols] = masked_blend(win, blurred, m)
    return out


def noise(x, mask, weight, ctx, method: str = "gaussian", probability: float = 0.5, pixel_size: int = 32,
          mean: float = 0.0, std: float = 0.5):
    """Noise inside the region (PyFAME ``layer_occlusion_noise``): ``pixelate`` (blocks of ``pixel_size`` px,
    block means), ``gaussian`` (mean, std in [0, 1] pixel units, added), ``salt_and_pepper`` (each pixel black
    with probability p/2, white with p/2). Random draws come from the counter-based stream of
    (seed, video, layer, frame): fresh each frame, identical on any device and batch size. The weight is the
    opacity."""
    if method not in ("pixelate", "gaussian", "salt_and_pepper") or not 0 <= probability <= 1 or pixel_size < 1:
        raise InvalidOptionError("noise: method pixelate|gaussian|salt_and_pepper, 0 <= probability <= 1, "
                                 "pixel_size >= 1")
    b, c, h, w = x.shape
    ox, oy = ctx.origin
    if method == "pixelate":  # blocks aligned to the frame's grid (x may be a window of the frame)
        p, px, py = pixel_size, ox % pixel_size, oy % pixel_size
        sums = F.avg_pool2d(F.pad(x, (px, 0, py, 0)), p, p, ceil_mode=True)
        counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), (px, 0, py, 0)), p, p, ceil_mode=True)
        y = F.interpolate(sums / counts, scale_factor=p, mode="nearest")[..., py:py + h, px:px + w]
        return masked_blend(x, y, mask, weight)
    full_w = ctx.size[1] if ctx.size else w
    full_hw = (ctx.size[0] * ctx.size[1]) if ctx.size else h * w
    rows, cols = _window(mask * (weight > 0)[:, None, None, None], 0, ctx)
    if rows.stop <= rows.start:
        return x
    frames = ctx.frames.to(x.device)
    r = torch.arange(rows.start, rows.stop, device=x.device) + oy
    q = torch.arange(cols.start, cols.stop, device=x.device) + ox
    pixel = r[:, None] * full_w + q[None, :]                 # absolute pixel index: independent of the window
    win = x[:, :, rows, cols]
    if method == "gaussian":
        index = torch.arange(c, device=x.device)[:, None, None] * full_hw + pixel
        y = (win + mean + std * normal(ctx.key, frames, index)).clamp(0, 1)
    else:
        u = uniform(ctx.key, frames, pixel[None])
        y = torch.where(u < probability / 2, torch.zeros_like(win),
                        torch.where(u < probability, torch.ones_like(win), win))
    out = x.clone()
    out[:, :, rows, cols] = masked_blend(win, y, mask[:, :, rows, cols], weight)
    return out


def bubbles(x, mask, weight, ctx, count: int = 10, sigma: float = 0.05, background=(128, 128, 128),
            per_frame: bool = False):
    """Gosselin & Schyns (2001) "Bubbles" (Vision Research 41): the region is hidden behind ``background``
    except through ``count`` Gaussian apertures of standard deviation ``sigma`` × the face width, whose centres
    are uniform over the face's landmark bounding box, in face-relative coordinates (they move with the face).
    Centres are drawn once per video (``per_frame=False``) or afresh each frame, from the stream of
    (seed, video, layer[, frame])."""
    faces = ctx.faces
    if count < 1 or sigma <= 0:
        raise InvalidOptionError("bubbles: count >= 1 and sigma > 0")
    if len(faces) == 0:
        return x
    b, _, h, w = x.shape
    face_frames = ctx.frames.to(x.device)[faces.row] if per_frame else torch.zeros_like(faces.row)
    uv = uniform(ctx.key, face_frames, (count, 2))                                          # (N, count, 2)
    lm = faces.landmarks[..., :2]
    lo, hi = lm.amin(1), lm.amax(1)
    offset = uv * (hi - lo)[:, None]                                  # bubble centres from the box corner lo
    s = (sigma * (lm[:, 454] - lm[:, 234]).norm(dim=1)).clamp(min=0.5)                      # (N,)
    # distances from lo first: the same values whether x is the whole frame or a window of it
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5)[None] - lo[:, 1:2]          # (N, H)
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5)[None] - lo[:, 0:1]          # (N, W)
    aperture = torch.zeros(b, h, w, device=x.device, dtype=x.dtype)
    for j in range(count):  # a loop over bubbles (not frames or faces): each step is one batched op
        gy = torch.exp(-(ys - offset[:, j, 1:2]) ** 2 / (2 * s[:, None] ** 2))                # (N, H)
        gx = torch.exp(-(xs - offset[:, j, 0:1]) ** 2 / (2 * s[:, None] ** 2))                # (N, W)
        g = gy[:, :, None] * gx[:, None, :]
        with warnings.catch_warnings():  # index_reduce is flagged beta; its amax semantics are what we need
            warnings.simplefilter("ignore", UserWarning)
            aperture.index_reduce_(0, faces.row, g, "amax")
    hidden = masked_blend(_rgb(background, x).expand_as(x), x, aperture[:, None])
    return masked_blend(x, hidden, mask, weight)
