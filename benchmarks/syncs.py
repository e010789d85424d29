"""Host-sync census: the host syncs per batch of every pipeline, by call site (gpuface.core.syncs.SyncCounter).

    python benchmarks/syncs.py [--frames 48] [--batch-size 16] [--sites]

Each pipeline runs over the first ``--frames`` frames of a one-face 720p sample (PyFAME sample_02) and of a
four-face mosaic of the four samples (the same frame count), with models loaded before counting. A pipeline whose
syncs grow with the number of faces shows it as a difference between the two columns. On a GPU every sync stalls
the host until the device is done; on this CPU they are free, so the counts are the point, not the time.
``tests/test_syncs.py`` holds the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OPS_PARAMS = {"overlay": {"image": "glasses.png"}}
# Host syncs per batch of 8 frames (24-frame clips) measured by benchmarks/syncs.py on the CPU (an upper bound of a
# CUDA run, see gpuface.core.syncs), with ~10 % headroom. A new .item()/.tolist()/.cpu()/mask index in a hot path
# raises the count past its ceiling; a pipeline marked per-face-free must not grow with the faces in the frame.
CEILINGS = {"detect mtcnn": 26, "detect blazeface-full": 6, "detect centerface": 6, "landmarks": 27,
            "anonymize default": 23, "analyse": 178, "annotate": 35, "affect": 77, "manipulate blur": 38,
            "manipulate recolour": 38, "manipulate relocate": 82}


def pipelines():
    from gpuface.ops.registry import OPS
    return ["detect mtcnn", "detect blazeface-full", "detect centerface", "landmarks", "anonymize default",
            "analyse", "annotate", "affect"] + [f"manipulate {op}" for op in OPS] + ["manipulate blur, reversed"]


def clips(frames: int) -> dict[str, str]:
    """``{"1 face": sample_02 cut, "4 faces": mosaic}``: the first ``frames`` frames, written once to temp files."""
    import torch

    import gpuface as gf
    from gpuface.io.samples import fetch_samples

    s = {k: str(v) for k, v in fetch_samples().items()}
    out = {}
    for label, names in (("1 face", ["sample_02.mp4"]), ("4 faces", [f"sample_0{i}.mp4" for i in range(1, 5)])):
        path = os.path.join(tempfile.gettempdir(), f"gpuface_syncs_{len(names)}_{frames}.mp4")
        if not os.path.exists(path):
            readers = [gf.VideoReader(s[n]).batches(frames) for n in names]
            tiles = [next(iter(r)).frames for r in readers]
            if len(tiles) == 4:     # 2x2 mosaic at half size: 1280x720 with four faces
                half = [torch.nn.functional.interpolate(t.float(), scale_factor=0.5, mode="bilinear",
                                                        antialias=True).round().byte() for t in tiles]
                x = torch.cat([torch.cat(half[:2], 3), torch.cat(half[2:], 3)], 2)
            else:
                x = tiles[0]
            with gf.VideoWriter(path, 30, x.shape[-1], x.shape[-2], crf=12, preset="veryfast", overwrite=True) as w:
                w.write(x)
        out[label] = path
    return out


def build(name: str, device: str = "cpu", out: str | None = None):
    """The model and jobs of pipeline ``name`` (:func:`pipelines`), loaded on ``device``; video outputs go to
    ``out`` (a temporary file by default)."""
    import gpuface as gf
    from gpuface.jobs.analyse import AnalyseJob
    from gpuface.jobs.detect import DetectJob
    from gpuface.jobs.landmarks import LandmarksJob
    from gpuface.jobs.manipulate import ManipulateJob

    out = out or os.path.join(tempfile.mkdtemp(), "out.mp4")
    if name.startswith("detect"):
        return gf.FaceDetector(name.split()[1], device=device), [DetectJob()]
    if name == "anonymize default":
        from gpuface.jobs.anonymize import AnonymizeJob, default_anonymizer
        model, fill, every = default_anonymizer(device)
        return model, [AnonymizeJob(out, gf.AnonymizeOptions(), fill=fill, detect_every=every, preset="ultrafast",
                                    overwrite=True)]
    model = gf.FaceLandmarker("blazeface-full", device=device, max_faces=4)
    if name == "landmarks":
        return model, [LandmarksJob()]
    if name == "analyse":
        return model, [AnalyseJob(dense=True)]
    if name == "annotate":
        from gpuface.stages.embed import Embedder
        from gpuface.jobs.annotate import AnnotateJob
        return model, [AnnotateJob(Embedder("dlib", device=device), num_faces=(1, 4), too_few="each")]
    if name == "affect":
        from gpuface.stages.affect import AffectAnalyzer
        from gpuface.jobs.affect import AffectJob
        return model, [AffectJob(AffectAnalyzer(device=device))]
    from gpuface.stages.layers import load_spec
    from gpuface.io.samples import fetch_samples
    op = name.split()[1].rstrip(",")
    params = {k: str(fetch_samples()[v]) for k, v in OPS_PARAMS.get(op, {}).items()}
    temporal = {"temporal": {"method": "reverse", "block_duration": 0.25}} if name.endswith("reversed") else {}
    spec = load_spec({"layers": [{"op": op, "region": "face_oval", "params": params}], **temporal}, seed=1)
    return model, [ManipulateJob(spec, out, preset="ultrafast", overwrite=True)]


def census(name: str, video: str, batch_size: int, device: str = "cpu"):
    """Run pipeline ``name`` on ``video`` with its models loaded first; returns (batches, SyncCounter)."""
    import math

    import gpuface as gf
    from gpuface.jobs.runner import run_source
    from gpuface.core.syncs import SyncCounter

    model, jobs = build(name, device)
    frames = gf.VideoReader(video).info.num_frames
    with SyncCounter() as counter:
        run_source(video, jobs, model, batch_size)
    return math.ceil(frames / batch_size), counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only", nargs="+", metavar="PIPELINE")
    ap.add_argument("--sites", action="store_true", help="list the call sites of each pipeline")
    args = ap.parse_args()
    videos = clips(args.frames)
    print(f"# host syncs per batch ({args.frames} frames, batch {args.batch_size}); gpuface.core.syncs.SyncCounter")
    print("| pipeline | 1 face | 4 faces | top call sites (4 faces, per batch) |")
    print("|---|---:|---:|---|")
    for name in pipelines():
        if args.only and name not in args.only:
            continue
        per = {}
        for label, video in videos.items():
            batches, c = census(name, video, args.batch_size)
            per[label] = (c.total / batches, c, batches)
        batches, c = per["4 faces"][2], per["4 faces"][1]
        top = "; ".join(f"{site} {n / batches:.1f}" for site, n in c.sites.most_common(3))
        print(f"| {name} | {per['1 face'][0]:.1f} | {per['4 faces'][0]:.1f} | {top} |", flush=True)
        if args.sites:
            for site, n in c.sites.most_common():
                print(f"|   | | {n / batches:.1f} | {site} |")


if __name__ == "__main__":
    sys.exit(main())
