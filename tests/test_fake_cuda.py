"""Every network runs on CUDA, proven without a GPU: each model's real weights are lifted into
``torch._subclasses.fake_tensor.FakeTensorMode`` on ``device="cuda"`` and run forward. Fake tensors carry shapes,
dtypes and devices through every real op: a tensor created on the CPU inside the forward raises
``FakeTensorDeviceMismatchError`` when it meets CUDA data, and a host sync (``.item()``, ``.tolist()``, a
data-dependent shape) raises ``DataDependentOutputException`` / ``DynamicOutputShapeException``. So a pass
means: every output is on CUDA and the forward never waits for the device."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from gpuface.core.syncs import lift
from gpuface.models.weights import load_graph, load_state_dict


def _mtcnn(part):
    from gpuface.models.mtcnn import MTCNN

    m = MTCNN()
    m.load_state_dict(load_state_dict("mtcnn"))
    return getattr(m, part)


def _blazeface(variant):
    from gpuface.models.blazeface import BlazeFace

    return BlazeFace(load_graph(f"blazeface-{variant}"), variant)


def _facemesh():
    from gpuface.models.facemesh import FaceMesh

    return FaceMesh(load_graph("facemesh"))


def _blendshapes():
    from gpuface.models.facemesh import Blendshapes

    return Blendshapes(load_graph("blendshapes"))


def _loaded(cls_path: str, weights: str | None):
    import importlib

    module, name = cls_path.rsplit(".", 1)
    m = getattr(importlib.import_module(module), name)()
    if weights:
        m.load_state_dict(load_state_dict(weights))
    return m


# (id, factory, input shapes): every network gpuface runs; OpenGraphAU and HSEmotion have online-only weights, so
# they run with their architecture's random initialisation (what is checked is device flow, not values).
MODELS = [
    ("mtcnn-pnet", lambda: _mtcnn("pnet"), [(2, 3, 180, 320)]),
    ("mtcnn-rnet", lambda: _mtcnn("rnet"), [(7, 3, 24, 24)]),
    ("mtcnn-onet", lambda: _mtcnn("onet"), [(7, 3, 48, 48)]),
    ("blazeface-short", lambda: _blazeface("short"), [(2, 3, 128, 128)]),
    ("blazeface-full", lambda: _blazeface("full"), [(2, 3, 192, 192)]),
    ("facemesh", _facemesh, [(3, 3, 256, 256)]),
    ("blendshapes", _blendshapes, [(3, 146, 2)]),
    ("centerface", lambda: _loaded("gpuface.models.centerface.CenterFace", "centerface"), [(2, 3, 192, 320)]),
    ("dlib-resnet", lambda: _loaded("gpuface.models.dlib_resnet.DlibResNet", "dlib-resnet"), [(3, 3, 150, 150)]),
    ("mini-xception", lambda: _loaded("gpuface.models.mini_xception.MiniXception", "mini-xception"),
     [(3, 1, 64, 64)]),
    ("opengraphau", lambda: _loaded("gpuface.models.opengraphau.OpenGraphAU", None), [(2, 3, 224, 224)]),
    ("hsemotion", lambda: _loaded("gpuface.models.online.HSEmotionNet", None), [(2, 3, 224, 224)]),
]


@pytest.mark.parametrize("factory, shapes", [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
def test_model_runs_on_fake_cuda_without_host_sync(factory, shapes):
    mode = FakeTensorMode()
    model = lift(factory().eval(), mode)
    with mode, torch.inference_mode():
        inputs = [torch.empty(s, device="cuda:0") for s in shapes]
        out = model(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    assert outs and all(o.device == torch.device("cuda:0") for o in outs), [o.device for o in outs]


def test_fake_cuda_catches_what_it_should():
    """The tier's premise, checked: a CPU tensor meeting CUDA data and a host sync both raise."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorDeviceMismatchError

    mode = FakeTensorMode()
    with mode:
        x = torch.empty(4, device="cuda:0")
        with pytest.raises(FakeTensorDeviceMismatchError):
            x + torch.ones(4)
        with pytest.raises(DataDependentOutputException):
            x.sum().item()


def _op_call():
    """Arguments for one op on fake CUDA: 4 frames of 180×320, 5 faces (fake values), as LayerStack passes them
    after the first batch of a video (per-video state sampled, host weights given)."""
    from gpuface.ops.registry import Context
    from gpuface.ops.regions import get_region
    from gpuface.core.types import Faces

    d, b, n = "cuda:0", 4, 5
    x, mask = torch.empty(b, 3, 180, 320, device=d), torch.empty(b, 1, 180, 320, device=d)
    weight = torch.empty(b, device=d)
    faces = Faces(row=torch.zeros(n, dtype=torch.long, device=d), boxes=torch.empty(n, 4, device=d),
                  scores=torch.empty(n, device=d), keypoints=torch.empty(n, 5, 2, device=d),
                  landmarks=torch.empty(n, 478, 3, device=d))
    state = {"region": get_region("eyes"), "face_width": 120.0, "amount": torch.zeros((), device=d),
             "points": torch.zeros(40, dtype=torch.long, device=d), "trail": [], "cell": [20, 24],
             "partner": torch.zeros(64 * 64, dtype=torch.long, device=d),
             "moves": (torch.empty(4, 2, device=d), torch.empty(4, 2, 2, device=d))}
    ctx = Context(faces, torch.arange(b, device=d), torch.zeros(b, dtype=torch.float64), key=7, state=state,
                  size=(180, 320), weights=(1.0, 0.5, 0.0, 1.0), windows=True)
    return x, mask, weight, ctx


# Every op, in each of its code paths: the per-video state (points, grid partners, relocation moves) is sampled on
# the first batch (a few host syncs once per video), so _op_call gives it as LayerStack holds it afterwards.
SYNC_FREE_CASES = [("recolour", {}), ("recolour", {"scale": "absolute"}), ("saturation", {}), ("brightness", {}),
                   ("mask_background", {}), ("fill", {}), ("fill", {"method": "colour"}), ("fill", {"method": "mean"}),
                   ("bar", {}), ("blur", {}),
                   ("blur", {"method": "median"}), ("blur", {"method": "average"}), ("noise", {}),
                   ("noise", {"method": "pixelate"}), ("noise", {"method": "salt_and_pepper"}), ("bubbles", {}),
                   ("grid_shuffle", {}), ("grid_shuffle", {"method": "neighbour"}),
                   ("grid_shuffle", {"method": "cyclic"}), ("grid_shuffle", {"grid_dimensions": [4, 5]}),
                   ("point_light", {}), ("point_light", {"keep_background": True, "invert": True}),
                   ("pencil_sketch", {}), ("overlay", {}), ("overlay", {"clip": True}), ("relocate", {}),
                   ("relocate", {"rotations": [0.0, 90.0]})]
# What still syncs per batch on a GPU, by design (the census counts it): each case must raise under fake CUDA
KNOWN_SYNCS = [("point_light", {"history": "relative"}, "trails are kept on the host, face after face"),
               ("point_light", {"history": "origin"}, "the paths' lengths decide how many dots to draw")]


def _run_op(name, params):
    from gpuface.ops.registry import OPS

    x, mask, weight, ctx = _op_call()
    if name == "overlay":
        params = {**params, "image": torch.empty(4, 8, 16)}
    return x, OPS[name](x, mask, weight, ctx, **params)


def test_the_cases_cover_every_op():
    from gpuface.ops.registry import OPS

    assert {name for name, _ in SYNC_FREE_CASES} == set(OPS)


@pytest.mark.parametrize("name, params", SYNC_FREE_CASES, ids=[f"{n}{p or ''}" for n, p in SYNC_FREE_CASES])
def test_op_runs_on_fake_cuda_without_host_sync(name, params):
    """Every op runs on fake CUDA (real Kornia and kernel-wrapper code, fake data) with no host sync, even with
    ``ctx.windows`` on: on a GPU an op ignores its mask-box window and uses sizes known on the host."""
    with FakeTensorMode():
        x, y = _run_op(name, params)
    assert y.device == torch.device("cuda:0") and y.shape == x.shape


@pytest.mark.parametrize("name, params, why", KNOWN_SYNCS, ids=[f"{n}{p}" for n, p, _ in KNOWN_SYNCS])
def test_known_syncs_are_real(name, params, why):
    """The list of what still syncs is honest: each case does need the host (when one stops, it moves to the
    sync-free cases)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    with FakeTensorMode(), pytest.raises((DataDependentOutputException, DynamicOutputShapeException)):
        _run_op(name, params)


@pytest.mark.parametrize("feather", [0.0, 3.0])
def test_region_masks_on_fake_cuda_without_host_sync(feather):
    """Region rasters on a GPU use a frame-sized grid per face (no sync for the size) and a host-built Gaussian."""
    from gpuface.ops.regions import region_masks

    with FakeTensorMode():
        lm = torch.empty(3, 478, 3, device="cuda:0")
        m = region_masks(lm, torch.zeros(3, dtype=torch.long, device="cuda:0"), "face_oval - eyes", 2, (90, 160),
                         feather)
    assert m.device == torch.device("cuda:0") and m.shape == (2, 1, 90, 160)
