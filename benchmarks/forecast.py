"""Roofline forecast of gpuface's throughput on GPUs we have not run on (a forecast, not a measurement).

    python benchmarks/forecast.py [--host-cores 16] [--json forecast.json]

Per stage and per frame (720p and 1080p, one face per frame), it counts:

- FLOPs of every network (``torch.utils.flop_counter.FlopCounterMode``) and bytes read + written by every operator
  (a dispatch mode summing operand sizes: an upper bound of memory traffic, no cache reuse), both **under fake CUDA**
  (``FakeTensorMode`` on ``device="cuda"``, real weights' shapes), so the counts are those of a CUDA run;
- operators dispatched per batch of 32 (each one a kernel launch on a GPU), eagerly and as a CUDA graph
  (:mod:`gpuface.models.graphs`: one launch for the replay plus the copies around it; the mask stage stays eager);
- for the mask stage (data-dependent shapes, not runnable under fake tensors) the same counters on real CPU tensors.

Each stage's time on a GPU is bounded below by compute (FLOPs / peak FP32), memory (bytes / peak bandwidth) and
launches (graphed launches per batch × 4 µs / batch size); the pipeline runs its GPU stages one after another on one stream, while NVDEC
decodes and the encoder (NVENC where the GPU has one, else x264 on the host's cores, measured here per core)
work beside it: forecast frames/s = min(GPU, NVDEC, encoder). Peak numbers are NVIDIA's published dense figures;
NVDEC/NVENC per-engine rates are assumptions (stated in :data:`ENGINE_FPS_1080P`) until measured. Beside them,
the measured CPU frames/s of the same pipeline on this machine (``benchmarks/run.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Published peaks: dense FP32 FLOP/s (non-tensor-core), HBM/GDDR bandwidth B/s, NVDEC and NVENC engines.
GPUS = {
    "H200 SXM": {"flops": 67e12, "bandwidth": 4.8e12, "nvdec": 7, "nvenc": 0},
    "H100 SXM": {"flops": 67e12, "bandwidth": 3.35e12, "nvdec": 7, "nvenc": 0},
    "L4": {"flops": 30.3e12, "bandwidth": 0.3e12, "nvdec": 4, "nvenc": 2},
}
#: Assumed H.264 frames/s of one engine at 1080p (scaled by pixel count to 720p): to be replaced by measurements.
ENGINE_FPS_1080P = {"nvdec": 700.0, "nvenc": 500.0}
LAUNCH_S = 4e-6      # a kernel launch, the floor per dispatched operator on a GPU
BATCH = 32


class OpCounter(TorchDispatchMode):
    """Operators dispatched and bytes they read and write (operand and result sizes)."""

    def __init__(self):
        super().__init__()
        self.ops, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "prim":   # metadata queries (prim.device), not kernels
            return out
        self.ops += 1
        for x in torch.utils._pytree.tree_leaves((args, kwargs, out)):
            if isinstance(x, torch.Tensor):
                self.bytes += x.numel() * x.element_size()
        return out


def network_cost(factory, shape: tuple) -> dict:
    """FLOPs, bytes and dispatched ops of one forward on fake CUDA, for an input of ``shape``."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    mode = FakeTensorMode()
    from gpuface.core.syncs import lift

    from gpuface.models.graphs import Bucketed

    model = lift(factory(), mode, "cuda").eval()
    flops, ops = FlopCounterMode(display=False), OpCounter()
    with mode, torch.inference_mode():
        x = torch.empty(shape, device="cuda")
        with flops, ops:
            model(x)
        # as a CUDA graph (gpuface.models.graphs, the default on CUDA): the launches around one replay, counted on
        # the emulated graph's second call, where the module's own operators are the replay's one launch
        graphed = Bucketed(model, "emulate", buckets=(shape[0],))
        outputs = len(graphed(x))
        around = OpCounter()
        with around:
            graphed(x)
    # minus the emulation's own copies into the output buffers (a real replay writes them in place)
    return {"flops": flops.get_total_flops(), "bytes": ops.bytes, "ops": ops.ops,
            "graph_ops": around.ops - ops.ops - outputs + 1}


def stages(height: int) -> dict[str, dict]:
    """Per-frame cost of each stage at ``height`` (16:9), one face per frame."""
    from gpuface.stages.detect import centerface_input_size
    from gpuface.models.blazeface import BlazeFace
    from gpuface.models.centerface import CenterFace
    from gpuface.models.facemesh import Blendshapes, FaceMesh
    from gpuface.models.registry import ANONYMIZE_AUTO
    from gpuface.models.weights import load_graph, load_state_dict

    width = height * 16 // 9
    out = {}

    def centerface():
        m = CenterFace()
        m.load_state_dict(load_state_dict("centerface"))
        return m

    nh, nw = centerface_input_size((height, width), None, ANONYMIZE_AUTO.input_scale)
    c = network_cost(centerface, (BATCH, 3, nh, nw))
    every = ANONYMIZE_AUTO.detect_every
    out["detect: CenterFace x0.5, anonymize default stride"] = {k: v / BATCH / every for k, v in c.items()}
    c = network_cost(lambda: BlazeFace(load_graph("blazeface-full"), "full"), (BATCH, 3, 192, 192))
    out["detect: BlazeFace full (key frames)"] = {k: v / BATCH for k, v in c.items()}
    c = network_cost(lambda: FaceMesh(load_graph("facemesh")), (BATCH, 3, 256, 256))
    out["landmarks: FaceMesh 478 per face"] = {k: v / BATCH for k, v in c.items()}
    c = network_cost(lambda: Blendshapes(load_graph("blendshapes")), (BATCH, 146, 2))
    out["landmarks: blendshapes per face"] = {k: v / BATCH for k, v in c.items()}
    out["anonymize: masks + blur (real CPU tensors)"] = _mask_cost(height, width)
    return out


def _mask_cost(height: int, width: int) -> dict:
    """The anonymisation mask and blur of one face, counted on real CPU tensors (data-dependent shapes)."""
    from torch.utils.flop_counter import FlopCounterMode

    from gpuface.ops.anonymize import anonymize
    from gpuface.core.types import Faces

    b = 8
    frames = torch.randint(0, 256, (b, 3, height, width), dtype=torch.uint8)
    s = height / 720
    box = torch.tensor([[560, 200, 720, 420]], dtype=torch.float32) * s
    faces = Faces(row=torch.arange(b), boxes=box.repeat(b, 1), scores=torch.ones(b),
                  keypoints=torch.zeros(b, 5, 2))
    flops, ops = FlopCounterMode(display=False), OpCounter()
    with flops, ops:
        anonymize(frames, faces)
    per = ops.ops * BATCH / b / BATCH
    return {"flops": flops.get_total_flops() / b, "bytes": ops.bytes / b, "ops": per, "graph_ops": per}


def x264_fps_per_core(height: int, preset: str = "veryfast", frames: int = 24) -> float:
    """x264 frames/s on one core of this machine (PyAV, ``threads=1``), on real frames of the 720p sample."""
    import av
    import torch.nn.functional as F

    import gpuface as gf
    from gpuface.io.samples import fetch_samples

    src = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    x = next(iter(gf.VideoReader(src).batches(frames))).frames
    width = height * 16 // 9
    if height != x.shape[-2]:
        x = F.interpolate(x.float(), size=(height, width), mode="bilinear").round().byte()
    arr = x.permute(0, 2, 3, 1).contiguous().numpy()
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "gpuface_forecast.mp4")
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": preset, "crf": "23", "threads": "1"}
        t = time.perf_counter()
        for a in arr:
            for p in st.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
        seconds = time.perf_counter() - t
    os.unlink(path)
    return frames / seconds


PIPELINES = {"anonymize default": ["detect: CenterFace x0.5, anonymize default stride",
                                   "anonymize: masks + blur (real CPU tensors)"],
             "landmarks + blendshapes": ["landmarks: FaceMesh 478 per face", "landmarks: blendshapes per face"]}


def forecast(height: int, cost: dict, gpu: dict, cores: int, x264: float) -> dict:
    """Frames/s bounds of each pipeline on ``gpu`` (see the module docstring)."""
    scale = (1920 * 1080) / (height * height * 16 // 9)
    nvdec = gpu["nvdec"] * ENGINE_FPS_1080P["nvdec"] * scale
    encoder = gpu["nvenc"] * ENGINE_FPS_1080P["nvenc"] * scale if gpu["nvenc"] else cores * x264
    out = {}
    for name, parts in PIPELINES.items():
        t = sum(max(cost[p]["flops"] / gpu["flops"], cost[p]["bytes"] / gpu["bandwidth"],
                    cost[p]["graph_ops"] * LAUNCH_S) for p in parts)
        gpu_fps = 1 / t
        enc = encoder if name.startswith("anonymize") else float("inf")   # landmarks write a table, no video
        out[name] = {"gpu": gpu_fps, "nvdec": nvdec, "encoder": enc, "forecast": min(gpu_fps, nvdec, enc)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host-cores", type=int, default=16, help="host cores that encode beside one GPU")
    ap.add_argument("--cpu-fps", help="benchmarks/run.py --json output: measured CPU frames/s to show beside")
    ap.add_argument("--json")
    args = ap.parse_args()
    measured = {}
    if args.cpu_fps:
        with open(args.cpu_fps) as fh:
            measured = {(r["pipeline"], r["height"]): r["fps"] for r in json.load(fh)["rows"]}
    report = {"heights": {}}
    print("# gpuface roofline FORECAST (not measured on a GPU): per-frame costs counted under fake CUDA\n")
    for height in (720, 1080):
        cost = stages(height)
        x264 = x264_fps_per_core(height)
        print(f"## {height}p: stage costs per frame\n")
        print("| stage | GFLOP | MB moved | kernels per frame, eager | launches per frame, CUDA graph |\n"
              "|---|---:|---:|---:|---:|")
        for k, v in cost.items():
            print(f"| {k} | {v['flops'] / 1e9:.3f} | {v['bytes'] / 2**20:.1f} | {v['ops']:.2f} | "
                  f"{v['graph_ops']:.2f} |")
        print(f"\nx264 veryfast on one core of this CPU: {x264:.1f} frames/s at {height}p; "
              f"{args.host_cores} host cores encode {args.host_cores * x264:.0f} frames/s\n")
        print("| pipeline | GPU | GPU-bound fps | NVDEC fps | encoder fps | **forecast fps** | CPU measured |")
        print("|---|---|---:|---:|---:|---:|---:|")
        rows = {}
        for gname, gpu in GPUS.items():
            for pname, f in forecast(height, cost, gpu, args.host_cores, x264).items():
                cpu = measured.get((pname, height))
                enc = "table only" if f["encoder"] == float("inf") else \
                    f"{f['encoder']:.0f} ({'NVENC' if gpu['nvenc'] else 'x264 on host'})"
                print(f"| {pname} | {gname} | {f['gpu']:.0f} | {f['nvdec']:.0f} | {enc} | **{f['forecast']:.0f}** | "
                      f"{'' if cpu is None else f'{cpu:.1f}'} |")
                rows[f"{pname} / {gname}"] = f
        print()
        report["heights"][height] = {"stages": cost, "x264_fps_per_core": x264, "forecast": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
