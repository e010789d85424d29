"""Temporal block shuffles (PyFAME ``apply_temporal_shuffle`` / ``generate_shuffled_block_array``), streaming.

The video is cut into blocks of ``block_duration`` seconds (``round(fps · block_duration)`` frames; the last,
shorter block is dropped with ``drop_last``). The output order of frames is computed from metadata alone and
the frames are then read in that order (:class:`gpuface.io.decode.Selection` ``frames=``), batch by batch:
the whole video is never held in memory (PyFAME reads it all into RAM).

Methods (PyFAME 1.0.10 names): ``random`` (blocks permuted), ``random_with_replacement`` (as many blocks drawn
with replacement), ``reverse`` (block order reversed, frames inside a block forward), ``left_cyclic_shift`` /
``right_cyclic_shift`` (frames rotated by one inside each block), ``palindrome`` (each block followed by its
reverse: twice as long), ``interleave`` (frame i of every block in turn; the partial last block is always
dropped), ``none``. Random draws are seeded per (seed, video).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gpuface.core.errors import InvalidOptionError
from gpuface.ops.rng import stream_key

METHODS = ("random", "random_with_replacement", "reverse", "left_cyclic_shift", "right_cyclic_shift",
           "palindrome", "interleave", "none")


class BlockOrder(NamedTuple):
    """PyFAME's ``generate_shuffled_block_array`` result (its ``(block_order, block_size)``) and the block duration.

    Attributes:
        order: int64 (K,) indices of the source blocks in output order (block-level methods; the identity for
            frame-level methods).
        block_size: frames per block, ``round(fps · block_duration)``.
        block_duration: seconds per block, as given.
    """

    order: np.ndarray
    block_size: int
    block_duration: float


def shuffled_block_array(num_frames: int, fps: float, method: str = "random", block_duration: float = 1.0,
                         seed: int | None = None, video: str = "", drop_last: bool = True) -> BlockOrder:
    """The block order, block size (frames) and block duration (s) of a shuffle: :class:`BlockOrder`, which
    unpacks as ``order, block_size, block_duration = shuffled_block_array(...)``.

    Raises:
        InvalidOptionError: unknown method, block shorter than one frame, or no complete block.
    """
    blocks = _blocks(num_frames, fps, method, block_duration, drop_last)
    k = len(blocks)
    rng = np.random.default_rng(stream_key(seed, video, "temporal") if seed is not None else None)
    if method == "random":
        order = rng.permutation(k)
    elif method == "random_with_replacement":
        order = rng.integers(0, k, size=k)
    elif method == "reverse":
        order = np.arange(k)[::-1].copy()
    else:
        order = np.arange(k)
    return BlockOrder(order.astype(np.int64), len(blocks[0]), block_duration)


def _blocks(num_frames: int, fps: float, method: str, block_duration: float, drop_last: bool) -> list[np.ndarray]:
    if method not in METHODS:
        raise InvalidOptionError(f"temporal shuffle method {method!r}: choose one of {', '.join(METHODS)}")
    size = int(round(fps * block_duration))
    if size < 1:
        raise InvalidOptionError(f"block_duration {block_duration} s is shorter than one frame at {fps:.3f} fps")
    blocks = [np.arange(i, min(i + size, num_frames)) for i in range(0, num_frames, size)]
    if (drop_last or method == "interleave") and len(blocks) > 1 and len(blocks[-1]) < size:
        blocks = blocks[:-1]
    if not blocks:
        raise InvalidOptionError("the video holds no frames to shuffle")
    return blocks


def frames_left_out(num_frames: int, fps: float, method: str = "random", block_duration: float = 1.0,
                    drop_last: bool = True) -> int:
    """How many of the video's frames no block holds (the partial last block that ``drop_last`` drops)."""
    return num_frames - sum(len(b) for b in _blocks(num_frames, fps, method, block_duration, drop_last))


def frame_order(num_frames: int, fps: float, method: str = "random", block_duration: float = 1.0,
                seed: int | None = None, video: str = "", drop_last: bool = True) -> np.ndarray:
    """int64 frame numbers of the shuffled video in output order (read them with ``Selection(frames=...)``)."""
    blocks = _blocks(num_frames, fps, method, block_duration, drop_last)
    order = shuffled_block_array(num_frames, fps, method, block_duration, seed, video, drop_last).order
    if method == "left_cyclic_shift":
        parts = [np.roll(b, -1) for b in blocks]
    elif method == "right_cyclic_shift":
        parts = [np.roll(b, 1) for b in blocks]
    elif method == "palindrome":
        parts = [np.concatenate([b, b[::-1]]) for b in blocks]
    elif method == "interleave":
        return np.stack(blocks, axis=1).reshape(-1)
    else:
        parts = [blocks[i] for i in order]
    return np.concatenate(parts).astype(np.int64)

def reorder_audio(source: str, order: np.ndarray, fps: float, path: str) -> str | None:
    """The source's first audio stream cut at frame boundaries and put in ``order`` (the frames' output order, as
    :func:`frame_order`), so each frame of a shuffled video keeps the sound it had: frame ``f`` carries the
    samples ``[f / fps, (f + 1) / fps)`` s (consecutive frames stay contiguous; missing samples are silence).
    Written to ``path`` as AAC (.m4a, PyAV); returns it, or None when the source has no audio.

    Holds the decoded audio in memory (about 23 MB a minute of 48 kHz stereo float32)."""
    import av

    with av.open(source) as c:
        if not c.streams.audio:
            return None
        stream = c.streams.audio[0]
        rate, layout = stream.codec_context.sample_rate, stream.codec_context.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = [f.to_ndarray() for frame in c.decode(stream) for f in resampler.resample(frame)]
    audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)   # (channels, samples)
    starts = np.round(np.asarray(order) * rate / fps).astype(np.int64)
    ends = np.round((np.asarray(order) + 1) * rate / fps).astype(np.int64)
    idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(order) else np.zeros(0, np.int64)
    padded = np.concatenate([audio, np.zeros((audio.shape[0], 1), audio.dtype)], axis=1)   # last column: silence
    out = padded[:, np.minimum(idx, audio.shape[1])]
    with av.open(path, "w", format="mp4") as o:
        st = o.add_stream("aac", rate=rate, layout=layout)
        for k in range(0, out.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(out[:, k:k + 1024]), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, k
            for packet in st.encode(frame):
                o.mux(packet)
        for packet in st.encode(None):
            o.mux(packet)
    return path


__all__ = ["reorder_audio", "METHODS", "BlockOrder", "shuffled_block_array", "frame_order", "frames_left_out"]
