"""GPU acceptance, the part after the test suite: CPU/device agreement of every pipeline (so every model and op) on
real frames, then the throughput table (benchmarks/run.py) at 720p and 1080p for several batch sizes, into one JSON
and one Markdown table. Run through ``benchmarks/gpu_acceptance.sh``.

    python benchmarks/gpu_acceptance.py --device cuda [--frames 24] [--throughput-frames 96]
        [--batch-sizes 8 32 128] [--heights 720 1080] [--out gpu_acceptance/]

Agreement: each pipeline of ``benchmarks/syncs.py`` runs on the four-face mosaic clip on the CPU and on the
device; its tables are compared column by column (rows matched in order; max absolute difference of every numeric
column: pixels for boxes and landmarks, probabilities for scores and affect) and its video output pixel by pixel
(mean absolute difference in levels, share of pixels more than 8 levels apart). On CUDA the device run also counts
its real host syncs per batch with ``torch.cuda.set_sync_debug_mode("warn")`` (every synchronizing call warns,
blocking host-to-device copies included, which the CPU census of ``benchmarks/syncs.py`` cannot see).
``--device cpu`` runs the same code against itself (0 everywhere): CI uses it so that the script cannot rot.

Verdict: the script exits 1 when any pipeline fails to run, or its CPU/device agreement exceeds :data:`TOLERANCES`
(face counts and table rows; the 99th percentile of each numeric column's absolute difference: 0.02 for columns
whose CPU values lie in [0, 1] — scores, presence, blendshapes, probabilities, AU intensities — and 0.5 for the
rest — pixels, colour levels, degrees; video: mean and share of pixels over 8 levels), or its real host syncs per
batch exceed its census ceiling (``benchmarks/syncs.py::CEILINGS``). ``GPUFACE_ACCEPTANCE_PERTURB=<op>`` adds 0.1
to that manipulation op's output on the device side only: the test that proves the verdict can fail.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
#: CPU/device agreement a pipeline must meet (see the module docstring).
TOLERANCES = {"faces_share": 0.01, "unit_column": 0.02, "column": 0.5, "video_mean_levels": 0.5,
              "video_share_over_8": 0.005}
IDS = ("label", "track")   # identity and track ids: numbers without an order, compared as tables' rows only


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _frames(path: str):
    import av
    import numpy as np

    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _compare_tables(a, b) -> dict:
    import numpy as np
    import pandas as pd

    out = {"rows": [len(a), len(b)], "over": []}
    if len(a) != len(b):
        out["over"].append(f"rows {len(a)} vs {len(b)}")
        return out
    worst = {}
    for col in a.columns:
        if col in IDS or col not in b.columns:
            continue
        if pd.api.types.is_numeric_dtype(a[col]) and pd.api.types.is_numeric_dtype(b[col]):
            x, y = a[col].to_numpy(np.float64), b[col].to_numpy(np.float64)
            both = ~(np.isnan(x) & np.isnan(y))
            if not both.any():
                continue
            d = np.abs(x[both] - y[both])
            d = np.where(np.isnan(d), np.inf, d)           # a value on one side only
            worst[col] = float(d.max())
            unit = bool(np.nanmin(x) >= 0 and np.nanmax(x) <= 1) if np.isfinite(x).any() else False
            tol = TOLERANCES["unit_column" if unit else "column"]
            if float(np.quantile(d, 0.99)) > tol:
                out["over"].append(f"{col} p99 {float(np.quantile(d, 0.99)):.3g} > {tol}")
    if worst:
        col = max(worst, key=worst.get)
        out.update(max_abs_diff=worst[col], column=col)
    return out


def verdict(rec: dict, ceilings: dict) -> list[str]:
    """What in one pipeline's record exceeds its tolerance or its host-sync ceiling (empty: it passes)."""
    if "error" in rec:
        return [f"failed: {rec['error']}"]
    bad = []
    a, b = rec["faces"]
    if abs(a - b) > max(1, TOLERANCES["faces_share"] * a):
        bad.append(f"faces {a} vs {b}")
    for key, t in rec["tables"].items():
        bad += [f"{key}: {o}" for o in t["over"]]
    video = rec.get("video", {})
    if "shapes" in video:
        bad.append(f"video shapes {video['shapes']}")
    elif video:
        if video["mean_abs_levels"] > TOLERANCES["video_mean_levels"]:
            bad.append(f"video mean {video['mean_abs_levels']:.3f} levels > {TOLERANCES['video_mean_levels']}")
        if video["share_over_8"] > TOLERANCES["video_share_over_8"]:
            bad.append(f"video {100 * video['share_over_8']:.2f} % > 8 levels")
    syncs, ceiling = rec.get("device_syncs_per_batch"), ceilings.get(rec["pipeline"])
    if syncs is not None and ceiling is not None and syncs > ceiling:
        bad.append(f"{syncs:.1f} host syncs per batch > census ceiling {ceiling}")
    return bad


def _perturbed(op: str | None):
    """A context in which manipulation op ``op`` adds 0.1 to its output (GPUFACE_ACCEPTANCE_PERTURB; None: none)."""
    import contextlib

    if not op:
        return contextlib.nullcontext()
    import gpuface.ops.registry as ops

    original = ops.OPS[op]

    @contextlib.contextmanager
    def swapped():
        ops.OPS[op] = lambda x, *a, **k: (original(x, *a, **k) + 0.1).clamp(0, 1)
        try:
            yield
        finally:
            ops.OPS[op] = original
    return swapped()


def _counting_syncs(device: str, fn):
    """``fn()`` and the number of synchronizing CUDA calls it made (CUDA's sync debug mode; None off CUDA)."""
    import warnings

    import torch

    if not str(device).startswith("cuda"):
        return fn(), None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return out, sum("synchroniz" in str(w.message) for w in caught)


def agreement(device: str, frames: int, batch: int, only: list[str] | None = None) -> list[dict]:
    """One record per pipeline: tables and video compared between the CPU and ``device``, and its ``verdict``."""
    from gpuface.jobs.runner import run_source

    syncs = _bench("syncs")
    video = syncs.clips(frames)["4 faces"]
    perturb = os.environ.get("GPUFACE_ACCEPTANCE_PERTURB")
    records = []
    for name in only or syncs.pipelines():
        runs = []
        try:
            for side, dev in enumerate(("cpu", device)):
                out = os.path.join(tempfile.mkdtemp(), "out.mp4")
                model, jobs = syncs.build(name, dev, out)
                t = time.perf_counter()
                with _perturbed(perturb if side == 1 else None):
                    result, syncs_made = _counting_syncs(dev, lambda: run_source(video, jobs, model, batch))
                runs.append((result, out, time.perf_counter() - t))
        except Exception as e:   # a pipeline that fails on the device is a verdict, not the end of the run
            rec = {"pipeline": name, "error": f"{e.__class__.__name__}: {e}"}
            rec["verdict"] = verdict(rec, syncs.CEILINGS)
            records.append(rec)
            print(_agreement_row(rec), flush=True)
            continue
        (a, out_a, _), (b, out_b, seconds) = runs
        rec = {"pipeline": name, "faces": [a.faces, b.faces], "seconds_device": seconds, "tables": {},
               "device_syncs_per_batch": None if syncs_made is None else syncs_made / -(-frames // batch)}
        for key, table in a.tables.items():
            if hasattr(table, "columns") and key in b.tables:
                rec["tables"][key] = _compare_tables(table, b.tables[key])
        if os.path.exists(out_a) and os.path.exists(out_b):
            import numpy as np
            x, y = _frames(out_a).astype(np.int16), _frames(out_b).astype(np.int16)
            if x.shape == y.shape:
                d = np.abs(x - y)
                rec["video"] = {"mean_abs_levels": float(d.mean()), "share_over_8": float((d > 8).mean())}
            else:
                rec["video"] = {"shapes": [list(x.shape), list(y.shape)]}
        rec["verdict"] = verdict(rec, syncs.CEILINGS)
        records.append(rec)
        print(_agreement_row(rec), flush=True)
    return records


def _agreement_row(rec: dict) -> str:
    if "error" in rec:
        return f"| {rec['pipeline']} | - | - | - | - | FAIL: {rec['error']} |"
    tables = "; ".join(f"{k}: " + (f"{v['max_abs_diff']:.3g} ({v['column']})" if "max_abs_diff" in v else
                                   f"rows {v['rows'][0]} vs {v['rows'][1]}") for k, v in rec["tables"].items())
    video = rec.get("video", {})
    vtext = (f"{video['mean_abs_levels']:.3f} levels, {100 * video['share_over_8']:.3f} % > 8"
             if "mean_abs_levels" in video else str(video.get("shapes", "")))
    syncs = rec.get("device_syncs_per_batch")
    return (f"| {rec['pipeline']} | {rec['faces'][0]} / {rec['faces'][1]} | {tables} | {vtext} | "
            f"{'n/a' if syncs is None else f'{syncs:.1f}'} | {'; '.join(rec['verdict']) or 'pass'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=24, help="frames of the agreement clip")
    ap.add_argument("--throughput-frames", type=int, default=96)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    ap.add_argument("--only", nargs="+", metavar="PIPELINE", help="throughput rows (benchmarks/run.py names)")
    ap.add_argument("--pipelines", nargs="+", metavar="PIPELINE",
                    help="agreement rows (benchmarks/syncs.py names; default: all)")
    ap.add_argument("--no-throughput", action="store_true", help="the agreement and its verdict only")
    ap.add_argument("--out", default="gpu_acceptance")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(f"## CPU/{args.device} agreement ({args.frames} frames, four-face mosaic)\n")
    print("| pipeline | faces cpu / device | tables: max abs diff (column) | video | device syncs per batch | "
          "verdict |\n|---|---|---|---|---:|---|")
    agree = agreement(args.device, args.frames, 8, args.pipelines)
    failed = [r["pipeline"] for r in agree if r["verdict"]]
    if args.no_throughput:
        _finish(failed)
    throughput_json = os.path.join(args.out, "throughput.json")
    cmd = [sys.executable, os.path.join(HERE, "run.py"), "--device", args.device, "--frames",
           str(args.throughput_frames), "--batch-size", *map(str, args.batch_sizes), "--heights",
           *map(str, args.heights), "--no-peers", "--json", throughput_json]
    if args.only:
        cmd += ["--only", *args.only]
    print(f"\n## Throughput ({' '.join(cmd[1:])})")
    subprocess.run(cmd, check=True)
    with open(throughput_json) as fh:
        throughput = json.load(fh)
    with open(os.path.join(args.out, "acceptance.json"), "w") as fh:
        json.dump({"device": args.device, "agreement": agree, "throughput": throughput}, fh, indent=1)
    with open(os.path.join(args.out, "acceptance.md"), "w") as fh:
        fh.write(f"# gpuface GPU acceptance: {throughput['machine']}\n\n"
                 "| pipeline | faces cpu / device | tables | video | device syncs per batch | verdict |\n"
                 "|---|---|---|---|---:|---|\n" + "\n".join(_agreement_row(r) for r in agree) +
                 "\n\n| pipeline | height | batch | frames/s | peak MB |\n|---|---:|---:|---:|---:|\n" +
                 "\n".join(f"| {r['pipeline']} | {r['height']} | {r['batch_size']} | {r['fps']:.1f} | "
                           f"{r['peak_mb']:.0f} |" for r in throughput["rows"]) + "\n")
    print(f"\nwritten: {args.out}/acceptance.json, {args.out}/acceptance.md")
    _finish(failed)


def _finish(failed: list[str]) -> None:
    """Exit 1 when a pipeline failed its verdict (named on stderr), else 0."""
    if failed:
        print(f"gpu acceptance: FAIL: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print("gpu acceptance: every pipeline within its tolerances and sync ceilings")
    sys.exit(0)


if __name__ == "__main__":
    main()
