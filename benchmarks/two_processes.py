"""Two gpuface processes on one machine: together vs one after the other (whole processes, wall clock).

For each command (landmarks on ``--frames`` frames, anonymize on all 100 frames) of the 720p sample: one run alone, two runs one after the other, two
runs at the same time; the ratio serial / concurrent should be ≥ 1 (sharing the CPUs costs nothing). Extra
environment settings can be compared with ``--env NAME=VALUE`` (e.g. ``OMP_NUM_THREADS=1``).

    python benchmarks/two_processes.py [--frames 100] [--env OMP_WAIT_POLICY=ACTIVE]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def _run(cmds: list[list[str]], env: dict) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{' '.join(p.args)} failed: {err.decode()[-500:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE settings for every process")
    args = ap.parse_args()
    from gpuface.io.samples import fetch_samples

    video = str(fetch_samples(["sample_01.mp4"])["sample_01.mp4"])
    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    end = str((args.frames - 0.5) / 29.97)
    print(f"# two processes vs serial, {args.frames} frames of sample_01 (720p), {os.cpu_count()} CPUs, "
          f"env {args.env or 'default'}")
    print("| command | alone s | two serial s | two at once s | serial / at once |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        def cmd(kind: str, i: int) -> list[str]:
            base = [sys.executable, "-m", "gpuface.cli", kind, video, "--quiet", "--overwrite"]
            if kind == "landmarks":
                return base + ["--end", end, "-o", f"{tmp}/lm{i}.parquet"]
            return base + ["-o", f"{tmp}/anon{i}.mp4", "--preset", "veryfast"]

        for kind in ("landmarks", "anonymize"):
            alone = _run([cmd(kind, 0)], env)
            serial = _run([cmd(kind, 0)], env) + _run([cmd(kind, 1)], env)
            together = _run([cmd(kind, 0), cmd(kind, 1)], env)
            print(f"| {kind} | {alone:.1f} | {serial:.1f} | {together:.1f} | {serial / together:.2f} |")


if __name__ == "__main__":
    main()
