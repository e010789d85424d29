"""`gpuface faces` as video-to-faces: its hash, its logs read back against the crops on disk, its modes, its
annotated frames, and the HTML gallery opened in a real headless browser (Debian's chromium, installed by .ci/run)."""
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from gpuface.cli import main
from gpuface.io.images import read_image
from gpuface.jobs.faces import average_hash

NAME = re.compile(r"^0[1-4]_\d{6}_r?\d+\.jpg$")      # [prefix][NN_]FFFFFF_I.jpg, four inputs


def _videos(samples):
    return [samples[f"sample_0{i}.mp4"] for i in range(1, 5)]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"group": str})


@pytest.fixture(scope="module")
def run(samples, tmp_path_factory):
    """One run with every log and picture asked for; BlazeFace's scores of these faces lie around 0.82–0.89, so
    --min-score 0.86 rejects some of them."""
    out = tmp_path_factory.mktemp("v2f")
    assert main(["faces", *_videos(samples), "-o", str(out), "--fragment", "0", "3", "--step-seconds", "0.5",
                 "--min-score", "0.86", "--save-rejects", "--save-dupes", "--save-frames", "--quiet"]) == 0
    return out


def test_resize_to_is_opencvs_resize(samples, tmp_path):
    """``--resize-to 96``: every crop fitted into 96 x 96 with its aspect ratio (video-to-faces' ``resize_keep_ratio``:
    ``int(side · scale)``), its pixels OpenCV's bilinear ``resize`` of the same crop saved at full size (both JPEG),
    the same crops kept; :func:`fit_into` on raw pixels is within one level of OpenCV."""
    import cv2

    from gpuface.jobs.faces import fit_into

    args = ["faces", samples["sample_01.mp4"], "--end", "2", "--mode", "detection", "--hash-thr", "-1", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "full")]) == 0
    assert main([*args, "-o", str(tmp_path / "small"), "--resize-to", "96"]) == 0
    full, small = _read(tmp_path / "full" / "faces.csv"), _read(tmp_path / "small" / "faces.csv")
    assert len(small) == len(full) > 0 and (small["status"] == full["status"]).all()
    for a, b in zip(full["file"], small["file"]):
        big, fitted = np.asarray(Image.open(a)), np.asarray(Image.open(b))
        h, w = big.shape[:2]
        scale = min(96 / w, 96 / h)
        assert fitted.shape[:2] == (int(h * scale), int(w * scale))
        ref = cv2.resize(big, (int(w * scale), int(h * scale)))
        assert np.abs(fitted.astype(int) - ref).mean() < 3
        raw = torch.from_numpy(big.copy()).permute(2, 0, 1)
        ours = fit_into(raw, 96).permute(1, 2, 0).numpy()
        assert np.abs(ours.astype(int) - ref).max() <= 1


def test_average_hash_is_video_to_faces(run):
    """video-to-faces' ahash, written with OpenCV as it is (BGR→grey, cv2.resize to 8×8, above the mean), on
    every crop saved: at most one bit apart (OpenCV's fixed-point rounding), nearly all equal."""
    import cv2

    files = [p for p in run.rglob("*.jpg") if "frames" not in p.parts]
    assert len(files) >= 20
    diffs = []
    for f in files:
        grey = cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2GRAY), (8, 8))
        ref = (grey > np.mean(grey)).flatten()
        diffs.append(int((average_hash([read_image(f)])[0] != ref).sum()))
    assert max(diffs) <= 1 and np.mean(np.array(diffs) == 0) >= 0.9, diffs


def test_logs_match_the_crops_on_disk(run):
    """Every log parsed with video-to-faces' columns and checked against the files: rejects, the three duplicate
    parts, the clustering, and gpuface's own faces.csv."""
    log = _read(run / "faces.csv")
    assert set(log["status"]) == {"kept", "rejected", "duplicate"}
    # rejects: every detection is listed; the rejected ones are the crops in intermediate/rejects
    rej = pd.read_csv(run / "intermediate" / "log_rejects.csv")
    assert list(rej.columns) == ["file_name", "score", "width", "height", "x1", "y1", "x2", "y2", "too_low(mscore=0.86)",
                                 "too_small(msize=50)", "too_close(mborder=0)", "rejected"]
    assert len(rej) == len(log) and rej["file_name"].str.match(NAME).all()
    assert (rej["too_low(mscore=0.86)"] == (log["score"] < 0.86)).all()          # logged as %.2f, as video-to-faces
    assert np.allclose(rej["score"], log["score"], atol=0.005)
    assert (rej["rejected"] == 1).sum() == (log["status"] == "rejected").sum() > 0
    assert set(rej.loc[rej["rejected"] == 1, "file_name"]) == {p.name for p in (run / "intermediate" / "rejects").iterdir()}
    assert rej.loc[rej["rejected"] == 1, "file_name"].str.contains(r"_r\d+\.jpg$").all()
    # the three duplicate parts: what is marked is what was moved, and only what is within the threshold
    marked = set()
    for part, measure, limit in (("1", "hash_diff", 8), ("2", "hash_diff", 8), ("3", "distance", 0.03)):
        d = pd.read_csv(run / "intermediate" / f"log_dupes{part}.csv")
        near = "nearest_in_prev_5" if part == "1" else "nearest_in_prev"
        assert list(d.columns) == ["file_name", near, measure, "marked_as_duplicate"]
        assert ((d[measure] <= limit) == (d["marked_as_duplicate"] == 1)).all()
        moved = {p.name for p in (run / "intermediate" / f"dupes{part}").glob("*.jpg")}
        assert set(d.loc[d["marked_as_duplicate"] == 1, "file_name"]) == moved
        marked |= moved
    assert marked == set(log.loc[log["status"] == "duplicate", "file"].map(lambda f: Path(f).name))
    # clustering: groups 0..K-1 with K the best silhouette; the kept crops are exactly the files in them
    scores = pd.read_csv(run / "faces" / "log_clustering.csv")
    assert list(scores.columns)[:4] == ["n_clusters", "silhouette_score", "calinski_harabasz_score",
                                        "davies_bouldin_score"]
    k = int(scores.loc[scores["best"], "n_clusters"].iloc[0])
    kept = log[log["status"] == "kept"]
    assert sorted(kept["group"].unique()) == [str(g) for g in range(k)]
    on_disk = {(p.parent.name, p.name) for p in (run / "faces").glob("*/*.jpg")}
    assert on_disk == {(g, Path(f).name) for g, f in zip(kept["group"], kept["file"])}
    assert not list((run / "faces").glob("*.jpg"))            # nothing left ungrouped


def test_frames_are_annotated_as_video_to_faces(run):
    """--save-frames: one JPEG per sampled frame, fitted into 1024 px, kept boxes green, rejected red (on the box's
    top edge, that colour's channel stands 60 levels above the others: JPEG at quality 50 blurs a 2 px line)."""
    log = _read(run / "faces.csv")
    frames = sorted((run / "intermediate" / "frames").glob("*.jpg"))
    assert len(frames) == log.groupby(["video", "frame"]).ngroups == 4 * 6
    for status, channel in (("kept", 1), ("rejected", 0)):
        row = log[log["status"] == status].iloc[0]
        number = 1 + [Path(v).stem for v in sorted(log["video"].unique())].index(Path(row["video"]).stem)
        img = Image.open(run / "intermediate" / "frames" / f"0{number}_{int(row['frame']):06d}.jpg")
        assert max(img.size) == 1024 and img.format == "JPEG"
        s = 1024 / 1280
        x, y = int((row["x1"] + row["x2"]) / 2 * s), int(row["y1"] * s)
        pixels = np.array(img.convert("RGB"))[y - 2:y + 3, x].astype(int)   # across the box's top edge
        others = np.delete(pixels, channel, axis=1).max(axis=1)
        assert (pixels[:, channel] - others).max() > 60, (status, pixels)


def test_detection_then_grouping_gives_the_groups_of_a_full_run(samples, tmp_path):
    """--mode detection leaves the crops in OUT/faces; --mode grouping on that folder (each crop a still,
    --enc-batch-size 3) groups them as the full run does (ARI 1 on the same file names). The full run gives the
    same table at batch sizes 5 and 16."""
    common = ["--fragment", "0", "2", "--step-seconds", "0.5", "--enc-dup-thr", "-1", "--quiet"]
    assert main(["faces", *_videos(samples), "-o", str(tmp_path / "full"), *common]) == 0
    assert main(["faces", *_videos(samples), "-o", str(tmp_path / "full5"), "--batch-size", "5", *common]) == 0
    a, b = _read(tmp_path / "full" / "faces.csv"), _read(tmp_path / "full5" / "faces.csv")
    assert a.drop(columns="file").equals(b.drop(columns="file"))
    assert main(["faces", *_videos(samples), "-o", str(tmp_path / "two"), "-m", "detection", *common]) == 0
    crops = sorted(p.name for p in (tmp_path / "two" / "faces").glob("*.jpg"))
    full_kept = a[a["status"] == "kept"]
    assert crops == sorted(Path(f).name for f in full_kept["file"])
    assert main(["faces", "-o", str(tmp_path / "two"), "-m", "grouping", "--enc-batch-size", "3", *common,
                 "--overwrite"]) == 0
    g = _read(tmp_path / "two" / "faces.csv")
    assert (g["status"] == "kept").all() and len(g) == len(crops)
    full = dict(zip(full_kept["file"].map(lambda f: Path(f).name), full_kept["group"]))
    two = dict(zip(g["file"].map(lambda f: Path(f).name), g["group"]))
    names = sorted(full)
    assert adjusted_rand_score([full[n] for n in names], [two[n] for n in names]) == 1.0
    assert main(["faces", "-o", str(tmp_path / "empty"), "-m", "grouping", "--quiet"]) == 2


def _browser(page: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (.ci/run installs it: apt-get install chromium)"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={page.parent / '.chromium'}", "--virtual-time-budget=10000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _gallery(dom: str) -> tuple[int, int, dict[str, int]]:
    body = re.search(r'<body data-images="(\d+)" data-broken="(\d+)"', dom)
    assert body, "the page's load handler did not run"
    sections = re.findall(r'<section data-group="([^"]+)">(.*?)</section>', dom, re.S)
    return int(body.group(1)), int(body.group(2)), {name: part.count("<figure>") for name, part in sections}


def test_gallery_in_a_real_browser(run, tmp_path):
    """faces/index.html in headless chromium: the page loads, every image resolves, one non-empty section per
    group (and the duplicates and rejects saved); a crop removed afterwards shows as not found."""
    log = _read(run / "faces.csv")
    page = tmp_path / "copy"
    shutil.copytree(run, page)
    images, broken, sections = _gallery(_browser(page / "faces" / "index.html"))
    groups = sorted(log.loc[log["status"] == "kept", "group"].unique())
    assert broken == 0 and images == log["file"].notna().sum()
    assert [s for s in sections if s.startswith("group ")] == [f"group {g}" for g in groups]
    assert {"rejected", "duplicates"} <= set(sections) and min(sections.values()) >= 1
    for g in groups:
        assert sections[f"group {g}"] == ((log["status"] == "kept") & (log["group"] == g)).sum()
    next((page / "faces" / groups[0]).glob("*.jpg")).unlink()
    images2, broken2, _ = _gallery(_browser(page / "faces" / "index.html"))
    assert (images2, broken2) == (images, 1)
