"""Inputs → a list of source paths: a file, a directory (with an extension filter), or a .txt list of paths."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from gpuface.core.errors import InputNotFoundError, InvalidOptionError, UnsupportedInputError
from gpuface.io.decode import VideoReader
from gpuface.io.images import IMAGE_EXTENSIONS, ImageReader, is_image

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def expand_inputs(inputs: Iterable[str | os.PathLike], extensions: Iterable[str] | None = None,
                  recursive: bool = False) -> list[str]:
    """Turn the inputs a user names into an ordered list of source files, without opening them.

    Args:
        inputs: paths; each is a video or image file, a directory (its files with a matching extension,
            sorted by name), or a ``.txt`` file listing one path per line (blank lines and ``#`` comments
            skipped; relative paths are relative to the list's folder).
        extensions: extensions to take from directories (e.g. ``[".mp4", "mov"]``); default every video and
            image extension gpuface knows.
        recursive: walk sub-directories too.

    Returns:
        Paths in the order given, duplicates removed. Paths that do not exist are kept, so that the run reports
        each of them as a failed item (:class:`InputNotFoundError` when opened) and goes on with the others.
    """
    exts = tuple(("." + e.lower().lstrip(".")) for e in extensions) if extensions else VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    out: list[str] = []
    for item in inputs:
        p = os.fspath(item)
        if os.path.isdir(p):
            if recursive:
                found = [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs]
            else:
                found = [os.path.join(p, f) for f in os.listdir(p) if os.path.isfile(os.path.join(p, f))]
            out.extend(sorted(f for f in found if f.lower().endswith(exts)))
        elif p.lower().endswith(".txt") and os.path.isfile(p):
            base = os.path.dirname(os.path.abspath(p))
            with open(p, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        out.append(line if os.path.isabs(line) else os.path.join(base, line))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def open_source(path: str | os.PathLike, backend: str = "auto", device: torch.device | str = "cpu"):
    """Open a video or still image as a reader with ``.info`` and ``.batches(...)``.

    Raises:
        InputNotFoundError: the path does not exist.
        UnsupportedInputError: the extension is neither a known video nor an image extension and the file is
            not a video either.
        VideoDecodeError, EmptyVideoError, ImageDecodeError: unreadable content.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputNotFoundError(f"{p}: no such file")
    if os.path.isdir(p):
        raise UnsupportedInputError(f"{p}: is a directory; pass its files, or the directory to a command")
    if is_image(p):
        return ImageReader(p, device=device)
    return VideoReader(p, backend=backend, device=device)


def read_spec_file(path: str | os.PathLike, what: str = "spec"):
    """The data of a YAML or JSON file (JSON by the ``.json`` extension, YAML otherwise).

    Raises:
        InputNotFoundError: the file does not exist. InvalidOptionError: it cannot be parsed.
    """
    import json

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: {what} not found")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(path.read_text())
        import yaml
        return yaml.safe_load(path.read_text())
    except Exception as e:  # the parsers raise many types
        raise InvalidOptionError(f"{path}: cannot parse the {what} ({e})") from e
