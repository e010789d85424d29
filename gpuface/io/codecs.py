"""The encoder names and x264 presets every writer and the option schema accept (torch-free: the CLI reads them)."""

#: x264 presets, fastest first.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: Video encoders: x264 on the CPU (default), NVIDIA's NVENC (H.264, HEVC) where the GPU has one (consumer and
#: workstation GPUs, L4/L40; the A100, H100 and H200 have none), ``auto``: NVENC when it opens, else x264.
ENCODERS = ("libx264", "h264_nvenc", "hevc_nvenc", "auto")

__all__ = ["PRESETS", "ENCODERS"]
