"""AOT-compiled networks (gpuface.models.aot): packages built by the real builder, their outputs against the eager
networks on real video, the landmarker with them, and the build/lock/switch logic of the ``auto`` mode."""
import os
import time

import pytest
import torch
from torch import nn

from gpuface.core.errors import InvalidOptionError
from gpuface.io.decode import VideoReader
from gpuface.models import aot
from gpuface.stages.landmarks import AOT_ROWS, BLEND_CHUNK, MESH_CHUNK, REFINE_CHUNK, FaceLandmarker

_Popen = aot.subprocess.Popen   # the real one (Inductor runs the C++ compiler through it)


@pytest.fixture(scope="module")
def packages():
    """FaceMesh at the landmarker's row counts and the blendshapes at theirs, built into the machine's cache by the
    background builder's entry point (a no-op where a run built them before), as ``auto`` mode does."""
    for name, rows in AOT_ROWS.items():
        assert aot.main([name, "--rows", *map(str, rows)]) == 0
    return aot.cache_dir()


@pytest.fixture(scope="module")
def clip(samples):
    return next(iter(VideoReader(samples["sample_01.mp4"]).batches(32))).frames


def _run(landmarker, frames, batch):
    state = landmarker.new_state()
    faces = [landmarker(frames[i:i + batch], state) for i in range(0, len(frames), batch)]
    return torch.cat([f.landmarks for f in faces]), torch.cat([f.blendshapes for f in faces])


def test_landmarker_with_packages_equals_eager(packages, clip):
    """32 real frames, tracked: landmarks within 1e-3 px and blendshapes within 1e-4 (the package's 1e-5 plus what the
    landmarks' differences carry into them) of the eager networks, with every FaceMesh and blendshape call of the run
    served by a package (none fell back to the eager module)."""
    compiled = FaceLandmarker("blazeface-short", max_faces=1, aot="auto")
    eager = FaceLandmarker("blazeface-short", max_faces=1, aot="off")
    mesh, blend = compiled._batch_runs[0].fn, compiled._blend_run.fn
    assert set(mesh.compiled_rows) == {1, REFINE_CHUNK, MESH_CHUNK} and blend.compiled_rows == (BLEND_CHUNK,)
    calls = []
    for runner in (mesh, blend):
        runner.module = _Recorder(runner.module, calls)     # any eager call is recorded
    lm, bs = _run(compiled, clip, 16)
    lm_ref, bs_ref = _run(eager, clip, 16)
    assert calls == [] and set(mesh._loaded) >= {1, MESH_CHUNK} and set(blend._loaded) == {BLEND_CHUNK}
    assert lm.shape == lm_ref.shape == (32, 478, 3)
    assert (lm - lm_ref).abs().max() <= 1e-3
    assert (bs - bs_ref).abs().max() <= 1e-4 and bs.min() >= 0 and bs.max() <= 1


def test_packages_keep_batch_invariance(packages, clip):
    """The packages run fixed row counts, so batch 5 and batch 32 give the same bits."""
    compiled = FaceLandmarker("blazeface-short", max_faces=1, aot="auto")
    a, b = _run(compiled, clip, 5), _run(compiled, clip, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_small_calls_run_on_one_thread(packages):
    """Calls of ``SERIAL_ROWS`` rows or fewer (a key frame's crop, a refined pair) run their own single-threaded
    package on the calling thread alone, calls of 12 on torch's threads; a one-row call gives the same bits whether
    its caller has one thread or two (what runs beside it does not matter)."""
    from gpuface.core import threads

    runner = FaceLandmarker("blazeface-short", max_faces=1, aot="auto")._batch_runs[0].fn
    n = torch.get_num_threads()
    assert {r: p.name.split("-")[2] for r, p in runner._paths.items()} == {1: "t1", REFINE_CHUNK: "t1",
                                                                           MESH_CHUNK: f"t{n}"}
    seen = {}
    for rows, path in runner._paths.items():
        package = aot._load(path)
        runner._loaded[rows] = lambda x, package=package: (seen.setdefault(x.shape[0], torch.get_num_threads()),
                                                           package(x))[1]
    example = aot.NETWORKS["facemesh"]()[1]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            on_two = [runner(example(rows)) for rows in (1, REFINE_CHUNK, MESH_CHUNK)]
            with threads.serial():
                on_one = runner(example(1))
    finally:
        torch.set_num_threads(before)
    assert seen == {1: 1, REFINE_CHUNK: 1, MESH_CHUNK: 2}
    assert all(torch.equal(a, b) for a, b in zip(on_two[0], on_one))


def test_centerface_package_per_input_size(clip):
    """CenterFace (the anonymiser's detector) gets one package per input size it meets, built into the machine's
    cache by the real builder (``now``; a no-op where a run built it before): on 16 real 720p frames at scale 0.25
    (192x320) its boxes and keypoints equal the eager network's within 1e-3 px and its scores within 1e-5, every
    frame served by the package; the package is named after its shape and runs on one thread (one frame a call)."""
    from gpuface.stages.detect import FaceDetector

    compiled = FaceDetector("centerface", input_scale=0.25, aot="now")
    eager = FaceDetector("centerface", input_scale=0.25, aot="off")
    got, ref = compiled(clip[:16]), eager(clip[:16])
    runner = compiled.net._runs[(192, 320)].fn
    assert [p.name.split("-")[:3] for p in runner._paths.values()] == [["centerface", "r1x192x320", "t1"]]
    assert set(runner._loaded) == {(1, 192, 320)}
    assert len(got) == len(ref) >= 16 and torch.equal(got.row, ref.row)
    assert (got.boxes - ref.boxes).abs().max() <= 1e-3 and (got.keypoints - ref.keypoints).abs().max() <= 1e-3
    assert (got.scores - ref.scores).abs().max() <= 1e-5


class _Recorder(nn.Module):
    def __init__(self, module, calls):
        super().__init__()
        self.inner, self.calls = module, calls

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(4), nn.Conv2d(4, 2, 1)).eval()
    return net, lambda rows: torch.rand(rows, 3, 8, 8).contiguous(memory_format=torch.channels_last), 1e-5


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(aot.NETWORKS, "tiny", _tiny)
    return _tiny()[0]


def test_build_refuses_a_package_outside_tolerance(tiny, tmp_path, monkeypatch):
    """A package whose outputs differ from the eager module's by more than the network's tolerance is not
    installed (here a tolerance no float result can meet: -1); the failure is remembered, so ``auto`` does not start
    the same build again, and a successful build clears it."""
    monkeypatch.setitem(aot.NETWORKS, "tiny", lambda: (*_tiny()[:2], -1.0))
    with pytest.raises(RuntimeError, match="differs from the eager module"):
        aot.build("tiny", [2], tmp_path)
    assert list(tmp_path.glob("*.pt2")) == [] and len(list(tmp_path.glob("*.failed"))) == 1
    monkeypatch.setattr(aot.subprocess, "Popen", lambda *a, **k: pytest.fail("no build expected"))
    assert aot.AotRunner("tiny", tiny, (2,), "auto", cache=tmp_path).compiled_rows == ()
    monkeypatch.setattr(aot.subprocess, "Popen", _Popen)
    monkeypatch.setitem(aot.NETWORKS, "tiny", _tiny)
    assert aot.build("tiny", [2], tmp_path)[0].exists() and list(tmp_path.glob("*.failed")) == []


def test_auto_spawns_one_build_then_switches_to_the_package(tiny, tmp_path, monkeypatch):
    """``auto``: a missing package starts one detached builder (a second runner finds the lock and starts none; a
    lock older than STALE_LOCK is taken over); the runner stays eager until the package appears, then uses it."""
    spawned = []
    monkeypatch.setattr(aot.subprocess, "Popen", lambda cmd, **kw: spawned.append((cmd, kw)))
    runner = aot.AotRunner("tiny", tiny, (2,), "auto", cache=tmp_path)
    assert len(spawned) == 1 and (tmp_path / "tiny.lock").exists()
    cmd, kw = spawned[0]
    assert cmd[1:4] == ["-m", "gpuface.models.aot", "tiny"] and "--lock" in cmd and kw["start_new_session"]
    assert cmd[cmd.index("--threads") + 1] == str(torch.get_num_threads())    # built for this run's thread count
    aot.AotRunner("tiny", tiny, (2,), "auto", cache=tmp_path)
    assert len(spawned) == 1
    old = time.time() - aot.STALE_LOCK - 60
    os.utime(tmp_path / "tiny.lock", (old, old))
    aot.AotRunner("tiny", tiny, (2,), "auto", cache=tmp_path)
    assert len(spawned) == 2
    monkeypatch.setattr(aot.subprocess, "Popen", _Popen)

    x = _tiny()[1](2)
    with torch.inference_mode():
        eager = tiny(x)
        assert torch.equal(runner(x), eager) and runner._loaded == {}        # not built yet: the module
        aot.build("tiny", [2], tmp_path)                                       # what the builder does
        out = runner(x)
    assert 2 in runner._loaded and runner.compiled_rows == (2,)
    assert (out - eager).abs().max() <= 1e-5
    with torch.inference_mode():
        assert torch.equal(runner(x[:1]), tiny(x[:1]))                        # no package for 1 row: the module


def test_off_half_and_bad_modes(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(aot.subprocess, "Popen", lambda *a, **k: pytest.fail("no build expected"))
    assert aot.AotRunner("tiny", tiny, (2,), "off", cache=tmp_path).compiled_rows == ()
    assert aot.AotRunner("tiny", tiny.half(), (2,), "auto", cache=tmp_path).compiled_rows == ()
    with pytest.raises(InvalidOptionError):
        aot.AotRunner("tiny", tiny, (2,), "sometimes")
    with pytest.raises(InvalidOptionError):
        aot.AotRunner("nonesuch", tiny, (2,), "off")
    monkeypatch.setenv("GPUFACE_AOT", "always")
    with pytest.raises(InvalidOptionError, match="GPUFACE_AOT"):
        aot.mode_from_env()


def test_weights_compile_command(packages, capsys):
    """``gpuface weights compile blendshapes`` builds (here: finds) the package the landmarker uses, and names the
    path; an unknown network is a one-line error."""
    from gpuface.cli import main

    assert main(["weights", "compile", "blendshapes"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"blendshapes (input {BLEND_CHUNK}): {packages}")
    assert os.path.exists(out[0].split(": ", 1)[1])
    assert main(["weights", "compile", "mtcnn"]) != 0
    assert "cannot compile mtcnn" in capsys.readouterr().err


def _python_share(call, x) -> float:
    """The share of its speed a pure-Python loop keeps while ``call(x)`` runs 4 times on another thread (at one
    OpenMP thread, so that a core is free): near 1 when the call lets go of the GIL, near 0 when it keeps it."""
    import threading

    def count(seconds):
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n

    def work():
        torch.set_num_threads(1)
        with torch.inference_mode():
            for _ in range(4):
                call(x)

    alone = count(0.2) / 0.2
    before = torch.get_num_threads()
    worker = threading.Thread(target=work)
    try:
        t = time.perf_counter()
        worker.start()
        n = 0
        while worker.is_alive():
            n += 1
        return n / (alone * (time.perf_counter() - t))
    finally:
        worker.join()
        torch.set_num_threads(before)


def test_package_calls_let_go_of_the_gil(packages):
    """A package runs through AOTInductor's C interface, so the decoding and encoding threads' Python goes on while
    FaceMesh runs on the landmarker's thread; torch's own loader (the reference) keeps the GIL for the call."""
    path = next(packages.glob(f"facemesh-r{MESH_CHUNK}-*.pt2"))
    package = aot._load(path)
    assert isinstance(package, aot._Package)
    x = aot.NETWORKS["facemesh"]()[1](MESH_CHUNK)
    ours, reference = _python_share(package, x), _python_share(torch._inductor.aoti_load_package(str(path)), x)
    assert ours > 0.15 and ours > 5 * reference, (ours, reference)     # measured 0.42 and 0.02
