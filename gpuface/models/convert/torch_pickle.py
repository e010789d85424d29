"""Weights out of a whole pickled PyTorch model (``torch.save(model)``) without importing or running its code.

Some upstream models are published only as a pickled ``nn.Module`` (HSEmotion's ``enet_b0_8_va_mtl.pt`` is a
timm EfficientNet): loading it normally needs the exact library that defined it and executes whatever the pickle
names. Here every class the pickle names is replaced by an inert stub that only records its state, except the
few torch functions that rebuild tensors and parameters; the module tree is then walked (``_modules``,
``_parameters``, ``_buffers``) into a ``state_dict``. Nothing from the file is executed.

``timm_efficientnet_to_torchvision`` maps timm's EfficientNet-B0 names onto torchvision's
``efficientnet_b0`` (same layers in the same order; shapes checked one by one).
"""
from __future__ import annotations

import collections
import io
import pickle
import types
from pathlib import Path

import torch

from gpuface.core.errors import WeightsError

# what a pickled module may really call: tensor and parameter rebuilding, ordered dicts
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("collections", "OrderedDict"), ("torch", "Size"),
    ("torch", "device"),
}


class _Stub:
    """Stands for any class or function a pickle names: records constructor args and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module.startswith("torch") and name.endswith("Storage"):
            return super().find_class(module, name)
        return type(name, (_Stub,), {})


_stub_pickle = types.SimpleNamespace(Unpickler=_StubUnpickler, load=lambda f, **kw: _StubUnpickler(f, **kw).load(),
                                     __name__="gpuface_stub_pickle")


def read_pickled_module_state(source: str | Path | bytes) -> "collections.OrderedDict[str, torch.Tensor]":
    """The ``state_dict`` of a module saved whole with ``torch.save(model)``, read without running its code.

    Raises:
        WeightsError: not a readable torch file, or it holds no module.
    """
    f = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    try:
        with f:
            root = torch.load(f, map_location="cpu", pickle_module=_stub_pickle, weights_only=False)
    except Exception as e:  # a broken file: any error of the unpickler or the zip reader
        raise WeightsError(f"not a readable pickled torch model: {e.__class__.__name__}: {e}") from None
    state: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()

    def walk(obj, prefix: str) -> None:
        fields = getattr(obj, "state", None)
        if not isinstance(fields, dict):
            return
        for group in ("_parameters", "_buffers"):
            for k, v in (fields.get(group) or {}).items():
                if isinstance(v, torch.Tensor):
                    state[prefix + k] = v.detach()
        for k, child in (fields.get("_modules") or {}).items():
            walk(child, f"{prefix}{k}.")

    walk(root, "")
    if not state:
        raise WeightsError("the pickled file holds no module parameters")
    return state


def timm_efficientnet_to_torchvision(timm_state: dict[str, torch.Tensor],
                                     target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm EfficientNet ``state_dict`` to torchvision's: both list the same tensors in the same order
    (stem, blocks with expand / depthwise / squeeze-excite / project convolutions and their batch norms, head,
    classifier), so names are paired in order and every pair's shape is checked.

    Args:
        timm_state: the timm model's tensors. target: torchvision's ``state_dict`` of the same architecture.

    Raises:
        WeightsError: the counts or a shape differ (another architecture).
    """
    src = [(k, v) for k, v in timm_state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise WeightsError(f"EfficientNet weights: {len(src)} tensors, torchvision's model has {len(dst)}")
    out = {k: v for k, v in target.items() if k.endswith("num_batches_tracked")}
    for (sk, v), dk in zip(src, dst):
        if v.shape != target[dk].shape:
            raise WeightsError(f"EfficientNet weights: {sk} {tuple(v.shape)} does not fit {dk} "
                               f"{tuple(target[dk].shape)}")
        out[dk] = v.float()
    return out


__all__ = ["read_pickled_module_state", "timm_efficientnet_to_torchvision"]
