"""Corpus runs: manifest, resumable shards, status/retry/merge, and SLURM arrays on a real local cluster."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gpuface import corpus
from gpuface.jobs import load_job_spec
from gpuface.corpus.slurm import _gigabytes, _minutes, _ranges, submit, submitit_submit
from gpuface.core.errors import InvalidOptionError

ROOT = Path(__file__).resolve().parent.parent
SPEC = {"job": "landmarks", "batch_size": 8, "device": "cpu",
        "options": {"detector": "blazeface-short", "max_faces": 1, "end": 0.5}}


@pytest.fixture()
def videos(samples, tmp_path):
    """Four real sample videos (linked into a private folder) and one broken file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("sample_01.mp4", "sample_02.mp4", "sample_03.mp4", "sample_04.mp4"):
        os.symlink(samples[name], folder / name)
    (folder / "broken.mp4").write_bytes(b"\x00" * 512)
    return folder


def _spec_file(tmp_path, **override):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**SPEC, "options": {**SPEC["options"], **override}}))
    return path


def _rows_per_video(c):
    merged = pd.read_parquet(Path(c) / "merged" / "landmarks.parquet")
    return merged.groupby("video").size().to_dict()


def test_plan_run_status_merge(videos, tmp_path):
    c = tmp_path / "corpus"
    table = corpus.plan([str(videos)], c)
    assert len(table) == 5 and table["error"].notna().sum() == 1
    assert table["id"].tolist() == corpus.plan([str(videos)], c)["id"].tolist()        # stable ids
    spec = _spec_file(tmp_path)
    for shard in range(3):
        corpus.run_shard(c, spec, shard, 3)
    st = corpus.status(c, 3)
    assert st == {"videos": 5, "done": 4, "failed": 1, "pending": 0, "frames": 60, "faces": 60,
                  "incomplete_shards": []}
    summary = corpus.merge(c)
    assert summary["done"] == 4 and summary["failed"] == 1 and "broken.mp4" in summary["failures"][0]["path"]
    assert sorted(_rows_per_video(c).values()) == [15, 15, 15, 15]
    again = corpus.run_shard(c, spec, 0, 1)                                             # nothing left to do
    assert again["done"] == again["failed"] == 0 and again["skipped"] == 5
    assert corpus.retry(c) == 1 and corpus.status(c)["pending"] == 1
    (videos / "other.mp4").write_bytes(b"x")
    with pytest.raises(InvalidOptionError):
        corpus.plan([str(videos)], c)                      # never re-shard a corpus behind its back


def test_single_file_run_matches_corpus_output(videos, tmp_path):
    from gpuface.cli import main

    c = tmp_path / "corpus"
    corpus.plan([str(videos / "sample_02.mp4")], c)
    spec = _spec_file(tmp_path)
    corpus.run_shard(c, spec, 0, 1)
    item = corpus.load_manifest(c)["id"][0]
    assert main(["run", str(videos / "sample_02.mp4"), "--spec", str(spec), "-o", str(tmp_path / "single"),
                 "--quiet"]) == 0
    a = pd.read_parquet(c / "outputs" / item / "landmarks.parquet")
    b = pd.read_parquet(tmp_path / "single" / "sample_02" / "landmarks.parquet")
    pd.testing.assert_frame_equal(a, b)
    # and the plain command with the same options gives the same table
    spec_data = json.loads(Path(spec).read_text())
    o = spec_data["options"]
    cli = tmp_path / "cli.parquet"
    assert main(["landmarks", str(videos / "sample_02.mp4"), "-o", str(cli), "--detector", o["detector"],
                 "--max-faces", str(o["max_faces"]), "--end", str(o["end"]), "--batch-size",
                 str(spec_data["batch_size"]), "--device", "cpu", "--quiet"]) == 0
    pd.testing.assert_frame_equal(a, pd.read_parquet(cli))


def _runner(c, spec):
    return subprocess.Popen([sys.executable, "-m", "gpuface.cli", "corpus", "run", str(c), "--spec", str(spec),
                             "--quiet"], stdout=subprocess.PIPE, text=True)


def _wait_for_status(c, n=1, timeout=120):
    t = time.time()
    while time.time() - t < timeout:
        if len(list((Path(c) / "status").glob("*.json"))) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError("no status written")


def _started_runner(videos, tmp_path):
    """A corpus of the four samples (1.5 s each) and a runner process that has finished its first video."""
    c = tmp_path / "corpus"
    corpus.plan([str(videos / f"sample_0{i}.mp4") for i in range(1, 5)], c)
    spec = _spec_file(tmp_path, end=1.5)
    proc = _runner(c, spec)
    _wait_for_status(c)
    return c, spec, proc


def test_sigkill_then_rerun_does_every_video_once(videos, tmp_path):
    c, spec, proc = _started_runner(videos, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.stem for p in (c / "status").glob("*.json")}
    assert 1 <= len(done) < 4
    visible = {p.name for p in (c / "outputs").iterdir() if not p.name.startswith(".")}
    assert visible == done                                 # nothing half-written under a final name
    corpus.run_shard(c, spec, 0, 1)
    assert corpus.status(c)["done"] == 4
    assert not [p for p in (c / "outputs").iterdir() if p.name.startswith(".")]   # stale temporaries cleaned
    corpus.merge(c)
    assert sorted(_rows_per_video(c).values()) == [45, 45, 45, 45]


def test_sigusr1_stops_after_the_current_video(videos, tmp_path):
    c, spec, proc = _started_runner(videos, tmp_path)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    stats = json.loads(out.strip().splitlines()[-1])
    assert proc.returncode == 0 and stats["stopped"] and corpus.status(c)["pending"] >= 1
    corpus.run_shard(c, spec, 0, 1)
    assert corpus.status(c)["done"] == 4


def test_job_spec_and_sbatch_script(videos, tmp_path):
    with pytest.raises(InvalidOptionError):
        load_job_spec({"job": "juggle"})
    with pytest.raises(InvalidOptionError):
        load_job_spec({"job": "manipulate"})
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    c = tmp_path / "corpus"
    corpus.plan([str(videos)], c)
    out = submit(c, _spec_file(tmp_path), 4, partition="gpu", gpus_per_task=1, time_limit="00:30:00", parallel=2,
                 dry_run=True)
    script = Path(out["array_script"]).read_text()
    expected = _ranges(out["shards"]) + "%2"
    for line in (f"#SBATCH --array={expected}", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120",
                 "#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1", "--num-shards 4", "scontrol requeue"):
        assert line in script
    assert "corpus merge" in Path(out["merge_script"]).read_text()


# --- a real SLURM cluster (slurmctld + slurmd + munge on loopback) -------------------------------------------------
@pytest.fixture(scope="module")
def slurm_cluster():
    def up():
        return subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.find("UP") >= 0
    started = False
    if not (shutil.which("scontrol") and up()):
        if os.geteuid() != 0:
            pytest.skip("no SLURM cluster, and starting one needs root")
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh"), "up"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"could not start a local SLURM cluster: {proc.stderr.strip()[-300:]}")
        started = True
    yield
    if started:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh"), "down"], capture_output=True)


def _queue(job):
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %t %r"], capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def _drain(jobs, timeout=300):
    t = time.time()
    while time.time() - t < timeout:
        rows = [r for j in jobs for r in _queue(j)]
        stuck = [r[0] for r in rows if len(r) > 2 and "DependencyNeverSatisfied" in r[2]]
        for job in stuck:  # a merge waiting on an array that lost a task never runs: cancel it
            subprocess.run(["scancel", job])
        if not rows:
            return
        time.sleep(1)
    raise TimeoutError(f"jobs {jobs} still queued")


def test_slurm_array_cancel_resubmit_merge(slurm_cluster, videos, tmp_path):
    c = tmp_path / "corpus"
    corpus.plan([str(videos / f"sample_0{i}.mp4") for i in range(1, 5)], c)
    spec = _spec_file(tmp_path, end=2.0)
    first = submit(c, spec, 4, mem="1G", time_limit="00:10:00")
    assert first["shards"] == sorted({corpus.shard_of(i, 4) for i in corpus.load_manifest(c)["id"]})
    victim = f"{first['array_job']}_{first['shards'][-1]}"
    t = time.time()
    while time.time() - t < 120 and not any(r[1] == "R" for r in _queue(victim)):
        time.sleep(0.2)
    subprocess.run(["scancel", victim], check=True)            # one task dies mid-run
    _drain([first["array_job"], first["merge_job"]])
    second = submit(c, spec, 4, mem="1G", time_limit="00:10:00")
    assert second["shards"] in ([], [first["shards"][-1]])    # only the cancelled shard, if it had work left
    _drain([j for j in (second.get("array_job"), second["merge_job"]) if j])
    summary = json.loads((c / "merged" / "summary.json").read_text())
    assert summary["done"] == 4 and summary["pending"] == 0 and summary["failed"] == 0
    assert sorted(_rows_per_video(c).values()) == [60, 60, 60, 60]    # every video once, none lost or doubled
    assert len((c / "slurm" / "submissions.jsonl").read_text().splitlines()) == 2


def test_submitit_backend_runs_the_array_and_the_merge(slurm_cluster, videos, tmp_path):
    import submitit  # noqa: F401 (the optional [slurm] backend; a test dependency)
    c = tmp_path / "corpus"
    corpus.plan([str(videos / "sample_01.mp4"), str(videos / "sample_02.mp4")], c)
    out = submitit_submit(c, _spec_file(tmp_path), 2, mem="1G", time_limit="00:10:00")
    stats = [job.result() for job in out["jobs"]]                 # the happy path needs no sacct
    assert sum(s["done"] for s in stats) == 2
    summary = out["merge"].result()
    assert summary["done"] == 2 and summary["failed"] == 0 and summary["pending"] == 0
    assert sorted(_rows_per_video(c).values()) == [15, 15]         # 0.5 s of 30 fps each
    again = submitit_submit(c, _spec_file(tmp_path), 2)             # nothing left: only a merge
    assert again["shards"] == [] and "jobs" not in again
    again["merge"].result()


def test_slurm_unit_conversions():
    assert _minutes("04:00:00") == 240 and _minutes("1-00:30:01") == 24 * 60 + 31 and _minutes("45") == 45
    assert _minutes("10:30") == 11 and _minutes("2-12") == 2 * 1440 + 720 and _minutes("1-2:30") == 1590
    assert _gigabytes("16G") == 16 and _gigabytes("512M") == 0.5 and _gigabytes("2048") == 2
    with pytest.raises(InvalidOptionError):
        _minutes("soon")
    with pytest.raises(InvalidOptionError):
        _gigabytes("lots")


def test_oom_guard_halves_the_chunk_until_it_fits():
    import torch

    from gpuface.jobs.runner import OomGuard
    from gpuface.core.types import Faces

    calls = []

    def model(frames):
        calls.append(frames.shape[0])
        if frames.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        n = frames.shape[0]
        return Faces(row=torch.arange(n), boxes=frames[:, :4].float(), scores=torch.ones(n),
                     keypoints=torch.zeros(n, 5, 2))

    guard = OomGuard()
    frames = torch.arange(8 * 4).view(8, 4)
    faces = guard(model, frames)
    assert guard.limit == 2 and faces.row.tolist() == list(range(8))
    assert torch.equal(faces.boxes, frames.float())
    calls.clear()
    guard(model, frames[:5])
    assert calls == [2, 2, 1]                      # the limit is kept for later batches
    with pytest.raises(torch.cuda.OutOfMemoryError):
        OomGuard()(lambda f: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("x")), frames[:1])


def test_one_process_per_device_splits_a_shard(videos, tmp_path):
    from gpuface.cli import main

    c = tmp_path / "corpus"
    corpus.plan([str(videos)], c)
    assert main(["corpus", "run", str(c), "--spec", str(_spec_file(tmp_path)), "--devices", "cpu,cpu"]) == 0
    st = corpus.status(c)
    assert st["done"] == 4 and st["failed"] == 1 and st["pending"] == 0


def test_annotate_job_spec(videos, tmp_path):
    from gpuface.cli import main

    spec = tmp_path / "annotate.json"
    spec.write_text(json.dumps({"job": "annotate", "device": "cpu", "options": {"num_faces": 1, "end": 0.5}}))
    assert main(["run", str(videos / "sample_03.mp4"), "--spec", str(spec), "-o", str(tmp_path / "out"),
                 "--quiet"]) == 0
    table = pd.read_parquet(tmp_path / "out" / "sample_03" / "annotation.parquet")
    assert len(table) == 15 and (table["label"] == 0).all() and table["confidence"].between(0.3, 1).all()


@pytest.mark.parametrize("options, says", [({"dense": True, "blur_cells": 3}, "has no option 'blur_cells'"),
                                           ({"max_faces": 0}, "max_faces must be an integer >= 1"),
                                           ({"space": "cmyk"}, "space must be one of rgb")])
def test_bad_job_spec_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, options, says):
    """A misspelt or out-of-range option: one line naming it, exit 2, nothing written, no model loaded."""
    import gpuface.stages.landmarks
    from gpuface.cli import main

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(gpuface.stages.landmarks.FaceLandmarker, "__init__", no_model)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"job": "analyse", "options": options}))
    assert main(["run", "missing.mp4", "--spec", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
    assert not (tmp_path / "out").exists()
    assert main(["run", "--spec", str(spec), "--check"]) == 2


def test_readme_spec_reference_is_generated_from_the_schema():
    from pathlib import Path

    from gpuface.jobs.registry import spec_reference

    assert spec_reference() in (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize("argv, says", [
    (["landmarks", "x.mp4", "-o", "t.csv", "--min-presence", "1.5"], "--min-presence must be a number >= 0 and <= 1"),
    (["annotate", "x.mp4", "-o", "t.csv", "--max-faces", "0"], "--max-faces must be an integer >= 1"),
    (["anonymize", "x.mp4", "--preset", "quick"], "--preset must be one of ultrafast"),
    (["manipulate", "x.mp4", "--layers", "l.yaml", "--crf", "-1"], "--crf must be an integer >= 0")])
def test_bad_cli_option_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, argv, says):
    """CLI options are checked against the job schema, as a spec is: one line, exit 2, no model, nothing written."""
    import gpuface.stages.detect
    import gpuface.stages.landmarks
    from gpuface.cli import main

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(gpuface.stages.landmarks.FaceLandmarker, "__init__", no_model)
    monkeypatch.setattr(gpuface.stages.detect.FaceDetector, "__init__", no_model)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not any(tmp_path.iterdir())


def test_cli_job_options_are_the_schema():
    """Every schema option a CLI command takes is a flag of that command, and a spec with the same options
    builds the same landmarker (one builder for the CLI and job specs)."""
    from gpuface.cli import build_parser
    from gpuface.jobs.registry import JOB_OPTIONS, JOBS, SELECTION, job_options

    parser = build_parser()
    for job in ("detect", "landmarks", "analyse", "annotate", "affect", "manipulate", "anonymize", "faces", "audit"):
        flags = {a.dest for a in parser._subparsers._group_actions[0].choices[job]._actions}
        assert set(JOBS[job].options) - flags == set(), job
    args = parser.parse_args(["annotate", "v.mp4", "-o", "t.csv", "--num-faces", "2-4", "--threshold", "0.6",
                              "--no-blendshapes", "--end", "3"])
    assert job_options(args, "annotate") == {"num_faces": [2, 4], "threshold": 0.6, "blendshapes": False,
                                             "end": 3.0}
    assert set(SELECTION) <= set(JOB_OPTIONS["annotate"])
