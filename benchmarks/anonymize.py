"""Throughput of gpuface detection and anonymisation vs facenet-pytorch MTCNN and deface, same machine/input.

    python benchmarks/anonymize.py [--frames 64] [--batch-size 16] [--device auto] [--deface PATH]

Prints one table: frames/s and ratios. Inputs: the first N frames of the 720p PyFAME sample (sample_01.mp4);
on CUDA also the same frames upscaled to 1080p. deface is run as an external command (install it in its own
venv: ``python -m venv ~/deface && ~/deface/bin/pip install deface``; pass ``--deface ~/deface/bin/deface``
or put it on PATH); its time includes its own decode and encode, like gpuface's anonymize row.
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

import torch
import torch.nn.functional as F

import gpuface as gf
from gpuface.samples import fetch_samples


def timed(fn, repeat: int = 2) -> float:
    """Best wall time of ``repeat`` runs after one warm-up, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--deface", default=shutil.which("deface"), help="deface executable (own venv)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    path = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    n = args.frames
    frames = torch.cat([b.frames for b in gf.VideoReader(path).batches(32, gf.Selection(end=(n - 0.5) / 29.97))])
    n = len(frames)
    rows = []

    det = gf.FaceDetector("mtcnn", device=device)
    def ours(x):
        return lambda: [det(x[i:i + args.batch_size].to(device)) for i in range(0, len(x), args.batch_size)]
    t_ours = timed(ours(frames))
    rows.append(("gpuface MTCNN detect, 720p", n / t_ours, f"batch {args.batch_size}, {device}"))

    from facenet_pytorch import MTCNN
    ref = MTCNN(device=device)
    arr = frames.permute(0, 2, 3, 1).numpy()
    t_ref = timed(lambda: [ref.detect(list(arr[i:i + args.batch_size])) for i in range(0, n, args.batch_size)])
    rows.append(("facenet-pytorch MTCNN.detect, 720p", n / t_ref, f"batch {args.batch_size}, {device}"))

    if device.type == "cuda":
        big = F.interpolate(frames.float(), size=(1080, 1920), mode="bilinear").round().clamp(0, 255).byte()
        rows.append(("gpuface MTCNN detect, 1080p", n / timed(ours(big)), f"batch {args.batch_size}, {device}"))

    with tempfile.TemporaryDirectory() as tmp:
        sel = gf.Selection(end=(n - 0.5) / 29.97)
        out = os.path.join(tmp, "anon.mp4")
        anon = {}
        for name in ("mtcnn", "blazeface-full", "blazeface-short"):
            d = det if name == "mtcnn" else gf.FaceDetector(name, device=device)
            anon[name] = timed(lambda: gf.anonymize_source(path, d, out, gf.AnonymizeOptions(),
                                                           batch_size=args.batch_size, selection=sel,
                                                           preset="veryfast", overwrite=True), repeat=1)
            rows.append((f"gpuface anonymize end to end, {name}", n / anon[name],
                         "decode, detect, blur, x264 veryfast"))
        t_deface = None
        if args.deface:
            clip = os.path.join(tmp, "clip.mp4")
            gf.anonymize_source(path, det, clip, gf.AnonymizeOptions(mode="none"), selection=sel, crf=10,
                                preset="veryfast", boxes_format=None)
            t = time.perf_counter()
            subprocess.run([args.deface, clip, "-o", os.path.join(tmp, "deface.mp4")], check=True,
                           capture_output=True)
            t_deface = time.perf_counter() - t
            rows.append(("deface 1.5 (CenterFace, onnxruntime CPU)", n / t_deface, "its own decode/encode"))

    print(f"\nmachine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"input: {os.path.basename(path)} 1280x720, {n} frames\n")
    print(f"| {'what':<62} | {'frames/s':>9} | notes |\n|{'-' * 64}|{'-' * 11}|-------|")
    for what, fps, note in rows:
        print(f"| {what:<62} | {fps:>9.2f} | {note} |")
    print(f"\nratio detect gpuface / facenet-pytorch: {t_ref / t_ours:.2f}x")
    if t_deface:
        for name, t in anon.items():
            print(f"ratio anonymize gpuface ({name}) / deface: {t_deface / t:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
