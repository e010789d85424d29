"""The ``gpuface`` command line: detect, landmarks, manipulate, anonymize, annotate, affect, demo, weights.

Every error that bad input causes prints as one line ``gpuface: error: <what and where>`` and the exit status
is non-zero (1: some inputs failed, 2: bad usage or nothing could run). With several inputs a broken one is
reported and the others are still processed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.jobs.schema import DETECTORS, ENCODERS, add_job_options, job_options, parse_count
from gpuface.models.registry import ANONYMIZE_AUTO


def _device(name: str):
    from gpuface.core.device import resolve_device

    return resolve_device(name)


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _json_dict(text: str) -> dict:
    import json

    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of x264 options")
    return v


def _selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--step", "--every", dest="step", type=_positive_int, default=1, help="every n-th frame")
    p.add_argument("--step-seconds", type=float, help="one frame every x seconds (overrides --step)")
    p.add_argument("--start", type=float, default=0.0, help="fragment start, s")
    p.add_argument("--end", type=float, help="fragment end, s")
    p.add_argument("--area", type=int, nargs=4, metavar=("X1", "Y1", "X2", "Y2"), help="crop before processing")


def _overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: a numbered name, e.g. faces_1.csv)")


def _encoder_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="libx264", choices=ENCODERS,
                   help="video encoder: x264 on the CPU (default), NVIDIA NVENC (GPUs that have one; not the "
                        "A100/H100/H200), or auto (NVENC when it opens, else x264)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="frames per batch (default 16)")
    p.add_argument("--backend", default="auto", help="decoder: auto, decord, pyav, torchcodec")
    p.add_argument("--ext", nargs="*", help="extensions to take from input folders (default: videos and images)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads for torch, decoding and encoding (default: the CPUs this process may use: "
                        "affinity, SLURM_CPUS_PER_TASK, cgroup quota)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpuface", description="Batched face analysis and manipulation of video.")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("detect", help="face boxes, scores and 5 keypoints per frame → table")
    d.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    d.add_argument("-o", "--output", required=True, help="table: .parquet, .csv, .tsv or .json")
    add_job_options(d, "detect")
    d.add_argument("--scale", "-s", help="centerface input: WxH or a factor of the frame size (default 1)")
    _overwrite_option(d)
    _selection_options(d)
    _common(d)

    a = sub.add_parser("anonymize", help="blur / mosaic / fill / overlay every face (deface's and MGT blur_faces' "
                                          "options); keeps audio; boxes table; optional leak audit")
    a.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    a.add_argument("-o", "--output", help="output folder, or a file name for a single input "
                                          "(default: <stem>_anonymized.<ext> beside each input)")
    a.add_argument("--replacewith", "--mode", "--mask", dest="mode",
                   choices=["blur", "solid", "mosaic", "img", "none", "rectangle", "image"],
                   help="deface --replacewith: blur (default), solid (colour fill; MGT: rectangle), mosaic, img "
                        "(an image over each face; MGT: image), none (table only)")
    a.add_argument("--detector", default=None, choices=["auto", *DETECTORS],
                   help=f"face detector (default auto: the measured default, {ANONYMIZE_AUTO.describe()}; a named "
                        "detector runs on every frame at its own input size)")
    a.add_argument("--thresh", "-t", "--threshold", dest="threshold", type=float,
                   help="detection score to mask a face (default: the detector's recall-calibrated one: "
                        "centerface 0.2 as deface, blazeface 0.3, mtcnn 0.7)")
    a.add_argument("--scale", "-s", help="CenterFace input: WxH as deface (e.g. 640x360) or a factor of the frame "
                                         "size (e.g. 0.5); rounded up to multiples of 32 (default: 0.5 with the "
                                         "default detector; 1, as deface, with --detector centerface)")
    a.add_argument("--boxes", "--box", dest="ellipse", action="store_false", default=None,
                   help="mask the whole box instead of the inscribed ellipse (MGT: ellipse=False)")
    a.add_argument("--mask-scale", type=float,
                   help="each box side moves out by (M-1) x the box size, as deface and MGT (default 1.3)")
    a.add_argument("--colour", "--color", dest="colour", type=int, nargs=3, metavar=("R", "G", "B"),
                   help="fill colour for solid (default black)")
    a.add_argument("--replaceimg", "--mask-image", "--image", dest="image", help="RGBA/RGB image for img")
    a.add_argument("--mosaicsize", dest="mosaic_size", type=_positive_int,
                   help="mosaic block width in px (deface; default: about 1/10 of each face's width)")
    a.add_argument("--draw-scores", action="store_true", help="draw each detected face's box and score")
    a.add_argument("--max-gap", type=int, default=None, help="mask a face through up to N frames where the detector "
                                                             "missed it between two detections (default: measured)")
    a.add_argument("--temporal-pad", type=int, default=None,
                   help="also mask N frames before and after every detection (default: measured)")
    a.add_argument("--detect-every", type=_positive_int, default=None,
                   help="run the detector on every N-th frame only; gap filling masks the frames between "
                        "(default: 3 with the default detector, else 1)")
    a.add_argument("--drop-isolated", action="store_true",
                   help="drop detections with no match in nearby frames (for overlays that must not flicker)")
    a.add_argument("--data-format", "--boxes-format", dest="data_format",
                   choices=["csv", "tsv", "txt", "json", "none"],
                   help="boxes table <output>_boxes.<fmt> (MGT data_format; default csv)")
    a.add_argument("--heatmap", action="store_true", help="write <output>_heatmap.png: face-centre density (MGT)")
    a.add_argument("--keep-audio", "-k", action="store_true", help="accepted for deface compatibility: audio is "
                                                                    "always copied")
    a.add_argument("--keep-metadata", "-m", action="store_true",
                   help="copy the source's container metadata (video) or EXIF (image)")
    a.add_argument("--ffmpeg-config", dest="x264_options", type=_json_dict, default=None,
                   help='x264 options as JSON, e.g. \'{"preset": "slow", "crf": "20", "tune": "film"}\'')
    a.add_argument("--crf", type=int, help="x264 CRF (default 23, as deface's imageio/FFmpeg)")
    a.add_argument("--preset", help="x264 preset (default veryfast)")
    _encoder_option(a)
    a.add_argument("--audit", action="store_true",
                   help="after each video, count the faces a second detector still finds (see gpuface audit)")
    a.add_argument("--max-leak", type=float, default=None,
                   help="with --audit: exit 3 when a leak rate is above this (0-1)")
    a.add_argument("--min-face-size", type=int, help="MTCNN smallest face, px (default 20)")
    _overwrite_option(a)
    _selection_options(a)
    _common(a)

    au = sub.add_parser("audit", help="leak audit: faces a second detector still finds in an anonymised video")
    au.add_argument("original", help="the source video or image")
    au.add_argument("anonymised", help="its anonymised version")
    au.add_argument("--detector", default="mtcnn", choices=["mtcnn", "centerface", "blazeface-full", "blazeface-short"],
                    help="audit detector (default mtcnn); must not be the one that drove the masks")
    au.add_argument("--masked-with", help="the detector that drove the masks (refused as the audit detector)")
    au.add_argument("--threshold", type=float, help="score at which a face counts (default: mtcnn 0.9, others 0.5)")
    au.add_argument("-o", "--output", help="leaks table (default: <anonymised stem>_audit.csv); a contact sheet "
                                           "<stem>_audit.png of the worst frames is written beside it")
    au.add_argument("--max-leak", type=float, default=None, help="exit 3 when the leak rate is above this (0-1)")
    _overwrite_option(au)
    _common(au)

    lm = sub.add_parser("landmarks", help="478 FaceMesh landmarks, presence and 52 blendshapes per face → table")
    lm.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    lm.add_argument("-o", "--output", required=True, help="table: .parquet, .csv, .tsv or .json")
    add_job_options(lm, "landmarks")
    lm.add_argument("--regions", dest="draw_regions", nargs="*", default=["face_oval", "eyes", "brows", "lips"],
                    help="regions tinted by --draw (names or expressions like 'face_oval-eyes')")
    _overwrite_option(lm)
    _selection_options(lm)
    _common(lm)

    mp = sub.add_parser("manipulate", help="stimulus manipulations (PyFAME layers) on every face → videos + logs")
    mp.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    mp.add_argument("--layers", required=True, help="layer spec, YAML or JSON (see gpuface.stages.layers)")
    mp.add_argument("-o", "--output", help="output folder (default: beside each input)")
    mp.add_argument("--seed", type=int, help="seed of every random draw (overrides the spec's)")
    add_job_options(mp, "manipulate")
    _encoder_option(mp)
    _overwrite_option(mp)
    _common(mp)

    an = sub.add_parser("analyse", help="per-frame region colour means and landmark optical flow → tables")
    an.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    an.add_argument("-o", "--output", required=True, help="folder for colour_means.parquet, landmark_flow.parquet")
    add_job_options(an, "analyse")
    _overwrite_option(an)
    _selection_options(an)
    _common(an)

    mv = sub.add_parser("moviefy", help="a folder of stills → one video with blended transitions")
    mv.add_argument("inputs", nargs="+", help="image files or folders (sorted by name)")
    mv.add_argument("-o", "--output", required=True, help="video file to write (.mp4)")
    mv.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    mv.add_argument("--repeat", type=float, default=1.0, help="seconds per image (default 1.0)")
    mv.add_argument("--blend", type=float, default=0.2, help="fraction of each image's time spent blending (0.2)")
    mv.add_argument("--size", default="crop", choices=["crop", "pad"], help="equalise sizes by crop or pad")
    mv.add_argument("--pad-colour", type=int, nargs=3, default=(255, 255, 255), metavar=("R", "G", "B"))
    _overwrite_option(mv)

    at = sub.add_parser("annotate", help="every face of every frame with an identity label (mexca-style) → table")
    at.add_argument("inputs", nargs="+", help="video files, folders, or .txt lists of paths")
    at.add_argument("-o", "--output", required=True, help="table: .parquet, .csv, .tsv or .json")
    add_job_options(at, "annotate")
    _overwrite_option(at)
    _selection_options(at)
    _common(at)

    af = sub.add_parser("affect", help="action units, 7 emotions, valence/arousal per face → table, JSON, CSVs, "
                                       "report")
    af.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    af.add_argument("-o", "--output", required=True, help="output folder (one set of files per input)")
    af.add_argument("--format", default="parquet", choices=["parquet", "csv", "tsv", "json"],
                    help="format of the per-face table (default parquet)")
    add_job_options(af, "affect")
    _overwrite_option(af)
    _selection_options(af)
    _common(af)

    fc = sub.add_parser("faces", help="face crops grouped by person (clustering or reference images) + CSV log")
    fc.add_argument("inputs", nargs="+", help="video/image files, folders, or .txt lists of paths")
    fc.add_argument("-o", "--output", default="faces", help="output folder (default ./faces)")
    fc.add_argument("--step-seconds", "--video-step", dest="step_seconds", type=float, default=1.0,
                    help="seconds between sampled frames (default 1; video-to-faces: --video-step)")
    fc.add_argument("--fragment", type=float, nargs=2, metavar=("START", "END"), help="only this part, seconds")
    fc.add_argument("--area", "--video-area", type=int, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                    help="only faces inside this rectangle of the frame, px")
    fc.add_argument("--min-score", "--det-min-score", dest="min_score", type=float,
                    help="detection score a face needs (default per detector: mtcnn 0.9, blazeface 0.5)")
    fc.add_argument("--min-size", "--det-min-size", dest="min_size", type=float, default=50.0,
                    help="smallest face side kept, px (default 50)")
    fc.add_argument("--min-border", "--det-min-border", dest="min_border", type=float, default=0.0,
                    help="least distance from the frame edge, px")
    fc.add_argument("--expand", "--det-scale", dest="expand", type=float, nargs=4, default=(1.0, 1.0, 1.0, 1.0),
                    metavar=("L", "R", "U", "D"),
                    help="grow the crop box left, right, up, down by these factors of its size")
    fc.add_argument("--square", "--det-square", dest="square", action="store_true", help="square crops")
    fc.add_argument("--group", default="clustering", choices=["clustering", "classification"],
                    help="clustering (unknown people) or classification against --ref-dir")
    fc.add_argument("--clusters", type=parse_count, default=[1, 9], metavar="K|MIN-MAX",
                    help="people: K or MIN-MAX to estimate (default 1-9)")
    fc.add_argument("--ref-dir", help="classification: one sub-folder of images per person")
    fc.add_argument("--prefix", default="", help="prefix of every crop's file name")
    fc.add_argument("--save-rejects", action="store_true", help="also save rejected crops in rejects/")
    fc.add_argument("--save-dupes", action="store_true", help="also save duplicate crops in dupes/")
    fc.add_argument("--detector", default="blazeface-full", choices=DETECTORS,
                    help="face detector (default blazeface-full)")
    _common(fc)

    rn = sub.add_parser("run", help="run a job spec (YAML/JSON) on files: the same code as a corpus run")
    rn.add_argument("inputs", nargs="*", help="video files, folders, or .txt lists of paths")
    rn.add_argument("--spec", required=True, help="job spec: job (detect|landmarks|anonymize|manipulate|analyse|"
                                                  "annotate|affect), options, batch_size, device")
    rn.add_argument("-o", "--output", help="output folder (one sub-folder per input)")
    rn.add_argument("--check", action="store_true", help="only validate the spec (names, types, ranges) and exit")
    rn.add_argument("--quiet", action="store_true")

    cp = sub.add_parser("corpus", help="manifest, resumable sharded runs, status, retry, merge")
    csub = cp.add_subparsers(dest="corpus_command", required=True)
    c = csub.add_parser("plan", help="probe the inputs and write corpus/manifest.parquet")
    c.add_argument("inputs", nargs="+")
    c.add_argument("-o", "--output", required=True, help="corpus folder")
    c.add_argument("--ext", nargs="*", help="extensions to take from input folders")
    c = csub.add_parser("run", help="process one shard (default: the whole corpus); reruns skip done videos")
    c.add_argument("corpus")
    c.add_argument("--spec", required=True, help="job spec (YAML/JSON)")
    c.add_argument("--shard", type=int, default=0)
    c.add_argument("--num-shards", type=_positive_int, default=1)
    c.add_argument("--retries", type=int, default=1, help="tries again a failed video this many times (1)")
    c.add_argument("--devices", help="one process per device, e.g. 0,1 (GPUs) or cpu,cpu")
    c.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    c.add_argument("--quiet", action="store_true")
    c = csub.add_parser("status", help="done / failed / pending counts (and incomplete shards)")
    c.add_argument("corpus")
    c.add_argument("--num-shards", type=_positive_int)
    c = csub.add_parser("retry", help="forget failed records so the next run tries them again")
    c.add_argument("corpus")
    c = csub.add_parser("merge", help="combine per-video tables into merged/*.parquet + merged/summary.json")
    c.add_argument("corpus")

    sl = sub.add_parser("slurm", help="SLURM job arrays over a corpus")
    ssub = sl.add_subparsers(dest="slurm_command", required=True)
    c = ssub.add_parser("submit", help="write and submit an sbatch array (incomplete shards only) + a merge job")
    c.add_argument("corpus")
    c.add_argument("--spec", required=True)
    c.add_argument("--num-shards", type=_positive_int, required=True)
    c.add_argument("--partition")
    c.add_argument("--gpus-per-task", type=int)
    c.add_argument("--cpus-per-task", type=int)
    c.add_argument("--mem", help="memory per task, e.g. 16G")
    c.add_argument("--time", default="04:00:00", help="time limit per task (default 04:00:00)")
    c.add_argument("--parallel", type=_positive_int, help="most array tasks at once (%%N)")
    c.add_argument("--retries", type=int, default=1)
    c.add_argument("--dry-run", action="store_true", help="write the scripts, print them, submit nothing")
    c.add_argument("--backend", choices=["sbatch", "submitit"], default="sbatch",
                   help="plain sbatch scripts (default) or submitit ([slurm] extra; needs sacct for failure states)")

    m = sub.add_parser("demo", help="fetch the PyFAME sample videos, anonymise and landmark them (a first run)")
    m.add_argument("-o", "--output", default="gpuface-demo", help="output folder (default ./gpuface-demo)")
    m.add_argument("--frames", type=int, default=None, help="only the first N frames of each video")
    m.add_argument("--device", default="auto")
    m.add_argument("--batch-size", type=_positive_int, default=16)
    m.add_argument("--quiet", action="store_true")

    w = sub.add_parser("weights", help="model weights: list, fetch, verify")
    w.add_argument("action", choices=["list", "fetch", "verify"])
    w.add_argument("names", nargs="*", help="models (default: all)")
    return parser


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def _error(item: str, e: Exception) -> None:
    text = str(e)
    print(f"gpuface: error: {text if item in text else f'{item}: {text}'}", file=sys.stderr, flush=True)


def _summary(results, quiet: bool) -> int:
    failed = [r for r in results if r.error]
    if not quiet:
        print(f"{'source':<40} {'frames':>7} {'faces':>6} {'fps':>7}  output")
        for r in results:
            name = os.path.basename(r.source)[:40]
            if r.error:
                print(f"{name:<40} {'-':>7} {'-':>6} {'-':>7}  FAILED: {r.error}")
            else:
                print(f"{name:<40} {r.frames:>7} {r.faces:>6} {r.fps:>7.1f}  {', '.join(r.outputs)}")
    return 1 if failed else 0


def _run_job(args, job: str, options: dict, out_dir=None, tables: dict | None = None, extra: dict | None = None,
             per_input: bool = False):
    """Build the job spec of a command's flags (:func:`gpuface.jobs.build`, the one translation) and run it on every
    input (:func:`gpuface.jobs.drive`, the one driver). ``tables``: table name → file collected over the inputs (a
    numbered name if it exists, unless ``--overwrite``); ``per_input``: ``-o`` places each input's outputs
    (:func:`_placement`). Returns (pipeline, results)."""
    from gpuface.io.encode import free_path
    from gpuface.io.sources import expand_inputs
    from gpuface.jobs import JobSpec, build, drive

    inputs = expand_inputs(args.inputs, args.ext)
    output = None
    if per_input:
        out_dir, output = _placement(args.output, inputs)
    pipeline = build(JobSpec(job, options, args.batch_size, args.device, args.backend, extra or {})).load()
    tables = {name: free_path(file, args.overwrite) for name, file in (tables or {}).items()}
    results = drive(pipeline, inputs, out_dir, output, args.overwrite, args.quiet, _error, tables)
    return pipeline, results


def _collected_status(results, quiet: bool) -> int:
    """A command collecting tables over its inputs: :func:`_summary`, or 2 when no input gave one."""
    return _summary(results, quiet) if any(not r.error for r in results) else 2


def _placement(output: str | None, inputs: list[str]) -> tuple[Path | None, Path | None]:
    """``-o`` of a command whose outputs are per input: (folder, None), or (its folder, the file) when it names a
    file (one input only), or (None, None): beside each input."""
    if output is None:
        return None, None
    o = Path(output)
    if o.suffix and not o.is_dir():
        if len(inputs) > 1:
            raise InvalidOptionError("-o names one file but several inputs were given: pass a folder")
        return o.parent, o
    return o, None


def _table_command(args, job: str, table: str) -> tuple[object, int]:
    """A command writing one table over all its inputs to ``-o`` (files such as drawings beside it)."""
    from gpuface.stages.tables import table_format

    opts = job_options(args, job)
    table_format(args.output)  # a bad extension fails before any work
    pipeline, results = _run_job(args, job, opts, Path(args.output).resolve().parent, tables={table: args.output})
    return pipeline, _collected_status(results, args.quiet)


def cmd_detect(args) -> int:
    return _table_command(args, "detect", "faces")[1]


def cmd_landmarks(args) -> int:
    pipeline, status = _table_command(args, "landmarks", "landmarks")
    lm = pipeline.model
    _say(args.quiet, f"detector ran on {lm.detector_frames} frames; FaceMesh on {lm.mesh_crops} crops")
    return status


def cmd_annotate(args) -> int:
    return _table_command(args, "annotate", "annotation")[1]


def cmd_manipulate(args) -> int:
    from gpuface.io.sources import read_spec_file

    opts = job_options(args, "manipulate")
    layers = read_spec_file(args.layers, "layer spec")
    extra = {"layers": layers} if isinstance(layers, list) else dict(layers)
    if args.seed is not None:
        extra["seed"] = args.seed
    _, results = _run_job(args, "manipulate", opts, extra=extra, per_input=True)
    return _summary(results, args.quiet)


def cmd_analyse(args) -> int:
    out = Path(args.output)
    tables = {name: out / f"{name}.parquet" for name in ("colour_means", "landmark_flow", "dense_flow")}
    _, results = _run_job(args, "analyse", job_options(args, "analyse"), out, tables=tables)
    return _collected_status(results, args.quiet)


def cmd_affect(args) -> int:
    _, results = _run_job(args, "affect", job_options(args, "affect"), Path(args.output))
    return _summary(results, args.quiet)


def cmd_faces(args) -> int:
    from gpuface.stages.embed import Embedder
    from gpuface.jobs.crops import FacesOptions, extract_faces
    from gpuface.io.sources import expand_inputs
    from gpuface.stages.landmarks import FaceLandmarker

    start, end = args.fragment if args.fragment else (0.0, None)
    options = FacesOptions(step=args.step_seconds, start=start, end=end, area=tuple(args.area) if args.area else None,
                           min_score=args.min_score, min_size=args.min_size, min_border=args.min_border,
                           scale=tuple(args.expand), square=args.square, group=args.group,
                           clusters=args.clusters if isinstance(args.clusters, int) else tuple(args.clusters),
                           ref_dir=args.ref_dir, prefix=args.prefix,
                           save_rejects=args.save_rejects, save_dupes=args.save_dupes)
    options.validate()
    device = _device(args.device)
    landmarker = FaceLandmarker(args.detector, device=device)
    failed = []

    def on_error(path: str, e: Exception) -> None:
        failed.append(path)
        _error(path, e)

    table = extract_faces(expand_inputs(args.inputs, args.ext), args.output, landmarker, Embedder("dlib", device),
                          options, args.batch_size, args.backend, on_error)
    counts = table[table["status"] == "kept"].groupby("group").size().to_dict()
    out = Path(args.output)
    _say(args.quiet, f"{out}: {counts}; rejected {int((table['status'] == 'rejected').sum())}, "
                     f"duplicates {int((table['status'] == 'duplicate').sum())}; log {out / 'faces.csv'}")
    return 1 if failed else 0


def cmd_run(args) -> int:
    from gpuface.io.sources import expand_inputs
    from gpuface.jobs import build, drive, load_job_spec

    spec = load_job_spec(args.spec)
    if args.check:
        print(f"{args.spec}: ok ({spec.job}, options {sorted(spec.options)})")
        return 0
    if not args.inputs or not args.output:
        raise InvalidOptionError("gpuface run needs inputs and -o/--output (or --check)")
    results = drive(build(spec), expand_inputs(args.inputs), Path(args.output), quiet=args.quiet, on_error=_error,
                    folders=True)
    return _summary(results, args.quiet)


def cmd_corpus(args) -> int:
    import json

    from gpuface import corpus

    if args.corpus_command == "plan":
        table = corpus.plan(args.inputs, args.output, args.ext)
        bad = int(table["error"].notna().sum())
        print(f"{args.output}/manifest.parquet: {len(table)} videos ({bad} unreadable)")
        return 0
    if args.corpus_command == "run":
        if args.devices:
            from gpuface.corpus.runner import run_devices
            stats = run_devices(args.corpus, args.spec, args.devices.split(","), args.shard, args.num_shards,
                                args.retries)
            print(json.dumps(stats))
            return 1 if any("returncode" in s for s in stats) else 0
        try:
            part = tuple(int(v) for v in args.part.split("/"))
        except ValueError:
            raise InvalidOptionError(f"--part must be p/P, got {args.part}") from None
        stats = corpus.run_shard(args.corpus, args.spec, args.shard, args.num_shards, args.retries, args.quiet, part)
        print(json.dumps(stats))
        return 0
    if args.corpus_command == "status":
        print(json.dumps(corpus.status(args.corpus, args.num_shards), indent=1))
        return 0
    if args.corpus_command == "retry":
        print(f"{corpus.retry(args.corpus)} failed videos will be tried again")
        return 0
    summary = corpus.merge(args.corpus)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    return 0


def cmd_slurm(args) -> int:
    from gpuface.corpus.slurm import submit, submitit_submit

    if args.backend == "submitit":
        if args.dry_run:
            raise InvalidOptionError("--dry-run writes sbatch scripts: use it with --backend sbatch")
        out = submitit_submit(args.corpus, args.spec, args.num_shards, partition=args.partition,
                              gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, mem=args.mem,
                              time_limit=args.time, parallel=args.parallel, retries=args.retries)
        print(f"shards {out['shards']}: array {out.get('array_job', '-')}, merge {out['merge_job']} (submitit; "
              f"logs in {Path(args.corpus) / 'slurm' / 'submitit'})")
        return 0
    out = submit(args.corpus, args.spec, args.num_shards, partition=args.partition, gpus_per_task=args.gpus_per_task,
                 cpus_per_task=args.cpus_per_task, mem=args.mem, time_limit=args.time, parallel=args.parallel,
                 retries=args.retries, dry_run=args.dry_run)
    if args.dry_run:
        print(Path(out["array_script"]).read_text())
    print(f"shards {out['shards']}: array {out.get('array_job', '-')}, merge {out.get('merge_job', '-')}; "
          f"scripts in {Path(out['array_script']).parent}")
    return 0


def cmd_moviefy(args) -> int:
    from gpuface.io.moviefy import images_in, moviefy

    images = []
    for item in args.inputs:
        images.extend(images_in(item) if Path(item).is_dir() else [item])
    out = moviefy(images, args.output, args.fps, args.repeat, args.blend, args.size, tuple(args.pad_colour),
                  overwrite=args.overwrite)
    print(f"{out}: {len(images)} images")
    return 0


def cmd_anonymize(args) -> int:
    # deface-compatible flags (dests named as the schema's options), checked as an anonymize job spec is
    opts = job_options(args, "anonymize")
    if args.max_leak is not None and not args.audit:
        raise InvalidOptionError("--max-leak needs --audit")
    pipeline, results = _run_job(args, "anonymize", opts, per_input=True)
    leaks = []
    if args.audit:   # each anonymised video audited by a second detector; a failed audit fails its input
        from gpuface.jobs.runner import run_many
        masked_with = pipeline.anonymizer_setting()["detector"]
        done = {r.source: r for r in results if not r.error}
        audits = run_many(list(done), lambda src: _audit(src, done[src].outputs[0], masked_with, pipeline.device,
                                                         None, None, None, args), _error)
        for src, audit in zip(list(done), audits):
            if getattr(audit, "error", None):
                done[src].error = audit.error
            else:
                done[src].outputs.extend(audit.outputs)
                leaks.append(audit)
    return _leak_status(leaks, args.max_leak, _summary(results, args.quiet))


def _audit(original: str, anonymised: str, masked_with: str | None, device, detector_name: str | None,
           output: str | None, threshold: float | None, args):
    from gpuface.stages.detect import FaceDetector
    from gpuface.io.encode import free_path
    from gpuface.jobs.anonymize import audit_detector_for, audit_source

    name = detector_name or audit_detector_for(masked_with or "")
    detector = FaceDetector(name, device=device)
    stem = Path(anonymised)
    table = Path(output) if output else stem.with_name(f"{stem.stem}_audit.csv")
    table = free_path(table, args.overwrite)
    res = audit_source(original, anonymised, detector, masking_detector=masked_with,
                       threshold=threshold, table_path=table,
                       sheet_path=free_path(table.with_suffix(".png"), args.overwrite), backend=args.backend,
                       quiet=args.quiet)
    _say(args.quiet, f"audit of {anonymised} with {name}: {res.leaked} of {res.reference_faces} faces of the "
                     f"original still found (leak rate {res.leak_rate:.4f}), {res.unmatched} other detections; "
                     f"{', '.join(res.outputs)}")
    return res


def _leak_status(audits, max_leak: float | None, status: int) -> int:
    if max_leak is None:
        return status
    over = [a for a in audits if a.leak_rate > max_leak]
    for a in over:
        print(f"gpuface: leak: {a.anonymised}: leak rate {a.leak_rate:.4f} > --max-leak {max_leak}", file=sys.stderr)
    return 3 if over else status


def cmd_audit(args) -> int:
    if args.max_leak is not None and not 0 <= args.max_leak <= 1:
        raise InvalidOptionError(f"--max-leak must be in [0, 1], got {args.max_leak}")
    res = _audit(args.original, args.anonymised, args.masked_with, _device(args.device), args.detector,
                 args.output, args.threshold, args)
    if args.quiet:
        print(f"{res.leak_rate:.6f}")
    return _leak_status([res], args.max_leak, 0)


def cmd_demo(args) -> int:
    from gpuface.io.decode import probe
    from gpuface.jobs import JobSpec, build, drive
    from gpuface.io.samples import DEMO_VIDEOS, fetch_samples, samples_dir

    _say(args.quiet, f"gpuface demo: fetching the PyFAME 1.0.10 sample videos into {samples_dir()} …")
    videos = [str(p) for p in fetch_samples(DEMO_VIDEOS).values()]
    out = Path(args.output)
    # --frames N: the first N frames of each video (videos grouped by frame rate, one pipeline each)
    groups: dict[float | None, list[str]] = {}
    for v in videos:
        groups.setdefault((args.frames - 0.5) / float(probe(v).fps) if args.frames else None, []).append(v)

    def run(job: str, options: dict, **kw) -> int:
        results = []
        for end, paths in groups.items():
            spec = JobSpec(job, {**options, **({"end": end} if end else {})}, args.batch_size, args.device)
            results += drive(build(spec), paths, out, overwrite=True, quiet=args.quiet, on_error=_error, **kw)
        return _summary(results, args.quiet)

    _say(args.quiet, f"anonymising {len(videos)} videos (blurred ellipses; {ANONYMIZE_AUTO.describe()}) → {out}/")
    status = run("anonymize", {})
    _say(args.quiet, f"landmarking them (BlazeFace + FaceMesh 478 + blendshapes, tracked) → {out}/"
                     "landmarks.parquet and *_landmarks.mp4 (mesh, face oval, eyes, brows, lips drawn)")
    return max(status, run("landmarks", {"draw": True}, tables={"landmarks": out / "landmarks.parquet"}))


def cmd_weights(args) -> int:
    from gpuface.models import weights

    names = args.names or list(weights.REGISTRY)
    status = 0
    for name in names:
        if args.action == "list":
            e = weights.entry(name)
            ok = weights.verify(name, raise_error=False)
            print(f"{name:<13} {'cached' if ok else 'not cached':<11} {e.license:<10} {e.citation}")
            for f in e.files:
                print(f"    {f.name:<12} sha256 {f.sha256}  sources: {', '.join(s.describe() for s in f.sources)}")
        elif args.action == "fetch":
            try:
                print(f"{name}: {weights.fetch(name, upstream_files=True)}")
            except GpufaceError as e:
                print(f"{name}: {e}")
                status = 1
        else:
            try:
                weights.verify(name, upstream_files=True)
                print(f"{name}: ok (converted file and upstream files match their sha256)")
            except GpufaceError as e:
                print(f"{name}: {e}")
                status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"detect": cmd_detect, "landmarks": cmd_landmarks, "manipulate": cmd_manipulate,
                "moviefy": cmd_moviefy, "analyse": cmd_analyse, "run": cmd_run, "annotate": cmd_annotate,
                "affect": cmd_affect, "faces": cmd_faces, "corpus": cmd_corpus, "slurm": cmd_slurm,
                "anonymize": cmd_anonymize, "audit": cmd_audit, "demo": cmd_demo, "weights": cmd_weights}
    try:
        from gpuface.core import threads
        threads.apply(getattr(args, "threads", None))
        return handlers[args.command](args)
    except GpufaceError as e:
        print(f"gpuface: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpuface: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
