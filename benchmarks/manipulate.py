"""Throughput of gpuface manipulations vs PyFAME 1.0.10 on the same 720p video, end to end (decode, landmarks,
manipulation, encode), for a face-oval blur, a face-skin recolour and a face-oval grid shuffle.

    python benchmarks/manipulate.py [--pyfame-python /tmp/pyfame/bin/python] [--device auto] [--batch-size 16]

PyFAME pins numpy<=2.0 and its own mediapipe/OpenCV, so it lives in its own venv
(``python -m venv /tmp/pyfame && /tmp/pyfame/bin/pip install pyfame==1.0.10``); it is run there through its
public ``apply_layers`` on a copy of the video in its required ``data/raw`` folder, and timed from outside
(its own decode and mp4v encode included, like gpuface's decode and x264 encode). On CUDA the gpuface rows are
also reported at 1080p (the sample upscaled).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch

CASES = {
    # name: (gpuface layer, PyFAME layer constructor call)
    "blur, face oval": ({"op": "blur", "region": "face_oval", "params": {"method": "gaussian", "max_kernel_size": 29}},
                        "pf.layer_occlusion_blur(blur_method='gaussian', landmark_paths=LANDMARK_FACE_OVAL)"),
    "recolour red, face oval": ({"op": "recolour", "region": "face_oval", "params": {"colour": "red", "magnitude": 10}},
                                "pf.layer_colour_recolour(landmark_paths=LANDMARK_FACE_OVAL, focus_colour='red', "
                                "magnitude=10.0)"),
    "grid shuffle, face oval": ({"op": "grid_shuffle", "region": "face_oval", "params": {"square_size": 40}},
                                "pf.layer_spatial_grid_shuffle(landmark_paths=LANDMARK_FACE_OVAL, random_seed=1, "
                                "grid_square_size=40)"),
    "relocate eyes, nose, mouth": ({"op": "relocate", "region": "face_oval", "params": {"max_offset": 0.15}},
                                   "pf.layer_spatial_landmark_relocate(random_seed=1, max_random_offset=0.15)"),
}

PYFAME_SCRIPT = """
import os, sys, time, shutil
import pyfame as pf
from pyfame.landmark.facial_landmarks import LANDMARK_FACE_OVAL
os.chdir(sys.argv[1])
pf.make_paths()
shutil.copy(sys.argv[2], os.path.join("data", "raw", os.path.basename(sys.argv[2])))
paths = pf.load_user_data()
layer = {layer}
t = time.perf_counter()
pf.apply_layers(paths, [layer])
print("SECONDS", time.perf_counter() - t)
"""


def pyfame_seconds(python: str, video: str, layer_call: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([python, "-c", PYFAME_SCRIPT.format(layer=layer_call), tmp, video],
                             capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("SECONDS")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"PyFAME failed: {out.stderr.strip().splitlines()[-1:]}")
        return float(lines[-1].split()[1])


def gpuface_seconds(video: str, layer: dict, device: str, batch_size: int) -> float:
    from gpuface.stages.landmarks import FaceLandmarker
    from gpuface.stages.layers import load_spec
    from gpuface.jobs.manipulate import manipulate_source

    landmarker = FaceLandmarker("blazeface-short", device=device, max_faces=1)
    spec = load_spec([layer], seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.mp4")
        manipulate_source(video, spec, landmarker, out, batch_size, preset="veryfast", overwrite=True)  # warm-up
        t = time.perf_counter()
        manipulate_source(video, spec, landmarker, out, batch_size, preset="veryfast", overwrite=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyfame-python", default=None, help="a python with pyfame==1.0.10 (its own venv)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE",
                    help=f"which manipulations (default all: {', '.join(CASES)})")
    args = ap.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")

    from gpuface.io.decode import probe
    from gpuface.io.samples import fetch_samples

    video = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    frames = probe(video).num_frames
    videos = {"720p": video}
    tmpdir = tempfile.mkdtemp()
    if device.startswith("cuda"):
        big = os.path.join(tmpdir, "sample_01_1080p.mp4")
        subprocess.run([sys.executable, "-c", (
            "import sys, torch, torch.nn.functional as F, gpuface as gf\n"
            "r = gf.VideoReader(sys.argv[1])\n"
            "with gf.VideoWriter(sys.argv[2], r.info.fps, 1920, 1080, crf=12, preset='veryfast') as w:\n"
            "    for b in r.batches(16):\n"
            "        w.write(F.interpolate(b.frames.float(), size=(1080, 1920), mode='bilinear')"
            ".round().clamp(0, 255).byte())\n"), video, big], check=True)
        videos["1080p"] = big
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# manipulate: {os.path.basename(video)} ({frames} frames), device {device} ({name}), "
          f"{os.cpu_count()} CPU cores, batch {args.batch_size}, torch {torch.__version__}")
    print(f"| {'manipulation':<26} | {'input':<6} | {'gpuface fps':>11} | {'PyFAME fps':>10} | {'ratio':>7} |")
    print(f"|{'-' * 28}|{'-' * 8}|{'-' * 13}|{'-' * 12}|{'-' * 9}|")
    for case in args.cases:
        layer, call = CASES[case]
        ref = pyfame_seconds(args.pyfame_python, video, call) if args.pyfame_python else None
        for res, path in videos.items():
            ours = frames / gpuface_seconds(path, layer, device, args.batch_size)
            theirs = frames / ref if ref and res == "720p" else None
            ratio = f"{ours / theirs:.1f}x" if theirs else "-"
            print(f"| {case:<26} | {res:<6} | {ours:>11.1f} | {(f'{theirs:.1f}' if theirs else '-'):>10} | "
                  f"{ratio:>7} |")
    shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
