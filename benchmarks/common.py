"""What several benchmark scripts share: the --frames/--device options, the machine line, a landmarked sample."""
from __future__ import annotations

import argparse
import platform

import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch


def parse_args(doc: str, frames: int = 96) -> tuple[argparse.Namespace, str]:
    """``--frames`` and ``--device`` (auto: CUDA when available); returns the arguments and the device."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--frames", type=int, default=frames)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    return args, args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def machine(device: str) -> str:
    """The GPU's name on CUDA, else the CPU's."""
    return torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())


def landmarked_sample(device: str, n: int):
    """The 720p sample's path, its first ``n`` frames (uint8, CPU) and their faces (one face tracked, on
    ``device``)."""
    import gpuface as gf
    from gpuface.io.samples import fetch_samples

    video = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    frames = torch.cat([b.frames for b in gf.VideoReader(video).batches(32)])[:n]
    lm = gf.FaceLandmarker(device=device, max_faces=1)
    return video, frames, lm(frames.to(device), lm.new_state())
