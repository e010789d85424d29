"""Video and image output: H.264 (libx264 via PyAV) at the source's exact frame rate, source audio copied,
written under a temporary name and renamed when complete, so no half-written file is ever left behind."""
from __future__ import annotations

import os
import queue
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from gpuface.core import threads
from gpuface.core.errors import InvalidOptionError, OutputExistsError, VideoEncodeError
from gpuface.io.codecs import ENCODERS, PRESETS

_NVENC_PRESET = {p: f"p{min(i + 1, 7)}" for i, p in enumerate(PRESETS)}   # ultrafast → p1 … slow and slower → p7


def _open_stream(container, codec: str, fps, width: int, height: int, crf: int, preset: str, options: dict):
    """An output video stream: libx264 with crf/preset/threads, or NVENC with constant quality ``cq`` = crf and
    preset p1 (fastest) … p7 mapped from the x264 preset."""
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads.budget()), **options}
    else:
        stream.options = {"rc": "vbr", "cq": str(crf), "preset": _NVENC_PRESET[preset], **options}
    return stream


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden sibling name for writing ``path`` atomically (same folder, same extension)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.{os.getpid()}.part{p.suffix}")


def free_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` itself if it does not exist or ``overwrite``; else the first free ``stem_N.ext`` (N = 1, 2, …)."""
    p = Path(path)
    if overwrite or not p.exists():
        return p
    n = 1
    while (candidate := p.with_name(f"{p.stem}_{n}{p.suffix}")).exists():
        n += 1
    return candidate


class VideoWriter:
    """Write uint8 RGB frame batches to an H.264 video, copying the audio of a source file.

    Args:
        path: output file (.mp4, .mov, .mkv). Written as a temporary sibling and renamed by :meth:`close`.
        fps: frame rate as an exact rational (the source's ``VideoInfo.fps``).
        width, height: frame size in pixels (odd sizes lose their last column/row: yuv420p needs even sizes).
        crf: x264 constant rate factor, 0 (lossless) – 51; 18 is visually lossless.
        preset: x264 speed preset (:data:`PRESETS`).
        audio_from: a file whose audio streams are copied (no re-encoding) into the output, or None.
        overwrite: replace an existing ``path``; otherwise :class:`OutputExistsError`.
        background: encode on a background thread (a queue of at most 2 batches), so that encoding overlaps the
            next batch's decoding and compute; errors surface at the next :meth:`write` or at :meth:`close`.
        x264_options: further libx264 options (FFmpeg's names, e.g. ``{"tune": "film", "x264-params": "keyint=60"}``;
            ``crf``/``preset`` here override the arguments), as deface's ``--ffmpeg-config``.
        metadata: container metadata to write (e.g. the source's, to keep title and creation time).
        encoder: :data:`ENCODERS`; NVENC takes ``crf`` as its constant quality (``cq``) and the x264 preset mapped
            to p1 … p7; ``auto`` falls back to x264 when NVENC does not open (no NVIDIA GPU or driver). The encoder
            used is ``self.encoder``. Frames on a CUDA device are copied to pinned host memory on a side stream
            and awaited by the encoder thread, so the caller never waits for the copy.
        audio_span: ``(start, end)`` in seconds (end None: to the end): only the audio packets that start in it are
            copied, their timestamps moved back by ``start`` (a fragment's sound; packets are not cut, so it may
            begin up to one audio frame, ~20–30 ms, late). None or ``(0, None)``: every packet.

    Raises:
        InvalidOptionError: bad crf / preset / size / fps / encoder. OutputExistsError: see ``overwrite``.
        VideoEncodeError: the encoder or muxer failed (the temporary file is removed).

    Use as a context manager: on an exception inside the ``with`` block the partial file is deleted.
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction, width: int, height: int, crf: int = 18,
                 preset: str = "medium", audio_from: str | os.PathLike | None = None, overwrite: bool = False,
                 background: bool = True, x264_options: dict[str, str] | None = None,
                 metadata: dict[str, str] | None = None, encoder: str = "libx264",
                 audio_span: tuple[float, float | None] | None = None):
        import av

        self.path = Path(path)
        if not 0 <= crf <= 51:
            raise InvalidOptionError(f"crf must be in 0..51, got {crf}")
        if preset not in PRESETS:
            raise InvalidOptionError(f"unknown x264 preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if fps <= 0:
            raise InvalidOptionError(f"fps must be > 0 to write a video, got {fps}")
        if encoder not in ENCODERS:
            raise InvalidOptionError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        self.width, self.height = int(width) // 2 * 2, int(height) // 2 * 2
        if self.width < 2 or self.height < 2:
            raise InvalidOptionError(f"frame size {width}x{height} is too small to encode")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path}: exists (use overwrite to replace it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_path(self.path)
        self.audio_from = os.fspath(audio_from) if audio_from else None
        self.audio_span = audio_span
        self.frames_written = 0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._side = None   # the CUDA stream of device-to-host copies, made at the first CUDA batch
        try:
            self._out = av.open(str(self.tmp), mode="w")
            options = {str(k): str(v) for k, v in (x264_options or {}).items()}
            self.encoder = self._stream = None
            for codec in (("h264_nvenc", "libx264") if encoder == "auto" else (encoder,)):
                try:
                    self._stream = _open_stream(self._out, codec, fps, self.width, self.height, crf, preset,
                                                options if codec == "libx264" else {})
                    self._stream.codec_context.open()   # NVENC fails here without an NVIDIA GPU and driver
                    self.encoder = codec
                    break
                except (av.FFmpegError, ValueError):
                    if codec == "libx264" or encoder != "auto":
                        raise
                    self._out.close()            # a failed stream cannot be removed: start the container again
                    self._out = av.open(str(self.tmp), mode="w")
            self._out.metadata.update(metadata or {})
            self._audio = self._add_audio()
        except (av.FFmpegError, ValueError) as e:
            self.abort()
            raise VideoEncodeError(f"{self.path}: cannot start the encoder ({e})") from e
        if background:
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._worker, name="gpuface-encode", daemon=True)
            self._thread.start()

    def _worker(self) -> None:
        while (arr := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._encode(arr)
                except BaseException as e:  # handed to the caller at its next write() or close()
                    self._error = e

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop_worker(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _add_audio(self):
        import av

        if not self.audio_from:
            return []
        src = av.open(self.audio_from)
        pairs = []
        for s in src.streams.audio:
            try:
                pairs.append((s, self._out.add_stream_from_template(s)))
            except (av.FFmpegError, ValueError):  # codec the container cannot hold: skip that stream
                continue
        self._audio_src = src
        return pairs

    def write(self, frames: torch.Tensor) -> None:
        """Encode uint8 RGB frames (B, 3, H, W) (any device) in order.

        Raises:
            InvalidOptionError: wrong dtype or shape. VideoEncodeError: the encoder failed.
        """
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise InvalidOptionError(f"frames must be uint8 (B, 3, H, W), got {tuple(frames.shape)} {frames.dtype}")
        x = frames[:, :, :self.height, :self.width].permute(0, 2, 3, 1)
        self._raise_pending()
        if x.is_cuda and self._queue is not None:
            # device → pinned host memory on a side stream, awaited by the encoder thread: the main thread queues
            # the copy and goes on with the next batch instead of waiting for the device
            if self._side is None:
                self._side = torch.cuda.Stream(device=x.device)
            side = self._side
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True, device="cpu")
                host.copy_(x, non_blocking=True)
                done = torch.cuda.Event()
                done.record(side)
            x.record_stream(side)
            self._queue.put((host, done))
            return
        arr = np.ascontiguousarray(x.cpu().numpy())
        if self._queue is None:
            self._encode(arr)
        else:
            self._queue.put(arr)

    def _encode(self, arr) -> None:
        import av

        if isinstance(arr, tuple):   # a device batch copied to pinned memory: wait for its copy, not the device
            host, done = arr
            done.synchronize()
            arr = host.numpy()
        try:
            for img in arr:
                # a view of the batch, not a copy: the encoder's own reformat to yuv420p reads it before returning
                frame = av.VideoFrame.from_numpy_buffer(img, format="rgb24")
                frame.pts = self.frames_written
                self.frames_written += 1
                self._out.mux(self._stream.encode(frame))
        except av.FFmpegError as e:
            raise VideoEncodeError(f"{self.path}: encoding failed at frame {self.frames_written} ({e})") from e

    def close(self) -> Path:
        """Flush the encoder, copy the audio, close and rename to the final path. Returns the final path.

        Raises:
            VideoEncodeError: nothing was written, or flushing/muxing failed (the partial file is removed).
        """
        import av

        try:
            self._stop_worker()
            self._raise_pending()
            if self.frames_written == 0:
                raise VideoEncodeError(f"{self.path}: no frames were written")
            self._out.mux(self._stream.encode(None))
            if self._audio:
                streams = {src.index: dst for src, dst in self._audio}
                start, end = self.audio_span or (0.0, None)
                for packet in self._audio_src.demux([s for s, _ in self._audio]):
                    if packet.dts is None:
                        continue
                    if start > 0 or end is not None:   # a fragment: its packets, moved to start at 0
                        t = float(packet.pts * packet.time_base)
                        if t < start or (end is not None and t >= end):
                            continue
                        shift = round(start / packet.time_base)
                        packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                    packet.stream = streams[packet.stream.index]
                    self._out.mux(packet)
            self._close_containers()
            os.replace(self.tmp, self.path)
        except (av.FFmpegError, VideoEncodeError, OSError) as e:
            self.abort()
            if isinstance(e, VideoEncodeError):
                raise
            raise VideoEncodeError(f"{self.path}: finishing the file failed ({e})") from e
        return self.path

    def _close_containers(self) -> None:
        for name in ("_out", "_audio_src"):
            c = getattr(self, name, None)
            if c is not None:
                try:
                    c.close()
                finally:
                    setattr(self, name, None)

    def abort(self) -> None:
        """Close and delete the partial output."""
        try:
            self._stop_worker()
            self._close_containers()
        except Exception:  # the file is being thrown away
            pass
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_image(path: str | os.PathLike, image: torch.Tensor, quality: int = 95,
                exif_from: str | os.PathLike | None = None) -> Path:
    """Write a uint8 RGB image (3, H, W) atomically (format from the extension: jpg, png, bmp, webp); with
    ``exif_from``, that image's EXIF block is written too (deface's ``--keep-metadata``)."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(p)
    extra = {}
    if exif_from is not None:
        with Image.open(exif_from) as src:
            exif = src.getexif()
            if len(exif):
                extra["exif"] = exif.tobytes()
    try:
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(tmp, quality=quality, **extra)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
