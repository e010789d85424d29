"""Throughput of gpuface landmarks (FaceMesh 478 + blendshapes, tracked) vs MediaPipe's FaceLandmarker.

    python benchmarks/landmarks.py [--frames 96] [--device auto] [--mediapipe-python /tmp/mp/bin/python] [--rounds 3]

Without decoding: both tools get the same decoded frames of the 720p PyFAME sample (sample_01.mp4). MediaPipe
(Tasks API, VIDEO mode, CPU, one face, blendshapes on: what PyFAME 1.x runs) runs through
``benchmarks/mediapipe_reference.py`` in a Python that has mediapipe (it pins its own numpy/protobuf, so it
lives in its own venv: ``python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.35 av``); gpuface at
batch sizes 1, 8, 16 (the command's default) and 32, each in a fresh process so that peak memory (RSS; GPU: max
allocated) is its own, with FaceMesh and the blendshapes AOT-compiled on the CPU (built before timing, as a second
run finds them; :mod:`gpuface.models.aot`), and at the default batch eager (``GPUFACE_AOT=off``).

End to end: the four PyFAME samples (425 frames of 720p, their own encodings) one after the other, each decoded
and landmarked; gpuface as its ``landmarks`` job (decoding thread, landmark tables) at the default batch, MediaPipe
frame by frame from PyAV (FFmpeg's frame threads), as a PyFAME-style loop runs it; best of two for each, in fresh
processes. A shared VM's speed drifts by tens of percent over minutes, so the two tools alternate in ``--rounds``
rounds (MediaPipe in and out of process, gpuface end to end, gpuface in process at the default batch); those rows
give medians over rounds, the end-to-end ratio the median of the rounds' ratios.

Also reported: the detector's share of frames, frame-to-frame jitter of the nose bridge (landmark 168) in pixels,
and, on CUDA, frames/s at 720p and 1080p.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch

#: The ``gpuface`` command's default ``--batch-size``.
DEFAULT_BATCH = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _frames(n: int, height: int | None = None) -> torch.Tensor:
    import gpuface as gf
    from gpuface.io.samples import fetch_samples

    path = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    frames = torch.cat([b.frames for b in gf.VideoReader(path).batches(32)])[:n]
    if height and height != frames.shape[-2]:
        width = round(frames.shape[-1] * height / frames.shape[-2])
        frames = torch.nn.functional.interpolate(frames.float(), size=(height, width), mode="bilinear",
                                                 antialias=True).round().clamp(0, 255).to(torch.uint8)
    return frames


def worker(args) -> dict:
    """One configuration in this process: frames/s without decoding, peak memory, jitter."""
    from gpuface.stages.landmarks import FaceLandmarker

    device = torch.device(args.device)
    frames = _frames(args.frames, args.height)
    lm = FaceLandmarker("blazeface-short", device=device, max_faces=1, aot=args.aot)

    def run():
        state = lm.new_state()
        out = [lm(frames[i:i + args.batch_size].to(device), state).landmarks for i in range(0, len(frames),
                                                                                            args.batch_size)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return torch.cat(out)

    run()  # warm-up
    lm.detector_frames = lm.mesh_crops = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    landmarks = run()
    seconds = time.perf_counter() - t
    jitter = (landmarks[1:, 168, :2] - landmarks[:-1, 168, :2]).norm(dim=1).median().item()
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"fps": len(frames) / seconds, "peak_mb": peak / 2**20, "jitter_px": jitter,
            "detector_frames": lm.detector_frames, "mesh_crops": lm.mesh_crops, "frames": len(frames)}


def _videos() -> list[str]:
    from gpuface.io.samples import fetch_samples

    return [str(p) for p in fetch_samples([f"sample_0{i}.mp4" for i in range(1, 5)]).values()]


def end_to_end(device: str, batch_size: int) -> tuple[int, float]:
    """The ``gpuface landmarks`` job in process (:func:`gpuface.jobs.landmarks.landmarks_source`: decoding thread,
    the landmarker's two halves overlapped, landmark tables) on the four samples one after the other: (frames,
    seconds), best of two."""
    from gpuface.jobs.landmarks import landmarks_source
    from gpuface.stages.landmarks import FaceLandmarker

    lm = FaceLandmarker("blazeface-short", device=device, max_faces=1, aot="now")
    videos = _videos()                            # fetched and checked (sha256) before timing
    landmarks_source(videos[0], lm, batch_size)   # warm-up
    best = None
    for _ in range(2):
        n, t = 0, time.perf_counter()
        for path in videos:
            n += landmarks_source(path, lm, batch_size)[1].frames
        seconds = time.perf_counter() - t
        best = seconds if best is None else min(best, seconds)
    return n, best


def spawn(args, batch_size: int, height: int | None = None, aot: str = "now", e2e: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--frames", str(args.frames), "--batch-size", str(batch_size),
           "--device", args.device, "--aot", aot] + (["--height", str(height)] if height else []) + (
           ["--e2e"] if e2e else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mediapipe(args) -> dict | None:
    if not args.mediapipe_python:
        return None
    from gpuface.models import weights
    from gpuface.io.samples import fetch_samples

    weights.fetch("facemesh")
    task = weights.weights_dir() / "upstream" / "face_landmarker.task"
    video = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ref.npz")
        subprocess.run([args.mediapipe_python, os.path.join(ROOT, "benchmarks", "mediapipe_reference.py"), video,
                        str(task), "-o", out, "--frames", str(args.frames), "--end-to-end", *_videos()],
                       check=True, capture_output=True)
        ref = np.load(out)
        lm = ref["landmarks"]
        jitter = float(np.median(np.linalg.norm(lm[1:, 168, :2] - lm[:-1, 168, :2], axis=1)))
        return {"fps": float(ref["frames"]) / float(ref["seconds"]), "jitter_px": jitter,
                "e2e_fps": float(ref["e2e_frames"]) / float(ref["e2e_seconds"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mediapipe-python", help="a python with mediapipe installed (its own venv)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of MediaPipe and gpuface end to end")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--e2e", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--aot", default="now", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        if args.e2e:
            n, seconds = end_to_end(args.device, args.batch_size)
            print(json.dumps({"fps": n / seconds, "frames": n}))
        else:
            print(json.dumps(worker(args)))
        return

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# landmarks: {args.frames} frames of the 720p sample, device {args.device} ({name}), "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    rounds = []                 # (MediaPipe, gpuface end to end, gpuface in process at the default batch)
    for _ in range(max(1, args.rounds)):
        rounds.append((mediapipe(args), spawn(args, DEFAULT_BATCH, e2e=True), spawn(args, DEFAULT_BATCH)))
    ref = None
    if rounds[0][0]:
        ref = {k: float(np.median([r[0][k] for r in rounds])) for k in ("fps", "jitter_px", "e2e_fps")}
    e2e = float(np.median([r[1]["fps"] for r in rounds]))

    def ratio(fps: float) -> str:
        return f"{fps / ref['fps']:.2f}x" if ref else "-"

    print(f"{'tool':<34} {'frames/s':>9} {'vs MediaPipe':>13} {'peak MB':>8} {'jitter px':>10} {'det frames':>11}")
    if ref:
        print(f"{'MediaPipe FaceLandmarker (CPU)':<34} {ref['fps']:>9.1f} {'1.00x':>13} {'-':>8} "
              f"{ref['jitter_px']:>10.2f} {'-':>11}")
    for bs in (1, 8, DEFAULT_BATCH, 32):
        r = spawn(args, bs) if bs != DEFAULT_BATCH else {
            **rounds[0][2], "fps": float(np.median([g["fps"] for *_, g in rounds]))}
        print(f"{'gpuface batch ' + str(bs):<34} {r['fps']:>9.1f} {ratio(r['fps']):>13} {r['peak_mb']:>8.0f} "
              f"{r['jitter_px']:>10.2f} {r['detector_frames']:>5}/{r['frames']:<5}")
    r = spawn(args, DEFAULT_BATCH, aot="off")
    print(f"{'gpuface batch ' + str(DEFAULT_BATCH) + ', eager (no AOT)':<34} {r['fps']:>9.1f} {ratio(r['fps']):>13} "
          f"{r['peak_mb']:>8.0f} {r['jitter_px']:>10.2f} {r['detector_frames']:>5}/{r['frames']:<5}")
    print(f"\nend to end with decoding, the four samples ({rounds[0][1]['frames']} frames), medians of "
          f"{len(rounds)} alternating rounds:")
    if ref:
        print(f"{'MediaPipe, PyAV frame by frame':<34} {ref['e2e_fps']:>9.1f} {'1.00x':>13}")
    versus = f"{np.median([g['fps'] / m['e2e_fps'] for m, g, _ in rounds]):.2f}x" if ref else "-"
    print(f"{'gpuface landmarks job, batch ' + str(DEFAULT_BATCH):<34} {e2e:>9.1f} {versus:>13}")
    if ref:
        print("rounds, frames/s (MediaPipe / gpuface batch " + str(DEFAULT_BATCH) + "): in process " + ", ".join(
            f"{m['fps']:.1f} / {b['fps']:.1f}" for m, _, b in rounds) + "; end to end " + ", ".join(
            f"{m['e2e_fps']:.1f} / {g['fps']:.1f}" for m, g, _ in rounds))
    if args.device.startswith("cuda"):
        for h in (720, 1080):
            r = spawn(args, 32, h)
            print(f"{'gpuface batch 32 at ' + str(h) + 'p':<34} {r['fps']:>9.1f} {ratio(r['fps']):>13} "
                  f"{r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
