"""Devices: a device name checked against this machine."""
from __future__ import annotations

from gpuface.core.errors import DeviceUnavailableError


def resolve_device(device):
    """``auto`` (CUDA when available, else CPU), a device name or a ``torch.device``, checked against this machine.

    Raises:
        DeviceUnavailableError: the device does not exist here (or the name is not a device).
    """
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceUnavailableError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {str(dev)!r} asked for, but CUDA is not available here "
                                         "(no NVIDIA driver or GPU); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device {str(dev)!r} asked for, but this machine has "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "meta"):
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceUnavailableError(f"device {str(dev)!r} is not available here")
    return dev


__all__ = ["resolve_device"]
