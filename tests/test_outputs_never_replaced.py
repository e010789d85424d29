"""README: "An existing output, table or video, is never replaced without `--overwrite` (a numbered name is used
instead). A broken input prints one `gpuface: error: FILE: …` line; the other inputs are still processed and the
exit status is 1." — held for every command and every kind of file each writes (videos, images, boxes tables,
audits, heat maps, analyse tables, flow videos, affect reports, face crops and logs, JSON logs, moviefy videos).

Each case runs the real command three times in process: (1) with a broken file before a good input: one error line
naming the broken file, exit 1, the good input's outputs written; every output is then overwritten by hand with a
marker; (2) again: every marked file is untouched and each output has a new numbered sibling; (3) with
``--overwrite``: the marked files are replaced and no new name appears."""
import pytest

from gpuface.cli import main

MARK = b"precious: must survive a rerun"
SPEC = "layers:\n  - op: blur\n    region: face_oval\n"


def _cases(s):
    clip = [s["single_face.mp4"], "--end", "0.3"]
    return {
        "detect": (["detect", *clip, "-o", "{out}/faces.csv"], 1),
        "landmarks": (["landmarks", *clip, "-o", "{out}/lm.parquet", "--draw"], 2),
        "anonymize": (["anonymize", *clip, "-o", "{out}", "--heatmap", "--audit", "--data-format", "json"], 6),
        "manipulate": (["manipulate", s["single_face.mp4"], "--layers", "{spec}", "-o", "{out}"], 2),
        "analyse": (["analyse", *clip, "-o", "{out}", "--flow-video"], 3),
        "annotate": (["annotate", *clip, "-o", "{out}/ids.csv", "--num-faces", "1"], 1),
        "affect": (["affect", s["single_face.jpg"], "-o", "{out}"], 6),
        "faces": (["faces", s["multi_face.jpg"], "-o", "{out}"], 6),
        "moviefy": (["moviefy", s["single_face.jpg"], s["multi_face.jpg"], "-o", "{out}/clip.mp4", "--repeat", "0.2"],
                    1),
    }


def _files(folder):
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", ["detect", "landmarks", "anonymize", "manipulate", "analyse", "annotate", "affect",
                                     "faces", "moviefy"])
def test_no_output_is_replaced_without_overwrite_and_a_broken_input_is_one_line(samples, tmp_path, capsys, command):
    argv, kinds = _cases(samples)[command]
    out = tmp_path / "out"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4000)
    argv = [a.format(out=out, spec=spec) for a in argv] + ["--quiet", "--device", "cpu"]
    if command == "moviefy":   # one output from many stills: a broken still is an error of the whole command
        argv = [a for a in argv if a not in ("--quiet", "--device", "cpu")]
        broken = broken.with_suffix(".jpg")
        broken.write_bytes(b"\x00" * 4000)
    capsys.readouterr()

    first = main([argv[0], str(broken), *argv[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gpuface: error: {broken}: "), err
    written = _files(out)
    if command == "moviefy":
        assert first == 2 and not written           # nothing half-written
        assert main(argv) == 0
        written = _files(out)
    else:
        assert first == 1
    assert len({p.suffix for p in written}) >= min(kinds, 2) and len(written) >= kinds, sorted(written)
    for p in written:
        p.write_bytes(MARK)

    assert main(argv) == 0
    again = _files(out) - written
    assert all(p.read_bytes() == MARK for p in written)
    assert len(again) == len(written), sorted(again)
    # x_1.mp4, x_1_boxes.json, …; face crops are named by their input's place in the list (video-to-faces' 02_…),
    # which differs between the runs, so only the logs and the gallery need a number
    numbered = [p for p in again if not (command == "faces" and p.suffix == ".jpg")]
    assert numbered and all("1" in p.stem.split("_") for p in numbered), sorted(again)

    assert main(argv + ["--overwrite"]) == 0
    assert _files(out) == written | again
    renamed = {p for p in written if command == "faces" and p.suffix == ".jpg"}   # the first run's 02_… crops
    assert not any(p.read_bytes() == MARK for p in written - renamed)
