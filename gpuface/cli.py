"""The ``gpuface`` command line: detect, landmarks, manipulate, anonymize, annotate, affect, demo, weights, list.

Every error that bad input causes prints as one line ``gpuface: error: <what and where>`` and the exit status
is non-zero (1: some inputs failed, 2: bad usage or nothing could run). With several inputs a broken one is
reported and the others are still processed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gpuface.jobs.catalogue import KINDS
from gpuface.core.errors import GpufaceError, InvalidOptionError
from gpuface.core.timing import profiling, set_profile, stage_table
from gpuface.jobs.registry import JOBS, add_job_options, job_options, spec_jobs
from gpuface.models.registry import ANONYMIZE_AUTO


def _device(name: str):
    from gpuface.core.device import resolve_device

    return resolve_device(name)


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: a numbered name, e.g. faces_1.csv)")


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true", help="log each input's start, end and outputs (INFO)")
    p.add_argument("--log-file", help="also append the log to this file (time-stamped, rotated at 5 MB × 5)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="frames per batch (default 16)")
    p.add_argument("--backend", default="auto", help="decoder: auto, decord, pyav, torchcodec")
    p.add_argument("--ext", nargs="*", help="extensions to take from input folders (default: videos and images)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.add_argument("--profile", action="store_true",
                   help="print where the time of each input went, stage by stage (decode, detect/landmarks, "
                        "embedding, the job's own work, encode, write): the stages run one after another (on a "
                        "CPU faces are otherwise found on a second thread, ahead), on CUDA each is synchronised")
    _log_options(p)
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads for torch, decoding and encoding (default: the CPUs this process may use: "
                        "affinity, SLURM_CPUS_PER_TASK, cgroup quota)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpuface", description="Batched face analysis and manipulation of video.")
    sub = parser.add_subparsers(dest="command", required=True)

    def job_command(name: str, help: str, output: dict | None, inputs: str = "+"):
        c = sub.add_parser(name, help=help)
        c.add_argument("inputs", nargs=inputs, help="video/image files, folders, or .txt lists of paths")
        if output is not None:
            c.add_argument("-o", "--output", **output)
        add_job_options(c, name)
        c.add_argument("--config", help="YAML/JSON mapping of this command's options (the models and their "
                                        "settings, e.g. detector, au_model, emotion_model, weights), checked before "
                                        "any model loads; flags given on the line win")
        _overwrite_option(c)
        _common(c)
        return c

    table = {"required": True, "help": "table: .parquet, .csv, .tsv or .json"}
    job_command("detect", "face boxes, scores and 5 keypoints per frame → table", table)
    a = job_command("anonymize", "blur / mosaic / fill / overlay every face (deface's and MGT blur_faces' options); "
                                 "keeps audio; boxes table; optional leak audit",
                    {"help": "output folder, or a file name for a single input (default: <stem>_anonymized.<ext> "
                             "beside each input)"})
    a.add_argument("--keep-audio", "-k", action="store_true", help="accepted for deface compatibility: audio is "
                                                                    "always copied")
    a.add_argument("--audit", action="store_true",
                   help="after each video, count the faces a second detector still finds (see gpuface audit)")
    a.add_argument("--max-leak", type=float, default=None,
                   help="with --audit: exit 3 when a leak rate is above this (0-1)")

    au = sub.add_parser("audit", help=JOBS["audit"].summary)
    au.add_argument("original", help="the source video or image")
    au.add_argument("anonymised", help="its anonymised version")
    add_job_options(au, "audit")
    au.add_argument("-o", "--output", help="leaks table (default: <anonymised stem>_audit.csv); a contact sheet "
                                           "<stem>_audit.png of the worst frames is written beside it")
    au.add_argument("--max-leak", type=float, default=None, help="exit 3 when the leak rate is above this (0-1)")
    _overwrite_option(au)
    _common(au)

    job_command("landmarks", "478 FaceMesh landmarks, presence and 52 blendshapes per face → table", table)
    mp = job_command("manipulate", "stimulus manipulations (PyFAME layers) on every face → videos + logs",
                     {"help": "output folder (default: beside each input)"})
    mp.add_argument("--layers", required=True, help="layer spec, YAML or JSON (see gpuface.stages.layers)")
    mp.add_argument("--seed", type=int, help="seed of every random draw (overrides the spec's)")
    job_command("analyse", "per-frame region colour means and landmark optical flow → tables",
                {"required": True, "help": "folder for colour_means.parquet, landmark_flow.parquet, "
                                           "dense_flow.parquet; or a table name (x.csv, x.parquet, x.tsv, x.json): "
                                           "x_colour_means.csv … beside it"})

    mv = sub.add_parser("moviefy", help="a folder of stills → one video with blended transitions")
    mv.add_argument("inputs", nargs="+", help="image files or folders (sorted by name)")
    mv.add_argument("-o", "--output", required=True, help="video file to write (.mp4)")
    mv.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    mv.add_argument("--repeat", type=float, default=1.0, help="seconds per image (default 1.0)")
    mv.add_argument("--blend", type=float, default=0.2, help="fraction of each image's time spent blending (0.2)")
    mv.add_argument("--size", default="crop", choices=["crop", "pad"], help="equalise sizes by crop or pad")
    mv.add_argument("--pad-colour", type=int, nargs=3, default=(255, 255, 255), metavar=("R", "G", "B"))
    _overwrite_option(mv)

    job_command("annotate", "every face of every frame with an identity label (mexca-style) → table",
                {"required": True, "help": "table: .parquet, .csv, .tsv, .records.json (one record per row), or "
                                           ".json: mexca's VideoAnnotation layout (one input); .multimodal.json: "
                                           "its Multimodal (filename, duration, fps, fps_adjusted, video_annotation)"})
    job_command("affect", "action units, 7 emotions, valence/arousal per face → table, JSON, CSVs, report",
                {"required": True, "help": "output folder (one set of files per input)"})
    fc = job_command("faces", "face crops grouped by person (video-to-faces: clustering or reference images), "
                              "logs and an HTML gallery",
                     {"help": "output folder: crops in OUT/faces/<group>/, logs, OUT/faces/index.html (default: the "
                              "first input's folder, as video-to-faces' --out-dir)"}, inputs="*")
    fc.add_argument("--fragment", type=float, nargs=2, metavar=("START", "END"),
                    help="only this part, seconds (the same as --start START --end END)")

    rn = sub.add_parser("run", help="run a job spec (YAML/JSON) on files: the same code as a corpus run")
    rn.add_argument("inputs", nargs="*", help="video files, folders, or .txt lists of paths")
    rn.add_argument("--spec", required=True, help=f"job spec: job ({'|'.join(spec_jobs())}), options, batch_size, "
                                                  "device")
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

    ls = sub.add_parser("list", help="every region, op, timing curve, shuffle, detector or model, with its "
                                     "parameters, defaults and units (PyFAME's display_* helpers)")
    ls.add_argument("kind", choices=KINDS)
    ls.add_argument("--json", action="store_true", help="print JSON records instead of text")

    rg = sub.add_parser("regions", help="regions drawn on a face: gpuface regions draw IMAGE -o regions.png")
    rg.add_argument("action", choices=["draw"])
    rg.add_argument("image", help="a still image with a face")
    rg.add_argument("-o", "--output", default="regions.png", help="PNG contact sheet (default ./regions.png)")
    rg.add_argument("--detector", default="blazeface-short", help="face detector of the landmarker")
    _overwrite_option(rg)

    w = sub.add_parser("weights", help="model weights: list, fetch, verify; compile (the CPU networks, for this "
                                       "machine, e.g. before a SLURM array)")
    w.add_argument("action", choices=["list", "fetch", "verify", "compile"])
    w.add_argument("names", nargs="*", help="models (default: all; for compile: facemesh, blendshapes, centerface)")
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
    if profiling():
        for r in results:
            if not r.error and r.stages:
                print(stage_table(os.path.basename(r.source), r.stages))
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
    out = Path(args.output)
    if out.suffix.lower() != ".json" or out.name.lower().endswith(".records.json"):
        return _table_command(args, "annotate", "annotation")[1]
    # -o x.json: mexca's VideoAnnotation layout (one video), x.multimodal.json: its Multimodal (duration, fps and
    # the VideoAnnotation); x.records.json: one JSON record per row
    import json

    from gpuface.io.encode import free_path
    from gpuface.io.sources import expand_inputs
    from gpuface.jobs.annotate import mexca_multimodal, mexca_video_annotation
    from gpuface.stages.tables import write_text

    if len(expand_inputs(args.inputs, args.ext)) != 1:
        raise InvalidOptionError("-o x.json writes mexca's VideoAnnotation of one video: give one input, or "
                                 "x.records.json / a table format for several")
    _, results = _run_job(args, "annotate", job_options(args, "annotate"), out.resolve().parent)
    multimodal = out.name.lower().endswith(".multimodal.json")
    for r in results:
        if not r.error:
            table = r.tables["annotation"]
            doc = mexca_multimodal(table, r.tables["video"]) if multimodal else mexca_video_annotation(table)
            written = write_text(json.dumps(doc), free_path(out, args.overwrite))
            r.outputs.insert(0, str(written))
    return _collected_status(results, args.quiet)


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
    from gpuface.stages.tables import table_format

    out, names = Path(args.output), JOBS["analyse"].tables
    if out.suffix and not out.is_dir():     # -o results.csv: results_colour_means.csv, … beside it (PyFAME's CSV)
        table_format(out)
        tables = {name: out.with_name(f"{out.stem}_{name}{out.suffix}") for name in names}
        out = out.parent
    else:
        tables = {name: out / f"{name}.parquet" for name in names}
    _, results = _run_job(args, "analyse", job_options(args, "analyse"), out, tables=tables)
    return _collected_status(results, args.quiet)


def cmd_affect(args) -> int:
    _, results = _run_job(args, "affect", job_options(args, "affect"), Path(args.output))
    return _summary(results, args.quiet)


def cmd_faces(args) -> int:
    from gpuface.io.sources import expand_inputs
    from gpuface.jobs.faces import FaceCropsJob, extract_faces
    from gpuface.stages.detect import FaceDetector
    from gpuface.stages.embed import Embedder
    from gpuface.stages.landmarks import FaceLandmarker

    opts = job_options(args, "faces")
    if args.fragment:
        opts["start"], opts["end"] = args.fragment
    options = FaceCropsJob.Options(**opts)
    FaceCropsJob.check(None, options)
    if not args.inputs and options.mode != "grouping":
        raise InvalidOptionError("faces needs inputs (videos, images, folders), except with --mode grouping")
    if args.output is None:
        if not args.inputs:
            raise InvalidOptionError("--mode grouping needs -o OUT: the folder whose faces/ holds the crops")
        first = Path(args.inputs[0])
        args.output = str(first if first.is_dir() else first.resolve().parent)
    device = _device(args.device)
    detector, embedder_name = FaceCropsJob.models(options)
    landmarker = FaceDetector(detector, device=device) if options.style == "anime" else \
        FaceLandmarker(detector, device=device)
    failed = []

    def on_error(path: str, e: Exception) -> None:
        failed.append(path)
        _error(path, e)

    inputs = expand_inputs(args.inputs, args.ext) if options.mode != "grouping" else []
    embedder = Embedder(embedder_name, device) if options.mode != "detection" else None
    table = extract_faces(inputs, args.output, landmarker, embedder, options, args.batch_size, args.backend,
                          on_error, args.overwrite)
    counts = table[table["status"] == "kept"].groupby("group").size().to_dict()
    out = Path(args.output)
    _say(args.quiet, f"{out / 'faces'}: {counts or int((table['status'] == 'kept').sum())}; rejected "
                     f"{int((table['status'] == 'rejected').sum())}, duplicates "
                     f"{int((table['status'] == 'duplicate').sum())}; log {table.attrs['log']}, gallery "
                     f"{table.attrs['gallery']}")
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
        from gpuface.jobs.anonymize import anonymizer_setting
        from gpuface.jobs.runner import run_many
        masked_with = anonymizer_setting(pipeline.job_options["anonymize"])["detector"]
        done = {r.source: r for r in results if not r.error}
        audits = run_many(list(done), lambda src: _audit(src, done[src].outputs[0], pipeline.device, None, args,
                                                         masked_with=masked_with), _error)
        for src, audit in zip(list(done), audits):
            if getattr(audit, "error", None):
                done[src].error = audit.error
            else:
                done[src].outputs.extend(audit.outputs)
                leaks.append(audit)
    return _leak_status(leaks, args.max_leak, _summary(results, args.quiet))


def _audit(original: str, anonymised: str, device, output: str | None, args, **options):
    """Audit one anonymised output (:func:`gpuface.jobs.audit.audit_source`) with the audit job's options."""
    from gpuface.io.encode import free_path
    from gpuface.jobs.audit import AuditJob, audit_detector_for, audit_source
    from gpuface.stages.detect import FaceDetector

    o = AuditJob.Options(**options)
    name = o.detector or audit_detector_for(o.masked_with or "")
    detector = FaceDetector(name, device=device)
    stem = Path(anonymised)
    table = Path(output) if output else stem.with_name(f"{stem.stem}_audit.csv")
    table = free_path(table, args.overwrite)
    res = audit_source(original, anonymised, detector, masking_detector=o.masked_with, threshold=o.threshold,
                       iou=o.iou, step=o.step, table_path=table,
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
    res = _audit(args.original, args.anonymised, _device(args.device), args.output, args,
                 **job_options(args, "audit"))
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

    if args.action == "compile":
        return _compile(args.names)
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


def _compile(names: list[str]) -> int:
    from gpuface.models import aot
    from gpuface.stages.detect import CENTERFACE_AOT_SHAPES
    from gpuface.stages.landmarks import AOT_ROWS

    shapes = {**AOT_ROWS, "centerface": CENTERFACE_AOT_SHAPES}
    unknown = sorted(set(names) - set(shapes))
    if unknown:
        raise InvalidOptionError(f"cannot compile {', '.join(unknown)}: one of {', '.join(shapes)}")
    for name in names or list(shapes):
        for shape, path in zip(shapes[name], aot.build(name, shapes[name])):
            print(f"{name} (input {aot.shape_tag(shape)}): {path}", flush=True)
    return 0


def cmd_list(args) -> int:
    import json

    from gpuface.jobs.catalogue import describe, format_entries

    entries = describe(args.kind)
    if args.json:
        print(json.dumps([{"name": e.name, "meaning": e.meaning,
                           "parameters": [{"name": p, "default": v, "meaning": m} for p, v, m in e.parameters]}
                          for e in entries], indent=1, default=str))
    else:
        print(format_entries(entries))
    return 0


def cmd_regions(args) -> int:
    from gpuface.jobs.catalogue import draw_regions

    print(draw_regions(args.image, args.output, args.detector, overwrite=args.overwrite))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"detect": cmd_detect, "landmarks": cmd_landmarks, "manipulate": cmd_manipulate,
                "moviefy": cmd_moviefy, "analyse": cmd_analyse, "run": cmd_run, "annotate": cmd_annotate,
                "affect": cmd_affect, "faces": cmd_faces, "corpus": cmd_corpus, "slurm": cmd_slurm,
                "anonymize": cmd_anonymize, "audit": cmd_audit, "demo": cmd_demo, "weights": cmd_weights,
                "list": cmd_list, "regions": cmd_regions}
    try:
        from gpuface.core import threads
        from gpuface.core.log import setup_logging
        setup_logging(getattr(args, "verbose", False), getattr(args, "log_file", None))
        threads.apply(getattr(args, "threads", None))
        set_profile(getattr(args, "profile", False))
        return handlers[args.command](args)
    except (GpufaceError, OSError) as e:
        print(f"gpuface: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpuface: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
