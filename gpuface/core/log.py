"""Logging set-up for the ``gpuface`` logger (PyFAME's ``setup_logging``, without its YAML file).

Warnings reach stderr as any library's do; ``verbose`` adds INFO lines on stderr (one per input started and
finished, with frames, faces, frames per second and outputs), and ``log_file`` appends INFO and above to that file
with time stamps, rotated at 5 MB keeping 5 files (PyFAME's ``app.log`` rotation). Messages still propagate to the
root logger, so an application's own :mod:`logging` configuration sees them too.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

LOGGER = "gpuface"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False, log_file: str | os.PathLike | None = None) -> logging.Logger:
    """Configure the ``gpuface`` logger; calling it again replaces the handlers it added before.

    Args:
        verbose: INFO lines on stderr too (default: warnings only).
        log_file: also append INFO and above to this file (its folder is made), rotated at 5 MB × 5.

    Returns:
        The ``gpuface`` :class:`logging.Logger`.

    Raises:
        OSError: the log file cannot be opened.
    """
    log = logging.getLogger(LOGGER)
    for h in [h for h in log.handlers if getattr(h, "_gpuface", False)]:
        log.removeHandler(h)
        h.close()
    handlers = []
    if verbose:       # else warnings reach stderr as before (root logger's handlers, or Python's last resort)
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(console)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        f = logging.handlers.RotatingFileHandler(log_file, maxBytes=5 * 2**20, backupCount=5, encoding="utf-8")
        f.setLevel(logging.INFO)
        f.setFormatter(logging.Formatter(_FORMAT))
        handlers.append(f)
    for h in handlers:
        h._gpuface = True
        log.addHandler(h)
    log.setLevel(logging.INFO if handlers else logging.NOTSET)
    return log


__all__ = ["setup_logging", "LOGGER"]
