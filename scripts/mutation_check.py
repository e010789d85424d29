"""Mutation check: break one line of the code behind a README promise, run the tests that hold the promise, and
expect them to fail; the file is restored whatever happens. Prints a Markdown table (promise, mutation, tests,
verdict) and exits 1 when a mutation survives.

    python scripts/mutation_check.py            # every mutation (about 10 minutes on two cores)
    python scripts/mutation_check.py cgroup     # those whose name contains "cgroup"
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name, promise, file, line as it is, line broken, tests that must fail
MUTATIONS = [
    ("overwrite", "no output replaced without --overwrite", "gpuface/io/encode.py",
     "    if overwrite or not p.exists():", "    if True:",
     ["tests/test_outputs_never_replaced.py", "-k", "anonymize"]),
    ("thresh", "--thresh: faces masked at scores >= it", "gpuface/jobs/anonymize.py",
     "self.min_score = ANONYMIZE_THRESHOLDS.get(model, 0.5) if self.threshold is None else self.threshold",
     "self.min_score = ANONYMIZE_THRESHOLDS.get(model, 0.5)",
     ["tests/test_anonymize_rows.py::test_thresh_keeps_the_scores_at_or_above_it"]),
    ("keep-metadata", "--keep-metadata keeps the container tags", "gpuface/jobs/anonymize.py",
     "metadata_from=run.path if self.keep_metadata else None", "metadata_from=None",
     ["tests/test_anonymize_rows.py::test_keep_metadata_keeps_the_container_tags"]),
    ("mosaicsize", "--mosaicsize N: N-px blocks", "gpuface/ops/anonymize.py",
     "torch.full((len(boxes),), opt.mosaic_size,", "torch.full((len(boxes),), opt.mosaic_size + 1,",
     ["tests/test_anonymize_rows.py::test_mosaicsize_makes_blocks_of_that_many_pixels"]),
    ("solid-colour", "--replacewith solid fills with --color (RGB)", "gpuface/ops/anonymize.py",
     "torch.tensor(opt.colour, dtype=x.dtype", "torch.tensor(opt.colour[::-1], dtype=x.dtype",
     ["tests/test_anonymize_rows.py::test_solid_fills_the_box_with_the_colour_and_leaves_the_rest"]),
    ("fragment-audio", "a --start/--end fragment keeps its own sound", "gpuface/io/encode.py",
     "shift = round(start / packet.time_base)", "shift = 0",
     ["tests/test_anonymize_rows.py::test_a_fragment_keeps_its_own_audio_packets_moved_to_start_at_zero"]),
    ("cgroup", "--threads follows a SLURM step's cgroup quota", "gpuface/core/threads.py",
     "for level in [folder, *folder.parents]:", "for level in [base]:",
     ["tests/test_readme_commands.py", "-k", "cgroup"]),
    ("offline", "GPUFACE_OFFLINE=1 opens no URL", "gpuface/core/fetch.py",
     'return os.environ.get("GPUFACE_OFFLINE", "0") not in ("1", "true", "yes")', "return True",
     ["tests/test_readme_commands.py::test_offline_never_opens_a_url"]),
    ("blur-sigma", "blur equals PyFAME's cv2.GaussianBlur", "gpuface/ops/occlusion.py",
     "sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8", "sigma = 0.3 * ((k - 1) * 0.5 - 1) + 1.0",
     ["tests/test_manipulate.py::test_blur_equals_pyfames_opencv_calls"]),
    ("emotion-order", "emotion columns in the models' label order", "gpuface/stages/affect/emotions.py",
     'EMOTIONS = ("anger", "disgust", "fear",', 'EMOTIONS = ("disgust", "anger", "fear",',
     ["tests/test_affect.py::test_label_orders_are_the_upstream_models"]),
    ("mtcnn-keypoints", "MTCNN equals facenet-pytorch (boxes, keypoints, scores)", "gpuface/stages/detect.py",
     "kp = torch.stack([bw * points[:, :5] + boxes[:, :1] - 1,", "kp = torch.stack([bw * points[:, :5] + boxes[:, :1],",
     ["tests/test_detect.py::test_parity_on_720p_video"]),
    ("lk-iterations", "landmark flow equals OpenCV's pyramidal Lucas-Kanade", "gpuface/ops/analysis/flow.py",
     "t1 = _sample(i1, patch + (guess + d)[:, :, None, :])[:, 0]", "t1 = _sample(i1, patch + guess[:, :, None, :])[:, 0]",
     ["tests/test_analysis.py::test_lucas_kanade_equals_opencv"]),
    ("sketch-bias", "pencil sketch equals OpenCV's divide + adaptiveThreshold", "gpuface/ops/stylise.py",
     "sketch = (norm > local - bias / 255)", "sketch = (norm > local + bias / 255)",
     ["tests/test_manipulate.py::test_pencil_sketch_equals_opencvs_illumination_divide_and_adaptive_threshold"]),
    ("noise-batch", "same output at any batch size (seeded noise)", "gpuface/ops/rng.py",
     "f = frames.to(torch.int64).view(-1, *([1] * idx.dim()))",
     "f = torch.arange(len(frames)).view(-1, *([1] * idx.dim()))",    # the frame's place in its batch
     ["tests/test_batch_invariance.py::test_every_op_gives_the_same_video_at_any_batch_size"]),
]


def run(mutation) -> tuple[str, float]:
    name, _, file, old, new, tests = mutation
    path = ROOT / file
    text = path.read_text()
    if text.count(old) != 1:
        return f"line not found once in {file}", 0.0
    path.write_text(text.replace(old, new))
    try:
        t = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                            cwd=ROOT, capture_output=True, text=True).returncode
        return ("caught" if rc == 1 else f"NOT caught (pytest exit {rc})"), time.perf_counter() - t
    finally:
        path.write_text(text)


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or any(a in m[0] for a in argv)]
    print("| promise | mutation (one line) | tests that must fail | verdict |\n|---|---|---|---|", flush=True)
    survived = 0
    for m in chosen:
        verdict, seconds = run(m)
        survived += verdict != "caught"
        print(f"| {m[1]} | `{m[2]}`: `{m[3].strip()}` → `{m[4].strip()}` | `{' '.join(m[5])}` | {verdict} "
              f"({seconds:.0f} s) |", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
