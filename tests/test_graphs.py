"""Bucketed runs (gpuface.models.graphs): padding to bucket sizes and the CUDA-graph buffer discipline, on a CPU.

A CUDA graph replays into the same static buffers every time; ``emulate`` mode reproduces that on any device, so
these tests catch outputs that alias a buffer the next replay overwrites. On a GPU, ``--device cuda`` runs the
real graphs (``graphs`` mode) against eager execution on the same real crops."""
import logging

import pytest
import torch

from gpuface.io.decode import VideoReader
from gpuface.stages.landmarks import FaceLandmarker
from gpuface.models.graphs import BUCKETS, Bucketed


@pytest.fixture(scope="module")
def crops(samples):
    """Real FaceMesh inputs: 40 crops of the 720p sample's face (tracked ROIs, as the landmarker cuts them)."""
    from gpuface.ops.geometry import crop_rois
    from gpuface.stages.landmarks import MESH_INPUT, rois_from_landmarks

    clip = next(iter(VideoReader(samples["sample_01.mp4"]).batches(40)))
    faces = FaceLandmarker("blazeface-short", max_faces=1)(clip.frames)
    c, s, a = rois_from_landmarks(faces.landmarks)
    return crop_rois(clip.frames, faces.row, c, s, a, MESH_INPUT)


def _mesh():
    from gpuface.models.facemesh import FaceMesh
    from gpuface.models.weights import load_graph

    return FaceMesh(load_graph("facemesh")).eval()


@pytest.mark.parametrize("mode", ["emulate", "pad"])
def test_bucketed_equals_eager_at_every_batch_size(crops, mode):
    """Batches of 1, 3, 8, 9 and 40 crops padded to buckets (40: chunks of the largest bucket when it is smaller)
    give the landmarks and presence of the plain forward, within float tolerance (padding changes the batch the
    convolutions see, not the rows)."""
    mesh = _mesh()
    with torch.inference_mode():
        ref_pts, ref_presence = mesh(crops)
        run = Bucketed(mesh, mode, buckets=(1, 2, 4, 8, 16, 32))
        for n in (1, 3, 8, 9, 40):
            pts, presence = run(crops[:n])
            assert pts.shape[0] == presence.shape[0] == n
            assert (pts - ref_pts[:n]).abs().max() < 1e-3, n             # px in the 256-px crop
            assert (presence - ref_presence[:n]).abs().max() < 1e-5, n


def test_outputs_survive_the_next_replay(crops):
    """The graph's buffers are overwritten by every replay: what a call returned must not change afterwards."""
    mesh = _mesh()
    with torch.inference_mode():
        run = Bucketed(mesh, "emulate")
        first = run(crops[:4])[0]
        kept = first.clone()
        run(crops[4:8])                       # same bucket: a replay into the same buffers
        assert torch.equal(first, kept)
        assert not torch.equal(first, run(crops[4:8])[0])
    assert run.replays == 3 and len(run._replays) == 1


def test_auto_is_eager_off_cuda(crops):
    """The CPU gains nothing from graphs: ``auto`` runs the module unchanged there (no padding, no buffers)."""
    mesh = _mesh()
    with torch.inference_mode():
        run = Bucketed(mesh)
        out = run(crops[:3])
        assert torch.equal(out[0], mesh(crops[:3])[0])
    assert run.replays == 0 and not run._replays


def test_a_failed_capture_falls_back_to_eager(crops, caplog):
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return x * 2

    run = Bucketed(flaky, "emulate")
    with caplog.at_level(logging.WARNING, logger="gpuface"):
        out = run(torch.ones(3, 2))
    assert torch.equal(out[0], torch.full((3, 2), 2.0)) and run.mode == "eager"
    assert "capture failed" in caplog.text


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode must be one of"):
        Bucketed(lambda x: x, "fast")
    assert BUCKETS[0] == 1 and list(BUCKETS) == sorted(BUCKETS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (run with --device cuda)")
def test_cuda_graphs_equal_eager_on_the_gpu(crops):
    mesh = _mesh().cuda()
    x = crops.cuda()
    with torch.inference_mode():
        ref = mesh(x)
        run = Bucketed(mesh, "graphs")
        for n in (1, 5, 32, 40):
            out = run(x[:n])
            assert (out[0] - ref[0][:n]).abs().max() < 1e-2 and (out[1] - ref[1][:n]).abs().max() < 1e-4
    assert run.mode == "graphs" and run._replays
