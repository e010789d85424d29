"""`gpuface landmarks --draw` against the same command without drawing: whole runs in process (decode, landmarks,
table, and with --draw the tinted regions, dots and the x264 inspection video), alternated three times on the four
PyFAME samples; the ratio of the medians. A third row runs --draw with the drawing itself skipped (the frames go to
the encoder as decoded): what the inspection video's encoding alone costs, the floor of any drawing code.

    python benchmarks/draw.py [--device cpu]
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from common import machine, parse_args


def main() -> None:
    args, device = parse_args(__doc__)
    import gpuface as gf
    import gpuface.ops.draw as draw_ops
    from gpuface.io.samples import fetch_samples
    from gpuface.jobs.landmarks import landmarks_source

    videos = [str(v) for k, v in sorted(fetch_samples().items()) if k.startswith("sample_0")]
    lm = gf.FaceLandmarker(device=device)
    times = {"without --draw": [], "with --draw": [], "with --draw, drawing skipped": []}
    drawing = draw_ops.draw_landmarks
    frames = 0
    with tempfile.TemporaryDirectory() as tmp:
        landmarks_source(videos[0], lm, 16)          # warm-up
        for rep in range(3):
            for name in times:
                draw_ops.draw_landmarks = (lambda frames, *a, **k: frames) if name.endswith("skipped") else drawing
                t = time.perf_counter()
                n = 0
                for i, v in enumerate(videos):
                    draw = os.path.join(tmp, f"{rep}_{i}.mp4") if name != "without --draw" else None
                    _, r = landmarks_source(v, lm, 16, draw=draw, overwrite=True)
                    n += r.frames
                times[name].append(time.perf_counter() - t)
                frames = n
    print(f"# landmarks --draw: {frames} frames (four 720p PyFAME samples), device {device} ({machine(device)}), "
          f"{os.cpu_count()} CPU cores; median of 3 alternated runs")
    print("| command | seconds | frames/s | ratio |\n|---|---|---|---|")
    base = statistics.median(times["without --draw"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| landmarks {name} | {m:.1f} | {frames / m:.1f} | {m / base:.2f} |")


if __name__ == "__main__":
    main()
