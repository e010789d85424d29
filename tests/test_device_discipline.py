"""Issue 14's CPU-side proofs of the GPU path, on real samples:

- no tensor without a device: every pipeline runs on CPU while the default device is ``meta``, so a tensor created
  without ``device=`` (which on a GPU run would land on the CPU and force a copy or a crash) fails at once;
- host syncs: every pipeline's syncs per batch are counted by call site (:class:`gpuface.core.syncs.SyncCounter`, the
  same census as ``benchmarks/syncs.py``) and held to the numbers below; those that must not depend on the number
  of faces are checked on a one-face clip and a four-face mosaic.
"""
import importlib.util
import os

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("syncs_bench", os.path.join(HERE, "..", "benchmarks", "syncs.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

FRAMES, BATCH = 24, 8


@pytest.fixture(scope="module")
def videos(samples):
    return bench.clips(FRAMES)


@pytest.mark.parametrize("name", bench.pipelines())
def test_no_tensor_is_created_without_a_device(name, videos, tmp_path, device):
    from gpuface.jobs.runner import run_source

    model, jobs = bench.build(name, device, str(tmp_path / "out.mp4"))
    torch.set_default_device("meta")
    try:
        result = run_source(videos["4 faces"], jobs, model, BATCH)
    finally:
        torch.set_default_device(None)
    assert result.frames == FRAMES and result.faces > 0


FACE_FREE = ("detect mtcnn", "detect blazeface-full", "detect centerface", "landmarks", "analyse", "annotate",
             "manipulate blur", "manipulate recolour", "manipulate relocate")


@pytest.mark.parametrize("name", list(bench.CEILINGS))
def test_host_syncs_per_batch_stay_at_their_census(name, videos):
    per = {}
    for label, video in videos.items():
        batches, counter = bench.census(name, video, BATCH)
        per[label] = counter.total / batches
    assert per["4 faces"] <= bench.CEILINGS[name], (per, counter.sites.most_common(5))
    if name in FACE_FREE:
        assert per["4 faces"] <= per["1 face"] * 1.05 + 1, per


def test_sync_counter_catches_a_sync_put_into_an_op(videos, monkeypatch):
    """Breaking an op on purpose: an `.item()` per face inside `blur` shows up as syncs at its call site."""
    import gpuface.ops.registry as ops

    batches, clean = bench.census("manipulate blur", videos["4 faces"], BATCH)
    original = ops.OPS["blur"]

    def blur_with_sync(x, mask, weight, ctx, **params):
        for i in range(len(ctx.faces)):
            ctx.faces.scores[i].item()
        return original(x, mask, weight, ctx, **params)

    monkeypatch.setitem(ops.OPS, "blur", blur_with_sync)
    _, broken = bench.census("manipulate blur", videos["4 faces"], BATCH)
    added = broken.total - clean.total
    assert added >= 4 * batches, (clean.total, broken.total)     # 4 faces a frame, one .item() each
    assert added > bench.CEILINGS["manipulate blur"] - clean.total / batches    # the ceiling test above would fail


def test_sync_census_names_the_package_file_that_synced():
    """A host sync is attributed to the gpuface module that asked for it (``gpuface/<layer>/<file>.py:line``), not to
    the census itself or the caller."""
    import torch

    from gpuface.core.syncs import SyncCounter
    from gpuface.core.types import Faces

    faces = Faces.empty(device="cpu")
    with SyncCounter() as counter:
        faces.select(torch.zeros(0, dtype=torch.bool))
    assert counter.total >= 1
    assert all(site.startswith("gpuface/core/types.py:") for site in counter.sites), counter.sites
