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

    out = {"rows": [len(a), len(b)]}
    if len(a) != len(b):
        return out
    worst = {}
    for col in a.columns:
        if col in b.columns and pd.api.types.is_numeric_dtype(a[col]) and pd.api.types.is_numeric_dtype(b[col]):
            x, y = a[col].to_numpy(np.float64), b[col].to_numpy(np.float64)
            both = ~(np.isnan(x) & np.isnan(y))
            if both.any():
                worst[col] = float(np.nanmax(np.abs(x[both] - y[both]))) if np.isfinite(x[both] - y[both]).any() \
                    else float("inf")
    if worst:
        col = max(worst, key=worst.get)
        out.update(max_abs_diff=worst[col], column=col)
    return out


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


def agreement(device: str, frames: int, batch: int) -> list[dict]:
    """One record per pipeline: tables and video compared between the CPU and ``device``."""
    from gpuface.pipeline import run_source

    syncs = _bench("syncs")
    video = syncs.clips(frames)["4 faces"]
    records = []
    for name in syncs.pipelines():
        runs = []
        for dev in ("cpu", device):
            out = os.path.join(tempfile.mkdtemp(), "out.mp4")
            model, jobs = syncs.build(name, dev, out)
            t = time.perf_counter()
            result, syncs_made = _counting_syncs(dev, lambda: run_source(video, jobs, model, batch))
            runs.append((result, out, time.perf_counter() - t))
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
        records.append(rec)
        print(_agreement_row(rec), flush=True)
    return records


def _agreement_row(rec: dict) -> str:
    tables = "; ".join(f"{k}: " + (f"{v['max_abs_diff']:.3g} ({v['column']})" if "max_abs_diff" in v else
                                   f"rows {v['rows'][0]} vs {v['rows'][1]}") for k, v in rec["tables"].items())
    video = rec.get("video", {})
    vtext = (f"{video['mean_abs_levels']:.3f} levels, {100 * video['share_over_8']:.3f} % > 8"
             if "mean_abs_levels" in video else str(video.get("shapes", "")))
    syncs = rec.get("device_syncs_per_batch")
    return (f"| {rec['pipeline']} | {rec['faces'][0]} / {rec['faces'][1]} | {tables} | {vtext} | "
            f"{'n/a' if syncs is None else f'{syncs:.1f}'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=24, help="frames of the agreement clip")
    ap.add_argument("--throughput-frames", type=int, default=96)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    ap.add_argument("--only", nargs="+", metavar="PIPELINE", help="throughput rows (benchmarks/run.py names)")
    ap.add_argument("--out", default="gpu_acceptance")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(f"## CPU/{args.device} agreement ({args.frames} frames, four-face mosaic)\n")
    print("| pipeline | faces cpu / device | tables: max abs diff (column) | video | device syncs per batch |\n"
          "|---|---|---|---|---:|")
    agree = agreement(args.device, args.frames, 8)
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
                 "| pipeline | faces cpu / device | tables | video | device syncs per batch |\n"
                 "|---|---|---|---|---:|\n" + "\n".join(_agreement_row(r) for r in agree) +
                 "\n\n| pipeline | height | batch | frames/s | peak MB |\n|---|---:|---:|---:|---:|\n" +
                 "\n".join(f"| {r['pipeline']} | {r['height']} | {r['batch_size']} | {r['fps']:.1f} | "
                           f"{r['peak_mb']:.0f} |" for r in throughput["rows"]) + "\n")
    print(f"\nwritten: {args.out}/acceptance.json, {args.out}/acceptance.md")


if __name__ == "__main__":
    main()
