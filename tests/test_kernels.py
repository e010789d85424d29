"""kernels/: each Triton kernel equals its torch reference on real frames (TRITON_INTERPRET=1 on CPU)."""
import kornia
import pytest
import torch
import torch.nn.functional as F

from gpuface import kernels
from gpuface.core.errors import InvalidOptionError
from gpuface.ops.registry import OPS, Context
from gpuface.ops.regions import get_region, region_masks

from conftest import LINUX_X86_64  # noqa: E402

# Triton comes with torch on Linux x86_64: there a missing Triton fails these tests instead of skipping them
pytestmark = pytest.mark.skipif(not kernels.triton_available() and not LINUX_X86_64,
                                reason="Triton has no wheel for this platform")


@pytest.fixture(scope="module")
def small(clip):
    """Two real frames at quarter size (180 x 320, small enough for Triton's interpreter) with their landmarks
    and a feathered face-oval mask."""
    from gpuface.stages.landmarks import FaceLandmarker

    lm = FaceLandmarker("blazeface-short", max_faces=1)
    faces = lm(clip.frames[:2], lm.new_state())
    x = F.interpolate(clip.frames[:2].float() / 255, scale_factor=0.25, mode="area")
    faces.landmarks = faces.landmarks * torch.tensor([0.25, 0.25, 1.0])
    mask = region_masks(faces.landmarks, faces.row, "face_oval", 2, x.shape[-2:], feather=1.5)
    assert 0.05 < float((mask > 0).float().mean()) < 0.5
    return x, mask, faces


def test_masked_blend_equals_reference(small):
    x, mask, _ = small
    win = x[:, :, 20:160, 60:260]                     # a strided window, as LayerStack passes
    m = mask[:, :, 20:160, 60:260]
    y = (win.flip(-1) * 0.7 + 0.1)
    weight = torch.tensor([0.4, 1.0])
    colour = torch.tensor([0.9, 0.1, 0.2]).view(1, 3, 1, 1)
    for target in (y, colour):
        got = kernels.masked_blend(win, target, m, weight, backend="triton")
        ref = win * (1 - m * weight.view(-1, 1, 1, 1)) + target * (m * weight.view(-1, 1, 1, 1))   # by hand
        assert got.shape == win.shape and got.is_contiguous()
        assert float((got - ref).abs().max()) <= 1e-6
        outside = (m == 0).expand_as(win)
        assert torch.equal(got[outside], win[outside])
        inside = (m > 0.99).expand_as(win)
        assert float((got[inside] - win[inside]).abs().mean()) > 0.05
    zero = kernels.masked_blend(win, y, m, torch.zeros(2), backend="triton")
    assert torch.equal(zero, win.contiguous())


def test_masked_gaussian_blur_equals_kornia_and_stays_in_the_mask(small):
    x, mask, _ = small
    win, m = x[:, :, 10:170, 50:270], mask[:, :, 10:170, 50:270]
    for k, sigma in ((3, 0.8), (15, 2.6)):
        got = kernels.masked_gaussian_blur(win, m, k, sigma, backend="triton")
        # the reference is Kornia's own blur, blended by hand: x·(1 − m) + blur(x)·m
        blurred = kornia.filters.gaussian_blur2d(win, (k, k), (sigma, sigma), border_type="reflect")
        ref = win * (1 - m) + blurred * m
        assert float((got - ref).abs().max()) <= 1e-5, k
        assert float((kernels.masked_gaussian_blur(win, m, k, sigma, backend="torch") - ref).abs().max()) <= 1e-5
        outside = (m == 0).expand_as(win)
        assert torch.equal(got[outside], win[outside])
    inside = (m > 0.99).expand_as(win)
    lap = lambda t: (t[..., 1:-1, 1:-1] * 4 - t[..., :-2, 1:-1] - t[..., 2:, 1:-1]  # noqa: E731
                     - t[..., 1:-1, :-2] - t[..., 1:-1, 2:])
    hf_before = lap(win).abs()[inside[..., 1:-1, 1:-1]].mean()
    hf_after = lap(got).abs()[inside[..., 1:-1, 1:-1]].mean()
    assert hf_after < 0.5 * hf_before


def test_blur_op_uses_the_kernel_and_matches_torch(small, monkeypatch):
    x, mask, faces = small
    ctx = Context(faces=faces, frames=torch.arange(2), pts=torch.zeros(2, dtype=torch.float64),
                  state={"region": get_region("face_oval")})
    weight = torch.tensor([0.5, 1.0])
    from gpuface.kernels import _triton

    launched = []

    class Spy:   # records each launch of a Triton kernel, then launches it
        def __init__(self, kernel, name):
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            launched.append(self.name)
            return self.kernel[grid]

    for name in ("blur_rows_kernel", "blur_cols_blend_kernel"):
        monkeypatch.setattr(_triton, name, Spy(getattr(_triton, name), name))
    out, ran = {}, {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("GPUFACE_KERNELS", backend)
        launched.clear()
        out[backend] = OPS["blur"](x, mask, weight, ctx, max_kernel_size=11)
        ran[backend] = set(launched)
    assert ran == {"torch": set(), "triton": {"blur_rows_kernel", "blur_cols_blend_kernel"}}   # the path really ran
    assert float((out["triton"] - out["torch"]).abs().max()) <= 1e-5
    assert not torch.equal(out["torch"], x)


def test_kernel_errors(small):
    x, mask, _ = small
    with pytest.raises(InvalidOptionError):
        kernels.masked_blend(x, x, mask, backend="cuda-please")
    with pytest.raises(InvalidOptionError):
        kernels.masked_gaussian_blur(x, mask, 4, 1.0)
    with pytest.raises(InvalidOptionError):
        kernels.masked_gaussian_blur(x, mask, 401, 1.0)
    with pytest.raises(InvalidOptionError):
        kernels.masked_blend(x, x, mask[:, :, :10], backend="torch")
    with pytest.raises(InvalidOptionError):
        kernels.masked_blend(x.to(torch.float64), x, mask, backend="triton")
