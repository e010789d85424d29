"""Stimulus manipulations on real sample frames: what each op does inside its region, nothing outside."""
import json

import kornia
import numpy as np
import pytest
import torch

from gpuface.core.errors import InvalidOptionError
from gpuface.stages.landmarks import FaceLandmarker
from gpuface.stages.layers import LayerStack, load_spec
from gpuface.ops.registry import OPS, Context
from gpuface.ops.temporal import frame_order, frames_left_out, shuffled_block_array
from gpuface.ops.timing import Timing
from gpuface.ops.regions import get_region, region_masks
from gpuface.core.types import Faces


@pytest.fixture(scope="module")
def scene(clip):
    """8 real frames of the 720p sample, as floats, with their landmarks."""
    lm = FaceLandmarker("blazeface-short", max_faces=1)
    faces = lm(clip.frames, lm.new_state())
    return clip, faces, clip.frames.float() / 255


def _run(scene, op, region="face_oval", weight=1.0, state=None, **params):
    clip, faces, x = scene
    b, _, h, w = x.shape
    mask = region_masks(faces.landmarks, faces.row, region, b, (h, w))
    ctx = Context(faces=faces, frames=clip.index, pts=clip.pts, key=11,
                  state=state if state is not None else {"region": get_region(region)})
    return OPS[op](x, mask, torch.full((b,), weight), ctx, **params), mask


def _outside_unchanged(x, y, mask):
    out8 = (y * 255).round().byte()
    assert torch.equal(out8.expand_as(x)[(mask == 0).expand_as(x)], (x * 255).round().byte()[(mask == 0).expand_as(x)])


def test_timing_curves_at_known_times():
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 4.0, 4.5])
    w = Timing(onset=0.5, offset=4.0, rise=1.0, fall=1.0, rise_curve="linear", fall_curve="linear").weights(t)
    assert torch.allclose(w, torch.tensor([0, 0, 0.5, 1, 1, 1, 0.5, 0, 0]), atol=1e-6)
    s = Timing(onset=0.0, rise=2.0, rise_curve="sigmoid").weights(torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(s, torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)
    g = Timing(onset=0.0, rise=1.0, rise_curve="gaussian").weights(torch.tensor([0.0, 1.0]))
    assert torch.allclose(g, torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(Timing(rise=1.0, rise_curve=lambda x: x ** 2).weights(torch.tensor([0.5])), torch.tensor([0.25]))
    assert torch.equal(Timing(offset=2.0, fall=0.0).weights(torch.tensor([1.0, 2.5]), duration=5), torch.tensor([1.0, 0]))
    with pytest.raises(InvalidOptionError):
        Timing(rise_curve="cubic").weights(t)


def test_recolour_moves_cielab_a_by_the_magnitude(scene):
    x = scene[2]
    y, mask = _run(scene, "recolour", "face_skin", colour="red", magnitude=10, scale="absolute")
    _outside_unchanged(x, y, mask)
    inside = (mask > 0.5).expand(-1, 1, -1, -1)[:, 0]
    da = kornia.color.rgb_to_lab(y)[:, 1][inside] - kornia.color.rgb_to_lab(x)[:, 1][inside]
    assert abs(da.mean().item() - 12.7) < 1.5          # 10 % of 127 a* units (gamut clipping loses a little)
    y, _ = _run(scene, "recolour", "face_skin", weight=0.5, colour="blue", magnitude=10, scale="absolute")
    db = kornia.color.rgb_to_lab(y)[:, 2][inside] - kornia.color.rgb_to_lab(x)[:, 2][inside]
    assert abs(db.mean().item() + 6.4) < 1.0           # half weight, toward blue: b* down by 6.4
    state = {"region": get_region("face_skin")}
    _run(scene, "recolour", "face_skin", state=state, colour="red", magnitude=10, scale="relative")
    a_mean = kornia.color.rgb_to_lab(x)[:, 1][inside].mean().item()
    assert state["amount"] == pytest.approx(0.1 * (127 - a_mean), rel=0.05)


def _opencv_reference(x, mask, per_frame):
    """``per_frame`` (OpenCV on one float32 H×W×3 RGB frame) on every frame, blended in through ``mask`` by hand."""
    out = []
    for frame, m in zip(x, mask):
        img = np.ascontiguousarray(frame.permute(1, 2, 0).numpy())
        m = m[0].numpy()[..., None]
        out.append(img * (1 - m) + per_frame(img) * m)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def _cv2_shift(code, back, channel, delta, lo, hi):
    import cv2

    def shift(img):
        c = cv2.cvtColor(img, code)
        c[..., channel] = np.clip(c[..., channel] + delta, lo, hi)
        return np.clip(cv2.cvtColor(c, back), 0, 1)
    return shift


@pytest.mark.parametrize("op,channel,magnitude", [("saturation", 1, -10), ("brightness", 2, +10)])
def test_hsv_shifts_equal_opencv(scene, op, channel, magnitude):
    """Absolute shifts of HSV saturation/value by magnitude % of the range, against OpenCV's own HSV round trip
    (``cv2.cvtColor`` RGB2HSV/HSV2RGB on float32) blended by hand: measured 4e-7 apart."""
    import cv2

    x = scene[2]
    y, mask = _run(scene, op, "face_oval", scale="absolute", magnitude=magnitude)
    _outside_unchanged(x, y, mask)
    ref = _opencv_reference(x, mask, _cv2_shift(cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB, channel, magnitude / 100, 0, 1))
    assert (y - ref).abs().max() < 1e-5


@pytest.mark.parametrize("colour,channel,delta", [("red", 1, 12.7), ("blue", 2, -12.8)])
def test_recolour_equals_opencv_lab(scene, colour, channel, delta):
    """recolour (absolute, 10 %) against OpenCV's CIELAB round trip (float32, D65) with a*/b* moved by 10 % of the
    half range: within 2.2e-3 (OpenCV's float Lab and Kornia's differ in their constants by that much)."""
    import cv2

    x = scene[2]
    y, mask = _run(scene, "recolour", "face_skin", colour=colour, magnitude=10, scale="absolute")
    ref = _opencv_reference(x, mask, _cv2_shift(cv2.COLOR_RGB2Lab, cv2.COLOR_Lab2RGB, channel, delta, -128, 127))
    assert (y - ref).abs().max() < 4e-3


def test_the_earlier_op_name_mask_is_an_alias():
    from gpuface.stages.layers import load_spec

    layer = load_spec({"layers": [{"op": "mask", "params": {"background": [255, 0, 0]}}]}).layers[0]
    assert layer.op == "mask_background"


def test_mask_fill_and_bar(scene):
    clip, faces, x = scene
    y, mask = _run(scene, "mask_background", "face_oval", background=(255, 0, 0))
    outside = (mask[:, 0] == 0)
    assert torch.all(y[:, 0][outside] == 1) and torch.all(y[:, 1][outside] == 0)
    assert torch.equal(y[:, :, 300:360, 600:680], x[:, :, 300:360, 600:680])  # middle of the face untouched
    y, mask = _run(scene, "fill", "eyes", method="mean")
    inside = mask[0, 0] > 0.5
    colours = y[0][:, inside]
    assert colours.std(dim=1).max() < 1e-5                       # one flat colour: the face's mean skin colour
    assert 0.3 < colours[0].mean() < 0.9
    _outside_unchanged(x, y, mask)
    y, _ = _run(scene, "bar", "eye_regions")
    for idx in (33, 133, 263, 362):                               # eye corners are under the bar
        px = faces.landmarks[:, idx, :2].long()
        assert torch.all(y[torch.arange(8), :, px[:, 1], px[:, 0]] == 0)
    nose = faces.landmarks[:, 1, :2].long()
    assert torch.equal(y[torch.arange(8), :, nose[:, 1], nose[:, 0]], x[torch.arange(8), :, nose[:, 1], nose[:, 0]])


def _hf(img):
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean()


def test_blur_kernel_grows_with_weight(scene):
    x = scene[2]
    strong, mask = _run(scene, "blur", "face_oval", weight=1.0, max_kernel_size=31)
    weak, _ = _run(scene, "blur", "face_oval", weight=0.2, max_kernel_size=31)
    none, _ = _run(scene, "blur", "face_oval", weight=0.0, max_kernel_size=31)
    _outside_unchanged(x, strong, mask)
    box = (slice(None), slice(None), slice(250, 500), slice(520, 760))
    assert _hf(strong[box]) < 0.5 * _hf(x[box]) and _hf(strong[box]) < _hf(weak[box]) < _hf(x[box])
    assert torch.equal(none, x)
    med, _ = _run(scene, "blur", "face_oval", method="median", max_kernel_size=9)
    assert _hf(med[box]) < _hf(x[box])


def test_blur_equals_pyfames_opencv_calls(scene):
    """Against the OpenCV calls PyFAME makes (``cv2.GaussianBlur(img, (k, k), 0)``, ``cv2.medianBlur``,
    ``cv2.blur``) at the kernel its weight rule gives (k = 3 + w·(max − 3), made odd: weight 1 → 31, 0.2 → 9),
    blended in through the mask: Gaussian within 1e-3 (OpenCV's own σ for k = 9 differs from its formula by that),
    median and box within 1e-6."""
    import cv2

    x = scene[2]
    for weight, k in ((1.0, 31), (0.2, 9)):
        y, mask = _run(scene, "blur", "face_oval", weight=weight, max_kernel_size=31)
        ref = _opencv_reference(x, mask, lambda img: cv2.GaussianBlur(img, (k, k), 0))
        assert (y - ref).abs().max() < 1.5e-3, k
    y, mask = _run(scene, "blur", "face_oval", method="median", max_kernel_size=9)
    ref = _opencv_reference(x, mask, lambda img: cv2.medianBlur((img * 255).round().astype(np.uint8), 9) / 255.0)
    assert (y - ref.float()).abs().max() < 1e-6
    y, mask = _run(scene, "blur", "face_oval", method="average", max_kernel_size=9)
    assert (y - _opencv_reference(x, mask, lambda img: cv2.blur(img, (9, 9)))).abs().max() < 1e-6


def test_noise_is_seeded_per_frame_and_matches_its_parameters(scene):
    x = scene[2]
    y, mask = _run(scene, "noise", "face_oval", method="salt_and_pepper", probability=0.4)
    _outside_unchanged(x, y, mask)
    inside = mask[:, 0] > 0.5
    black = (y.amax(dim=1) == 0)[inside].float().mean()
    white = (y.amin(dim=1) == 1)[inside].float().mean()
    assert abs(black - 0.2) < 0.02 and abs(white - 0.2) < 0.03
    y2, _ = _run(scene, "noise", "face_oval", method="salt_and_pepper", probability=0.4)
    assert torch.equal(y, y2)                                            # same key: same draws
    assert not torch.equal((y[0] == 0) & inside[0], (y[1] == 0) & inside[1])  # fresh noise every frame
    g, _ = _run(scene, "noise", "face_oval", method="gaussian", std=0.05)
    d = (g - x)[:, :, 250:450, 560:720]
    assert abs(d.std().item() - 0.05) < 0.01 and abs(d.mean().item()) < 0.01
    p, _ = _run(scene, "noise", "face_oval", method="pixelate", pixel_size=16)
    assert _hf(p[:, :, 250:500, 520:760]) < _hf(x[:, :, 250:500, 520:760])


def test_bubbles_reveal_only_through_apertures(scene):
    x = scene[2]
    y, mask = _run(scene, "bubbles", "face_oval", count=5, sigma=0.03, background=(128, 128, 128))
    _outside_unchanged(x, y, mask)
    inside = mask[:, 0] > 0.5
    grey = ((y - 128 / 255).abs().amax(dim=1) < 2 / 255)[inside].float().mean()
    assert grey > 0.7                                                  # most of the face is hidden
    revealed = ((y - x).abs().amax(dim=1) < 0.02) & inside
    assert revealed.sum(dim=(1, 2)).min() >= 50                       # and some is seen through each bubble


def test_grid_shuffle_is_a_permutation_of_cells(scene):
    x = scene[2]
    state = {"region": get_region("face_oval")}
    y, mask = _run(scene, "grid_shuffle", "face_oval", state=state, square_size=40)
    assert not torch.equal(y, x)
    for i in range(8):                                       # the same pixels, moved
        a = (x[i] * 255).round().reshape(3, -1).T
        b = (y[i] * 255).round().reshape(3, -1).T
        key = lambda t: t[:, 0] * 65536 + t[:, 1] * 256 + t[:, 2]  # noqa: E731
        assert torch.equal(torch.sort(key(a)).values, torch.sort(key(b)).values)
    changed = (y != x).any(dim=1)
    assert changed.float().mean() < 0.3                      # only around the face
    c, _ = _run(scene, "grid_shuffle", "face_oval", method="cyclic", square_size=40)
    assert not torch.equal(c, y) and not torch.equal(c, x)
    u, _ = _run(scene, "grid_shuffle", "face_oval", method="unchanged")
    assert torch.equal(u, x)


def _same_pixels(x, y):
    key = lambda t: ((t * 255).round().reshape(3, -1).T * torch.tensor([65536.0, 256.0, 1.0])).sum(1)  # noqa: E731
    return all(torch.equal(torch.sort(key(x[i])).values, torch.sort(key(y[i])).values) for i in range(len(x)))


def test_grid_shuffle_dimensions_and_neighbour_swaps(scene):
    clip, faces, x = scene
    # a 6 x 8 grid centred on the face: whole cells move, the changed area lies within 6 x 8 cells of one size
    state = {"region": get_region("face_oval")}
    g, _ = _run(scene, "grid_shuffle", "face_oval", state=state, grid_dimensions=(6, 8), overlap_threshold=0.3)
    assert _same_pixels(x, g) and not torch.equal(g, x)
    cw, ch = state["cell"]
    lm = faces.landmarks[0, :, :2]
    assert abs(cw * 6 - float(lm[:, 0].max() - lm[:, 0].min())) <= 6 and abs(ch * 8 - float(lm[:, 1].max() - lm[:, 1].min())) <= 8
    rows, cols = torch.nonzero((g[0] != x[0]).any(0), as_tuple=True)
    assert int(rows.max() - rows.min()) < 8 * ch and int(cols.max() - cols.min()) < 6 * cw
    # neighbour (low-level) scramble: pairs of cells at most `neighbourhood` cells apart swap places
    state = {"region": get_region("face_oval")}
    nb, _ = _run(scene, "grid_shuffle", "face_oval", state=state, method="neighbour", square_size=24, neighbourhood=1)
    assert _same_pixels(x, nb) and not torch.equal(nb, x)
    partner = state["partner"]
    assert torch.equal(partner[partner], torch.arange(partner.numel()))            # an involution: swaps
    r, c = torch.arange(partner.numel()) // 64, torch.arange(partner.numel()) % 64
    assert int((partner // 64 - r).abs().max()) <= 1 and int((partner % 64 - c).abs().max()) <= 1
    assert float((partner != torch.arange(partner.numel())).float().mean()) > 0.9
    with pytest.raises(InvalidOptionError):
        _run(scene, "grid_shuffle", grid_dimensions=(0, 3))
    with pytest.raises(InvalidOptionError):
        _run(scene, "grid_shuffle", method="shuffle")


def test_layer_stack_is_batch_size_independent_and_handles_faceless_frames(scene):
    clip, faces, _ = scene
    spec = load_spec([{"op": "recolour", "region": "face_skin", "params": {"colour": "green"}},
                      {"op": "noise", "region": "lips", "params": {"method": "gaussian", "std": 0.2}},
                      {"op": "bubbles", "region": "eyes", "params": {"per_frame": True}},
                      {"op": "grid_shuffle", "region": "forehead", "params": {"square_size": 20}}], seed=5)
    whole = LayerStack(spec)
    whole.reset("v.mp4")
    ref = whole.apply(clip.frames, faces, clip.index, clip.pts, 10.0)
    parts = LayerStack(spec)
    parts.reset("v.mp4")
    out = []
    for s in (slice(0, 3), slice(3, 8)):
        sel = (faces.row >= s.start) & (faces.row < s.stop)
        sub = faces.select(sel)
        sub.row = sub.row - s.start
        out.append(parts.apply(clip.frames[s], sub, clip.index[s], clip.pts[s], 10.0))
    assert torch.equal(torch.cat(out), ref)
    empty = Faces.empty(6)
    assert torch.equal(whole.apply(clip.frames, empty, clip.index, clip.pts, 10.0), clip.frames)
    other = LayerStack(load_spec([layer.describe() for layer in spec.layers], seed=6))
    other.reset("v.mp4")
    assert not torch.equal(other.apply(clip.frames, faces, clip.index, clip.pts, 10.0), ref)


LOCAL_LAYERS = [
    ("recolour", "face_skin", {}), ("saturation", "face_oval", {}), ("brightness", "face_oval", {"scale": "absolute"}),
    ("fill", "eyes", {"method": "mean"}), ("bar", "eyes", {}), ("blur", "face_oval", {}),
    ("blur", "nose", {"method": "median", "max_kernel_size": 9}), ("noise", "face_oval", {"method": "pixelate"}),
    ("noise", "face_oval", {"method": "gaussian"}), ("noise", "lips", {"method": "salt_and_pepper"}),
    ("bubbles", "face_oval", {}), ("grid_shuffle", "face_oval", {}),
    ("grid_shuffle", "face_oval", {"method": "neighbour", "square_size": 24}),
    ("relocate", "face_oval", {}),
]
# parameters that reach far from the face: the window may be the whole frame, the pixels must still match
WIDE_LAYERS = [("relocate", "face_oval", {"rotations": [90.0, 180.0], "max_offset": 0.3}),
               ("bar", "eyes", {"thickness": 2.5, "margin": 0.3}),
               ("grid_shuffle", "face_oval", {"grid_dimensions": [5, 7]}), ("pencil_sketch", "face_oval", {})]


@pytest.mark.parametrize("feather", [0.0, 3.0])
def test_layers_computed_in_the_face_window_equal_whole_frames(scene, feather):
    """LayerStack computes local ops only in a window around the faces, and on the CPU ops shrink further to their
    masks' boxes (a GPU skips that: a host sync each). Both must give the pixels of the whole-frame computation
    (exactly; relocate's grid_sample and the sums of the mean fill and of the region means that relative colour
    shifts sample may round 1 level apart)."""
    clip, faces, _ = scene
    for op, region, params in LOCAL_LAYERS + WIDE_LAYERS:
        spec = load_spec([{"op": op, "region": region, "params": params, "feather": feather}], seed=3)
        out = []
        for window, op_windows in ((False, False), (True, True), (True, False)):   # whole frames, CPU, GPU path
            stack = LayerStack(spec)
            stack.reset("v.mp4")
            out.append(stack.apply(clip.frames, faces, clip.index, clip.pts, 10.0, window, op_windows))
        rows, cols = stack.window(faces, *clip.frames.shape[-2:])
        if (op, region, params) in LOCAL_LAYERS:
            assert (rows.stop - rows.start) * (cols.stop - cols.start) < 0.5 * clip.frames[0, 0].numel(), op
        assert not torch.equal(out[0], clip.frames), op
        for y in out[1:]:
            diff = (y.int() - out[0].int()).abs()
            if op in ("relocate", "fill", "recolour", "saturation"):
                assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-4, op
            else:
                assert torch.equal(y, out[0]), (op, params, int(diff.max()), int((diff > 0).sum()))


def test_spec_errors():
    with pytest.raises(InvalidOptionError):
        load_spec([{"op": "melt"}])
    with pytest.raises(InvalidOptionError):
        load_spec([{"op": "blur", "params": {"sigma": 3}}])
    with pytest.raises(InvalidOptionError):
        load_spec([{"op": "blur", "region": "ears"}])
    with pytest.raises(InvalidOptionError):
        load_spec({"layers": [], "temporal": {"method": "sideways"}})
    with pytest.raises(InvalidOptionError, match="audio carry or silence"):
        load_spec({"layers": [], "temporal": {"method": "reverse", "audio": "loud"}})


def test_bad_layer_values_fail_when_the_spec_loads():
    """A bad value fails at load (the op runs once on a blank frame), not mid-video."""
    with pytest.raises(InvalidOptionError, match="^noise: method pixelate"):
        load_spec({"layers": [{"op": "noise", "region": "face_oval", "params": {"method": "sideways"}}]})
    with pytest.raises(InvalidOptionError, match="^blur"):
        load_spec({"layers": [{"op": "blur", "region": "face_oval", "params": {"method": "smudge"}}]})


def test_temporal_orders():
    assert frame_order(10, 3, "reverse").tolist() == [6, 7, 8, 3, 4, 5, 0, 1, 2]
    assert frame_order(10, 3, "left_cyclic_shift").tolist() == [1, 2, 0, 4, 5, 3, 7, 8, 6]
    assert frame_order(10, 3, "right_cyclic_shift").tolist() == [2, 0, 1, 5, 3, 4, 8, 6, 7]
    assert frame_order(9, 3, "palindrome").tolist() == [0, 1, 2, 2, 1, 0, 3, 4, 5, 5, 4, 3, 6, 7, 8, 8, 7, 6]
    assert frame_order(10, 3, "interleave").tolist() == [0, 3, 6, 1, 4, 7, 2, 5, 8]
    assert frame_order(10, 3, "none", drop_last=False).tolist() == list(range(10))
    r = frame_order(30, 3, "random", seed=1, video="a")
    assert sorted(r.tolist()) == list(range(30)) and r.tolist() != list(range(30))
    assert np.array_equal(r, frame_order(30, 3, "random", seed=1, video="a"))
    order, size, duration = shuffled_block_array(30, 3, "random", seed=1)     # PyFAME's pair and the duration
    assert sorted(order.tolist()) == list(range(10)) and size == 3 and duration == 1.0
    order, size, duration = shuffled_block_array(300, 30, "reverse", block_duration=0.5)
    # PyFAME 1.0.10: num_blocks = video_duration / block_duration, block_size = int(num_frames // num_blocks)
    assert size == int(300 // (300 / 30 / 0.5)) == 15 and duration == 0.5 and order.tolist() == list(range(19, -1, -1))
    rep = shuffled_block_array(300, 3, "random_with_replacement", seed=2).order
    assert len(rep) == 100 and len(set(rep.tolist())) < 100


def _loudness(path, fps=29.97):
    """RMS of the first audio stream in frame-long windows (np.ndarray, one value per video frame)."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        res = av.AudioResampler(format="fltp", layout="mono", rate=st.codec_context.sample_rate)
        x = np.concatenate([f.to_ndarray()[0] for fr in c.decode(st) for f in res.resample(fr)])
        per = st.codec_context.sample_rate / fps
    n = int(len(x) // per)
    return np.array([np.sqrt(np.mean(x[int(i * per):int((i + 1) * per)] ** 2)) for i in range(n)])


def test_manipulate_cli_writes_videos_and_logs(samples, tmp_path, caplog):
    from gpuface.cli import main
    from gpuface.io.decode import VideoReader, probe

    spec = tmp_path / "spec.yaml"
    spec.write_text("layers:\n  - op: blur\n    region: face_oval\n  - op: recolour\n    region: face_skin\n"
                    "    params: {colour: yellow, magnitude: 15}\ntemporal: {method: reverse, block_duration: 1.0}\n")
    out_dir = tmp_path / "out"     # a folder not made yet, as the README's `-o out/` (the shuffled audio goes there)
    code = main(["manipulate", samples["sample_01.mp4"], samples["no_face.mp4"], samples["multi_face.jpg"],
                 "--layers", str(spec), "-o", str(out_dir), "--seed", "3", "--quiet", "--device", "cpu",
                 "--detector", "blazeface-full"])
    assert code == 0
    for f in out_dir.iterdir():
        f.rename(tmp_path / f.name)
    log = json.loads((tmp_path / "sample_01_manipulated.json").read_text())
    assert log["seed"] == 3 and log["layers"][1]["params"] == {"colour": "yellow", "magnitude": 15}
    assert log["temporal_order"]["blocks"] == [2, 1, 0] and log["audio_copied"] is True
    assert log["temporal_order"]["frames_dropped"] == 10          # said in the log and on stderr
    assert "leaves out 10 frame(s)" in caplog.text and "drop_last: false" in caplog.text
    assert frames_left_out(100, 29.97, "reverse", 1.0, drop_last=False) == 0
    out = probe(tmp_path / "sample_01_manipulated.mp4")
    assert out.num_frames == len(log["temporal_order"]["frames"]) == 90 and out.fps == probe(samples["sample_01.mp4"]).fps
    first = next(iter(VideoReader(tmp_path / "sample_01_manipulated.mp4").batches(1))).frames[0].float()
    src = next(iter(VideoReader(samples["sample_01.mp4"]).batches(1, __import__("gpuface").Selection(frames=(60,)))))
    corner = (slice(None), slice(0, 100), slice(0, 200))           # background: frame 60 first, unchanged
    assert (first[corner] - src.frames[0].float()[corner]).abs().mean() < 3
    # each frame carried its sound along: the output's loudness per frame follows the source's in the shuffled order
    order = np.asarray(log["temporal_order"]["frames"])
    src_env, out_env = _loudness(samples["sample_01.mp4"]), _loudness(tmp_path / "sample_01_manipulated.mp4")
    n = min(len(out_env), len(order)) - 2
    shuffled = np.corrcoef(out_env[1:n], src_env[order[1:n]])[0, 1]
    unshuffled = np.corrcoef(out_env[1:n], src_env[1:n])[0, 1]
    err = np.abs(out_env[1:n] - src_env[order[1:n]]).mean() / np.abs(out_env[1:n] - src_env[1:n]).mean()
    assert shuffled > 0.99 > unshuffled and err < 0.05, (shuffled, unshuffled, err)   # measured 0.99999, 0.87
    nolog = json.loads((tmp_path / "no_face_manipulated.json").read_text())
    assert nolog["frames_without_face"] == nolog["frames"] > 0
    assert json.loads((tmp_path / "multi_face_manipulated.json").read_text())["faces"] == 5
    assert main(["manipulate", samples["single_face.jpg"], "--layers", str(tmp_path / "missing.yaml"),
                 "--quiet"]) == 2


def test_region_colour_means_match_a_direct_masked_mean(scene):
    from gpuface.ops.analysis import region_colour_means

    clip, faces, x = scene
    table = region_colour_means(clip, faces, regions=("face_skin", "nose"), space="rgb", video="v")
    assert list(table.columns[:4]) == ["video", "frame", "time_s", "face"] and len(table) == 8
    mask = region_masks(faces.landmarks, faces.row, "nose", 8, tuple(x.shape[-2:]))[3, 0] > 0.5
    direct = clip.frames[3].float()[:, mask].mean(dim=1)
    assert np.allclose(table.loc[3, ["nose_R", "nose_G", "nose_B"]].to_numpy(dtype=float), direct.numpy(), atol=0.01)
    lab = region_colour_means(clip, faces, regions=("face_skin",), space="lab")
    y, _ = _run(scene, "recolour", "face_skin", colour="red", magnitude=10, scale="absolute")
    shifted = clip.__class__(frames=(y * 255).round().byte(), index=clip.index, pts=clip.pts, source="", fps=clip.fps)
    after = region_colour_means(shifted, faces, regions=("face_skin",), space="lab")
    assert abs((after["face_skin_a"] - lab["face_skin_a"]).mean() - 12.7) < 1.5


def test_point_light_display_draws_region_landmarks_on_black(scene):
    clip, faces, x = scene
    state = {"region": get_region("face_oval")}
    y, _ = _run(scene, "point_light", "face_oval", state=state, density=0.5, radius=2)
    n_points = state["points"].numel()
    assert 100 < n_points < 300                            # about half of the ~470 points inside the oval
    lit = (y.amax(dim=1) > 0.99)
    assert lit[0].sum() > n_points * 5 and ((y > 0) & (y < 0.99)).sum() == 0   # white discs on pure black
    pts = faces.landmarks[0, state["points"], :2].long()
    assert lit[0, pts[:, 1], pts[:, 0]].all()
    inv, _ = _run(scene, "point_light", "face_oval", invert=True, history="origin")
    assert inv[0].mean() > 0.9


def test_pencil_sketch_and_overlay(scene, samples):
    x = scene[2]
    y, mask = _run(scene, "pencil_sketch", "face_oval")
    _outside_unchanged(x, y, mask)
    inside = mask[:, 0] > 0.5
    values = y.mean(dim=1)[inside]
    assert ((values == 0) | (values == 1)).all() and 0.02 < (values == 0).float().mean() < 0.5
    clip, faces, _ = scene
    from gpuface.io.images import read_rgba

    y, _ = _run(scene, "overlay", image=read_rgba(samples["glasses.png"]))
    changed = (y - x).abs().amax(dim=1) > 0.1
    eyes = faces.landmarks[:, 168, :2].long()
    lo, hi = faces.landmarks[:, 33, 0].min().item(), faces.landmarks[:, 263, 0].max().item()
    cols = torch.nonzero(changed[0])[:, 1].float()
    assert changed.sum() > 2000 and cols.min() < lo and cols.max() > hi    # wider than the eyes
    assert abs(torch.nonzero(changed[0])[:, 0].float().mean().item() - eyes[0, 1].item()) < 40
    red = torch.zeros(4, 10, 40)
    red[0], red[3] = 1.0, 1.0                                                   # an opaque red band
    clipped, eye_mask = _run(scene, "overlay", "eyes", image=red, clip=True)
    _outside_unchanged(x, clipped, eye_mask)                                    # only inside the open eyes
    inside = (eye_mask[:, 0] > 0.99) & ((clipped - x).abs().amax(dim=1) > 0.1)
    is_red = (clipped.permute(0, 2, 3, 1)[inside] - torch.tensor([1.0, 0, 0])).abs().amax(-1) < 0.02
    assert inside.sum() > 100 and is_red.float().mean() > 0.8                  # band edges are bilinear blends


def test_moviefy(samples, tmp_path):
    from gpuface.io.decode import VideoReader, probe
    from PIL import Image

    from gpuface.io.moviefy import moviefy

    out = moviefy([samples["multi_face.jpg"], samples["single_face.jpg"]], tmp_path / "m.mp4", fps=10, repeat=1.0,
                  blend=0.3, size="pad", pad_colour=(0, 255, 0))
    info = probe(out)
    assert info.num_frames == 20 and info.fps == 10
    frames = torch.cat([b.frames for b in VideoReader(out).batches(20)]).float()
    diffs = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    assert (diffs[:6] < 1).all() and (diffs[6:10] > 1).all() and (diffs[11:] < 1).all()   # hold, fade, hold
    # against the images as PIL reads them, padded by hand (centred, pad colour green), through x264 at crf 18
    first, second = (torch.from_numpy(np.array(Image.open(samples[n]).convert("RGB"))).permute(2, 0, 1).float()
                     for n in ("multi_face.jpg", "single_face.jpg"))
    padded = torch.tensor([0.0, 255.0, 0.0]).view(3, 1, 1).expand(3, 667, 1000).clone()
    padded[:, 52:52 + 562, 214:214 + 572] = second
    assert (frames[0, :, :666] - first[:, :666]).abs().mean() < 2
    assert (frames[15, :, :666] - padded[:, :666]).abs().mean() < 2
    assert (frames[8, :, :666] - (first[:, :666] + padded[:, :666]) / 2).abs().mean() < 2   # fade step 2 of 3: ½ + ½
    with pytest.raises(InvalidOptionError):
        moviefy([], tmp_path / "x.mp4")


def test_relocate_moves_parts_inside_the_face_only(scene):
    clip, faces, x = scene
    sub = (slice(0, 2),)
    scene2 = (clip, faces.select(faces.row < 2), x[sub])
    y, _ = _run(scene2, "relocate", "face_oval", rotations=(180,), max_offset=0.1)
    h, w = x.shape[-2:]
    near = region_masks(faces.landmarks[:2], faces.row[:2], "face_oval", 2, (h, w), feather=40.0) > 0.001
    assert torch.equal(y[~near.expand_as(y)], x[sub][~near.expand_as(y)])
    eye = region_masks(faces.landmarks[:2], faces.row[:2], "left_eye", 2, (h, w)) > 0.5
    assert (y - x[sub]).abs().amax(dim=1)[eye[:, 0]].mean() > 0.05    # the eye is no longer where it was
    y2, _ = _run(scene2, "relocate", "face_oval", rotations=(180,), max_offset=0.1)
    assert torch.equal(y, y2)


def _two_a_frame(faces, shift, copy_dx):
    """The faces moved by ``shift`` (x, y) px, each with a copy ``copy_dx`` px to its right (overlapping it), sorted
    by frame as Faces are."""
    from dataclasses import replace

    def moved(d):
        d = torch.tensor(d, dtype=torch.float32)
        return replace(faces, boxes=faces.boxes + d.repeat(2), keypoints=faces.keypoints + d,
                       landmarks=torch.cat([faces.landmarks[..., :2] + d, faces.landmarks[..., 2:]], -1))
    both = Faces.cat([moved(shift), moved([shift[0] + copy_dx, shift[1]])])
    return both.select(torch.sort(both.row, stable=True).indices)


NO_SYNC_PATHS = [("grid_shuffle", {}), ("grid_shuffle", {"method": "neighbour", "square_size": 24}),
                 ("grid_shuffle", {"method": "cyclic", "square_size": 30}),
                 ("grid_shuffle", {"grid_dimensions": [5, 7]}),
                 ("overlay", {"image": "glasses.png"}), ("relocate", {"rotations": [0.0, 90.0]}),
                 ("pencil_sketch", {}), ("point_light", {"radius": 4})]


@pytest.mark.parametrize("op, params", NO_SYNC_PATHS, ids=[f"{o}{p}" for o, p in NO_SYNC_PATHS])
def test_ops_without_host_syncs_give_the_exact_paths_pixels(scene, samples, op, params):
    """On a GPU ops read no sizes from the device (``Context.windows`` off): grid_shuffle lays a frame-sized grid
    from each face's first cell inside the frame and moves every cell (those that stay into a spill frame),
    relocate resamples the whole window, overlay and relocate compose a frame's faces by a scan over all N faces,
    the point-light discs are rasterised. Run here on the CPU, each must give the pixels of the exact path, with
    two overlapping faces in every frame, cut by the frame's top-left corner."""
    from gpuface.io.images import read_rgba

    clip, faces, x = scene
    lo = faces.landmarks[..., :2].amin(1).amin(0)
    width = float((faces.landmarks[..., 0].amax(1) - faces.landmarks[..., 0].amin(1)).amin())
    sx, sy = -int(lo[0] + 0.2 * width), -int(lo[1] + 0.15 * width)
    crowd = _two_a_frame(faces, (sx, sy), 0.4 * width)
    x = torch.roll(x, (sy, sx), dims=(2, 3))                   # the pixels move with the faces
    b, _, h, w = x.shape
    mask = region_masks(crowd.landmarks, crowd.row, "face_oval", b, (h, w))
    params = {k: read_rgba(samples[v]) if k == "image" else v for k, v in params.items()}
    out = []
    for windows in (True, False):
        ctx = Context(faces=crowd, frames=clip.index, pts=clip.pts, key=5, state={"region": get_region("face_oval")},
                      weights=(1.0,) * b, windows=windows)
        out.append(OPS[op](x, mask, torch.ones(b), ctx, **params))
    changed = (out[0] - x).abs().amax(1) > 0.02
    assert changed.float().mean() > 0.002 and changed[:, :h // 2, :w // 2].any(), op   # it did act, at the corner
    assert torch.equal(out[1], out[0]), (op, float((out[1] - out[0]).abs().max()))


def test_faces_of_a_frame_compose_like_blending_them_one_by_one():
    """The scan that composites per-face layers (overlay, relocate) against blending the faces one after the other
    (``x + (y - x)·α·w`` per face, in order): 3 faces in frame 0, none in 1, 1 in 2, 4 in 3."""
    from gpuface.ops.base import _per_face_blend

    g = torch.Generator().manual_seed(0)
    frame = torch.tensor([0, 0, 0, 2, 3, 3, 3, 3])
    x = torch.rand(4, 3, 6, 5, generator=g)
    y = torch.rand(8, 3, 6, 5, generator=g)
    alpha = torch.rand(8, 1, 6, 5, generator=g) * (torch.rand(8, 1, 6, 5, generator=g) > 0.3)
    weight = torch.tensor([0.9, 0.5, 1.0, 0.7])
    ref = x.clone()
    for i, f in enumerate(frame.tolist()):
        ref[f] = ref[f] + (y[i] - ref[f]) * alpha[i] * weight[f]
    for sync in (True, False):
        got = _per_face_blend(x, frame, y, alpha, weight, sync)
        assert torch.allclose(got, ref, atol=1e-6) and torch.equal(got[1], x[1])
        bare = alpha == 0
        assert torch.equal(got[0][bare[:3].all(0).expand(3, -1, -1)], x[0][bare[:3].all(0).expand(3, -1, -1)])


def test_pencil_sketch_equals_opencvs_illumination_divide_and_adaptive_threshold(scene):
    """PyFAME's sketch pipeline built from OpenCV's own calls, without its bilateral filter (which the op leaves
    out): ``cv2.GaussianBlur`` illumination at the op's σ, ``cv2.divide`` by it, ``cv2.adaptiveThreshold``
    (mean, the op's block and bias). Inside the face oval 99.4 % of the pixels get the same stroke or paper
    (limit 98 %); the rest sit at the threshold (our illumination is computed on a 4× coarser grid, OpenCV rounds
    to 8 bits)."""
    import cv2

    from gpuface.ops.stylise import _sketch_filters

    clip, faces, x = scene
    y, mask = _run(scene, "pencil_sketch", "face_oval")
    ctx = Context(faces=faces, frames=clip.index, pts=clip.pts, key=11, state={})
    sigma, t = _sketch_filters(ctx, 0.35)
    for f in (0, 5):
        grey = cv2.cvtColor(clip.frames[f].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY)
        illum = cv2.GaussianBlur(grey, (0, 0), sigmaX=sigma)
        norm = cv2.divide(grey, illum, scale=255)
        ref = cv2.adaptiveThreshold(norm, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, t, 7) > 0
        inside = (mask[f, 0] > 0.5).numpy()
        ours = (y[f, 0] > 0.5).numpy()
        agree = (ours == ref)[inside].mean()
        assert agree > 0.98 and 0.02 < (~ref[inside]).mean() < 0.5, (f, agree)


def test_pencil_sketch_box_mean_is_kornias_box_blur():
    """The sketch's exact fixed-point box mean against Kornia's box filter (reflected borders), and the same pixels
    in a window as in the whole image."""
    from gpuface.ops.stylise import _box_mean

    x = torch.rand(2, 1, 40, 57, generator=torch.Generator().manual_seed(3))
    for t in (3, 9, 15):
        ref = kornia.filters.box_blur(x, (t, t), border_type="reflect")
        assert torch.allclose(_box_mean(x, t), ref, atol=2e-5), t
    whole, part = _box_mean(x, 9), _box_mean(x[..., 5:35, 10:50], 9)
    assert torch.equal(whole[..., 9:31, 14:46], part[..., 4:26, 4:36])


def test_discs_raster_paints_the_pixels_of_the_direct_write():
    """Point-light discs on a GPU go through a raster (no host sync); on the CPU the pixels are written directly:
    the same pixels, with discs cut by every border of the frame."""
    from gpuface.ops.draw import discs

    g = torch.Generator().manual_seed(2)
    xy = torch.rand(60, 2, generator=g) * torch.tensor([90.0, 50.0]) - 5
    frame = torch.randint(0, 3, (60,), generator=g)
    out = []
    for raster in (False, True):
        y = torch.zeros(3, 3, 40, 80)
        discs(y, frame, xy, 3, torch.tensor([1.0, 0.5, 0.25]), raster=raster)
        out.append(y)
    assert torch.equal(out[0], out[1]) and (out[0][:, 0] == 1).sum() > 60 * 20
