"""kernels/crop_rois.c (gpuface.kernels.cpu): FaceMesh crops sampled straight from uint8 frames, on real video.

Checked against an independent float32 bilinear formula (bit for bit: the kernel promises grid_sample's
arithmetic, without fused multiply-adds), against the window + grid_sample path it replaces (within float32
rounding), for independence from the other ROIs and the thread count, and for the fallback without a compiler."""
import logging

import pytest
import torch

from gpuface.kernels import cpu
from gpuface.ops import geometry
from gpuface.ops.geometry import crop_rois
from gpuface.stages.landmarks import MESH_INPUT, FaceLandmarker, rois_from_landmarks


@pytest.fixture(scope="module")
def rois(clip):
    """The 8 frames' tracked face ROIs, plus ROIs that are rotated, cross the frame's edges or lie outside it."""
    lm = FaceLandmarker("blazeface-short", max_faces=1)
    faces = lm(clip.frames, lm.new_state())
    c, s, a = rois_from_landmarks(faces.landmarks)
    h, w = clip.frames.shape[-2:]
    extra_c = torch.tensor([[640.0, 300.0], [20.0, 30.0], [w - 10.0, h - 40.0], [-400.0, 200.0], [300.5, 410.25]])
    extra_s = torch.tensor([420.0, 300.0, 250.0, 200.0, 90.0])
    extra_a = torch.tensor([0.6, -2.5, 3.1, 0.0, 1.2])
    row = torch.cat([faces.row, torch.tensor([0, 3, 7, 2, 5])])
    return row, torch.cat([c, extra_c]), torch.cat([s, extra_s]), torch.cat([a, extra_a])


def _bilinear_reference(frames, row, centres, sides, angles, size):
    """grid_sample's bilinear float32 arithmetic (align_corners=False, zeros outside the window or the frame),
    written out with torch element-wise ops on each ROI's window."""
    cos, sin = geometry.cos_sin(angles)
    reach = sides * (cos.abs() + sin.abs()) / 2 + 2
    win = torch.ceil(2 * reach / 64) * 64
    x0, y0 = torch.floor(centres[:, 0] - win / 2), torch.floor(centres[:, 1] - win / 2)
    grid = geometry._grid(centres - torch.stack([x0, y0], dim=1), sides, angles, win, size)
    h, w = frames.shape[-2:]
    out = []
    for i in range(len(row)):
        half = win[i] / 2
        x = (grid[i, ..., 0] + 1) * half - 0.5
        y = (grid[i, ..., 1] + 1) * half - 0.5
        xf, yf = x.floor(), y.floor()
        dw, dn = x - xf, y - yf
        de, ds = 1 - dw, 1 - dn
        total = None
        for (dx, dy), weight in (((0, 0), ds * de), ((1, 0), ds * dw), ((0, 1), dn * de), ((1, 1), dn * dw)):
            cx, cy = xf.long() + dx, yf.long() + dy
            fx, fy = cx + int(x0[i]), cy + int(y0[i])
            inside = (cx >= 0) & (cx < win[i]) & (cy >= 0) & (cy < win[i]) & (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
            v = frames[row[i], :, fy.clamp(0, h - 1), fx.clamp(0, w - 1)].float() * inside
            term = v * weight
            total = term if total is None else total + term
        out.append(total / 255)
    return torch.stack(out)


def test_kernel_is_grid_sample_arithmetic_on_real_frames(clip, rois):
    """Tracked, rotated and edge-crossing ROIs: the kernel equals the written-out bilinear formula bit for bit and
    the window + grid_sample path within float32 rounding (FMA contraction in ATen's build); the crops are real
    faces (not zeros) where the ROI is inside the frame and 0 where it is outside."""
    assert cpu.available(), "the C kernel must build here (a C compiler is part of the test machine)"
    row, c, s, a = rois
    got = crop_rois(clip.frames, row, c, s, a, MESH_INPUT)
    assert got.shape == (len(row), 3, MESH_INPUT, MESH_INPUT) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, _bilinear_reference(clip.frames, row, c, s, a, MESH_INPUT))
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GPUFACE_KERNELS", "torch")
        torch_path = crop_rois(clip.frames, row, c, s, a, MESH_INPUT)
    assert (got - torch_path).abs().max() < 1e-4
    assert got[:8].mean() > 0.2 and got[:8].std() > 0.05          # the tracked faces
    assert got[-2].abs().max() == 0                                 # the ROI left of the frame
    corner = got[len(row) - 4]                                      # the ROI over the top-left corner
    assert corner.abs().max() > 0 and (corner == 0).any()


def test_kernel_crops_do_not_depend_on_company_or_threads(clip, rois):
    """Each ROI cut alone, and all at 1 and 2 threads, give the same bits."""
    row, c, s, a = rois
    together = crop_rois(clip.frames, row, c, s, a, MESH_INPUT)
    alone = torch.cat([crop_rois(clip.frames, row[i:i + 1], c[i:i + 1], s[i:i + 1], a[i:i + 1], MESH_INPUT)
                       for i in range(len(row))])
    assert torch.equal(together, alone)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = crop_rois(clip.frames, row, c, s, a, MESH_INPUT)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, single)


def test_landmarks_with_the_kernel_match_the_torch_path(clip, monkeypatch):
    """FaceMesh landmarks from the kernel's crops and from the grid_sample path agree within 1e-3 px."""
    def landmarks():
        lm = FaceLandmarker("blazeface-short", max_faces=1)
        return lm(clip.frames, lm.new_state()).landmarks

    fast = landmarks()
    monkeypatch.setenv("GPUFACE_KERNELS", "torch")
    reference = landmarks()
    assert fast.shape == reference.shape == (8, 478, 3)
    assert (fast - reference)[..., :2].abs().max() < 1e-3


def test_without_a_compiler_the_torch_path_runs(clip, rois, monkeypatch, tmp_path, caplog):
    """No C compiler and no built library: one warning, and the crops are the grid_sample path's."""
    row, c, s, a = rois
    monkeypatch.setenv("GPUFACE_KERNELS", "torch")
    expected = crop_rois(clip.frames, row, c, s, a, MESH_INPUT)
    monkeypatch.setenv("GPUFACE_KERNELS", "auto")
    monkeypatch.setenv("GPUFACE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    cpu._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="gpuface"):
            got = crop_rois(clip.frames, row, c, s, a, MESH_INPUT)
        assert not cpu.available()
    finally:
        cpu._library.cache_clear()
    assert torch.equal(got, expected)
    assert sum("cannot build the C kernels" in r.message for r in caplog.records) == 1
    assert not list(tmp_path.rglob("*.so"))


def test_copy_spans_writes_exactly_the_spans(clip):
    """kernels/copy_spans.c against slicing: every span's pixels come from the source, every other pixel is left as
    it was, for channels-last (memcpy rows) and NCHW (per-pixel) layouts; a span outside the images is refused
    before anything is written."""
    if not cpu.available():
        pytest.skip("no C compiler here")
    g = torch.Generator().manual_seed(3)
    src = torch.randint(0, 256, (4, 3, 96, 128), dtype=torch.uint8, generator=g)
    f, y = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 96, (300,), generator=g)
    x0 = torch.randint(0, 127, (300,), generator=g)
    x1 = x0 + 1 + (torch.rand(300, generator=g) * (128 - x0 - 1)).long()
    spans = torch.stack([f, y, x0, x1], 1)
    for layout in (torch.channels_last, torch.contiguous_format):
        dst = clip.frames[:4, :, 100:196, 200:328].clone(memory_format=layout)
        expected = dst.clone()
        for b, r, a, e in spans.tolist():
            expected[b, :, r, a:e] = src[b, :, r, a:e]
        cpu.copy_spans_u8(dst, src.contiguous(memory_format=layout), spans)
        assert torch.equal(dst, expected)
    before = dst.clone()
    with pytest.raises(ValueError, match="outside"):
        cpu.copy_spans_u8(dst, src, torch.tensor([[0, 0, 0, 5], [0, 96, 0, 5]]))
    assert torch.equal(dst, before)
