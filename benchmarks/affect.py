"""Affect throughput: faces/s of AUs + emotions + valence/arousal (:class:`gpuface.AffectAnalyzer`) at batch
1/8/32, and end to end on a 720p sample: the landmark pipeline alone vs the same pipeline with affect, one after
the other in one process (so the ratio holds on a shared machine). Reference figures beside them: the
facetorch-based analyser's published 486 ms per 4-face 1080p frame on a T4 (facetorch's README), and py-feat,
whose networks come from the HuggingFace hub at run time (measured only where it is installed with its weights).

    python benchmarks/affect.py [--frames 96] [--device auto]
"""
from __future__ import annotations

import os
import time

import gpuface  # noqa: F401  (before torch: gpuface sets torch's host-memory and thread defaults)
import torch
from common import landmarked_sample, machine, parse_args


def _timed(fn, repeat: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    args, device = parse_args(__doc__)

    import gpuface as gf
    from gpuface.io.decode import Selection
    from gpuface.jobs.landmarks import landmarks_source

    video, frames, faces = landmarked_sample(device, 32)
    frames = frames.to(device)
    affect = gf.AffectAnalyzer(device=device)
    print(f"# affect: sample_01 (1280x720), device {device} ({machine(device)}), {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}")
    print("| what | batch | faces/s or frames/s | ms per face or frame |\n|---|---|---|---|")
    with torch.inference_mode():
        for bs in (1, 8, 32):
            part = faces.select(faces.row < bs)
            sec = _timed(lambda: affect(frames[:bs], part))
            print(f"| AUs + emotions + valence/arousal | {bs} faces | {bs / sec:.1f} | {1000 * sec / bs:.2f} |")
    sel = Selection(end=args.frames / 29.97)
    lm_e2e = gf.FaceLandmarker(device=device, max_faces=1)
    landmarks_source(video, lm_e2e, 32, Selection(end=0.3))                      # warm-up
    runs = {"lm": [], "affect": []}
    for _ in range(3):   # interleaved, best of three each: the ratio survives a shared machine's drift
        runs["lm"].append(landmarks_source(video, lm_e2e, 32, sel)[1].seconds)
        runs["affect"].append(gf.affect_source(video, lm_e2e, affect, 32, sel)[1].seconds)
    t_lm, t_af = min(runs["lm"]), min(runs["affect"])
    n = args.frames
    print(f"| landmarks + blendshapes, end to end (decode included) | 32 | {n / t_lm:.1f} | {1000 * t_lm / n:.1f} |")
    print(f"| + affect, end to end | 32 | {n / t_af:.1f} | {1000 * t_af / n:.1f} |")
    print(f"\naffect adds {100 * (t_af / t_lm - 1):.0f} % to the landmark pipeline's time per frame")
    print("reference: facetorch analyser 486 ms per 4-face 1080p frame on a T4 (published), i.e. ~122 ms per face")
    try:
        import feat  # noqa: F401
        print("py-feat is installed: time feat.Detector().detect_video on the same clip where its hub weights are "
              "cached")
    except ImportError:
        print("py-feat: not installed here (its networks download from the HuggingFace hub at run time)")


if __name__ == "__main__":
    main()
