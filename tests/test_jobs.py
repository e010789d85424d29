"""The job skeleton (gpuface.jobs.runner.run_source): composed jobs in one decode pass give exactly what the jobs give
one by one, a failed job leaves nothing behind, and an out-of-memory retry replays the tracker from its snapshot."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from gpuface.io.decode import Selection, VideoReader
from gpuface.stages.landmarks import FaceLandmarker
from gpuface.stages.layers import load_spec
from gpuface.jobs.analyse import AnalyseJob
from gpuface.jobs.landmarks import LandmarksJob, landmarks_source
from gpuface.jobs.manipulate import ManipulateJob
from gpuface.jobs.runner import OomGuard, run_source

SPEC = [{"op": "recolour", "region": "face_skin", "params": {"colour": "green", "magnitude": 12}},
        {"op": "noise", "region": "face_oval", "params": {"std": 0.1}}]


@pytest.fixture(scope="module")
def landmarker(device):
    return FaceLandmarker("blazeface-full", max_faces=2, device=device)


def _frames(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_composed_jobs_equal_the_jobs_run_one_by_one(samples, landmarker, tmp_path, monkeypatch):
    """landmarks + manipulate + analyse in one pass: the same tables and pixel-equal video as three separate runs,
    from one decode of the source instead of three."""
    decodes = []
    batches = VideoReader.batches

    def counted(self, *a, **k):
        decodes.append(self.path)
        return batches(self, *a, **k)

    monkeypatch.setattr(VideoReader, "batches", counted)
    src, sel = samples["sample_02.mp4"], Selection(end=0.8)
    spec = load_spec(SPEC, seed=4)
    together = run_source(src, [LandmarksJob(), ManipulateJob(spec, tmp_path / "a.mp4"), AnalyseJob()], landmarker,
                          batch_size=8, selection=sel)
    assert len(decodes) == 1
    lm, _ = landmarks_source(src, landmarker, batch_size=8, selection=sel)
    alone_m = run_source(src, ManipulateJob(load_spec(SPEC, seed=4), tmp_path / "b.mp4"), landmarker, batch_size=8,
                         selection=sel)
    alone_a = run_source(src, AnalyseJob(), landmarker, batch_size=8, selection=sel)
    assert len(decodes) == 4
    assert together.frames == alone_m.frames == 24 and together.faces == len(lm) > 0
    pd.testing.assert_frame_equal(together.tables["landmarks"], lm)
    for name in ("colour_means", "landmark_flow"):
        pd.testing.assert_frame_equal(together.tables[name], alone_a.tables[name])
    assert np.array_equal(_frames(tmp_path / "a.mp4"), _frames(tmp_path / "b.mp4"))
    log = json.loads((tmp_path / "a.json").read_text())
    assert log["frames"] == 24 and log["faces"] == len(lm) and log["detector"] == "blazeface-full"


def test_a_failing_job_removes_every_output_of_the_pass(samples, landmarker, tmp_path):
    class Boom(AnalyseJob):
        def finish(self, run):
            raise RuntimeError("disk full (simulated)")

    spec = load_spec(SPEC, seed=4)
    with pytest.raises(RuntimeError, match="disk full"):
        run_source(samples["sample_02.mp4"], [ManipulateJob(spec, tmp_path / "m.mp4"), Boom()], landmarker,
                   batch_size=8, selection=Selection(end=0.3))
    assert list(tmp_path.iterdir()) == []


def test_jobs_needing_different_faces_do_not_compose(samples, landmarker, tmp_path):
    from gpuface.core.errors import InvalidOptionError
    from gpuface.jobs.detect import DetectJob

    with pytest.raises(InvalidOptionError, match="cannot run in one pass"):
        run_source(samples["sample_02.mp4"], [LandmarksJob(), DetectJob()], landmarker, selection=Selection(end=0.2))


def test_out_of_memory_retry_replays_the_tracker_from_its_snapshot(samples, landmarker):
    """A real tracking model that runs out of memory once, after it has advanced the tracks of the batch: the guard
    restores the tracking state and counters, halves the chunk and replays; tracks, landmarks and counters are as
    in a run without the failure."""
    frames = next(iter(VideoReader(samples["sample_03.mp4"]).batches(24))).frames

    class FailsOnce(FaceLandmarker):
        failed = False

        def __call__(self, frames, state=None):
            faces = super().__call__(frames, state)       # the state and counters advance, then the failure
            if not self.failed:
                self.failed = True
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return faces

    def fresh(cls):
        lm = copy.copy(landmarker)
        lm.__class__, lm.detector_frames, lm.mesh_crops = cls, 0, 0
        return lm

    clean = fresh(FaceLandmarker)
    expected = OomGuard()(clean, frames, clean.new_state())
    failing = fresh(FailsOnce)
    guard, state = OomGuard(), failing.new_state()
    faces = guard(failing, frames, state)
    assert failing.failed and guard.limit == 12
    assert torch.equal(faces.track_id, expected.track_id) and torch.equal(faces.row, expected.row)
    assert torch.allclose(faces.landmarks, expected.landmarks, atol=1e-3)
    assert state.next_id == expected.track_id.max() + 1
    assert (failing.detector_frames, failing.mesh_crops) == (clean.detector_frames, clean.mesh_crops)


def test_composed_job_spec_runs_in_one_pass_and_writes_every_output(samples, tmp_path, capsys):
    from gpuface.cli import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"job": ["landmarks", "manipulate", "analyse"], "device": "cpu", "batch_size": 8,
                                "options": {"detector": "blazeface-full", "end": 0.5}, "layers": SPEC, "seed": 1}))
    assert main(["run", "--check", "--spec", str(spec)]) == 0
    assert main(["run", samples["sample_02.mp4"], "--spec", str(spec), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out" / "sample_02"
    assert {p.name for p in out.iterdir()} == {"landmarks.parquet", "colour_means.parquet", "landmark_flow.parquet",
                                                "sample_02_manipulated.mp4", "sample_02_manipulated.json"}
    assert len(pd.read_parquet(out / "landmarks.parquet")) == len(_frames(out / "sample_02_manipulated.mp4")) == 15
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"job": ["landmarks", "anonymize"]}))
    capsys.readouterr()
    assert main(["run", "--check", "--spec", str(bad)]) == 2
    assert "only landmark jobs" in capsys.readouterr().err


def test_color_is_accepted_for_colour_in_specs():
    from gpuface.jobs import load_job_spec

    a = load_spec([{"op": "fill", "params": {"method": "colour", "color": [0, 255, 0]}}])
    assert a.layers[0].params == {"method": "colour", "colour": [0, 255, 0]}
    spec = load_job_spec({"job": "anonymize", "options": {"mode": "solid", "color": [0, 0, 255]}})
    assert spec.options == {"mode": "solid", "colour": [0, 0, 255]}


def test_models_ops_and_regions_import_no_pandas():
    import subprocess
    import sys

    code = ("import sys, gpuface.stages.landmarks, gpuface.stages.detect, gpuface.ops.regions, gpuface.stages.layers, "
            "gpuface.models.facemesh; print('pandas' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_stages_return_new_faces_and_run_once_per_batch(samples, tmp_path):
    """The stage contract: the embedder and the affect analyser return new Faces and leave their input alone; in a
    composed pass ``[annotate (affect: true), affect]`` the analyser runs once per batch (it ran twice when each
    job called it), and both jobs' affect columns are the same values."""
    from gpuface.stages.affect import AffectAnalyzer
    from gpuface.jobs import build

    pipeline = build({"job": ["annotate", "affect"], "options": {"affect": True, "end": 0.5, "num_faces": 1,
                                                                 "report": False}, "batch_size": 8, "device": "cpu"})
    analyzer = pipeline.load().affect_analyzer()
    batch = next(iter(VideoReader(samples["sample_02.mp4"]).batches(4)))
    faces = pipeline.model(batch.frames, pipeline.model.new_state())
    out = analyzer(batch.frames, faces)
    emb = pipeline.embedder()(batch.frames, faces)
    assert faces.aus is None and faces.embedding is None                 # the input is not changed
    assert out.aus.shape == (len(faces), len(analyzer.au_names)) and emb.embedding.shape == (len(faces), 128)
    calls = []
    original = AffectAnalyzer.__call__

    def counted(self, frames, f):
        calls.append(len(frames))
        return original(self, frames, f)

    AffectAnalyzer.__call__ = counted
    try:
        result = pipeline.run(samples["sample_02.mp4"], tmp_path)
    finally:
        AffectAnalyzer.__call__ = original
    assert result.frames == 15 and len(calls) == 2 and sum(calls) == 15     # two batches, once each
    annotation, affect = result.tables["annotation"], result.tables["affect"]
    faced = annotation[annotation["face"].notna()].reset_index(drop=True)
    assert len(faced) == int(affect["face"].notna().sum()) > 0
    pd.testing.assert_series_equal(faced["AU12"], affect[affect["face"].notna()]["AU12"].reset_index(drop=True))


def test_faces_found_ahead_on_a_thread_equal_the_serial_loop(samples, landmarker, tmp_path):
    """On a CPU, decoding and face finding run on their own thread a batch ahead of the jobs; ``profile`` runs them
    in line. Both give pixel-equal anonymised video and equal tables: the anonymiser's detector on every 6th frame
    (its stride counted by the finder, not by the jobs, which are behind) with gap filling, and the landmarker's
    tracks, which carry state from batch to batch."""
    import gpuface as gf
    from gpuface.jobs.anonymize import AnonymizeJob, anonymization_detector
    from gpuface.stages.gapfill import GapFillOptions

    if landmarker.device.type != "cpu":
        pytest.skip("the face thread runs on a CPU only")
    src, sel = samples["sample_01.mp4"], Selection(end=1.0)
    detector = anonymization_detector("centerface", input_scale=0.5)
    results = {}
    for profile in (False, True):
        out = tmp_path / f"anon_{profile}.mp4"
        job = AnonymizeJob(out, gf.AnonymizeOptions(), fill=GapFillOptions(max_gap=5, pad=5), detect_every=6)
        anon = run_source(src, job, detector, batch_size=4, selection=sel, profile=profile)
        lm = run_source(src, LandmarksJob(), landmarker, batch_size=4, selection=sel, profile=profile)
        results[profile] = (anon, lm, _frames(out))
        # in line, decoding has its own stage; ahead, the jobs' wait for decoding and faces is the detector's
        assert ("decode" in anon.stages) == profile and ("decode" in lm.stages) == profile
    (anon_a, lm_a, video_a), (anon_s, lm_s, video_s) = results[False], results[True]
    assert anon_a.frames == anon_s.frames == 30 and anon_a.faces == anon_s.faces > 0
    assert np.array_equal(video_a, video_s)
    pd.testing.assert_frame_equal(anon_a.tables["boxes"], anon_s.tables["boxes"])
    assert set(anon_a.tables["boxes"]["source"]) == {"detected", "filled", "padded"}
    pd.testing.assert_frame_equal(lm_a.tables["landmarks"], lm_s.tables["landmarks"])


def test_ahead_hands_on_errors_and_stops_its_thread():
    """``threads.ahead``: items in order; an exception of the producer reaches the consumer where its item would
    have; a consumer that stops early stops the producer, whose ``close`` then runs."""
    import threading

    from gpuface.core.threads import ahead

    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("corrupt frame (simulated)")

    got = []
    with pytest.raises(ValueError, match="corrupt frame"):
        for x in ahead(failing()):
            got.append(x)
    assert got == [1]

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    stream = ahead(endless(), depth=2, name="gpuface-test")
    assert next(stream) == 0
    stream.close()
    assert closed.is_set() and not any(t.name == "gpuface-test" for t in threading.enumerate())
