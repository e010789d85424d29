"""One throughput table for every gpuface pipeline vs the tool it replaces, on the same machine and input.

    python benchmarks/run.py [--frames 96] [--device auto] [--batch-size 16 ...] [--heights 720 1080]
                             [--deface PATH] [--mediapipe-python PY] [--pyfame-python PY] [--only ROW ...] [--json F]

Input: the first ``--frames`` frames of the 720p PyFAME sample (``sample_01.mp4``; on CUDA also upscaled to
1080p). Each gpuface row runs in a fresh process (so its peak memory is its own: RSS on CPU, max allocated on
CUDA) and is timed after a warm-up, end to end from the file (decode on its background thread, models, and
for video outputs x264 veryfast encoding). Peers run in their own venvs where given: deface (anonymise),
MediaPipe FaceLandmarker (landmarks; decode not timed on either side), PyFAME 1.0.10 (blur), facenet-pytorch
(detection, same process). The decode-only row is the ceiling every pipeline sits under.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINES = ("decode only", "decode + encode (x264 veryfast)", "detect mtcnn", "detect blazeface-full", "detect centerface", "landmarks + blendshapes",
             "anonymize default", "anonymize mtcnn", "manipulate blur (face oval)",
             "landmarks+manipulate+analyse, one pass", "landmarks, manipulate, analyse, one by one")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _clip(frames: int, height: int) -> str:
    """The first ``frames`` frames of the sample at ``height`` (re-encoded near-losslessly), as a file."""
    import torch.nn.functional as F

    import gpuface as gf
    from gpuface.io.samples import fetch_samples

    src = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    reader = gf.VideoReader(src)
    out = os.path.join(tempfile.gettempdir(), f"gpuface_bench_{frames}_{height}p.mp4")
    if os.path.exists(out):
        return out
    width = round(reader.info.width * height / reader.info.height) // 2 * 2
    sel = gf.Selection(end=(frames - 0.5) / float(reader.info.fps))
    with gf.VideoWriter(out, reader.info.fps, width, height, crf=10, preset="veryfast", audio_from=None,
                        overwrite=True) as w:
        for b in reader.batches(16, sel):
            x = b.frames if height == reader.info.height else F.interpolate(
                b.frames.float(), size=(height, width), mode="bilinear", antialias=True).round().clamp(0, 255).byte()
            w.write(x)
    return out


def worker(name: str, video: str, device: str, batch: int) -> dict:
    """Run one pipeline twice (warm-up, timed) in this process; frames/s and peak memory."""
    import gpuface as gf
    from gpuface.stages.layers import load_spec
    from gpuface.jobs.analyse import analyse_source
    from gpuface.jobs.detect import detect_source
    from gpuface.jobs.landmarks import landmarks_source
    from gpuface.jobs.manipulate import manipulate_source
    from gpuface.jobs.anonymize import anonymization_detector, anonymize_source, default_anonymizer

    out = os.path.join(tempfile.mkdtemp(), "out.mp4")
    if name == "decode only":
        def run():
            return sum(len(b) for b in gf.VideoReader(video).batches(batch, device=device))
    elif name.startswith("decode + encode"):    # the floor of every command that writes a video
        info = gf.probe(video)
        def run():
            with gf.VideoWriter(out, info.fps, info.width, info.height, preset="veryfast", audio_from=None,
                                overwrite=True) as w:
                for b in gf.VideoReader(video).batches(batch, device=device):
                    w.write(b.frames)
            return w.frames_written
    elif name.startswith("detect"):
        det = gf.FaceDetector(name.split()[1], device=device)
        def run():
            return detect_source(video, det, batch)[1].frames
    elif name == "landmarks + blendshapes":
        lm = gf.FaceLandmarker(device=device)
        def run():
            return landmarks_source(video, lm, batch)[1].frames
    elif name.startswith("anonymize"):
        det, fill, every = (default_anonymizer(device) if name.endswith("default")
                            else (anonymization_detector(name.split()[1], device=device), None, 1))
        def run():
            return anonymize_source(video, det, out, gf.AnonymizeOptions(), batch_size=batch, preset="veryfast",
                                    overwrite=True, fill=fill, detect_every=every).frames
    elif name.startswith("manipulate"):
        lm = gf.FaceLandmarker(device=device)
        spec = load_spec([{"op": "blur", "region": "face_oval"}])
        def run():
            return manipulate_source(video, spec, lm, out, batch, preset="veryfast", overwrite=True).frames
    else:   # the composed job, and the same three jobs as separate runs (frames/s of the source through all three)
        lm = gf.FaceLandmarker(device=device)
        spec = load_spec([{"op": "blur", "region": "face_oval"}])
        if "one pass" in name:
            from gpuface.jobs.analyse import AnalyseJob
            from gpuface.jobs.landmarks import LandmarksJob
            from gpuface.jobs.manipulate import ManipulateJob
            from gpuface.jobs.runner import run_source

            def run():
                jobs = [LandmarksJob(), ManipulateJob(spec, out, preset="veryfast", overwrite=True), AnalyseJob()]
                return run_source(video, jobs, lm, batch).frames
        else:
            def run():
                landmarks_source(video, lm, batch)
                manipulate_source(video, spec, lm, out, batch, preset="veryfast", overwrite=True)
                return analyse_source(video, lm, batch)[2].frames
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    frames = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"fps": frames / seconds, "peak_mb": peak / 2**20}


def spawn(name: str, video: str, device: str, batch: int) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--video", video,
                           "--device", device, "--batch-size", str(batch)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"fps": float("nan"), "peak_mb": float("nan"), "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peers(args, video: str, frames: int) -> dict:
    """frames/s of the replaced tools on the same clip (where available)."""
    out = {}
    import gpuface as gf
    from facenet_pytorch import MTCNN

    x = torch.cat([b.frames for b in gf.VideoReader(video).batches(16)]).permute(0, 2, 3, 1).numpy()
    ref = MTCNN(device=args.device)
    ref.detect(list(x[:16]))
    t = time.perf_counter()
    for i in range(0, len(x), 16):
        ref.detect(list(x[i:i + 16]))
    out["detect mtcnn"] = ("facenet-pytorch MTCNN.detect (decoded frames)", len(x) / (time.perf_counter() - t))
    if args.deface:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([args.deface, video, "-o", os.path.join(tmp, "d.mp4")], check=True, capture_output=True)
            fps = frames / (time.perf_counter() - t)
        out["anonymize mtcnn"] = out["anonymize default"] = ("deface 1.5 (CenterFace, onnxruntime)", fps)
    if args.mediapipe_python:
        from gpuface.models import weights
        weights.fetch("facemesh")
        with tempfile.TemporaryDirectory() as tmp:
            res = os.path.join(tmp, "r.npz")
            subprocess.run([args.mediapipe_python, os.path.join(HERE, "mediapipe_reference.py"), video,
                            str(weights.weights_dir() / "upstream" / "face_landmarker.task"), "-o", res],
                           check=True, capture_output=True)
            import numpy as np
            r = np.load(res)
            out["landmarks + blendshapes"] = ("MediaPipe FaceLandmarker (decode not timed)",
                                              float(r["frames"]) / float(r["seconds"]))
    if args.pyfame_python:
        manip = _module("manipulate")
        call = manip.CASES["blur, face oval"][1]
        out["manipulate blur (face oval)"] = ("PyFAME 1.0.10 apply_layers", frames / manip.pyfame_seconds(
            args.pyfame_python, video, call))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16], dest="batch_sizes",
                    help="one table per batch size (the GPU acceptance run uses 8 32 128)")
    ap.add_argument("--heights", type=int, nargs="+", help="frame heights (default 720, and 1080 on CUDA)")
    ap.add_argument("--deface")
    ap.add_argument("--mediapipe-python")
    ap.add_argument("--pyfame-python")
    ap.add_argument("--no-peers", action="store_true", help="gpuface rows only")
    ap.add_argument("--only", nargs="+", metavar="PIPELINE", help="run only these rows (names as in the table)")
    ap.add_argument("--json", help="also write every row to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--video", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(worker(args.worker, args.video, args.device, args.batch_sizes[0])))
        return
    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    machine = f"device {args.device} ({name}), {os.cpu_count()} CPU cores, torch {torch.__version__}"
    print(f"# gpuface throughput: sample_01 first {args.frames} frames, {machine}")
    heights = args.heights or ([720, 1080] if cuda else [720])
    rows = [p for p in PIPELINES if not args.only or p in args.only]
    mem = "GPU MB" if cuda else "peak RSS MB"
    records = []
    for height in heights:
        clip = _clip(args.frames, height)
        reference = {} if args.no_peers or height != 720 else peers(args, clip, args.frames)
        for batch in args.batch_sizes:
            print(f"\n| {f'pipeline ({height}p, batch {batch})':<44} | {'frames/s':>8} | {mem:>11} | "
                  f"{'peer':<46} | {'peer fps':>8} | {'ratio':>6} |")
            print(f"|{'-' * 46}|{'-' * 10}|{'-' * 13}|{'-' * 48}|{'-' * 10}|{'-' * 8}|")
            for p in rows:
                r = spawn(p, clip, args.device, batch)
                peer, pfps = reference.get(p, ("", None))
                ratio = f"{r['fps'] / pfps:.2f}x" if pfps else ""
                print(f"| {p:<44} | {r['fps']:>8.1f} | {r['peak_mb']:>11.0f} | {peer:<46} | "
                      f"{(f'{pfps:.1f}' if pfps else ''):>8} | {ratio:>6} |", flush=True)
                records.append({"pipeline": p, "height": height, "batch_size": batch, **r, "peer": peer,
                                "peer_fps": pfps})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "frames": args.frames, "rows": records}, fh, indent=1)


if __name__ == "__main__":
    main()
