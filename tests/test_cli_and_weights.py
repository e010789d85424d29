"""The gpuface command line on real media, its error lines, and the weights registry."""
import shutil

import pandas as pd
import pytest

import gpuface as gf
from gpuface.models import weights
from gpuface.cli import main
from gpuface.core.fetch import InstalledFile, fetch_file


def test_detect_tables(samples, tmp_path, capsys):
    for ext in ("csv", "parquet", "json"):
        out = tmp_path / f"faces.{ext}"
        assert main(["detect", samples["multi_face.jpg"], "-o", str(out), "--device", "cpu", "--threshold", "0.9",
                     "--quiet"]) == 0
        df = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[ext](out)
        assert len(df) == 5
        assert list(df.columns[:9]) == ["video", "frame", "time_s", "face", "x1", "y1", "x2", "y2", "score"]
        assert list(df.columns[9:]) == [f"kp{k}_{a}" for k in range(5) for a in "xy"]
        assert sorted(df["face"]) == [0, 1, 2, 3, 4]


def test_broken_input_is_reported_and_others_processed(samples, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "faces.csv"
    code = main(["detect", str(broken), samples["single_face.jpg"], str(tmp_path / "missing.mp4"), "-o", str(out),
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 2 and all(line.startswith("gpuface: error: ") for line in err)
    assert "broken.mp4" in err[0] and "missing.mp4" in err[1]
    assert len(pd.read_csv(out)) >= 1


def test_anonymize_cli_never_overwrites(samples, tmp_path):
    src = tmp_path / "face.jpg"
    shutil.copy(samples["single_face.jpg"], src)
    args = ["anonymize", str(src), "--device", "cpu", "--quiet", "--mode", "mosaic"]
    assert main(args) == 0
    assert main(args) == 0
    assert (tmp_path / "face_anonymized.jpg").exists() and (tmp_path / "face_anonymized_1.jpg").exists()
    assert (tmp_path / "face_anonymized_boxes.csv").exists()
    assert main(args + ["--overwrite"]) == 0
    assert not (tmp_path / "face_anonymized_2.jpg").exists()


@pytest.mark.parametrize("command", ["detect", "landmarks", "annotate"])
def test_tables_are_never_overwritten(samples, tmp_path, command):
    """A table that exists gets a numbered sibling; --overwrite replaces it (the issue's data-loss defect)."""
    out = tmp_path / "faces.csv"
    out.write_text("precious\n")
    args = [command, samples["sample_01.mp4"], "-o", str(out), "--end", "0.3", "--device", "cpu", "--quiet"]
    if command == "annotate":
        args += ["--num-faces", "1", "--too-few", "each"]
    assert main(args) == 0
    assert out.read_text() == "precious\n" and len(pd.read_csv(tmp_path / "faces_1.csv")) > 0
    assert main(args + ["--overwrite"]) == 0
    assert out.read_text() != "precious\n" and not (tmp_path / "faces_2.csv").exists()


def test_bad_options_are_one_line_errors(samples, tmp_path, capsys):
    assert main(["detect", samples["single_face.jpg"], "-o", str(tmp_path / "x.xlsx")]) == 2
    assert main(["anonymize", samples["single_face.jpg"], "--mask-scale", "0", "--quiet"]) == 2
    assert main(["anonymize", samples["single_face.jpg"], "--mode", "image", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("gpuface: error: ") for line in err)
    with pytest.raises(SystemExit):
        main(["anonymize", samples["single_face.jpg"], "--batch-size", "0"])


def test_weights_registry_verifies_and_rejects_wrong_sha(tmp_path):
    assert weights.verify("mtcnn", raise_error=False) or weights.fetch("mtcnn")
    weights.verify("mtcnn")
    f = weights.entry("mtcnn").files[0]
    dest = fetch_file([InstalledFile("facenet_pytorch", "data/pnet.pt")], f.sha256, tmp_path / "pnet.pt", online=False)
    assert dest.exists()
    with pytest.raises(gf.ChecksumError):
        fetch_file([InstalledFile("facenet_pytorch", "data/pnet.pt")], "0" * 64, tmp_path / "bad.pt", online=False)
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(gf.InvalidOptionError):
        weights.entry("no-such-model")


@pytest.mark.parametrize("damage", [b"\xff\xfe\x00garbage", b"", b"[1, 2]"])
def test_damaged_weights_record_is_a_named_error_and_fetch_repairs(tmp_path, monkeypatch, capsys, caplog, damage):
    """A weights record with flipped bytes, emptied or of the wrong shape: `weights verify` names it per model
    and goes on to the others (exit 1), a model load rebuilds the cache and says so, `weights fetch` repairs."""
    name = "mini-xception"
    weights.fetch(name)                                    # the shared cache, then a private copy of it
    src = weights.weights_dir()
    (tmp_path / "upstream").mkdir()
    shutil.copy(src / "upstream" / "emotion_model.hdf5", tmp_path / "upstream")
    for ext in (".safetensors", ".json"):
        shutil.copy(src / f"{name}{ext}", tmp_path)
    monkeypatch.setenv("GPUFACE_WEIGHTS", str(tmp_path))
    (tmp_path / f"{name}.json").write_bytes(damage)
    assert main(["weights", "verify", name, "mtcnn"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{name}: weights {name}: its record") and "damaged" in out[0]
    assert out[1].startswith("mtcnn: ")                      # the next model is still checked
    with caplog.at_level("WARNING", logger="gpuface"):
        weights.load_state_dict(name)
    assert "rebuilding" in caplog.text
    assert main(["weights", "verify", name]) == 0
    (tmp_path / "upstream" / "emotion_model.hdf5").write_bytes(b"tampered")
    assert main(["weights", "verify", name]) == 1 and "pinned sha256" in capsys.readouterr().out
    assert main(["weights", "fetch", name]) == 0 and main(["weights", "verify", name]) == 0


def test_unavailable_device_is_a_named_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(gf.DeviceUnavailableError, match="CUDA is not available"):
        gf.FaceLandmarker(device="cuda")
    assert main(["detect", "x.mp4", "-o", "x.csv", "--device", "cuda:1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_help_is_fast_and_imports_no_torch():
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "import sys, gpuface.cli as c; "
                          "c.build_parser().format_help(); print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and time.perf_counter() - t0 < 3    # measured 0.1 s (was 6 s)


def test_every_command_help_prints(capsys):
    """``gpuface <command> --help`` prints for every command (a ``%`` in an option's help once broke argparse's
    formatting of ``faces --help``) and lists each of that command's job options."""
    import argparse

    from gpuface.cli import build_parser
    from gpuface.jobs.registry import JOBS, _flags

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"faces", "anonymize", "annotate"} <= set(commands)
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as e:
            sub.parse_args(["--help"])
        assert e.value.code == 0, name
        text = capsys.readouterr().out
        for key, o in (JOBS[name].options.items() if name in JOBS else ()):
            assert _flags(key, o)[0] in text, (name, key)


def test_landmarks_draw_keeps_audio(samples, tmp_path):
    import av

    assert main(["landmarks", samples["sample_01.mp4"], "-o", str(tmp_path / "lm.parquet"), "--draw", "--quiet"]) == 0
    decoded = sum(len(b) for b in gf.VideoReader(samples["sample_01.mp4"]).batches(32))   # 99 of 100 announced
    with av.open(str(tmp_path / "sample_01_landmarks.mp4")) as c:
        assert len(c.streams.audio) == 1 and c.streams.video[0].frames == decoded


def test_weights_cache_is_the_checkouts_weights_folder(monkeypatch):
    """Without GPUFACE_WEIGHTS, a checkout keeps its converted weights in its own weights/ folder."""
    from pathlib import Path

    from gpuface.models.weights import weights_dir

    monkeypatch.delenv("GPUFACE_WEIGHTS", raising=False)
    assert weights_dir() == Path(__file__).resolve().parent.parent / "weights"


def test_landmarks_drawing_in_the_faces_window_is_the_whole_frame_drawing(samples):
    """``--draw`` tints and dots only the rectangle that holds the faces; the frames equal, bit for bit, those drawn
    over the whole frame (every region of the default set, one and two faces), and those drawn in place."""
    import torch

    from gpuface.jobs.landmarks import DRAW_REGIONS
    from gpuface.ops.draw import draw_landmarks

    for name, faces_wanted in (("sample_01.mp4", 1), ("multi_face.jpg", 2)):
        frames = next(iter(gf.VideoReader(samples[name]).batches(8))).frames if name.endswith(".mp4") else \
            gf.read_image(samples[name])[None]
        lm = gf.FaceLandmarker("blazeface-full", max_faces=faces_wanted)
        faces = lm(frames, lm.new_state()) if len(frames) > 1 else lm(frames)
        assert len(faces) >= faces_wanted
        window = draw_landmarks(frames, faces, DRAW_REGIONS)
        assert torch.equal(window, draw_landmarks(frames, faces, DRAW_REGIONS, window=False))
        assert not torch.equal(window, frames)
        own = frames.clone()          # in place (the job's own batch): the same pixels, drawn into the frames
        assert draw_landmarks(own, faces, DRAW_REGIONS, inplace=True) is own and torch.equal(own, window)


def test_profile_says_where_the_time_went(samples, tmp_path, capsys):
    """``--profile``: a table per input of seconds per stage (decode, the landmarker, the job's drawing, encode,
    write) that add up to the run's time; the same numbers travel in the result (and the log and corpus records)."""
    import re

    from gpuface.jobs.landmarks import landmarks_source

    capsys.readouterr()
    assert main(["landmarks", samples["sample_01.mp4"], "-o", str(tmp_path / "lm.parquet"), "--draw", "--end", "1",
                 "--profile", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    total = float(re.search(r"sample_01\.mp4: ([\d.]+) s", out).group(1))
    rows = dict((m.group(1), float(m.group(2))) for m in re.finditer(r"^  (\w+) +([\d.]+) s +[\d.]+ %$", out, re.M))
    assert {"open", "decode", "landmarker", "landmarks", "encode", "write"} <= set(rows)
    assert abs(sum(rows.values()) - total) < 0.05 and rows["landmarker"] > rows["decode"]
    _, result = landmarks_source(samples["sample_01.mp4"], gf.FaceLandmarker(), 16, gf.Selection(end=0.5))
    assert abs(sum(result.stages.values()) - result.seconds) < 0.05 * result.seconds + 0.01
